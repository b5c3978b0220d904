//! `costplus-offsite` end to end: a costplus.toml whose `[offsite]` points at the real S3 test
//! server, and for `verify` a real pgBackRest repo2 in it.
#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use costplus_testsupport::{TestCluster, TestS3, random_string, require_tool};

const BUCKET: &str = "offsite";

struct Env {
    s3: TestS3,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn env(extra_toml: &str) -> Env {
    let s3 = TestS3::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key(),
            s3.secret_key()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("costplus.toml");
    std::fs::write(
        &config,
        format!(
            "{extra_toml}\n[offsite]\nprovider = \"s3-compatible\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nca_file = \"{}\"\ncredentials_file = \"{}\"\n",
            s3.endpoint(),
            s3.ca_file().display(),
            creds.display()
        ),
    )
    .unwrap();
    Env { s3, dir, config }
}

fn offsite(env: &Env, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_costplus-offsite"))
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    // No secret ever reaches the output.
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(env.s3.secret_key()),
        "the secret key was printed"
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn put_ls_get_ship_and_cost() {
    let e = env("");
    let out = offsite(&e, &["check", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["ok"], true);

    // A small tree: plan first (nothing sent), then the upload.
    let tree = e.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a"), b"alpha").unwrap();
    std::fs::write(tree.join("sub/b"), vec![7u8; 6 << 20]).unwrap();
    let t = tree.to_str().unwrap();
    let plan = json(&offsite(
        &e,
        &["put", t, "--prefix", "up", "--plan", "--format", "json"],
    ));
    assert_eq!(plan["files"].as_array().unwrap().len(), 2);
    let ls = json(&offsite(&e, &["ls", "--format", "json"]));
    assert_eq!(ls.as_array().unwrap().len(), 0, "the plan sent nothing");
    let state = e.dir.path().join("state");
    let out = offsite(
        &e,
        &[
            "put",
            t,
            "--prefix",
            "up",
            "--state-dir",
            state.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put = json(&out);
    assert_eq!(put["ok"], true);
    assert!(
        put["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["checksum_verified"] == true)
    );
    let ls = json(&offsite(&e, &["ls", "up/", "--format", "json"]));
    let keys: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["up/tree/a", "up/tree/sub/b"]);
    let back = e.dir.path().join("b.back");
    let out = offsite(&e, &["get", "up/tree/sub/b", back.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), vec![7u8; 6 << 20]);

    // ship refuses plaintext and leaves nothing half-done.
    let plain = e.dir.path().join("pgbackrest.conf");
    std::fs::write(&plain, "[global]\nrepo2-cipher-pass=hunter2\n").unwrap();
    let out = offsite(&e, &["ship", plain.to_str().unwrap(), "--prefix", "ship/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not look encrypted"));
    // An encrypted artefact (openssl enc output) ships; --plan first.
    let enc = e.dir.path().join("vault.enc");
    let status = Command::new(require_tool("openssl"))
        .args([
            "enc",
            "-aes-256-cbc",
            "-pbkdf2",
            "-salt",
            "-pass",
            "pass:test-only",
            "-in",
        ])
        .arg(&plain)
        .arg("-out")
        .arg(&enc)
        .status()
        .unwrap();
    assert!(status.success());
    let plan = json(&offsite(
        &e,
        &[
            "ship",
            enc.to_str().unwrap(),
            "--prefix",
            "ship/",
            "--plan",
            "--format",
            "json",
        ],
    ));
    assert_eq!(plan["files"][0]["key"], "ship/vault.enc");
    assert_eq!(
        json(&offsite(&e, &["ls", "ship/", "--format", "json"]))
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let out = offsite(
        &e,
        &[
            "ship",
            enc.to_str().unwrap(),
            "--prefix",
            "ship/",
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&offsite(&e, &["ls", "ship/", "--format", "json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // cost with given sizes: 1 TB (2^40) full every 7 days kept 2 fulls, nothing else:
    // active = 2 TB, deleted = (90 - 14) / 7 TB; 6.99 * (2 + 76/7) = 89.87.
    let out = offsite(
        &e,
        &[
            "cost",
            "--no-measure",
            "--no-pgbackrest",
            "--full-bytes",
            "1099511627776",
            "--no-incremental",
            "--retention-full",
            "2",
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = json(&out);
    assert_eq!(c["monthly_usd"], 89.87);
    assert_eq!(c["avoid_early_deletion"]["retention"]["full"], 13);
    // Measured from the bucket (no repository there yet): the 1 TB minimum.
    let c = json(&offsite(&e, &["cost", "--format", "json"]));
    assert_eq!(c["monthly_usd"], 6.99);
}

#[test]
fn verify_a_real_repo2_and_exit_codes() {
    require_tool("pgbackrest");
    // The [backup] section tells verify where pgBackRest's configuration is.
    let pre = tempfile::tempdir().unwrap();
    std::fs::set_permissions(pre.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = pre.path().join("pgbackrest.conf");
    let e = env(&format!(
        "[backup]\nstanza = \"t\"\nconfig_file = \"{}\"\n",
        conf.display()
    ));

    // An empty bucket: problems, exit 3.
    let out = offsite(&e, &["verify", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert!(!v["problems"].as_array().unwrap().is_empty());

    // A real repo2: stanza-create, check, full backup to repo2.
    let cluster = TestCluster::builder()
        .setting("archive_mode", "on")
        .setting(
            "archive_command",
            &format!(
                "'pgbackrest --config={} --stanza=t archive-push %p'",
                conf.display()
            ),
        )
        .start();
    let u = cluster.cluster().os_user().clone();
    for d in ["repo1", "log", "lock"] {
        let p = pre.path().join(d);
        std::fs::create_dir_all(&p).unwrap();
        costplus_fs::chown(&p, u.uid, u.gid).unwrap();
    }
    let c = cluster.cluster();
    let text = format!(
        "[global]\nrepo1-path={d}/repo1\nrepo2-type=s3\nrepo2-path=/pgbackrest\nrepo2-s3-bucket={BUCKET}\n\
         repo2-s3-endpoint=localhost\nrepo2-storage-port={port}\nrepo2-storage-ca-file={ca}\n\
         repo2-s3-uri-style=path\nrepo2-s3-region=us-east-1\nrepo2-s3-key={key}\nrepo2-s3-key-secret={secret}\n\
         repo2-cipher-type=aes-256-cbc\nrepo2-cipher-pass={pass}\nlog-path={d}/log\nlock-path={d}/lock\n\
         start-fast=y\narchive-timeout=60\n\n[t]\npg1-path={data}\npg1-port={pgport}\npg1-socket-path={socket}\npg1-user={su}\n",
        d = pre.path().display(),
        port = e.s3.port(),
        ca = e.s3.ca_file().display(),
        key = e.s3.access_key(),
        secret = e.s3.secret_key(),
        pass = random_string(48),
        data = c.data_dir().display(),
        pgport = c.port(),
        socket = c.socket_dir().display(),
        su = c.superuser(),
    );
    cluster.write_server_file(&conf, text.as_bytes());
    let pgbr = |args: &[&str]| {
        let mut cmd = Command::new(require_tool("pgbackrest"));
        cmd.arg(format!("--config={}", conf.display()))
            .arg("--stanza=t")
            .args(args);
        c.as_server_user(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "pgbackrest {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    pgbr(&["stanza-create"]);
    pgbr(&["check"]);
    pgbr(&["backup", "--repo=2", "--type=full"]);
    pgbr(&["check"]);

    // verify runs pgBackRest itself (the [backup] section) and passes: exit 0.
    let out = offsite(&e, &["verify", "--format", "json", "--sample", "0"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert_eq!(v["compared_with_pgbackrest"], true, "{v:#}");
    // Human output too.
    let out = offsite(&e, &["verify"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK "));

    // Delete backup.info.copy: exit 3, and the problem names the object.
    let copy = "pgbackrest/backup/t/backup.info.copy";
    std::fs::remove_file(e.s3.object_path(BUCKET, copy)).unwrap();
    let out = offsite(&e, &["verify", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key"] == copy),
        "{v:#}"
    );

    // cost measures the repository (pgBackRest's record of the full backup).
    let out = offsite(&e, &["cost", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = json(&out);
    assert!(
        c["measured"][0]["full_bytes"].as_f64().unwrap() > 0.0,
        "{c:#}"
    );
    assert_eq!(
        c["monthly_usd"], 6.99,
        "a tiny repository costs the minimum"
    );
}

/// The documented surface: `--help` of the binary and of `verify`, and the JSON of `cost` for
/// fixed inputs (no server needed).
#[test]
fn snapshots() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_costplus-offsite"))
            .args(args)
            .env_remove("COSTPLUS_CONFIG")
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    insta::assert_snapshot!("help", run(&["--help"]));
    insta::assert_snapshot!("verify_help", run(&["verify", "--help"]));
    // 100 GB full weekly, 10 GB incremental daily, 20 GB of WAL a day, kept 30 days (time).
    let cost = run(&[
        "cost",
        "--no-measure",
        "--no-pgbackrest",
        "--full-bytes",
        "100e9",
        "--incr-bytes",
        "10e9",
        "--wal-bytes-per-day",
        "20e9",
        "--retention-days",
        "30",
        "--format",
        "json",
    ]);
    // Snapshot the bytes the binary printed: re-parsing them would make the figures depend on
    // serde_json's float parsing, which changes with feature unification across the workspace.
    let v: serde_json::Value = serde_json::from_str(&cost).unwrap();
    assert!(v["monthly_usd"].as_f64().unwrap() > 0.0, "{cost}");
    insta::assert_snapshot!("cost_json", cost);
}
