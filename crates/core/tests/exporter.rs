//! The exporter scraped by a real HTTP client (curl) against a real cluster.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

mod common;

use std::process::Command;
use std::time::Duration;

use costplus_core::config::Config;
use costplus_core::exporter::Exporter;
use costplus_testsupport::{TestCluster, require_tool};

fn config_for(c: &TestCluster, dir: &std::path::Path) -> Config {
    let (mut config, _) = common::config_of(c);
    config.path = dir.join("costplus.toml");
    config
}

fn curl(url: &str) -> (u32, String) {
    let out = Command::new(require_tool("curl"))
        .args(["-sS", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_the_server() {
    let c = TestCluster::builder()
        .setting("log_connections", "on")
        .start();
    let admin = c.connect().await;
    for sql in [
        "CREATE ROLE acme_user LOGIN",
        "CREATE DATABASE acme_db OWNER acme_user",
        "CREATE ROLE beta_user LOGIN",
        "CREATE DATABASE beta_db OWNER acme_user", // wrong owner: not a customer
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let _session = c.connect_db("acme_db").await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::new(config_for(&c, dir.path()), Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(exporter.serve(listener, async {
        let _ = rx.await;
    }));

    let base = format!("http://127.0.0.1:{port}");
    let (code, metrics) = tokio::task::spawn_blocking({
        let url = format!("{base}/metrics");
        move || curl(&url)
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert_eq!(
        value(&metrics, "costplus_up{server=\"t\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "costplus_customers{server=\"t\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "costplus_connections{server=\"t\",database=\"acme_db\",user=\"postgres\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE costplus_up gauge"));
    assert!(
        value(
            &metrics,
            "costplus_failed_logins{server=\"t\",window=\"1h\"}"
        )
        .is_some(),
        "{metrics}"
    );
    let (code, _) = tokio::task::spawn_blocking({
        let url = format!("{base}/healthz");
        move || curl(&url)
    })
    .await
    .unwrap();
    assert_eq!(code, 200);

    // The server goes down: after the cache expires, up is 0 and health fails.
    c.cluster().stop_mode("immediate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, metrics) = tokio::task::spawn_blocking({
        let url = format!("{base}/metrics");
        move || curl(&url)
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        value(&metrics, "costplus_up{server=\"t\"}"),
        Some(0.0),
        "{metrics}"
    );
    let (code, _) = tokio::task::spawn_blocking({
        let url = format!("{base}/healthz");
        move || curl(&url)
    })
    .await
    .unwrap();
    assert_eq!(code, 503);
    let (code, _) = tokio::task::spawn_blocking(move || curl(&format!("{base}/nope")))
        .await
        .unwrap();
    assert_eq!(code, 404);
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
