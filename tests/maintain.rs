//! `costplus-maintain` and the exporter's operations metrics against a real sandbox (PostgreSQL,
//! pgBackRest with both repositories, the S3 server): a daily run takes the scheduled backups
//! and pings the heartbeat; a second daily run finds them taken; a failing run withholds the
//! heartbeat; the monthly run drills both repositories; the exporter then reports backup ages,
//! drill results, certificate days, maintenance results and audit failures.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use costplus_testsupport::sandbox::{Sandbox, ok};
use costplus_testsupport::{require_tool, workspace_bin};

/// `costplus-maintain ARGS --format json` with `config`.
fn maintain(config: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("costplus-maintain"))
        .args(args)
        .args(["--format", "json"])
        .env("COSTPLUS_CONFIG", config)
        .output()
        .unwrap()
}

/// A tiny HTTP server that records the request lines it receives and answers 200.
fn monitor() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            log.lock().unwrap().push(line.trim().to_string());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (format!("http://{addr}"), seen)
}

fn step<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {record:#}"))
}

fn scrape(config: &Path) -> String {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(workspace_bin("costplus-exporter"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("COSTPLUS_CONFIG", config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut text = None;
    for _ in 0..100 {
        if let Ok(out) = Command::new(require_tool("curl"))
            .args(["-fsS", &url])
            .output()
            && out.status.success()
        {
            text = Some(String::from_utf8(out.stdout).unwrap());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    text.expect("the exporter never answered")
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn maintenance_runs_heartbeats_and_the_metrics_they_feed() {
    require_tool("pgbackrest");
    let sb = Sandbox::up("costplus-e2e-maintain-");
    let (url, seen) = monitor();
    let state = sb.dir.join("maintenance-state");
    let config = sb.config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[maintenance]\nstate_dir = {:?}\nheartbeat_daily = \"{url}/ping/daily-token\"\nheartbeat_monthly = \"{url}/ping/monthly-token\"\nheartbeat_method = \"post\"\n",
        state.to_str().unwrap()
    ));
    std::fs::write(&config, &text).unwrap();

    // The plan runs nothing and sends nothing.
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&maintain(&config, &["daily", "--plan"]))).unwrap();
    let names: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backup", "status", "offsite", "disk"]);
    assert!(seen.lock().unwrap().is_empty());
    assert!(!state.exists(), "the plan wrote {}", state.display());

    // Daily: today's backup in both repositories, status, offsite verify, disks: all ok, pinged.
    let out = maintain(&config, &["daily"]);
    let daily: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(daily["ok"], true, "{daily:#}");
    let backup = step(&daily, "backup");
    assert_eq!(backup["status"], "ok", "{backup:#}");
    assert_eq!(
        backup["details"]["taken"].as_array().unwrap().len(),
        2,
        "{backup:#}"
    );
    assert_eq!(step(&daily, "status")["status"], "ok");
    assert_eq!(step(&daily, "offsite")["status"], "ok", "{daily:#}");
    assert_eq!(step(&daily, "disk")["status"], "ok");
    assert_eq!(daily["heartbeat"]["result"], "sent", "{daily:#}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["POST /ping/daily-token HTTP/1.1"]
    );
    let record: PathBuf = daily["record_file"].as_str().unwrap().into();
    assert!(record.starts_with(&state) && record.is_file());
    assert!(state.join("last-daily.json").is_file());
    // The token in the heartbeat URL is not written anywhere.
    assert!(
        !std::fs::read_to_string(&record)
            .unwrap()
            .contains("daily-token")
    );

    // A second daily run finds today's backups taken by the first.
    let again: serde_json::Value =
        serde_json::from_str(&ok(&maintain(&config, &["daily"]))).unwrap();
    let b = step(&again, "backup");
    assert_eq!(b["details"]["taken"].as_array().unwrap().len(), 0, "{b:#}");
    assert_eq!(
        b["details"]["already_taken"].as_array().unwrap().len(),
        2,
        "{b:#}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A run that fails (the offsite bucket does not exist) withholds the heartbeat, exit 3.
    let broken = sb.dir.join("broken.toml");
    let bucket_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("bucket"))
        .unwrap()
        .to_string();
    std::fs::write(
        &broken,
        text.replace(&bucket_line, "bucket = \"no-such-bucket\""),
    )
    .unwrap();
    let out = maintain(&broken, &["daily"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed["ok"], false);
    assert_eq!(step(&failed, "offsite")["status"], "failed", "{failed:#}");
    assert_eq!(failed["heartbeat"]["result"], "withheld_run_failed");
    assert_eq!(seen.lock().unwrap().len(), 2, "a failed run pinged");

    // Weekly: the failed login just made shows in the log review; the audit ran.
    let env = sb.env.clone();
    let bad = Command::new(require_tool("psql"))
        .env_clear()
        .envs(&env)
        .env("PGUSER", "no_such_role")
        .env("PGPASSWORD", "wrong")
        .args(["-XAtqc", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // The logging collector writes the FATAL line asynchronously: wait until it is there.
    let log = std::path::PathBuf::from(&env["COSTPLUS_SERVER_LOG"]);
    for _ in 0..50 {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("no_such_role")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = maintain(&config, &["weekly"]);
    let weekly: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let review = step(&weekly, "log-review");
    assert_eq!(review["status"], "ok", "{review:#}");
    assert!(
        review["details"]["total_failures"].as_u64().unwrap() >= 1,
        "{review:#}"
    );
    assert!(
        step(&weekly, "audit")["details"]["score"]
            .as_u64()
            .is_some()
    );
    assert_eq!(weekly["heartbeat"]["result"], "not_configured");

    // Monthly: a restore drill from each repository, the certificate, the audit.
    let out = maintain(&config, &["monthly"]);
    let monthly: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drill = step(&monthly, "drill");
    assert_eq!(drill["status"], "ok", "{drill:#}");
    assert_eq!(drill["details"]["drills"].as_array().unwrap().len(), 2);
    let expiry = step(&monthly, "expiry");
    assert_eq!(expiry["status"], "ok", "{expiry:#}");
    assert!(expiry["details"]["days_left"].as_i64().unwrap() >= 30);
    let audit = step(&monthly, "audit");
    assert!(audit["details"]["score"].as_u64().is_some(), "{audit:#}");
    // Exit code and heartbeat follow the run's result.
    if monthly["ok"] == true {
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(monthly["heartbeat"]["result"], "sent");
    } else {
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(monthly["heartbeat"]["result"], "withheld_run_failed");
    }

    // The exporter now reports what the runs left behind.
    let m = scrape(&config);
    assert_eq!(sample(&m, "costplus_up{"), 1.0, "{m}");
    for repo in ["1", "2"] {
        let age = sample(
            &m,
            &format!("costplus_backup_age_seconds{{server=\"sandbox\",repo=\"{repo}\"}}"),
        );
        assert!((0.0..3600.0).contains(&age), "repo{repo} age {age}");
        assert_eq!(
            sample(
                &m,
                &format!("costplus_drill_ok{{server=\"sandbox\",repo=\"{repo}\"}}")
            ),
            1.0
        );
        assert!(
            sample(
                &m,
                &format!("costplus_drill_duration_seconds{{server=\"sandbox\",repo=\"{repo}\"}}")
            ) > 0.0
        );
    }
    let days = sample(&m, "costplus_certificate_days_left{server=\"sandbox\"");
    assert_eq!(
        days as i64,
        expiry["details"]["days_left"].as_i64().unwrap()
    );
    // The last daily run is the one that failed; the monthly's result is what it was.
    assert_eq!(
        sample(
            &m,
            "costplus_maintenance_ok{server=\"sandbox\",period=\"daily\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "costplus_maintenance_ok{server=\"sandbox\",period=\"monthly\"}"
        ),
        if monthly["ok"] == true { 1.0 } else { 0.0 }
    );
    let failures = audit["details"]["failures_by_severity"]["high"]
        .as_f64()
        .unwrap_or(0.0);
    assert_eq!(
        sample(
            &m,
            "costplus_audit_failures{server=\"sandbox\",severity=\"high\"}"
        ),
        failures
    );
    assert_eq!(
        sample(&m, "costplus_audit_score{server=\"sandbox\"}"),
        audit["details"]["score"].as_f64().unwrap()
    );
}

#[test]
fn install_writes_units_and_timers_and_the_plan_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("costplus.toml");
    std::fs::write(
        &config,
        "[[servers]]\nname = \"a\"\nhost = \"/tmp\"\nport = 5432\n",
    )
    .unwrap();
    let units = dir.path().join("units");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "install",
            "--dir",
            units.to_str().unwrap(),
            "--binary",
            "/usr/local/bin/costplus-maintain",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        Command::new(workspace_bin("costplus-maintain"))
            .args(&args)
            .env("COSTPLUS_CONFIG", &config)
            .output()
            .unwrap()
    };
    let plan: serde_json::Value = serde_json::from_str(&ok(&run(&["--plan"]))).unwrap();
    assert_eq!(plan["files"].as_array().unwrap().len(), 6);
    assert!(!units.exists());
    let done: serde_json::Value = serde_json::from_str(&ok(&run(&[]))).unwrap();
    assert_eq!(done["written"].as_array().unwrap().len(), 6);
    let service = std::fs::read_to_string(units.join("costplus-maintain-monthly.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart=/usr/local/bin/costplus-maintain --config {} monthly",
            config.display()
        )),
        "{service}"
    );
    let timer = std::fs::read_to_string(units.join("costplus-maintain-daily.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:30:00") && timer.contains("Persistent=true"));
    // systemd itself accepts the calendars.
    let sa = require_tool("systemd-analyze");
    for p in ["daily", "weekly", "monthly"] {
        let t =
            std::fs::read_to_string(units.join(format!("costplus-maintain-{p}.timer"))).unwrap();
        let cal = t
            .lines()
            .find_map(|l| l.strip_prefix("OnCalendar="))
            .unwrap();
        let out = Command::new(&sa).args(["calendar", cal]).output().unwrap();
        assert!(out.status.success(), "{cal}: {out:?}");
    }
    assert!(
        done["crontab"]
            .as_str()
            .unwrap()
            .contains("30 2 * * * root /usr/local/bin/costplus-maintain --config")
    );
}
