//! The audit against real clusters: a deliberately weakened one produces exactly the expected
//! failing checks, a hardened one none; the SARIF output validates against the SARIF 2.1.0
//! schema (the official OASIS schema as shipped inside the serde-sarif crate).

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

mod common;

use std::collections::BTreeSet;

use common::config_of;
use costplus_core::audit::{self, Area, Facts, Status};
use costplus_core::config::Config;
use std::os::unix::fs::PermissionsExt;

use costplus_testsupport::TestCluster;
use costplus_tls::issue::ServerCertRequest;
use serde_json::json;

// Customers reach only their own database, over TLS; the administrator reaches everything.
const HARDENED_HBA: &str = "\
local   all   postgres   peer map=costplus_admin
local   all   all        scram-sha-256
hostssl all     postgres  127.0.0.1/32   scram-sha-256
hostssl all     postgres  ::1/128        scram-sha-256
hostssl acme_db acme_user 127.0.0.1/32   scram-sha-256
hostssl acme_db acme_user ::1/128        scram-sha-256
hostssl beta_db beta_user 127.0.0.1/32   scram-sha-256
hostssl beta_db beta_user ::1/128        scram-sha-256
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

/// Everything the audit gathers, as `costplus-audit` does (catalog, inside the databases,
/// host, and the extra facts from the leaf crates).
async fn facts_of(c: &TestCluster) -> Facts {
    let (config, server) = config_of(c);
    audit::gather(&config, &server, true).await.unwrap()
}

fn status_of(report: &audit::AuditReport, id: &str) -> (Status, String) {
    let c = report.checks.iter().find(|c| c.id == id).unwrap();
    (c.status, c.evidence.clone())
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
    // No [backup] section: the backup checks cannot see anything (unknown, never pass). Real
    // pgBackRest repositories are audited in `backups_come_from_pgbackrest_and_the_drill_record`.
    assert!(
        f.extra["backup"]["error"]
            .as_str()
            .unwrap()
            .contains("no [backup] section")
    );
    assert_eq!(
        audit::evaluate(&f)
            .checks
            .iter()
            .filter(|c| c.id.starts_with("BAK-00") && c.id != "BAK-006")
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        vec![Status::Unknown; 5]
    );
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
    // The extra facts were gathered for real: certificate file, key file, probe, lint, proof.
    for id in [
        "TLS-004", "TLS-005", "TLS-006", "TLS-007", "TLS-008", "TLS-009", "AUTH-012", "ROLE-012",
    ] {
        let (st, ev) = status_of(&report, id);
        assert_eq!(st, Status::Pass, "{id}: {ev}");
    }
    assert_eq!(f.extra["tls_certificate"]["source"], "file");
    assert_eq!(f.extra["tls_probe"]["protocols"]["TLSv1.0"], "refused");
    assert_eq!(f.extra["tls_probe"]["protocols"]["TLSv1.3"], "accepted");
    assert_eq!(f.extra["isolation"]["customers"], 2);
    assert!(status_of(&report, "ROLE-012").1.contains("2 customers"));
}

