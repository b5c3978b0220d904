//! One customer back in time: selective point-in-time restore into a new database on the live
//! server, against real PostgreSQL and pgBackRest.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

mod common;

use common::Rig;
use costplus_pgbackrest::BackupType;
use costplus_pgbackrest::customer::{self, CustomerRestoreOptions};
use costplus_testsupport::block_on;

#[test]
fn restore_customer_brings_back_deleted_rows_into_a_new_database_only() {
    let rig = Rig::new(false);
    rig.sql(
        "postgres",
        "CREATE ROLE acme_user LOGIN; CREATE ROLE globex_user LOGIN",
    );
    rig.sql("postgres", "CREATE DATABASE acme_db OWNER acme_user");
    rig.sql("postgres", "CREATE DATABASE globex_db OWNER globex_user");
    rig.sql(
        "acme_db",
        "SET ROLE acme_user; CREATE TABLE orders (id int PRIMARY KEY);
         INSERT INTO orders SELECT generate_series(1, 100)",
    );
    rig.sql(
        "globex_db",
        "SET ROLE globex_user; CREATE TABLE items AS SELECT generate_series(1, 10) AS id",
    );
    rig.backup(BackupType::Full, 1);
    // pgBackRest picks the newest set that stopped before the target, in whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Rows written after the backup, then the moment to go back to.
    rig.sql(
        "acme_db",
        "INSERT INTO orders SELECT generate_series(101, 150)",
    );
    let target: String = block_on(async {
        let c = rig.pg.connect().await;
        let t: String = c.query_one("SELECT now()::text", &[]).await.unwrap().get(0);
        t
    });
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The accident, and unrelated work of another customer.
    rig.sql("acme_db", "DELETE FROM orders WHERE id > 20");
    rig.sql(
        "globex_db",
        "INSERT INTO items SELECT generate_series(11, 15)",
    );
    // Make sure the WAL past the target is in the archive.
    rig.pgbr.check().unwrap();

    let live = rig.pg.connect_options("postgres");
    let opts = CustomerRestoreOptions {
        database: "acme_db".into(),
        role: "acme_user".into(),
        target: target.clone(),
        into: customer::default_into("acme_db", chrono::Utc::now()),
        repo: 1,
        scratch_dir: rig.cfg.scratch_dir(),
        process_max: Some(2),
        superuser: "postgres".into(),
        bin: None,
        replace: None,
    };
    // The plan changes nothing.
    let plan = customer::plan(&rig.pgbr, &opts);
    assert!(!plan.done);
    assert!(
        plan.steps
            .iter()
            .any(|s| s.contains("--db-include=acme_db")),
        "{plan:?}"
    );
    let report = block_on(customer::run(&rig.pgbr, &live, &opts)).unwrap();
    assert!(report.done && report.tables == Some(1), "{report:?}");

    // The rows are back in the new database, owned by the customer's role.
    assert_eq!(
        rig.count(&opts.into, "SELECT count(*) FROM orders"),
        150,
        "restored to {target}"
    );
    assert_eq!(
        rig.count(
            &opts.into,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'orders' AND tableowner = 'acme_user'"
        ),
        1
    );
    assert_eq!(
        rig.count(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
                 WHERE datname = '{}' AND rolname = 'acme_user'
                   AND NOT has_database_privilege('globex_user', datname, 'CONNECT')",
                opts.into
            )
        ),
        1
    );
    // The live database and the other customer are untouched.
    assert_eq!(rig.count("acme_db", "SELECT count(*) FROM orders"), 20);
    assert_eq!(rig.count("globex_db", "SELECT count(*) FROM items"), 15);
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(rig.cfg.scratch_dir()).unwrap().count(), 0);

    // Never over the live database, never over an existing one.
    for into in ["acme_db", opts.into.as_str()] {
        let o = CustomerRestoreOptions {
            into: into.to_string(),
            ..opts.clone()
        };
        let e = block_on(customer::run(&rig.pgbr, &live, &o))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("never overwrites") || e.contains("already exists"),
            "{e}"
        );
    }

    // Asked explicitly: the restored copy takes the live database's place; the live one is
    // kept, refusing connections; a session on it is ended.
    let keep = customer::default_keep_as("acme_db", chrono::Utc::now());
    let e = block_on(customer::replace_live(
        &live,
        "acme_db",
        &opts.into,
        "globex_db",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("already exists") && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(rig.count("acme_db", "SELECT count(*) FROM orders"), 20);
    let r = block_on(async {
        let session = rig.pg.connect_db("acme_db").await;
        let r = customer::replace_live(&live, "acme_db", &opts.into, &keep)
            .await
            .unwrap();
        assert!(
            session.simple_query("SELECT 1").await.is_err(),
            "the old session lives"
        );
        r
    });
    assert_eq!(
        (r.kept_as.as_str(), r.terminated_sessions),
        (keep.as_str(), 1)
    );
    assert_eq!(rig.count("acme_db", "SELECT count(*) FROM orders"), 150);
    assert_eq!(
        rig.count(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{keep}' AND NOT datallowconn"
            )
        ),
        1
    );
    assert_eq!(
        rig.count(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                opts.into
            )
        ),
        0
    );
    assert_eq!(rig.count("globex_db", "SELECT count(*) FROM items"), 15);
}
