//! `costplus sandbox up|status|env|down` from the outside, as a newcomer runs it.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::collections::BTreeMap;
use std::process::Command;

use costplus_testsupport::sandbox::ok;
use costplus_testsupport::{require_tool, workspace_bin};

fn costplus(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("costplus"))
        .args(args)
        .output()
        .unwrap()
}

struct Sandbox {
    dir: std::path::PathBuf,
    _parent: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let parent = tempfile::Builder::new()
            .prefix("costplus-e2e-")
            .tempdir()
            .unwrap();
        // The postgres OS user must be able to enter it.
        std::fs::set_permissions(
            parent.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Sandbox {
            dir: parent.path().join("sb"),
            _parent: parent,
        }
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["sandbox"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", self.dir.to_str().unwrap()]);
        costplus(&all)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (k, v) = l.strip_prefix("export ").unwrap().split_once('=').unwrap();
            (k.to_string(), v.trim_matches('\'').to_string())
        })
        .collect()
}

#[test]
fn up_env_status_down() {
    let sb = Sandbox::new();
    let first = ok(&sb.run(&["up", "--format", "json"]));
    let report: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(report["created"], true);
    assert_eq!(report["postgres_running"], true);
    assert_eq!(report["s3_running"], true);

    // Idempotent: a second `up` reuses everything.
    let second: serde_json::Value =
        serde_json::from_str(&ok(&sb.run(&["up", "--format", "json"]))).unwrap();
    assert_eq!(second["created"], false);
    assert_eq!(second["state"], report["state"]);

    let env = env_map(&ok(&sb.run(&["env"])));
    for key in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "COSTPLUS_CONFIG",
        "COSTPLUS_SERVER_LOG",
        "COSTPLUS_DATA_DIR",
        "COSTPLUS_S3_ENDPOINT",
        "COSTPLUS_S3_BUCKET",
        "COSTPLUS_S3_CA",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            env.get(key).is_some_and(|v| !v.is_empty()),
            "{key} missing from env: {env:?}"
        );
    }
    assert_eq!(env["PGSSLMODE"], "verify-full");

    // psql with exactly the printed variables connects with verify-full over TLS.
    let out = Command::new(require_tool("psql"))
        .env_clear()
        .envs(&env)
        .args([
            "-XAtc",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "t");
    // The server log is where env says, and it logs connections with the client host.
    let log = std::fs::read_to_string(&env["COSTPLUS_SERVER_LOG"]).unwrap();
    assert!(log.contains("connection authorized"), "{log}");

    // The S3 endpoint answers over TLS with the printed CA, and refuses a wrong key.
    let cfg = sb.dir.join("curl.cfg");
    std::fs::write(
        &cfg,
        format!(
            "user = \"{}:{}\"\n",
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        ),
    )
    .unwrap();
    let url = format!(
        "{}/{}?list-type=2",
        env["COSTPLUS_S3_ENDPOINT"], env["COSTPLUS_S3_BUCKET"]
    );
    let out = Command::new(require_tool("curl"))
        .args(["-sS", "--fail", "-K"])
        .arg(&cfg)
        .args([
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--cacert",
            &env["COSTPLUS_S3_CA"],
            &url,
        ])
        .output()
        .unwrap();
    assert!(ok(&out).contains("ListBucketResult"));

    // fail2ban: rendered for the sandbox's port and log; a failed login shows as an attacker.
    let f2b = sb.dir.join("f2b");
    let out = Command::new(workspace_bin("costplus-fail2ban"))
        .env("COSTPLUS_CONFIG", &env["COSTPLUS_CONFIG"])
        .args(["render", "--out", f2b.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&out);
    let jail = std::fs::read_to_string(f2b.join("jail.d/costplus-postgresql.conf")).unwrap();
    assert!(
        jail.contains(&format!("port     = {}", env["PGPORT"])),
        "{jail}"
    );
    assert!(
        jail.contains(&format!("logpath  = {}", env["COSTPLUS_SERVER_LOG"])),
        "{jail}"
    );
    assert!(f2b.join("filter.d/costplus-postgresql.conf").is_file());
    let mut bad = env.clone();
    bad.insert("PGPASSWORD".into(), "wrong".into());
    let out = Command::new(require_tool("psql"))
        .env_clear()
        .envs(&bad)
        .args(["-XAtc", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The server's logging collector writes the FATAL line asynchronously: give it a moment.
    let mut report = serde_json::Value::Null;
    for _ in 0..50 {
        let out = Command::new(workspace_bin("costplus"))
            .env("COSTPLUS_CONFIG", &env["COSTPLUS_CONFIG"])
            .args(["fail2ban", "attackers", "--format", "json"])
            .output()
            .unwrap();
        report = serde_json::from_str(&ok(&out)).unwrap();
        if report["report"]["total_failures"].as_u64() >= Some(1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        report["report"]["total_failures"].as_u64().unwrap() >= 1,
        "{report}"
    );

    // The incident report sees the server and the failed login, and is written privately.
    let report_file = sb.dir.join("incident.json");
    let out = Command::new(workspace_bin("costplus-incident"))
        .env("COSTPLUS_CONFIG", &env["COSTPLUS_CONFIG"])
        .args([
            "report",
            "--format",
            "json",
            "--out",
            report_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["state"]["accepting_connections"], true, "{report}");
    assert!(
        report["failed_logins"]["total_failures"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(written["generated_at"], report["generated_at"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&report_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The exporter serves the sandbox's metrics to a real HTTP client.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut exporter = Command::new(workspace_bin("costplus-exporter"))
        .env("COSTPLUS_CONFIG", &env["COSTPLUS_CONFIG"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = (0..50)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let out = Command::new(require_tool("curl"))
                .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8(out.stdout).unwrap())
        })
        .expect("the exporter never answered");
    let health = Command::new(require_tool("curl"))
        .args(["-sf", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .unwrap();
    exporter.kill().unwrap();
    let _ = exporter.wait();
    assert!(
        metrics.contains("costplus_up{server=\"sandbox\"} 1"),
        "{metrics}"
    );
    assert_eq!(ok(&health).trim(), "ok");

    // The audit reads the sandbox: JSON with checks and a score, SARIF 2.1.0.
    let out = Command::new(workspace_bin("costplus-audit"))
        .env("COSTPLUS_CONFIG", &env["COSTPLUS_CONFIG"])
        .args(["--format", "json"])
        .output()
        .unwrap();
    let audit: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(audit["checks"].as_array().unwrap().len() >= 40);
    assert!(audit["score"].as_u64().unwrap() <= 100);
    let tls = audit["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "TLS-002")
        .unwrap();
    assert_eq!(tls["status"], "pass", "{tls}");
    let out = Command::new(workspace_bin("costplus"))
        .env("COSTPLUS_CONFIG", &env["COSTPLUS_CONFIG"])
        .args(["audit", "--format", "sarif"])
        .output()
        .unwrap();
    let sarif: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(sarif["version"], "2.1.0");

    // The acceptance probe of the TLS issue: only TLS 1.2 and 1.3, trusted with the sandbox CA.
    let out = Command::new(workspace_bin("costplus-tls"))
        .args([
            "probe",
            "--host",
            "127.0.0.1",
            "--port",
            &env["PGPORT"],
            "--ca",
            &env["PGSSLROOTCERT"],
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let probe: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    for (v, verdict) in [
        ("SSLv3", "refused"),
        ("TLSv1.0", "refused"),
        ("TLSv1.1", "refused"),
        ("TLSv1.2", "accepted"),
        ("TLSv1.3", "accepted"),
    ] {
        assert_eq!(probe["protocols"][v], verdict, "{v}: {probe}");
    }
    assert_eq!(probe["certificate"]["trusted"], true, "{probe}");

    let status = ok(&sb.run(&["status"]));
    assert!(status.contains("postgres   running"), "{status}");

    // The configuration is what every command will read.
    let config = std::fs::read_to_string(&env["COSTPLUS_CONFIG"]).unwrap();
    assert!(
        config.contains(&format!("port = {}", env["PGPORT"])),
        "{config}"
    );
    assert!(
        !config.contains(&env["PGPASSWORD"]),
        "the password leaked into costplus.toml"
    );

    let down = ok(&sb.run(&["down"]));
    assert!(down.contains("stopped and removed"), "{down}");
    assert!(!sb.dir.exists());
    let again = ok(&sb.run(&["down"]));
    assert!(again.contains("no sandbox"), "{again}");
}

#[test]
fn up_restarts_what_was_stopped() {
    let sb = Sandbox::new();
    ok(&sb.run(&["up"]));
    let env = env_map(&ok(&sb.run(&["env"])));
    // Stop PostgreSQL behind the sandbox's back, and the S3 server too.
    let pg_ctl = std::path::Path::new(&env["COSTPLUS_DATA_DIR"]).to_path_buf();
    let pid = std::fs::read_to_string(pg_ctl.join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let s3pid = std::fs::read_to_string(sb.dir.join("s3/s3.pid")).unwrap();
    Command::new("kill").arg(s3pid.trim()).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ok(&sb.run(&["status", "--format", "json"]))).unwrap();
        if st["postgres_running"] == false && st["s3_running"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "servers did not stop: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let report: serde_json::Value =
        serde_json::from_str(&ok(&sb.run(&["up", "--format", "json"]))).unwrap();
    assert_eq!(report["created"], false);
    assert_eq!(report["postgres_running"], true);
    assert_eq!(report["s3_running"], true);
}

#[test]
fn status_of_a_missing_sandbox_is_a_clear_error() {
    let sb = Sandbox::new();
    let out = sb.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no sandbox in") && err.contains("costplus sandbox up"),
        "{err}"
    );
}
