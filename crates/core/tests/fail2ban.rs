//! The fail2ban filter against reality: a real cluster receives failed logins from distinct
//! client addresses (127.0.0.N all reach loopback on Linux), and the real `fail2ban-regex`
//! must match every failure with the right address and no successful login.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::collections::BTreeMap;
use std::net::IpAddr;

use costplus_core::{fail2ban, pglog};
use costplus_pgcluster::connect::{ConnectOptions, SslMode, connect};
use costplus_testsupport::{TestCluster, require_tool};

const HBA: &str = "\
local   all   postgres   peer map=costplus_admin
local   all   all        scram-sha-256
hostssl all   postgres   127.0.0.1/32   scram-sha-256
hostssl app   blocked    127.0.0.0/8    reject
hostssl app   all        127.0.0.0/8    scram-sha-256
";

async fn attempt(
    c: &TestCluster,
    from: &str,
    user: &str,
    db: &str,
    password: &str,
    tls: bool,
) -> bool {
    let mut o = ConnectOptions::new("127.0.0.1", c.port(), user, db);
    o.password = Some(password.to_string().into());
    o.bind = Some(from.parse().unwrap());
    o.ssl = if tls {
        SslMode::VerifyFull {
            ca_file: c.ca_file(),
            server_name: Some("localhost".into()),
        }
    } else {
        SslMode::Disable
    };
    connect(&o).await.is_ok()
}

#[tokio::test]
async fn filter_matches_every_failed_login_and_no_success() {
    let mut b = TestCluster::builder().hba(HBA);
    for (k, v) in fail2ban::required_settings() {
        b = b.setting(k, &format!("'{v}'"));
    }
    let c = b.start();
    let admin = c.connect().await;
    for sql in [
        "CREATE DATABASE app",
        "CREATE DATABASE other",
        "CREATE ROLE alice LOGIN PASSWORD 'right-password'",
        "CREATE ROLE blocked LOGIN PASSWORD 'x'",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }

    for _ in 0..2 {
        assert!(
            !attempt(&c, "127.0.0.2", "alice", "app", "wrong", true).await,
            "wrong password accepted"
        );
        assert!(
            !attempt(&c, "127.0.0.3", "mallory", "app", "whatever", true).await,
            "unknown user accepted"
        );
        assert!(
            !attempt(&c, "127.0.0.4", "alice", "other", "right-password", true).await,
            "no hba entry accepted"
        );
        assert!(
            !attempt(&c, "127.0.0.5", "alice", "app", "right-password", false).await,
            "plaintext accepted"
        );
        assert!(
            !attempt(&c, "127.0.0.6", "blocked", "app", "x", true).await,
            "reject line accepted"
        );
        assert!(
            attempt(&c, "127.0.0.9", "alice", "app", "right-password", true).await,
            "good login refused"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let rendered = fail2ban::render_to(
        dir.path(),
        &fail2ban::JailOptions {
            ports: vec![c.port()],
            logpath: c.log_file(),
            ..Default::default()
        },
    )
    .unwrap();
    let check = fail2ban::check_with_fail2ban_regex(
        &require_tool("fail2ban-regex"),
        &c.log_file(),
        &rendered.filter,
    )
    .unwrap();
    let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for ip in &check.matched {
        *counts.entry(*ip).or_default() += 1;
    }
    let expected: BTreeMap<IpAddr, usize> = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ]
    .iter()
    .map(|a| (a.parse().unwrap(), 2))
    .collect();
    assert_eq!(
        counts,
        expected,
        "fail2ban-regex matches differ; log:\n{}",
        c.log()
    );

    // Our own log reader classifies the same real lines.
    let failures = pglog::login_failures(&pglog::parse(&c.log()));
    let got: Vec<(String, pglog::FailureKind, bool)> = failures
        .iter()
        .map(|f| (f.host.clone(), f.kind, f.without_tls))
        .collect();
    use pglog::FailureKind::*;
    let one = vec![
        ("127.0.0.2".to_string(), WrongPassword, false),
        ("127.0.0.3".to_string(), UnknownRole, false),
        ("127.0.0.4".to_string(), NoHbaEntry, false),
        ("127.0.0.5".to_string(), NoHbaEntry, true),
        ("127.0.0.6".to_string(), Rejected, false),
    ];
    assert_eq!(got, [one.clone(), one].concat());
    let report = pglog::attackers(&failures, None);
    assert_eq!(report.total_failures, 10);
    assert_eq!(report.by_host.len(), 5);
    assert!(report.by_host.iter().all(|h| h.host != "127.0.0.9"));
}

#[test]
fn rendered_files_load_in_fail2ban() {
    // fail2ban-regex refuses a filter it cannot parse; a good filter on an empty log matches nothing.
    let dir = tempfile::tempdir().unwrap();
    let rendered = fail2ban::render_to(dir.path(), &fail2ban::JailOptions::default()).unwrap();
    let log = dir.path().join("empty.log");
    std::fs::write(&log, "").unwrap();
    let check = fail2ban::check_with_fail2ban_regex(
        &require_tool("fail2ban-regex"),
        &log,
        &rendered.filter,
    )
    .unwrap();
    assert!(check.matched.is_empty());
    let jail = std::fs::read_to_string(rendered.jail).unwrap();
    assert!(
        jail.contains("maxretry = 5") && jail.contains("bantime  = 1h"),
        "{jail}"
    );
}
