//! `costplus-backup` against a real sandbox: backups to both encrypted repositories, info, and
//! a restore drill, as the acceptance checks run them.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::collections::BTreeMap;
use std::process::Command;

use costplus_testsupport::sandbox::{Sandbox, json, ok};
use costplus_testsupport::{require_tool, workspace_bin};

fn psql(env: &BTreeMap<String, String>, sql: &str) -> String {
    let out = Command::new(require_tool("psql"))
        .env_clear()
        .envs(env)
        .args(["-XAtqc", sql])
        .output()
        .unwrap();
    ok(&out).trim().to_string()
}

#[test]
fn sandbox_backups_info_and_drills_on_both_repositories() {
    require_tool("pgbackrest");
    let sb = Sandbox::up("costplus-e2e-backup-");
    let env = sb.env.clone();
    // repo1 is local, encrypted, and where env says.
    let repo1 = std::path::Path::new(&env["COSTPLUS_REPO1_PATH"]);
    assert!(
        repo1.join("backup/main/backup.info").is_file(),
        "{}",
        repo1.display()
    );
    let backup_info = std::fs::read(repo1.join("backup/main/backup.info")).unwrap();
    assert!(
        !String::from_utf8_lossy(&backup_info).contains("[backup:current]"),
        "repo1 backup.info is not encrypted"
    );
    // The configuration names both passphrase files, never a passphrase.
    let config = std::fs::read_to_string(&env["COSTPLUS_CONFIG"]).unwrap();
    assert!(config.contains("[backup]") && config.contains("repo2_cipher_pass_file"));
    let pass = std::fs::read_to_string(sb.dir.join("pgbackrest/repo1.pass")).unwrap();
    assert!(pass.trim().len() >= 64 && !config.contains(pass.trim()));

    psql(&env, "CREATE DATABASE acme_db");
    let mut acme = env.clone();
    acme.insert("PGDATABASE".into(), "acme_db".into());
    psql(
        &acme,
        "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 321) g",
    );

    for repo in ["1", "2"] {
        let run = json(&sb.run(
            "costplus-backup",
            &["run", "--type", "full", "--repo", repo, "--format", "json"],
        ));
        let b = &run["backups"][0];
        assert_eq!(b["repo"].to_string(), repo);
        assert_eq!(b["type"], "full");
        assert!(b["label"].as_str().unwrap().ends_with('F'), "{run}");
    }

    let info = json(&sb.run("costplus-backup", &["info", "--format", "json"]));
    assert_eq!(info["name"], "main");
    assert_eq!(info["status"]["code"], 0, "{info}");
    assert_eq!(info["cipher"], "aes-256-cbc");
    for key in [1, 2] {
        let n = info["backup"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["database"]["repo-key"] == key && b["type"] == "full")
            .count();
        assert_eq!(n, 1, "repo{key}: {info}");
    }

    for repo in ["1", "2"] {
        let out = sb.run(
            "costplus-backup",
            &["drill", "--repo", repo, "--format", "json"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(d["ok"], true, "{d}");
        for t in [
            "restore_seconds",
            "start_seconds",
            "rto_seconds",
            "checks_seconds",
            "total_seconds",
        ] {
            assert!(d["timings"][t].as_f64().unwrap() >= 0.0, "{t}: {d}");
        }
        let checks = d["checks"].as_array().unwrap();
        let fp = checks.iter().find(|c| c["name"] == "fingerprint").unwrap();
        assert_eq!(fp["status"], "pass", "{d}");
        assert!(checks.iter().all(|c| c["ok"] == true), "{d}");
    }

    // Status: both repositories fresh.
    let st = json(&sb.run("costplus-backup", &["status", "--format", "json"]));
    assert_eq!(st["ok"], true, "{st}");
    assert_eq!(st["repos"].as_array().unwrap().len(), 2);
    // Plans change nothing and say what they would do.
    let plan = json(&sb.run("costplus-backup", &["setup", "--plan", "--format", "json"]));
    assert!(
        plan["archiving"]["changes"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    let plan = json(&sb.run(
        "costplus-backup",
        &["run", "--type", "incr", "--plan", "--format", "json"],
    ));
    assert_eq!(plan["plan"].as_array().unwrap().len(), 2, "{plan}");
    assert!(!plan.to_string().contains(pass.trim()));
    // Timers, installed into a directory of our choice.
    let units = sb.dir.join("units");
    let sched = json(&sb.run(
        "costplus-backup",
        &[
            "schedule",
            "--install",
            "--dir",
            units.to_str().unwrap(),
            "--incr",
            "daily 12:00",
            "--format",
            "json",
        ],
    ));
    assert_eq!(sched["installed"].as_array().unwrap().len(), 4, "{sched}");
    let timer = std::fs::read_to_string(units.join("costplus-backup-full.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:00:00"), "{timer}");

    // A drill that fails exits 3: repo1 loses its backup.info (and the copy).
    for f in ["backup.info", "backup.info.copy"] {
        std::fs::remove_file(repo1.join("backup/main").join(f)).unwrap();
    }
    let out = sb.run(
        "costplus-backup",
        &["drill", "--repo", "1", "--format", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["ok"], false);
    assert!(
        d["reason"].as_str().unwrap().starts_with("backup_set"),
        "{d}"
    );
}

#[test]
fn help_is_stable() {
    for args in [&["--help"][..], &["drill", "--help"][..]] {
        let out = Command::new(workspace_bin("costplus-backup"))
            .args(args)
            .env_remove("COSTPLUS_CONFIG")
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        insta::assert_snapshot!(args.join("_").replace("--", ""), ok(&out));
    }
}
