//! Provisioning, deprovisioning, rotation and drift against a real cluster, with the vault and
//! pg_hba.conf for real; crash safety with failpoints at every step boundary.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

mod common;

use costplus_core::customer::{self, DeprovisionOptions, ProvisionOptions};
use costplus_vault::Status;
use secrecy::ExposeSecret;

#[tokio::test]
async fn provision_creates_an_isolated_tls_only_customer() {
    let env = common::env();
    let r = env
        .with_ctx(async |ctx| {
            customer::provision(ctx, "acme", ProvisionOptions::default())
                .await
                .unwrap()
        })
        .await;
    assert_eq!(
        (r.database.as_str(), r.role.as_str()),
        ("acme_db", "acme_user")
    );
    assert!(!r.already_provisioned && !r.plan);
    assert!(
        r.hba_diff.contains(
            "+hostssl acme_db acme_user 127.0.0.0/8 scram-sha-256 # costplus customer=acme"
        ),
        "{}",
        r.hba_diff
    );

    let admin = env.admin().await;
    let row = admin
        .query_one(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, rolconnlimit, \
             (SELECT rolpassword FROM pg_authid WHERE rolname = 'acme_user') LIKE 'SCRAM-SHA-256$%', \
             has_database_privilege('public', 'acme_db', 'CONNECT'), has_database_privilege('public', 'acme_db', 'TEMP'), \
             (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'acme_db') \
             FROM pg_roles WHERE rolname = 'acme_user'",
            &[],
        )
        .await
        .unwrap();
    let flags: Vec<bool> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(flags, vec![false, false, false, false, false, true]);
    assert_eq!(row.get::<_, i32>(6), 5);
    assert!(
        row.get::<_, bool>(7),
        "the stored password is not a SCRAM verifier"
    );
    assert!(
        !row.get::<_, bool>(8) && !row.get::<_, bool>(9),
        "PUBLIC keeps CONNECT or TEMP"
    );
    assert_eq!(row.get::<_, String>(10), "acme_user");
    assert_eq!(env.vault().summary("acme").unwrap().status, Status::Active);
    assert!(
        costplus_core::customer::journal::Journal::load(&env.state(), "t", "acme")
            .unwrap()
            .is_none()
    );

    // The customer logs in over TLS with the vault's password and owns the public schema.
    let c = env.login("acme", "acme_db", true).await.unwrap();
    c.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // ... never without TLS, and never into the admin database.
    assert!(
        env.login("acme", "acme_db", false)
            .await
            .unwrap_err()
            .contains("pg_hba.conf rejects")
    );
    assert!(env.login("acme", "postgres", true).await.is_err());

    // Idempotent: again, and as a plan, it names the objects and has nothing to do.
    let again = env
        .with_ctx(async |ctx| {
            customer::provision(ctx, "acme", ProvisionOptions::default())
                .await
                .unwrap()
        })
        .await;
    assert!(again.already_provisioned);
    let plan = env
        .with_ctx(async |ctx| {
            customer::provision(ctx, "acme", ProvisionOptions { plan: true })
                .await
                .unwrap()
        })
        .await;
    assert!(plan.already_provisioned);
    assert_eq!(
        (plan.database.as_str(), plan.role.as_str()),
        ("acme_db", "acme_user")
    );
}

#[tokio::test]
async fn plan_changes_nothing() {
    let env = common::env();
    let before = env.footprint().await;
    let hba_before = env.hba();
    let plan = env
        .with_ctx(async |ctx| {
            customer::provision(ctx, "newco", ProvisionOptions { plan: true })
                .await
                .unwrap()
        })
        .await;
    assert!(plan.plan && !plan.already_provisioned);
    assert!(plan.hba_diff.contains("newco_db"));
    let sql: String = plan
        .steps
        .iter()
        .flat_map(|s| s.sql.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        sql.contains("CREATE ROLE \"newco_user\"") && sql.contains("<redacted>"),
        "{sql}"
    );
    assert_eq!(env.footprint().await, before);
    assert_eq!(env.hba(), hba_before);
}

