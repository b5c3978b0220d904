#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! The `costplus-hba` binary from the outside: the contract of the acceptance checks, exit
//! codes, and CLI output snapshots.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_costplus-hba"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).env("NO_COLOR", "1").output().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

const FILE: &str = "# TYPE DATABASE USER ADDRESS METHOD\n\
local   all  postgres  peer\n\
hostssl app  app       10.0.0.0/8   scram-sha-256\n\
host    all  all       10.1.2.3/16  md5\n\
hostssl all  all       ::1/128      cert clientcert=1\n\
host    all  all       all          trust bogus=1\n";

#[test]
fn rules_json_has_the_view_columns_and_exit_0_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "pg_hba.conf", FILE.as_bytes());
    let out = run(&["rules", &f, "--pg-version", "15", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "line_number",
        "type",
        "database",
        "user_name",
        "address",
        "netmask",
        "auth_method",
        "options",
        "error",
        "file_name",
        "rule_number",
    ];
    want.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, want);
    assert_eq!(rows[2]["address"], "10.1.2.3");
    assert_eq!(rows[2]["netmask"], "255.255.0.0");
    assert_eq!(rows[0]["address"], serde_json::Value::Null);
    assert_eq!(rows[1]["database"], serde_json::json!(["app"]));
    // PostgreSQL 15's view shows a row of NULLs for clientcert=1; we give the error
    assert_eq!(rows[3]["error"], "invalid value for clientcert: \"1\"");
    assert_eq!(rows[3]["type"], serde_json::Value::Null);
    assert_eq!(
        rows[4]["error"],
        "unrecognized authentication option name: \"bogus\""
    );
    assert_eq!(rows[4]["rule_number"], serde_json::Value::Null);
    assert_eq!(rows[2]["rule_number"], 3);
    assert_eq!(rows[2]["file_name"], f.as_str());
}

#[test]
fn fmt_prints_the_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, bytes) in [
        FILE.as_bytes(),
        b"\xff\xfe\x00 weird\r\nlocal all all trust \\\n  # x\nno final newline",
        b"",
        b"\n\n\n",
    ]
    .iter()
    .enumerate()
    {
        let f = write(dir.path(), &format!("f{i}"), bytes);
        let out = run(&["fmt", &f]);
        assert!(out.status.success());
        assert_eq!(&out.stdout, bytes);
    }
}

#[test]
fn lint_exit_code_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "pg_hba.conf", FILE.as_bytes());
    let out = run(&["lint", &f, "--pg-version", "15"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&f, "pg_hba.conf");
    insta::assert_snapshot!("lint_human", text);
    let out = run(&[
        "lint",
        &f,
        "--pg-version",
        "15",
        "--fail-on",
        "never",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|f| f["id"] == "HBA001"));
}

#[test]
fn rules_human_output() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "pg_hba.conf", FILE.as_bytes());
    let out = run(&["rules", &f, "--pg-version", "15"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&f, "pg_hba.conf");
    insta::assert_snapshot!("rules_human", text);
}

#[test]
fn explain_names_the_deciding_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "pg_hba.conf", FILE.as_bytes());
    let out = run(&[
        "explain",
        &f,
        "--pg-version",
        "15",
        "--type",
        "host",
        "--db",
        "app",
        "--user",
        "app",
        "--addr",
        "10.1.9.9",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&f, "pg_hba.conf");
    insta::assert_snapshot!("explain_human", text);
    let out = run(&[
        "explain",
        &f,
        "--type",
        "hostssl",
        "--db",
        "x",
        "--user",
        "y",
        "--addr",
        "192.0.2.1",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], serde_json::Value::Null);
    assert_eq!(v["file_has_errors"], true);
}

#[test]
fn add_and_remove_with_plan() {
    let dir = tempfile::tempdir().unwrap();
    let base =
        b"local all postgres peer\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n";
    let f = write(dir.path(), "pg_hba.conf", base);
    let out = run(&["add", &f, "--customer", "acme", "--plan"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&f, "pg_hba.conf");
    insta::assert_snapshot!("add_plan", text);
    assert_eq!(std::fs::read(&f).unwrap(), base, "plan changes nothing");
    let out = run(&["add", &f, "--customer", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // offline: written, and said to be not loaded yet
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("reload pending: the server may not run this file yet"),
        "{said}"
    );
    let now = String::from_utf8(std::fs::read(&f).unwrap()).unwrap();
    assert!(now.contains("hostssl acme acme ::/0 scram-sha-256 # costplus customer=acme\n"));
    let backups = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".costplus-backup.")
        })
        .count();
    assert_eq!(backups, 1);
    let out = run(&["remove", &f, "--customer", "acme"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&f).unwrap(), base);
    // bad customer names are refused, nothing written
    let out = run(&["add", &f, "--customer", "bad name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid customer name"));
    assert_eq!(std::fs::read(&f).unwrap(), base);
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "pg_hba.conf", FILE.as_bytes());
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // as an unprivileged user (tests run as root, who reads anything)
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_costplus-hba"))
        .args(["rules", &f, "--pg-version", "15"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&f) && err.contains("Permission denied"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn help_of_every_command() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("help", String::from_utf8(out.stdout).unwrap());
    for cmd in ["rules", "lint", "explain", "fmt", "add", "remove", "apply"] {
        let out = run(&[cmd, "--help"]);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn apply_against_a_live_server() {
    let tc = costplus_testsupport::TestCluster::start();
    let hba = tc.cluster().hba_file();
    let before = std::fs::read(&hba).unwrap();
    let root = tc.cluster().root().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let su = tc.superuser();
    let new = format!(
        "local all {su} peer map=costplus_admin\nhostssl all {su} 127.0.0.1/32 scram-sha-256\nhostssl all {su} ::1/128 scram-sha-256\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n"
    );
    let src = write(dir.path(), "new.conf", new.as_bytes());
    // plan: the diff, nothing written
    let out = run(&["apply", &src, "--cluster", &root, "--plan"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(diff.contains("+host all all ::/0 reject"), "{diff}");
    assert_eq!(std::fs::read(&hba).unwrap(), before);
    // apply: validated by the server and reloaded
    let out = run(&["apply", &src, "--cluster", &root, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["written"], true);
    assert_eq!(v["validated_by_server"], true);
    assert_eq!(v["reloaded"], true);
    assert_eq!(v["reload_pending"], false);
    assert_eq!(std::fs::read(&hba).unwrap(), new.as_bytes());
    // a file the server refuses is never written
    let bad = write(dir.path(), "bad.conf", b"host all all all trust bogus=1\n");
    let out = run(&["apply", &bad, "--cluster", &root]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unrecognized authentication option name")
    );
    assert_eq!(std::fs::read(&hba).unwrap(), new.as_bytes());
}
