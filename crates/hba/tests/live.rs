#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Against a real PostgreSQL 15: `explain` predicts what the server does with real login
//! attempts, and `apply` writes, validates, reloads, and restores on failure.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use costplus_hba::{
    ApplyOptions, ConnType, Connection, Document, Error, ReadOptions, RuleSpec, SystemEnv, apply,
    explain, plan, read_rules,
};
use costplus_pgcluster::connect::{ConnectOptions, SslMode};
use costplus_testsupport::{TestCluster, block_on};

/// What the server did with a login attempt that gives a wrong password.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Logged in (no password asked: trust).
    Trusted,
    /// Asked for a password and refused it (md5, scram, password).
    PasswordAsked,
    /// `reject` line.
    Rejected,
    /// No line matched.
    NoEntry,
}

async fn attempt(tc: &TestCluster, user: &str, db: &str, ssl: bool) -> Outcome {
    let mut o = ConnectOptions::new("127.0.0.1", tc.port(), user, db);
    o.password = Some("wrong-password".to_string().into());
    o.ssl = if ssl {
        SslMode::VerifyFull {
            ca_file: tc.ca_file(),
            server_name: Some("localhost".into()),
        }
    } else {
        SslMode::Disable
    };
    match costplus_pgcluster::connect::connect(&o).await {
        Ok(_) => Outcome::Trusted,
        Err(e) => {
            let m = format!("{e:#} {e:?}");
            if m.contains("no pg_hba.conf entry") {
                Outcome::NoEntry
            } else if m.contains("pg_hba.conf rejects connection") {
                Outcome::Rejected
            } else if m.contains("password authentication failed") {
                Outcome::PasswordAsked
            } else {
                panic!("unexpected connection error: {m}")
            }
        }
    }
}

fn expected(method: Option<&str>) -> Outcome {
    match method {
        None => Outcome::NoEntry,
        Some("reject") => Outcome::Rejected,
        Some("trust") => Outcome::Trusted,
        Some("scram-sha-256" | "md5" | "password") => Outcome::PasswordAsked,
        Some(m) => panic!("method {m} not used here"),
    }
}

fn opts_for(tc: &TestCluster) -> ApplyOptions {
    ApplyOptions::new(tc.cluster().hba_file(), ReadOptions::default())
}

#[test]
fn explain_agrees_with_real_logins() {
    let tc = TestCluster::start();
    let su = tc.superuser().to_string();
    let text = format!(
        "local all {su} peer map=costplus_admin\n\
         hostssl all {su} 127.0.0.1/32 scram-sha-256\n\
         hostssl all alice 127.0.0.1/32 reject\n\
         hostssl app +grp 127.0.0.1/32 trust\n\
         hostssl samerole carol 127.0.0.0/8 trust\n\
         host all bob 127.0.0.1/32 trust\n\
         hostssl postgres all 127.0.0.0/8 scram-sha-256\n\
         hostnossl all all 0.0.0.0/0 reject\n"
    );
    block_on(async {
        let admin = tc.connect().await;
        admin
            .batch_execute(
                "CREATE ROLE grp; CREATE ROLE app; \
                 CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN IN ROLE grp; \
                 CREATE ROLE carol LOGIN IN ROLE app; CREATE ROLE dave LOGIN PASSWORD 'x';",
            )
            .await
            .unwrap();
        admin.batch_execute("CREATE DATABASE app").await.unwrap();
        let report = apply(Some(&admin), &opts_for(&tc), |d| {
            *d = Document::parse(text.as_bytes());
            Ok(())
        })
        .await
        .unwrap();
        assert!(report.reloaded, "{report:?}");
        let set = read_rules(
            text.as_bytes(),
            tc.cluster().hba_file(),
            &ReadOptions::default(),
            &SystemEnv,
        );
        let members = |u: &str| -> Vec<String> {
            match u {
                "bob" => vec!["grp".into()],
                "carol" => vec!["app".into()],
                _ => vec![],
            }
        };
        let cases = [
            ("alice", "postgres", true),
            ("alice", "app", false),
            ("bob", "app", true),
            ("bob", "postgres", true),
            ("bob", "app", false),
            ("carol", "app", true),
            ("carol", "postgres", true),
            ("carol", "postgres", false),
            ("dave", "app", true),
            ("dave", "postgres", true),
            ("nobody", "postgres", true),
        ];
        for (user, db, ssl) in cases {
            let c = Connection {
                conn_type: if ssl {
                    ConnType::HostSsl
                } else {
                    ConnType::Host
                },
                database: db.into(),
                user: user.into(),
                addr: Some("127.0.0.1".parse().unwrap()),
                hostname: None,
                member_of: members(user),
                physical_replication: false,
            };
            let ex = explain(&set, &c, false);
            let want = expected(ex.auth_method.as_deref());
            let got = attempt(&tc, user, db, ssl).await;
            assert_eq!(got, want, "{user}@{db} ssl={ssl}: explain said {ex:?}");
        }
    });
}

