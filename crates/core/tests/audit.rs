//! The audit against real clusters: a deliberately weakened one produces exactly the expected
//! failing checks, a hardened one none; the SARIF output validates against the SARIF 2.1.0
//! schema (the official OASIS schema as shipped inside the serde-sarif crate).

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::collections::BTreeSet;

use costplus_core::audit::{self, Area, Facts, Status};
use costplus_core::config::NamingPolicy;
use costplus_testsupport::TestCluster;
use serde_json::json;

const HARDENED_HBA: &str = "\
local   all   postgres   peer map=costplus_admin
local   all   all        scram-sha-256
hostssl all   all        127.0.0.1/32   scram-sha-256
hostssl all   all        ::1/128        scram-sha-256
host    all   all        0.0.0.0/0      reject
host    all   all        ::/0           reject
";

const WEAK_HBA: &str = "\
local   all   postgres   peer map=costplus_admin
local   all   all        scram-sha-256
host    all   all        127.0.0.2/32   trust
hostssl all   all        127.0.0.1/32   scram-sha-256
host    all   all        0.0.0.0/0      reject
host    all   all        ::/0           reject
";

fn backup_facts(age_hours: f64) -> serde_json::Value {
    json!({
        "repos": [
            { "repo": 1, "age_hours": age_hours, "stale_after_hours": 26, "encrypted": true },
            { "repo": 2, "age_hours": 2.0, "stale_after_hours": 26, "encrypted": true },
        ],
        "drill": { "ok": true, "age_days": 3 },
    })
}

async fn facts_of(c: &TestCluster) -> Facts {
    let admin = c.connect().await;
    let mut f = audit::facts::gather_catalog(&admin, "t", &NamingPolicy::default())
        .await
        .unwrap();
    let cluster = c.cluster().clone();
    audit::facts::gather_customer_dbs(
        &mut f,
        |db| {
            let cluster = cluster.clone();
            async move { cluster.connect_socket(&db).await.ok() }
        },
        4,
    )
    .await;
    f
}

/// The failing ids of the areas the catalog decides (host facts depend on the machine).
fn catalog_failures(report: &audit::AuditReport) -> BTreeSet<&'static str> {
    report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail && c.area != Area::Host)
        .map(|c| c.id)
        .collect()
}

async fn make_customer(admin: &tokio_postgres::Client, name: &str, hardened: bool) {
    let (role, db) = (format!("{name}_user"), format!("{name}_db"));
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN CONNECTION LIMIT 10 PASSWORD 'x-{name}'"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {role}"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("REVOKE TEMP ON DATABASE {db} FROM PUBLIC"))
        .await
        .unwrap();
    if hardened {
        admin.batch_execute(&format!("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {role}")).await.unwrap();
    }
}

fn settings_hardened(
    b: costplus_testsupport::TestClusterBuilder,
) -> costplus_testsupport::TestClusterBuilder {
    b.setting("log_connections", "on")
        .setting("log_disconnections", "on")
        .setting("archive_mode", "on")
        .setting("archive_command", "'/bin/true'")
        .logging_collector()
}

#[tokio::test]
async fn hardened_cluster_has_no_failing_check() {
    let c = settings_hardened(TestCluster::builder().hba(HARDENED_HBA)).start();
    let admin = c.connect().await;
    make_customer(&admin, "acme", true).await;
    make_customer(&admin, "beta", true).await;
    admin.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let mut f = facts_of(&c).await;
    f.extra.insert("backup".into(), backup_facts(3.0));
    assert_eq!(f.customers.len(), 2, "{:?}", f.customers);
    let report = audit::evaluate(&f);
    assert_eq!(
        catalog_failures(&report),
        BTreeSet::new(),
        "{}",
        report.render_text(false)
    );
    // Nothing passes without evidence: every host check is pass only with something seen.
    for c in report.checks.iter().filter(|c| c.status == Status::Pass) {
        assert!(!c.evidence.is_empty(), "{} passed without evidence", c.id);
    }
}