#[tokio::test]
async fn weakened_cluster_fails_exactly_the_expected_checks() {
    let c = TestCluster::builder()
        .hba(WEAK_HBA)
        .setting("ssl_min_protocol_version", "'TLSv1'")
        // OpenSSL 3 refuses TLS 1.0/1.1 above security level 0: let the server really accept them.
        .setting("ssl_ciphers", "'DEFAULT:@SECLEVEL=0'")
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
    // A dangerous predefined role reached through a group (membership is transitive).
    admin
        .batch_execute(
            "CREATE ROLE helpers NOLOGIN; GRANT pg_read_all_data TO helpers; GRANT helpers TO weak_user",
        )
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
        "TLS-002", "TLS-009", "AUTH-003", "AUTH-005", "AUTH-007", "AUTH-012", "LOG-001",
        "ROLE-003", "ROLE-006", "ROLE-007", "ROLE-012", "BAK-001",
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
    assert!(
        by("ROLE-006")
            .evidence
            .contains("weak_user in pg_read_all_data"),
        "{}",
        by("ROLE-006").evidence
    );
    assert!(by("ROLE-007").evidence.contains("weak_db"));
    assert!(by("AUTH-003").evidence.contains("legacy"));
    assert_eq!(by("AUTH-005").locations[0].line, Some(3));
    // The probe saw the old protocols on the wire; the lint points at the trust line; the
    // isolation proof names PUBLIC's CONNECT on weak_db and the all/all hostssl line.
    assert!(
        by("TLS-009").evidence.contains("TLSv1.0"),
        "{}",
        by("TLS-009").evidence
    );
    assert!(by("TLS-009").evidence.contains("TLSv1.1"));
    assert!(
        by("AUTH-012").evidence.contains("HBA010 line 3"),
        "{}",
        by("AUTH-012").evidence
    );
    assert!(by("AUTH-012").locations.iter().any(|l| l.line == Some(3)));
    let violations = f.extra["isolation"]["violations"].as_array().unwrap();
    assert!(
        violations
            .iter()
            .any(|v| v["kind"] == "public-connect" && v["to"] == "weak"),
        "{violations:?}"
    );
    // Still true on the certificate side.
    assert_eq!(
        by("TLS-004").status,
        Status::Pass,
        "{}",
        by("TLS-004").evidence
    );
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

#[tokio::test]
async fn a_certificate_about_to_expire_and_an_open_key_file_fail() {
    let c = TestCluster::start();
    // A certificate with 3 days left, installed and loaded; then its key file opened to the group.
    let cert = c
        .ca()
        .unwrap()
        .issue_server(&ServerCertRequest {
            validity_days: 3,
            ..ServerCertRequest::localhost()
        })
        .unwrap();
    let admin = c.connect().await;
    let mut files = Vec::new();
    for name in ["ssl_cert_file", "ssl_key_file"] {
        let v: String = admin
            .query_one(&format!("SELECT current_setting('{name}')"), &[])
            .await
            .unwrap()
            .get(0);
        let p = std::path::PathBuf::from(v);
        files.push(if p.is_absolute() {
            p
        } else {
            c.cluster().data_dir().join(p)
        });
    }
    let (cert_file, key_file) = (files[0].clone(), files[1].clone());
    c.write_server_file(&cert_file, cert.cert_pem.as_bytes());
    c.write_server_file(&key_file, cert.key_pem.as_bytes());
    c.cluster().reload().unwrap();
    let before = facts_of(&c).await;
    let report = audit::evaluate(&before);
    let (st, ev) = status_of(&report, "TLS-004");
    assert_eq!(st, Status::Fail, "{ev}");
    assert!(ev == "2 days left" || ev == "3 days left", "{ev}");
    assert_eq!(status_of(&report, "TLS-005").0, Status::Fail);
    assert_eq!(status_of(&report, "TLS-008").0, Status::Pass);
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let report = audit::evaluate(&facts_of(&c).await);
    let (st, ev) = status_of(&report, "TLS-008");
    assert_eq!(st, Status::Fail, "{ev}");
    assert!(ev.contains("0640"), "{ev}");

    // Away from the host the certificate is read from the wire, the files not at all: what
    // cannot be seen is unknown with the reason, never pass.
    let (config, server) = config_of(&c);
    let remote = audit::gather(&config, &server, false).await.unwrap();
    let report = audit::evaluate(&remote);
    assert_eq!(remote.extra["tls_certificate"]["source"], "probe");
    assert_eq!(status_of(&report, "TLS-004").0, Status::Fail);
    assert_eq!(status_of(&report, "TLS-009").0, Status::Pass);
    for id in ["TLS-008", "AUTH-012", "ROLE-012", "BAK-001", "BAK-005"] {
        let (st, ev) = status_of(&report, id);
        assert_eq!(st, Status::Unknown, "{id}: {ev}");
        assert!(!ev.is_empty());
    }
}

/// A real pgBackRest: encrypted repo1 (posix) and repo2 (a real S3 server), backups, a drill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_come_from_pgbackrest_and_the_drill_record() {
    use costplus_pgbackrest::conf::{self, PgTarget};
    use costplus_pgbackrest::secrets::{FileSecrets, ensure_passphrase_file};
    use costplus_pgbackrest::{BackupConfig, BackupType, PgBackRest, archiving, backup, drill};
    use costplus_s3::{OffsiteConfig, Provider};
    costplus_testsupport::require_tool("pgbackrest");
    let c = TestCluster::start();
    let s3 = costplus_testsupport::TestS3::start();
    s3.create_bucket("audit-backups");
    let dir = tempfile::Builder::new()
        .prefix("costplus-audit-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = dir.path();
    let cfg = BackupConfig {
        config_file: d.join("pgbackrest.conf"),
        repo1_path: d.join("repo1"),
        spool_path: d.join("spool"),
        log_path: d.join("log"),
        lock_path: d.join("lock"),
        state_path: d.join("state"),
        repo1_cipher_pass_file: Some(d.join("repo1.pass")),
        repo2_cipher_pass_file: Some(d.join("repo2.pass")),
        archive_timeout_seconds: 30,
        ..BackupConfig::default()
    };
    ensure_passphrase_file(&d.join("repo1.pass")).unwrap();
    ensure_passphrase_file(&d.join("repo2.pass")).unwrap();
    let creds = d.join("s3.credentials");
    costplus_fs::write_atomic(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key(),
            s3.secret_key()
        )
        .as_bytes(),
        &costplus_fs::WriteOptions::private(),
    )
    .unwrap();
    let offsite = OffsiteConfig {
        provider: Provider::S3Compatible,
        endpoint: Some(s3.endpoint()),
        ca_file: Some(s3.ca_file()),
        credentials_file: Some(creds),
        ..OffsiteConfig::wasabi("us-east-1", "audit-backups")
    };
    conf::configure(
        &cfg,
        Some(&offsite),
        &PgTarget::of_cluster(c.cluster()),
        &FileSecrets,
    )
    .unwrap();
    archiving::apply(&c.connect().await, &cfg).await.unwrap();
    c.cluster().stop().unwrap();
    c.cluster().start().unwrap();
    let pgbr = PgBackRest::new(&cfg, c.cluster().os_user().clone());
    pgbr.stanza_create().unwrap();

    let (mut config, server) = config_of(&c);
    config.backup = Some(cfg.clone());
    config.offsite = Some(offsite);
    let audit_of = |config: Config| {
        let server = server.clone();
        async move {
            let f = audit::gather(&config, &server, true).await.unwrap();
            (audit::evaluate(&f), f)
        }
    };
    // A stanza without backups: both repositories listed and encrypted, nothing to restore.
    let (report, f) = audit_of(config.clone()).await;
    assert_eq!(f.extra["backup"]["repos"][1]["cipher"], "aes-256-cbc");
    for (id, want) in [
        ("BAK-001", Status::Fail),
        ("BAK-002", Status::Fail),
        ("BAK-003", Status::Pass),
        ("BAK-004", Status::Pass),
        ("BAK-005", Status::Fail),
    ] {
        let (st, ev) = status_of(&report, id);
        assert_eq!(st, want, "{id}: {ev}");
    }
    assert_eq!(status_of(&report, "BAK-001").1, "no good backup in repo1");
    assert_eq!(
        status_of(&report, "BAK-005").1,
        "no restore drill on record"
    );

    // Full backups to both repositories, and a restore drill from repo1.
    let live = c.connect_options("postgres");
    for repo in [1, 2] {
        backup::run(&pgbr, &cfg, Some(&live), BackupType::Full, repo)
            .await
            .unwrap();
    }
    let mut drill_opts = drill::DrillOptions::from_config(&cfg, 1);
    drill_opts.amcheck = false;
    let drilled = drill::run(&pgbr, &drill_opts).await.unwrap();
    assert!(drilled.ok, "{drilled:?}");
    let (report, f) = audit_of(config.clone()).await;
    for id in ["BAK-001", "BAK-002", "BAK-003", "BAK-004", "BAK-005"] {
        let (st, ev) = status_of(&report, id);
        assert_eq!(st, Status::Pass, "{id}: {ev}");
    }
    assert!(f.extra["backup"]["repos"][0]["age_hours"].as_f64().unwrap() < 1.0);
    assert_eq!(f.extra["backup"]["drill"]["repo"], 1);

    // The same backups judged by a policy they do not meet are stale.
    config.backup.as_mut().unwrap().stale_after_hours = 0;
    let (report, _) = audit_of(config.clone()).await;
    let (st, ev) = status_of(&report, "BAK-001");
    assert_eq!(st, Status::Fail, "{ev}");
    assert!(ev.contains("policy 0 h"), "{ev}");
    assert_eq!(status_of(&report, "BAK-002").0, Status::Fail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checklist_and_status_of_a_real_cluster() {
    use costplus_core::{checklist, fail2ban::Bans, status};
    let c = settings_hardened(TestCluster::builder().hba(HARDENED_HBA)).start();
    let admin = c.connect().await;
    make_customer(&admin, "acme", true).await;
    make_customer(&admin, "beta", true).await;
    // acme is connected (over TLS, with its own password) while we look.
    let mut o = c.connect_options("acme_db");
    o.user = "acme_user".into();
    o.password = Some("x-acme".to_string().into());
    let acme = costplus_pgcluster::connect::connect(&o).await.unwrap();
    let (mut config, server) = config_of(&c);

    let report = audit::evaluate(&audit::gather(&config, &server, true).await.unwrap());
    let list = checklist::evaluate(&report, &config);
    let item =
        |l: &checklist::Checklist, id: &str| l.items.iter().find(|i| i.id == id).unwrap().clone();
    assert_eq!(list.items.len(), 7);
    assert!(item(&list, "tls-enforced").ok, "{}", list.render_text());
    assert!(item(&list, "isolation-tested").ok, "{}", list.render_text());
    // No [backup] section: not ticked, and it says it could not be checked.
    let enc = item(&list, "backup-encryption");
    assert_eq!((enc.ok, enc.state), (false, "unknown"), "{enc:?}");
    assert!(enc.evidence.contains("no [backup] section"), "{enc:?}");
    assert_eq!(
        enc.fix,
        "costplus-backup setup (creates encrypted repositories; encryption cannot be added to an existing one)"
    );
    assert_eq!(item(&list, "monitoring-set-up").state, "not-ticked");
    assert!(!list.complete());
    assert!(list.render_text().contains("[x] tls-enforced"));
    assert!(list.render_text().contains("[ ] monitoring-set-up"));
    config.maintenance = Some(costplus_core::maintain::MaintenanceConfig {
        heartbeat_daily: Some("https://hc.example.invalid/ping/secret".into()),
        ..Default::default()
    });
    let list = checklist::evaluate(&report, &config);
    assert!(item(&list, "monitoring-set-up").ok);
    assert!(!list.render_text().contains("secret"));

    let bans = Bans::Unknown {
        reason: "fail2ban is not running".into(),
    };
    let st = status::collect(&config, &server, true, bans).await;
    assert!(st.state.up, "{st:?}");
    assert_eq!(st.state.in_recovery, Some(false));
    assert_eq!(st.tls.ssl, Some(true));
    assert!(st.tls.cert_days_left.unwrap() > 7, "{:?}", st.tls);
    assert_eq!(st.customers, 2);
    assert_eq!(
        st.connections
            .iter()
            .map(|c| (c.customer.as_str(), c.total))
            .collect::<Vec<_>>(),
        [("acme", 1), ("beta", 0)]
    );
    assert!(
        st.backups
            .error
            .as_deref()
            .unwrap()
            .contains("no [backup] section")
    );
    assert!(!st.ok);
    let text = st.render_text();
    assert!(text.contains("customers  2, connected: acme 1"), "{text}");
    assert!(
        text.contains("bans       unknown (fail2ban is not running)"),
        "{text}"
    );
    drop(acme);

    // A server that is down is reported, not an error.
    c.cluster().stop().unwrap();
    let st = status::collect(&config, &server, true, Bans::Unknown { reason: "-".into() }).await;
    assert!(!st.state.up);
    assert!(
        st.render_text().contains("server     DOWN"),
        "{}",
        st.render_text()
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