#[test]
fn apply_writes_validates_reloads_and_keeps_owner_and_mode() {
    let tc = TestCluster::start();
    let hba = tc.cluster().hba_file();
    let su = tc.superuser().to_string();
    let base = format!(
        "# operator rules\nlocal all {su} peer map=costplus_admin\nhostssl all {su} 127.0.0.1/32 scram-sha-256\n\n# reject everything else\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n"
    );
    let meta = std::fs::metadata(&hba).unwrap();
    block_on(async {
        let admin = tc.connect().await;
        apply(Some(&admin), &opts_for(&tc), |d| {
            *d = Document::parse(base.as_bytes());
            Ok(())
        })
        .await
        .unwrap();
        let before = std::fs::read(&hba).unwrap();
        assert_eq!(before, base.as_bytes());
        admin.batch_execute("CREATE ROLE erin LOGIN").await.unwrap();
        admin.batch_execute("CREATE DATABASE erin").await.unwrap();
        // erin has no line yet (the default file only has loopback scram for all): add one
        // that trusts her, so the outcome visibly changes after the reload.
        let rules = [RuleSpec {
            method: costplus_hba::AuthMethod::Trust,
            ..RuleSpec::hostssl_scram("erin", "erin", "127.0.0.1/32")
        }];
        let planned = plan(&opts_for(&tc), |d| {
            d.set_customer_rules("erin", &rules).map(|_| ())
        })
        .unwrap();
        assert!(planned.changed && !planned.written);
        assert!(
            planned
                .diff
                .contains("+hostssl erin erin 127.0.0.1/32 trust # costplus customer=erin"),
            "{}",
            planned.diff
        );
        assert_eq!(std::fs::read(&hba).unwrap(), before, "plan must not write");
        assert_eq!(attempt(&tc, "erin", "erin", true).await, Outcome::Rejected);

        let report = apply(Some(&admin), &opts_for(&tc), |d| {
            d.set_customer_rules("erin", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(report.written && report.validated_by_server && report.reloaded);
        assert_eq!(attempt(&tc, "erin", "erin", true).await, Outcome::Trusted);
        let after = std::fs::metadata(&hba).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (meta.uid(), meta.gid(), meta.mode())
        );
        let backup = report.backup.unwrap();
        assert_eq!(std::fs::read(&backup).unwrap(), before);
        // the operator's lines are all still there, in order, byte for byte
        let now = std::fs::read(&hba).unwrap();
        let doc = Document::parse(&now);
        let kept: Vec<u8> = (0..doc.line_count())
            .filter(|i| !doc.customer_lines("erin").contains(i))
            .filter(|i| {
                let l = doc.line(*i).unwrap();
                !l.starts_with(b"# BEGIN costplus") && !l.starts_with(b"# END costplus")
            })
            .flat_map(|i| doc.line(i).unwrap().to_vec())
            .collect();
        assert_eq!(kept, before);

        // removing goes back to the old behaviour
        apply(Some(&admin), &opts_for(&tc), |d| {
            d.remove_customer_rules("erin").map(|_| ())
        })
        .await
        .unwrap();
        assert_eq!(attempt(&tc, "erin", "erin", true).await, Outcome::Rejected);
        assert_eq!(
            std::fs::read(&hba).unwrap(),
            before,
            "removal gives the operator's file back"
        );
    });
}

/// A customer role and database `name`, and a loaded file that rejects everyone but the
/// superuser; returns the rule that lets `name` in without a password (not applied).
async fn loaded_base_and_trusted_customer(
    tc: &TestCluster,
    admin: &tokio_postgres::Client,
    name: &str,
) -> [RuleSpec; 1] {
    for sql in [
        format!("CREATE ROLE {name} LOGIN"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let su = tc.superuser();
    let base = format!(
        "local all {su} peer map=costplus_admin\nhostssl all {su} 127.0.0.1/32 scram-sha-256\nhost all all 0.0.0.0/0 reject\n"
    );
    apply(Some(admin), &opts_for(tc), |d| {
        *d = Document::parse(base.as_bytes());
        Ok(())
    })
    .await
    .unwrap();
    [RuleSpec {
        method: costplus_hba::AuthMethod::Trust,
        ..RuleSpec::hostssl_scram(name, name, "127.0.0.1/32")
    }]
}

/// A writer that died between writing the file and reloading: applying the same edit again
/// changes no byte but reloads, so the server runs the file; once loaded, no more reloads.
#[test]
fn a_file_written_but_never_reloaded_is_reloaded_by_the_next_apply() {
    let tc = TestCluster::start();
    let hba = tc.cluster().hba_file();
    block_on(async {
        let admin = tc.connect().await;
        let rules = loaded_base_and_trusted_customer(&tc, &admin, "fred").await;
        // The crash: written offline (no server, no reload).
        let offline = apply(None, &opts_for(&tc), |d| {
            d.set_customer_rules("fred", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(offline.written && offline.reload_pending, "{offline:?}");
        let planned = plan(&opts_for(&tc), |_| Ok(())).unwrap();
        assert!(planned.reload_pending, "{planned:?}");
        // The server still runs the old file, without fred's line.
        assert_eq!(attempt(&tc, "fred", "fred", true).await, Outcome::Rejected);
        let written = std::fs::read(&hba).unwrap();
        let report = apply(Some(&admin), &opts_for(&tc), |d| {
            d.set_customer_rules("fred", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(
            !report.changed
                && report.validated_by_server
                && report.reloaded
                && !report.reload_pending,
            "{report:?}"
        );
        assert_eq!(std::fs::read(&hba).unwrap(), written);
        assert_eq!(attempt(&tc, "fred", "fred", true).await, Outcome::Trusted);
        // Loaded now: the same apply again neither writes nor reloads.
        let again = apply(Some(&admin), &opts_for(&tc), |d| {
            d.set_customer_rules("fred", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(!again.changed && !again.reloaded, "{again:?}");
    });
}

/// The marker of a written but not yet loaded file (beside the default lock file).
fn marker(tc: &TestCluster) -> std::path::PathBuf {
    let mut s = tc.cluster().hba_file().into_os_string();
    s.push(".costplus.lock.reload-pending");
    s.into()
}

/// The writer died after an offline write, and the connection that applies next was idle
/// through someone else's reload: its `pg_conf_load_time()` is stamped when it next runs a
/// statement, later than the file's time, so times alone would say the file is loaded. The
/// marker says it is not.
#[test]
fn a_pending_write_is_reloaded_even_when_times_say_it_is_loaded() {
    let tc = TestCluster::start();
    block_on(async {
        let admin = tc.connect().await;
        let rules = loaded_base_and_trusted_customer(&tc, &admin, "hugo").await;
        assert!(!marker(&tc).exists(), "a confirmed reload leaves no marker");
        // This connection stays idle from here to its apply.
        let idle = tc.connect().await;
        // Someone else reloads (the server loads the file as it is, without hugo) ...
        let before = server_load_time(&tc).await;
        let other = tc.connect().await;
        other
            .query_one("SELECT pg_reload_conf()", &[])
            .await
            .unwrap();
        while server_load_time(&tc).await == before {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // ... then a writer writes offline and dies before reloading.
        apply(None, &opts_for(&tc), |d| {
            d.set_customer_rules("hugo", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(marker(&tc).exists());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(attempt(&tc, "hugo", "hugo", true).await, Outcome::Rejected);
        // The idle connection handles the earlier reload signal at its next statement and
        // stamps its load time then, after the file's time.
        let report = apply(Some(&idle), &opts_for(&tc), |d| {
            d.set_customer_rules("hugo", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(!report.changed && report.reloaded, "{report:?}");
        assert_eq!(attempt(&tc, "hugo", "hugo", true).await, Outcome::Trusted);
        assert!(!marker(&tc).exists(), "the reload clears the marker");
        let again = apply(Some(&idle), &opts_for(&tc), |d| {
            d.set_customer_rules("hugo", &rules).map(|_| ())
        })
        .await
        .unwrap();
        assert!(!again.changed && !again.reloaded, "{again:?}");
    });
}

/// The server's last configuration load (a new connection's backend inherits it).
async fn server_load_time(tc: &TestCluster) -> String {
    tc.connect()
        .await
        .query_one("SELECT pg_conf_load_time()::text", &[])
        .await
        .unwrap()
        .get(0)
}

fn load_time(tc: &TestCluster) -> String {
    block_on(server_load_time(tc))
}

#[test]
fn a_file_the_server_refuses_is_restored_and_not_reloaded() {
    // TLS off: our offline check (which assumes ssl = on) passes a hostssl line, the server's
    // view reports it; apply must put the old file back and not reload.
    let tc = TestCluster::builder().without_tls().start();
    let hba = tc.cluster().hba_file();
    let before = std::fs::read(&hba).unwrap();
    let t0 = load_time(&tc);
    let err = block_on(async {
        let admin = tc.connect().await;
        apply(Some(&admin), &opts_for(&tc), |d| {
            d.set_customer_rules(
                "frank",
                &[RuleSpec::hostssl_scram("frank", "frank", "::/0")],
            )
            .map(|_| ())
        })
        .await
        .unwrap_err()
    });
    assert!(matches!(err, Error::RefusedByServer { .. }), "{err}");
    assert!(err.to_string().contains("SSL is disabled"), "{err}");
    assert_eq!(std::fs::read(&hba).unwrap(), before);
    assert_eq!(load_time(&tc), t0, "no reload may happen");
    assert!(
        !marker(&tc).exists(),
        "the server runs the file on disk: no marker"
    );
}

#[test]
fn an_invalid_edit_writes_nothing() {
    let tc = TestCluster::start();
    let hba = tc.cluster().hba_file();
    let before = std::fs::read(&hba).unwrap();
    let dir_before: Vec<_> = std::fs::read_dir(hba.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = block_on(async {
        let admin = tc.connect().await;
        apply(Some(&admin), &opts_for(&tc), |d| {
            d.set_customer_rules(
                "gina",
                &[RuleSpec::hostssl_scram("gina", "gina", "gina.example/24")],
            )
            .map(|_| ())
        })
        .await
        .unwrap_err()
    });
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("specifying both host name and CIDR mask is invalid"),
        "{err}"
    );
    assert_eq!(std::fs::read(&hba).unwrap(), before);
    let mut dir_after: Vec<_> = std::fs::read_dir(hba.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".costplus.lock"))
        .collect();
    let mut dir_before = dir_before;
    dir_before.sort();
    dir_after.sort();
    assert_eq!(dir_after, dir_before, "no backup or temp file may be left");
}

#[test]
fn concurrent_editors_serialise() {
    let tc = TestCluster::start();
    let opts = opts_for(&tc);
    std::thread::scope(|s| {
        for i in 0..8 {
            let opts = opts.clone();
            s.spawn(move || {
                block_on(apply(None, &opts, |d| {
                    let name = format!("cust{i}");
                    d.set_customer_rules(&name, &[RuleSpec::hostssl_scram(&name, &name, "::/0")])
                        .map(|_| ())
                }))
                .unwrap();
            });
        }
    });
    let doc = Document::parse(&std::fs::read(opts.hba_path).unwrap());
    let mut c = doc.customers();
    c.sort();
    assert_eq!(c, (0..8).map(|i| format!("cust{i}")).collect::<Vec<_>>());
    let _ = Path::new("");
}
