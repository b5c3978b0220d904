#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! `costplus-tls` end to end: the JSON contract of probe and inspect, exit codes, issue and
//! renew with --plan, against a real PostgreSQL server.

use std::path::Path;
use std::process::{Command, Output};

use costplus_testsupport::TestCluster;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_costplus-tls"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn probe_json_contract() {
    let c = TestCluster::start();
    let port = c.port().to_string();
    let ca = c.ca_file();
    let out = run(&[
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--ca",
        ca.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    let protocols = v["protocols"].as_object().unwrap();
    let names: Vec<&str> = protocols.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5);
    for (name, want) in [
        ("SSLv3", "refused"),
        ("TLSv1.0", "refused"),
        ("TLSv1.1", "refused"),
        ("TLSv1.2", "accepted"),
        ("TLSv1.3", "accepted"),
    ] {
        assert_eq!(protocols[name], want, "{name}");
    }
    assert_eq!(v["certificate"]["trusted"], true);
    assert_eq!(v["certificate"]["dns_names"][0], "localhost");
    assert!(v["certificate"]["days_left"].as_i64().unwrap() > 390);
    for f in v["findings"].as_array().unwrap() {
        assert!(
            f["id"].is_string() && f["severity"].is_string() && f["message"].is_string(),
            "{f}"
        );
    }
    // Human output names the versions.
    let out = run(&[
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--servername",
        "localhost",
        "--no-ciphers",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TLSv1.3  accepted") && text.contains("SSLv3    refused"),
        "{text}"
    );
}

#[test]
fn probe_errors_exit_1_with_a_clear_message() {
    let port = costplus_pgcluster_free_port();
    let out = run(&[
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--timeout",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    let out = run(&["probe", "--port", "5432"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--host is required: a usage error"
    );
}

fn costplus_pgcluster_free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn inspect_json_contract_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ca_crt, ca_key, crt, key) = (
        d.join("ca.crt"),
        d.join("ca.key"),
        d.join("server.crt"),
        d.join("server.key"),
    );
    // issue --plan writes nothing.
    let issue = |extra: &[&str]| {
        let mut a = vec![
            "issue",
            "--ca-cert",
            &s(&ca_crt),
            "--ca-key",
            &s(&ca_key),
            "--create-ca",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        a.extend(
            [
                "--cert",
                &s(&crt),
                "--key",
                &s(&key),
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--owner",
                "postgres",
                "--format",
                "json",
            ]
            .map(String::from),
        );
        a.extend(extra.iter().map(|x| x.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&a)
    };
    let out = issue(&["--plan"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["done"] == false),
        "{v}"
    );
    assert!(!ca_crt.exists() && !key.exists(), "a plan writes nothing");
    let out = issue(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Issuing again backs the old key up first.
    let old_key = std::fs::read(&key).unwrap();
    let v = json(&issue(&["--key-type", "rsa3072"]));
    let backups: Vec<String> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(backups.len(), 2, "{v}");
    let kb = backups
        .iter()
        .find(|b| b.contains("server.key.bak-"))
        .unwrap();
    assert_eq!(std::fs::read(kb).unwrap(), old_key);

    let out = run(&[
        "inspect",
        "--cert",
        &s(&crt),
        "--key",
        &s(&key),
        "--ca",
        &s(&ca_crt),
        "--host",
        "localhost",
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert_eq!(v["findings"], serde_json::json!([]));
    assert_eq!(v["certificate"]["key"]["bits"], 3072);

    // A key in place of the certificate: a failing finding, exit 3.
    let out = run(&["inspect", "--cert", &s(&key), "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let v = json(&out);
    assert_eq!(v["findings"][0]["id"], "cert.not-a-certificate");
    assert_eq!(v["findings"][0]["severity"], "fail");
    // Warnings only fail with --fail-on warn.
    let out = run(&[
        "inspect",
        "--cert",
        &s(&crt),
        "--warn-days",
        "400",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["findings"][0]["id"], "cert.expires-soon");
    let out = run(&[
        "inspect",
        "--cert",
        &s(&crt),
        "--warn-days",
        "400",
        "--fail-on",
        "warn",
    ]);
    assert_eq!(out.status.code(), Some(3));
    // A missing file is an error (exit 1) naming it.
    let out = run(&["inspect", "--cert", &s(&d.join("nope.crt"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.crt"));
}

#[test]
fn renew_plan_then_apply_on_a_cluster() {
    let c = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = c.ca().unwrap();
    let ca_crt = dir.path().join("ca.crt");
    let ca_key = dir.path().join("ca.key");
    std::fs::write(&ca_crt, ca.cert_pem()).unwrap();
    std::fs::write(&ca_key, ca.key_pem()).unwrap();
    let tls = c.cluster().root().join("tls");
    let port = c.port().to_string();
    let verify = format!("127.0.0.1:{port}");
    let root = c.cluster().root().to_str().unwrap().to_string();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "renew",
            "--ca-cert",
            ca_crt.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
            "--cert",
            tls.join("server.crt").to_str().unwrap(),
            "--key",
            tls.join("server.key").to_str().unwrap(),
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--ip",
            "::1",
            "--owner",
            "postgres",
            "--cluster-root",
            &root,
            "--verify",
            &verify,
            "--format",
            "json",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let call = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = run(&a);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out)
    };
    let v = call(&["--plan"]);
    assert_eq!(v["decision"]["renew"], false, "{v}");
    let v = call(&["--plan", "--force"]);
    assert!(v["steps"].as_array().unwrap().len() >= 5, "{v}");
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["done"] == false)
    );
    let v = call(&["--force"]);
    assert_eq!(v["verified"], true, "{v}");
    let sha = v["new_sha256"].as_str().unwrap().to_string();
    let out = run(&[
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--ca",
        ca_crt.to_str().unwrap(),
        "--no-ciphers",
        "--format",
        "json",
    ]);
    assert_eq!(json(&out)["certificate"]["sha256"], sha.as_str());
}

#[test]
fn help_snapshots() {
    for args in [
        &["--help"][..],
        &["probe", "--help"],
        &["inspect", "--help"],
        &["renew", "--help"],
    ] {
        let out = bin().args(args).env("COLUMNS", "100").output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let name = args.join("_").replace("--", "");
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}
