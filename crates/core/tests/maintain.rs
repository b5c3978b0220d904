//! Maintenance runs: records on disk, heartbeats to a local HTTP endpoint only on success.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::sync::{Arc, Mutex};

use costplus_core::maintain::{
    HeartbeatMethod, HeartbeatResult, MaintenanceConfig, Period, Step, StepOutcome, run,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP endpoint that records every request it receives (head and body).
async fn monitor() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/ping/token-123",
        listener.local_addr().unwrap().port()
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            // Read the head, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&got).to_string());
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK")
                .await
                .unwrap();
        }
    });
    (url, seen)
}

fn step(name: &'static str, outcome: StepOutcome) -> Step<'static> {
    Step {
        name,
        run: Box::new(move || Box::pin(async move { outcome })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_only_after_success() {
    let (url, seen) = monitor().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = MaintenanceConfig {
        state_dir: dir.path().into(),
        heartbeat_daily: Some(url.clone()),
        heartbeat_weekly: Some(url.clone()),
        ..Default::default()
    };

    let good = run(
        Period::Daily,
        "s",
        vec![
            step("status", StepOutcome::ok("up")),
            step(
                "offsite",
                StepOutcome::Skipped {
                    reason: "none".into(),
                },
            ),
        ],
        &cfg,
    )
    .await
    .unwrap();
    assert!(good.ok);
    assert_eq!(good.heartbeat, HeartbeatResult::Sent { status: 200 });
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(seen.lock().unwrap()[0].starts_with("GET /ping/token-123 HTTP/1.1"));

    let bad = run(
        Period::Weekly,
        "s",
        vec![step("audit", StepOutcome::failed("3 high findings"))],
        &cfg,
    )
    .await
    .unwrap();
    assert!(!bad.ok);
    assert_eq!(bad.heartbeat, HeartbeatResult::WithheldRunFailed);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a failed run pinged the monitor"
    );

    cfg.heartbeat_method = HeartbeatMethod::Post;
    let posted = run(
        Period::Daily,
        "s",
        vec![step("status", StepOutcome::ok("up"))],
        &cfg,
    )
    .await
    .unwrap();
    assert_eq!(posted.heartbeat, HeartbeatResult::Sent { status: 200 });
    let req = seen.lock().unwrap()[1].clone();
    assert!(req.starts_with("POST /ping/token-123"), "{req}");
    let body = &req[req.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["period"], "daily");
    assert_eq!(json["ok"], true);

    // Every run left a record.
    let records = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("daily-")
        })
        .count();
    assert!(records >= 1);
    assert!(dir.path().join("last-weekly.json").is_file());
}

#[tokio::test]
async fn unreachable_monitor_is_recorded_without_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = MaintenanceConfig {
        state_dir: dir.path().into(),
        heartbeat_daily: Some(format!("http://127.0.0.1:{port}/SECRET-TOKEN")),
        ..Default::default()
    };
    let r = run(
        Period::Daily,
        "s",
        vec![step("status", StepOutcome::ok("up"))],
        &cfg,
    )
    .await
    .unwrap();
    match &r.heartbeat {
        HeartbeatResult::Error { message } => {
            assert!(!message.contains("SECRET-TOKEN"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
