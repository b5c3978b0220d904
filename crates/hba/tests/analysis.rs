#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Lint findings and explain decisions on small files (one `check` helper each).

use costplus_hba::{
    ConnType, Connection, MemEnv, ReadOptions, RuleSet, Severity, explain, lint, read_rules,
};

fn set(text: &str) -> RuleSet {
    read_rules(
        text.as_bytes(),
        "/etc/pg_hba.conf",
        &ReadOptions::default(),
        &MemEnv::new(),
    )
}

/// Lint `text`; expect exactly these (id, line) findings (info findings included).
fn check_lint(text: &str, expect: &[(&str, Option<u32>)]) {
    let got: Vec<(&str, Option<u32>)> = lint(&set(text), &[])
        .iter()
        .map(|f| (f.id, f.line_number))
        .collect();
    assert_eq!(got, expect, "for:\n{text}");
}

const TAIL: &str = "host all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n";

#[test]
fn clean_file_has_no_findings() {
    check_lint(
        &format!(
            "local all postgres peer\nhostssl app app 10.0.0.0/8 scram-sha-256\nhostssl app app fd00::/8 scram-sha-256\n{TAIL}"
        ),
        &[],
    );
}

#[test]
fn weak_methods_on_network_lines() {
    check_lint(
        &format!("hostssl all all 10.0.0.1/32 trust\nhostssl all all ::1/128 trust\n{TAIL}"),
        &[("HBA010", Some(1)), ("HBA010", Some(2))],
    );
    check_lint(
        &format!("hostssl a a ::1/128 password\nhostssl b b ::1/128 md5\n{TAIL}"),
        &[("HBA011", Some(1)), ("HBA012", Some(2))],
    );
    // local trust is not a network risk
    check_lint(&format!("local all all trust\n{TAIL}"), &[]);
}

#[test]
fn non_tls_and_open_to_the_world() {
    check_lint(
        &format!("host app app ::/0 scram-sha-256\nhostnossl app app ::/0 md5\n{TAIL}"),
        &[
            ("HBA020", Some(1)),
            ("HBA012", Some(2)),
            ("HBA020", Some(2)),
            ("HBA030", Some(2)),
            // `host` also matches every connection `hostnossl` would
            ("HBA040", Some(2)),
        ],
    );
    let findings = lint(&set(&format!("hostnossl app app ::/0 md5\n{TAIL}")), &[]);
    let f = findings.iter().find(|f| f.id == "HBA020").unwrap();
    assert_eq!(f.severity, Severity::Error);
}

#[test]
fn shadowed_and_duplicates() {
    check_lint(
        &format!(
            "hostssl all all 10.0.0.0/8 scram-sha-256\nhostssl app bob 10.1.2.0/24 cert\nhostssl all all 10.0.0.0/8 scram-sha-256\nhostssl app bob 11.0.0.0/8 cert\n{TAIL}"
        ),
        &[
            ("HBA060", Some(1)),
            ("HBA040", Some(2)),
            ("HBA060", Some(2)),
            ("HBA041", Some(3)),
            ("HBA060", Some(3)),
            ("HBA060", Some(4)),
        ],
    );
    // replication is not covered by `all`
    check_lint(
        &format!("local all all peer\nlocal replication all peer\n{TAIL}"),
        &[],
    );
    // ... but a list naming it covers it: an exact repeat is a duplicate
    check_lint(
        &format!("local all,replication all peer\nlocal all,replication all peer\n{TAIL}"),
        &[("HBA041", Some(2))],
    );
    // in the user field `replication` is a role like any other: `all` covers it
    check_lint(
        &format!("local all all peer\nlocal app replication peer\n{TAIL}"),
        &[("HBA040", Some(2))],
    );
}

#[test]
fn customer_after_catch_all_and_missing_final_reject() {
    check_lint(
        "hostssl all all ::/0 scram-sha-256\nhostssl app app ::/0 scram-sha-256\n",
        &[("HBA040", Some(2)), ("HBA042", Some(2)), ("HBA050", None)],
    );
}

#[test]
fn refused_lines_are_errors() {
    let f = lint(
        &set(&format!("host all all 10.0.0.0/8 trust bogus=1\n{TAIL}")),
        &[],
    );
    assert_eq!(f[0].id, "HBA001");
    assert_eq!(f[0].line_number, Some(1));
    assert!(
        f[0].message
            .contains("unrecognized authentication option name")
    );
}

fn conn(t: ConnType, db: &str, user: &str, addr: Option<&str>, member_of: &[&str]) -> Connection {
    Connection {
        conn_type: t,
        database: db.into(),
        user: user.into(),
        addr: addr.map(|a| a.parse().unwrap()),
        hostname: None,
        member_of: member_of.iter().map(|s| s.to_string()).collect(),
        physical_replication: false,
    }
}

/// Explain `c` against `text`: the deciding line number (or none) and its method.
fn check_explain(text: &str, c: &Connection, expect: Option<(u32, &str)>) {
    let ex = explain(&set(text), c, false);
    let got = ex
        .decision
        .as_ref()
        .map(|d| (d.line_number, ex.auth_method.clone().unwrap()));
    assert_eq!(
        got,
        expect.map(|(l, m)| (l, m.to_string())),
        "for {c:?} in:\n{text}"
    );
}

#[test]
fn explain_first_match() {
    let text = "local all postgres peer\n\
                hostssl all alice 10.0.0.0/8 reject\n\
                hostssl app +grp 10.0.0.0/8 trust\n\
                hostssl samerole carol 10.0.0.0/8 trust\n\
                host sameuser all 10.0.0.0/8 md5\n\
                hostnossl all all ::/0 reject\n\
                hostssl \"all\" all all scram-sha-256\n";
    use ConnType::*;
    check_explain(
        text,
        &conn(Local, "x", "postgres", None, &[]),
        Some((1, "peer")),
    );
    check_explain(text, &conn(Local, "x", "bob", None, &[]), None);
    check_explain(
        text,
        &conn(HostSsl, "app", "alice", Some("10.1.1.1"), &["grp"]),
        Some((2, "reject")),
    );
    check_explain(
        text,
        &conn(HostSsl, "app", "bob", Some("10.1.1.1"), &["grp"]),
        Some((3, "trust")),
    );
    check_explain(
        text,
        &conn(HostSsl, "app", "grp", Some("10.1.1.1"), &[]),
        Some((3, "trust")),
    );
    check_explain(
        text,
        &conn(HostSsl, "app", "carol", Some("10.1.1.1"), &["app"]),
        Some((4, "trust")),
    );
    check_explain(
        text,
        &conn(Host, "dave", "dave", Some("10.9.9.9"), &[]),
        Some((5, "md5")),
    );
    check_explain(
        text,
        &conn(Host, "app", "dave", Some("::1"), &[]),
        Some((6, "reject")),
    );
    check_explain(
        text,
        &conn(HostSsl, "all", "dave", Some("::1"), &[]),
        Some((7, "scram-sha-256")),
    );
    check_explain(text, &conn(HostSsl, "app", "dave", Some("::1"), &[]), None);
}
