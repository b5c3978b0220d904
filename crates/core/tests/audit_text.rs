//! Snapshot of the audit's text report for fixed facts: a change of its layout, of a check's
//! title, evidence or fix, or of the score is always a reviewed change.

#![allow(clippy::unwrap_used)] // a test fails by panicking

use costplus_core::audit::{self, Facts, facts::Setting};

fn setting(v: &str) -> Setting {
    Setting {
        value: v.into(),
        source: "configuration file".into(),
        file: Some("/etc/postgresql/15/main/postgresql.conf".into()),
        line: Some(12),
    }
}

#[test]
fn text_report_of_fixed_facts() {
    let mut f = Facts {
        server: "vps1".into(),
        version_num: 150010,
        ..Facts::default()
    };
    for (k, v) in [
        ("ssl", "on"),
        ("ssl_min_protocol_version", "TLSv1"),
        ("ssl_ciphers", "HIGH:MEDIUM:+3DES:!aNULL"),
        ("password_encryption", "scram-sha-256"),
        ("log_connections", "off"),
        ("log_disconnections", "on"),
        ("log_line_prefix", "%m [%p] %q%u@%d %h "),
        ("lc_messages", "C"),
        ("log_statement", "none"),
        ("archive_mode", "on"),
        ("listen_addresses", "*"),
    ] {
        f.settings.insert(k.into(), setting(v));
    }
    f.extra.insert(
        "tls_certificate".into(),
        serde_json::json!({"days_left": 20, "key_type": "EC", "key_bits": 256, "san_matches": true,
                           "host": "db.example.com", "key_file_private": true}),
    );
    f.extra.insert(
        "backup".into(),
        serde_json::json!({"error": "no [backup] section in costplus.toml"}),
    );
    let report = audit::evaluate(&f);
    insta::assert_snapshot!(report.render_text(false));
    // Colour only when asked (the CLI asks only on a terminal).
    assert!(!report.render_text(false).contains('\x1b'));
    assert!(report.render_text(true).contains("\x1b[31mFAIL\x1b[0m"));
}
