//! The incident report on a real cluster with injected failures.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::time::Duration;

use costplus_core::fail2ban::Bans;
use costplus_core::incident::{Inputs, collect, render_text};
use costplus_pgcluster::connect::connect;
use costplus_testsupport::TestCluster;

#[tokio::test]
async fn report_shows_failures_sessions_and_long_queries() {
    let c = TestCluster::builder()
        .setting("log_connections", "on")
        .start();
    let admin = c.connect().await;
    admin
        .batch_execute("CREATE ROLE acme_user LOGIN PASSWORD 'pw-acme'")
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE acme_db OWNER acme_user")
        .await
        .unwrap();

    // Injected failures: three wrong passwords and an unknown role.
    for user in ["acme_user", "acme_user", "acme_user", "ghost"] {
        let mut o = c.connect_options("acme_db");
        o.user = user.into();
        o.password = Some("wrong".to_string().into());
        assert!(connect(&o).await.is_err());
    }
    // A customer session running a long query, and an idle one.
    let mut o = c.connect_options("acme_db");
    o.user = "acme_user".into();
    o.password = Some("pw-acme".to_string().into());
    let busy = connect(&o).await.unwrap();
    let _idle = connect(&o).await.unwrap();
    let sleeper = tokio::spawn(async move { busy.batch_execute("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let report = collect(
        Ok(c.connect().await),
        Inputs {
            server: "test".into(),
            since: chrono::Utc::now() - chrono::Duration::hours(1),
            log_file: Some(c.log_file()),
            extra_paths: vec![("repository".into(), std::env::temp_dir())],
            long_running_seconds: 1,
            bans: Bans::Unknown {
                reason: "not running in tests".into(),
            },
        },
    )
    .await;
    sleeper.abort();

    assert!(
        report.state.accepting_connections,
        "{:?}",
        report.state.error
    );
    assert_eq!(report.state.in_recovery, Some(false));
    assert!(report.state.uptime_seconds.unwrap() >= 0);
    assert_eq!(report.failed_logins.total_failures, 4);
    let fatal = report
        .fatal
        .iter()
        .find(|g| g.cause == "password authentication failed for user \"…\"")
        .unwrap();
    assert_eq!(fatal.count, 4, "{:#?}", report.fatal);
    let acme = report
        .sessions
        .iter()
        .find(|s| s.database == "acme_db")
        .unwrap();
    assert_eq!(
        (acme.user.as_str(), acme.total, acme.active),
        ("acme_user", 2, 1)
    );
    assert_eq!(report.long_running.len(), 1, "{:#?}", report.long_running);
    assert!(report.long_running[0].query.contains("pg_sleep"));
    let labels: Vec<&str> = report.disk.iter().map(|d| d.label.as_str()).collect();
    assert_eq!(labels, ["data", "wal", "repository"]);
    assert!(
        report.disk.iter().all(|d| d.error.is_none()),
        "{:#?}",
        report.disk
    );

    let text = render_text(&report);
    assert!(
        text.contains("failed logins: 4") && text.contains("pg_sleep"),
        "{text}"
    );
    // Nothing in the report carries the customer's password.
    assert!(!serde_json::to_string(&report).unwrap().contains("pw-acme"));
}

#[tokio::test]
async fn unreachable_server_is_reported_not_fatal() {
    let report = collect(
        Err("connection refused".into()),
        Inputs {
            server: "down".into(),
            since: chrono::Utc::now(),
            log_file: Some("/no/such/log".into()),
            extra_paths: vec![],
            long_running_seconds: 60,
            bans: Bans::Unknown { reason: "x".into() },
        },
    )
    .await;
    assert!(!report.state.accepting_connections);
    assert_eq!(report.state.error.as_deref(), Some("connection refused"));
    assert!(
        report
            .log_error
            .as_deref()
            .unwrap()
            .contains("/no/such/log")
    );
    assert!(render_text(&report).contains("accepting connections: NO (connection refused)"));
}