#[tokio::test]
async fn hostile_names_leave_no_trace() {
    let env = common::env();
    let before = env.footprint().await;
    let hba_before = env.hba();
    let long = "a".repeat(200);
    let hostile = [
        "",
        " ",
        "\t",
        "acme;",
        "x\"; DROP ROLE postgres; --",
        "a'b",
        "Acme",
        "аcme",
        "acmе",
        "ac me",
        &long,
        "postgres",
        "template0",
        "template1",
        "pg_read_all_data",
        "public",
        "all",
        "replication",
        "1abc",
        "_x",
        "a-b",
        "a/b",
        "a\nb",
        "a\0b",
    ];
    for name in hostile {
        let err = env
            .with_ctx(async |ctx| {
                customer::provision(ctx, name, ProvisionOptions::default())
                    .await
                    .unwrap_err()
            })
            .await;
        let text = err.to_string();
        assert!(
            text.contains("customer name") || text.contains("empty"),
            "{name:?}: {text}"
        );
    }
    assert_eq!(env.footprint().await, before);
    assert_eq!(env.hba(), hba_before);
    assert!(
        !env.state().join("journal").exists()
            || std::fs::read_dir(env.state().join("journal/t"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0
    );
}

#[tokio::test]
async fn the_password_never_reaches_the_server_log() {
    let env = common::env_with(
        costplus_testsupport::TestCluster::builder().setting("log_statement", "'all'"),
    );
    let report = env
        .with_ctx(async |ctx| {
            customer::provision(ctx, "secretive", ProvisionOptions::default())
                .await
                .unwrap()
        })
        .await;
    let password = env
        .vault()
        .get("secretive")
        .unwrap()
        .secret
        .expose_secret()
        .to_string();
    assert_eq!(password.len(), 32);
    let log = env.cluster.log();
    assert!(
        log.contains("CREATE ROLE \"secretive_user\""),
        "log_statement=all did not log the DDL"
    );
    assert!(
        !log.contains(&password),
        "the password is in the server log"
    );
    assert!(!serde_json::to_string(&report).unwrap().contains(&password));
    // Nor in the state directory (journals) or pg_hba.conf.
    for entry in walk(&env.state()) {
        assert!(
            !std::fs::read_to_string(&entry)
                .unwrap_or_default()
                .contains(&password),
            "{}",
            entry.display()
        );
    }
    assert!(!env.hba().contains(&password));
    // Nor in any process's command line right now.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            assert!(!String::from_utf8_lossy(&cmd).contains(&password));
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

const STEPS: &[&str] = &[
    "provision-after-vault-pending",
    "provision-after-role",
    "provision-after-database",
    "provision-after-privileges",
    "provision-after-schema",
    "provision-after-hba",
];

#[tokio::test]
async fn a_crash_at_every_step_is_finished_by_running_again() {
    let env = common::env();
    for (i, fp) in STEPS.iter().enumerate() {
        let name = format!("crash{i}");
        fail::cfg(*fp, "return").unwrap();
        let err = env
            .with_ctx(async |ctx| {
                customer::provision(ctx, &name, ProvisionOptions::default())
                    .await
                    .unwrap_err()
            })
            .await;
        assert!(err.to_string().contains(fp), "{err}");
        fail::remove(*fp);
        let journal = customer::journal::Journal::load(&env.state(), "t", &name)
            .unwrap()
            .expect("a crash leaves a journal");
        assert_eq!(journal.done.len(), i + 1, "{fp}: {:?}", journal.done);
        let plan = env
            .with_ctx(async |ctx| {
                customer::provision(ctx, &name, ProvisionOptions { plan: true })
                    .await
                    .unwrap()
            })
            .await;
        assert!(plan.resumed);
        let done = env
            .with_ctx(async |ctx| {
                customer::provision(ctx, &name, ProvisionOptions::default())
                    .await
                    .unwrap()
            })
            .await;
        assert!(done.resumed && !done.already_provisioned, "{fp}");
        assert_eq!(
            env.vault().summary(name.as_str()).unwrap().status,
            Status::Active,
            "{fp}"
        );
        env.login(&name, &format!("{name}_db"), true)
            .await
            .unwrap_or_else(|e| panic!("{fp}: {e}"));
    }
}

#[tokio::test]
async fn abort_undoes_a_half_done_provisioning() {
    let env = common::env();
    let before = env.footprint().await;
    let hba_before = env.hba();
    for fp in STEPS {
        fail::cfg(*fp, "return").unwrap();
        env.with_ctx(async |ctx| {
            customer::provision(ctx, "halfway", ProvisionOptions::default())
                .await
                .unwrap_err()
        })
        .await;
        fail::remove(*fp);
        let r = env
            .with_ctx(async |ctx| {
                customer::abort_provision(ctx, "halfway", false)
                    .await
                    .unwrap()
            })
            .await;
        assert!(!r.undone.is_empty(), "{fp}");
        assert_eq!(env.footprint().await, before, "after abort at {fp}");
        assert_eq!(env.hba(), hba_before, "after abort at {fp}");
    }
    let err = env
        .with_ctx(async |ctx| {
            customer::abort_provision(ctx, "halfway", false)
                .await
                .unwrap_err()
        })
        .await;
    assert!(err.to_string().contains("nothing to abort"));
}

#[tokio::test]
async fn sigkill_between_steps_is_recovered() {
    // The example binary provisions with a failpoint that sleeps at a step boundary; we kill -9
    // it there, then finish in this process.
    let env = common::env();
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("provision_one");
    assert!(
        example.is_file(),
        "{} missing (cargo test builds examples)",
        example.display()
    );
    for fp in ["provision-after-role", "provision-after-schema"] {
        let name = format!("killed_{}", fp.rsplit('-').next().unwrap());
        let mut child = std::process::Command::new(&example)
            .arg(&env.config.path)
            .arg(&name)
            .env("FAILPOINTS", format!("{fp}=sleep(60000)"))
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let j = customer::journal::Journal::load(&env.state(), "t", &name).unwrap();
            let step = fp.trim_start_matches("provision-after-");
            if j.is_some_and(|j| j.is_done(step)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child never reached {fp}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        let done = env
            .with_ctx(async |ctx| {
                customer::provision(ctx, &name, ProvisionOptions::default())
                    .await
                    .unwrap()
            })
            .await;
        assert!(done.resumed, "{fp}");
        env.login(&name, &format!("{name}_db"), true).await.unwrap();
    }
}

#[tokio::test]
async fn deprovision_removes_everything_and_archives_the_credentials() {
    let env = common::env();
    let before = env.footprint().await;
    let hba_before = env.hba();
    env.with_ctx(async |ctx| {
        customer::provision(ctx, "leaving", ProvisionOptions::default())
            .await
            .unwrap()
    })
    .await;
    let session = env.login("leaving", "leaving_db", true).await.unwrap();
    session
        .batch_execute("CREATE TABLE keep (x int); INSERT INTO keep VALUES (42)")
        .await
        .unwrap();
    // Plan: nothing changes.
    let plan = env
        .with_ctx(async |ctx| {
            customer::deprovision(
                ctx,
                "leaving",
                DeprovisionOptions {
                    plan: true,
                    final_dump: None,
                },
            )
            .await
            .unwrap()
        })
        .await;
    assert!(plan.plan && plan.hba_diff.contains("-hostssl"));
    assert!(env.login("leaving", "leaving_db", true).await.is_ok());
    let dumps = env.dir.path().join("dumps");
    let r = env
        .with_ctx(async |ctx| {
            customer::deprovision(
                ctx,
                "leaving",
                DeprovisionOptions {
                    plan: false,
                    final_dump: Some(dumps.clone()),
                },
            )
            .await
            .unwrap()
        })
        .await;
    assert!(r.sessions_terminated >= 1);
    let dump = r.final_dump.unwrap();
    assert!(std::fs::metadata(&dump).unwrap().len() > 0);
    // The dump is real: pg_restore lists the table.
    let list = std::process::Command::new(
        costplus_pgcluster::PgBin::locate()
            .unwrap()
            .tool("pg_restore"),
    )
    .arg("-l")
    .arg(&dump)
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE public keep"));
    let (roles, dbs, hba, vault) = env.footprint().await;
    assert_eq!((roles, dbs, hba), (before.0, before.1, before.2));
    assert_eq!(vault, vec!["leaving:archived".to_string()]);
    assert_eq!(env.hba(), hba_before);
    let err = env
        .with_ctx(async |ctx| {
            customer::deprovision(ctx, "leaving", DeprovisionOptions::default())
                .await
                .unwrap_err()
        })
        .await;
    assert!(err.to_string().contains("no customer leaving"), "{err}");
    let err = env
        .with_ctx(async |ctx| {
            customer::deprovision(ctx, "postgres", DeprovisionOptions::default())
                .await
                .unwrap_err()
        })
        .await;
    assert!(err.to_string().contains("reserved"), "{err}");
}

#[tokio::test]
async fn rotation_and_connection_limit() {
    let env = common::env();
    env.with_ctx(async |ctx| {
        customer::provision(ctx, "rot", ProvisionOptions::default())
            .await
            .unwrap()
    })
    .await;
    let old = env
        .vault()
        .get("rot")
        .unwrap()
        .secret
        .expose_secret()
        .to_string();
    let r = env
        .with_ctx(async |ctx| customer::rotate(ctx, "rot", false).await.unwrap())
        .await;
    assert_eq!(r.generation, Some(2));
    let new = env
        .vault()
        .get("rot")
        .unwrap()
        .secret
        .expose_secret()
        .to_string();
    assert_ne!(old, new);
    env.login("rot", "rot_db", true).await.unwrap();
    let mut o = env.cluster.connect_options("rot_db");
    o.user = "rot_user".into();
    o.password = Some(old.into());
    assert!(
        costplus_pgcluster::connect::connect(&o).await.is_err(),
        "the old password still works"
    );
    // A crash between the vault and the server is finished by running rotate again.
    fail::cfg("rotate-after-vault", "return").unwrap();
    env.with_ctx(async |ctx| customer::rotate(ctx, "rot", false).await.unwrap_err())
        .await;
    fail::remove("rotate-after-vault");
    env.with_ctx(async |ctx| customer::rotate(ctx, "rot", false).await.unwrap())
        .await;
    env.login("rot", "rot_db", true).await.unwrap();
    let sql = env
        .with_ctx(async |ctx| {
            customer::set_connection_limit(ctx, "rot", 2, false)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(sql, "ALTER ROLE \"rot_user\" CONNECTION LIMIT 2");
    let limit: i32 = env
        .admin()
        .await
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'rot_user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 2);
}

#[tokio::test]
async fn list_reports_drift() {
    let env = common::env();
    env.with_ctx(async |ctx| {
        customer::provision(ctx, "good", ProvisionOptions::default())
            .await
            .unwrap()
    })
    .await;
    let admin = env.admin().await;
    admin
        .batch_execute("CREATE ROLE stray_user LOGIN")
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE orphan_db")
        .await
        .unwrap();
    let list = env
        .with_ctx(async |ctx| customer::list(ctx).await.unwrap())
        .await;
    let get = |n: &str| list.iter().find(|c| c.customer == n).unwrap().clone();
    assert!(get("good").drift.is_empty(), "{:?}", get("good"));
    assert_eq!(
        get("stray").drift,
        vec!["role without database", "role without vault record"]
    );
    assert_eq!(
        get("orphan").drift,
        vec!["database without role", "database without pg_hba rules"]
    );
}

#[tokio::test]
async fn batch_provisioning_uses_one_apply() {
    let env = common::env();
    let names: Vec<String> = (1..=6).map(|i| format!("batch{i}")).collect();
    let reports = env
        .with_ctx(async |ctx| {
            customer::provision_batch(ctx, &names, ProvisionOptions::default())
                .await
                .unwrap()
        })
        .await;
    assert_eq!(reports.len(), 6);
    let hba = costplus_hba::Document::parse(env.hba().as_bytes());
    assert_eq!(hba.customers(), names);
    let backups = std::fs::read_dir(env.state().join("hba/t/backups"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".costplus-backup.")
        })
        .count();
    assert_eq!(backups, 1, "one apply, one backup");
    for n in &names {
        assert_eq!(
            env.vault().summary(n.as_str()).unwrap().status,
            Status::Active
        );
        let c = env.login(n, &format!("{n}_db"), true).await.unwrap();
        let ok: bool = c
            .query_one(
                "SELECT NOT has_schema_privilege('public', 'public', 'CREATE')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ok, "{n}: PUBLIC can create in public");
    }
    // A batch with one bad name does nothing at all.
    let before = env.footprint().await;
    let bad = vec!["fine1".to_string(), "Bad".to_string()];
    env.with_ctx(async |ctx| {
        customer::provision_batch(ctx, &bad, ProvisionOptions::default())
            .await
            .unwrap_err()
    })
    .await;
    assert_eq!(env.footprint().await, before);
    // A customer another session is working on (its lock is held) fails the batch at once,
    // naming it, with nothing done for the others.
    let dir = env.config.state_dir().join("journal").join("t");
    std::fs::create_dir_all(&dir).unwrap();
    let held = costplus_fs::LockFile::acquire(&dir.join("busy2.lock")).unwrap();
    let busy = vec!["busy1".to_string(), "busy2".to_string()];
    let err = env
        .with_ctx(async |ctx| {
            customer::provision_batch(ctx, &busy, ProvisionOptions::default())
                .await
                .unwrap_err()
        })
        .await
        .to_string();
    assert!(
        err.contains("busy2") && err.contains("another costplus session"),
        "{err}"
    );
    assert_eq!(env.footprint().await, before);
    drop(held);
}

/// A batch that crashes at a phase boundary leaves a journal for every customer: each one is
/// finished by `provision NAME` or undone by `--abort`, on its own. 16 customers, so the
/// databases are created over two connections.
#[tokio::test]
async fn a_crashed_batch_is_finished_or_undone_customer_by_customer() {
    let env = common::env();
    let before = env.footprint().await;
    for (i, fp) in [
        "provision-batch-after-vault",
        "provision-batch-after-databases",
        "provision-batch-after-hba",
    ]
    .iter()
    .enumerate()
    {
        let names: Vec<String> = (0..16).map(|k| format!("cb{i}n{k}")).collect();
        fail::cfg(*fp, "return").unwrap();
        let err = env
            .with_ctx(async |ctx| {
                customer::provision_batch(ctx, &names, ProvisionOptions::default())
                    .await
                    .unwrap_err()
            })
            .await;
        assert!(err.to_string().contains(fp), "{err}");
        fail::remove(*fp);
        let journals = customer::journal::Journal::list(&env.state(), "t").unwrap();
        assert_eq!(journals.len(), names.len(), "{fp}");
        let (finish, undo) = names.split_at(names.len() / 2);
        for n in finish {
            let r = env
                .with_ctx(async |ctx| {
                    customer::provision(ctx, n, ProvisionOptions::default())
                        .await
                        .unwrap()
                })
                .await;
            assert!(r.resumed && !r.already_provisioned, "{fp}: {n}");
            assert_eq!(
                env.vault().summary(n.as_str()).unwrap().status,
                Status::Active,
                "{fp}: {n}"
            );
        }
        env.login(&finish[0], &format!("{}_db", finish[0]), true)
            .await
            .unwrap_or_else(|e| panic!("{fp}: {e}"));
        for n in undo {
            env.with_ctx(async |ctx| customer::abort_provision(ctx, n, false).await.unwrap())
                .await;
        }
        assert!(
            customer::journal::Journal::list(&env.state(), "t")
                .unwrap()
                .is_empty(),
            "{fp}"
        );
        let list = env
            .with_ctx(async |ctx| customer::list(ctx).await.unwrap())
            .await;
        let mine: Vec<&String> = list
            .iter()
            .map(|c| &c.customer)
            .filter(|c| c.starts_with(&format!("cb{i}")))
            .collect();
        assert_eq!(mine, finish.iter().collect::<Vec<_>>(), "{fp}");
        assert!(list.iter().all(|c| c.drift.is_empty()), "{fp}: {list:?}");
    }
    // Deprovision the finished ones: the system is back to where it was.
    for i in 0..3 {
        for k in 0..8 {
            let n = format!("cb{i}n{k}");
            env.with_ctx(async |ctx| {
                customer::deprovision(ctx, &n, DeprovisionOptions::default())
                    .await
                    .unwrap()
            })
            .await;
        }
    }
    let (roles, dbs, hba, _) = env.footprint().await;
    assert_eq!((roles, dbs, hba), (before.0, before.1, before.2));
}