#[tokio::test]
async fn weakened_cluster_fails_exactly_the_expected_checks() {
    let c = TestCluster::builder()
        .hba(WEAK_HBA)
        .setting("ssl_min_protocol_version", "'TLSv1'")
        .setting("log_connections", "off")
        .setting("log_disconnections", "on")
        .setting("archive_mode", "on")
        .setting("archive_command", "'/bin/true'")
        .logging_collector()
        .start();
    let admin = c.connect().await;
    make_customer(&admin, "acme", true).await;
    make_customer(&admin, "weak", false).await; // PUBLIC keeps CONNECT
    admin
        .batch_execute("ALTER ROLE weak_user CREATEDB")
        .await
        .unwrap();
    admin
        .batch_execute("SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'old'")
        .await
        .unwrap();
    let mut f = facts_of(&c).await;
    f.extra.insert("backup".into(), backup_facts(50.0)); // stale repo1 backup
    let report = audit::evaluate(&f);
    let expected: BTreeSet<&str> = [
        "TLS-002", "AUTH-003", "AUTH-005", "AUTH-007", "LOG-001", "ROLE-003", "ROLE-007", "BAK-001",
    ]
    .into();
    assert_eq!(
        catalog_failures(&report),
        expected,
        "{}",
        report.render_text(false)
    );
    // Evidence names the culprits; pg_hba findings point at the line.
    let by = |id: &str| report.checks.iter().find(|c| c.id == id).unwrap();
    assert!(by("ROLE-003").evidence.contains("weak_user"));
    assert!(by("ROLE-007").evidence.contains("weak_db"));
    assert!(by("AUTH-003").evidence.contains("legacy"));
    assert_eq!(by("AUTH-005").locations[0].line, Some(3));
    assert!(report.score < 100);
    assert!(report.fails_at(audit::Severity::High));
    assert!(!report.raise_score.is_empty());

    // SARIF 2.1.0, validated against the official schema.
    let sarif = audit::to_sarif(&report);
    let errors = sarif_errors(&sarif);
    assert!(
        errors.is_empty(),
        "SARIF does not validate:\n{}",
        errors.join("\n")
    );
    // The validator is not vacuous: a wrong version and a bad level are refused.
    let mut bad = sarif.clone();
    bad["version"] = json!("2.0.0");
    bad["runs"][0]["results"][0]["level"] = json!("fatal");
    assert_eq!(sarif_errors(&bad).len(), 2, "{:?}", sarif_errors(&bad));
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    let failing: BTreeSet<&str> = results
        .iter()
        .filter(|r| r["kind"] == "fail")
        .filter_map(|r| r["ruleId"].as_str())
        .filter(|id| !id.starts_with("HOST"))
        .collect();
    assert_eq!(failing, expected);
    let auth5 = results.iter().find(|r| r["ruleId"] == "AUTH-005").unwrap();
    assert_eq!(
        auth5["locations"][0]["physicalLocation"]["region"]["startLine"],
        3
    );
}

fn sarif_errors(doc: &serde_json::Value) -> Vec<String> {
    // serde-sarif (a dev-dependency) is unpacked in cargo's registry; read its copy of the schema.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo")
        });
    let schema_path = std::fs::read_dir(cargo_home.join("registry/src"))
        .unwrap()
        .flat_map(|index| std::fs::read_dir(index.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("serde-sarif-0.8")
        })
        .map(|p| p.join("src/schema.json"))
        .find(|p| p.is_file())
        .expect("serde-sarif sources (with the SARIF schema) not found in cargo's registry");
    let mut schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&schema_path).unwrap()).unwrap();
    drop_broken_patterns(&mut schema);
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The upstream schema's `language` pattern is not a valid regex; it concerns a property we
/// never emit, so drop that one keyword.
fn drop_broken_patterns(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("pattern")
                .and_then(|p| p.as_str())
                .is_some_and(regex_is_broken)
            {
                m.remove("pattern");
            }
            m.values_mut().for_each(drop_broken_patterns);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_broken_patterns),
        _ => {}
    }
}

fn regex_is_broken(p: &str) -> bool {
    // Unbalanced brackets are the known defect.
    p.matches('[').count() != p.matches(']').count()
}
