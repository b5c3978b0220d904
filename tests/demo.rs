//! The README's first command runs `costplus sandbox demo`: it must pass from nothing, and a
//! second run must pass too.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::process::Command;

use costplus_testsupport::workspace_bin;

#[test]
fn demo_passes_twice() {
    let parent = tempfile::Builder::new()
        .prefix("costplus-demo-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = parent.path().join("sb");
    let d = dir.to_str().unwrap();
    for round in 1..=2 {
        let out = Command::new(workspace_bin("costplus"))
            .args(["sandbox", "demo", "--dir", d, "--format", "json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "round {round}: {e}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(
            out.status.success() && report["ok"] == true,
            "round {round}: {report:#}"
        );
        let steps = report["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 10);
        let rows = steps
            .iter()
            .find(|s| s["title"].as_str().unwrap().starts_with("connect as acme"))
            .unwrap();
        assert!(
            rows["result"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{} rows", round * 100)),
            "{rows}"
        );
        if round == 2 {
            assert!(
                steps[1]["result"]
                    .as_str()
                    .unwrap()
                    .starts_with("already there"),
                "{}",
                steps[1]
            );
        }
    }
    let _ = Command::new(workspace_bin("costplus"))
        .args(["sandbox", "down", "--dir", d])
        .output();
}
