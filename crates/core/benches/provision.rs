//! Provisioning benchmark (issue #6, "Performance"), with the peers measured in the same run,
//! each on a fresh PostgreSQL 15 cluster (the same template, settings and pg_hba.conf):
//!
//! - (a) costplus one by one: `customer::provision` for each customer in turn (one session: one
//!   admin connection, the vault opened once);
//! - (b) costplus batch: `customer::provision_batch` for all of them;
//! - (c) the seed's bash script (`benches/seed_provision.sh`): `openssl rand`, one psql process
//!   per statement, `echo >> pg_hba.conf`, a reload per customer, a plaintext credentials file;
//! - (d) the floor: only `CREATE ROLE` + `CREATE DATABASE` + `REVOKE` over one connection;
//!   for reference also over 4 connections (the batch creates its databases over up to 4).
//!
//! Targets: (b) at least 3x faster than (c) and within 1.3x of (d). Then the isolation proof for
//! 1,000 customers (provisioned by the batch path), live login sample excluded: target < 2 s.
//!
//! Each figure is the best of `PROVISION_BENCH_ROUNDS` rounds (default 2; a round runs every
//! variant in turn, each creating 200 databases on a fresh cluster): the machine is shared and
//! the minimum is the estimate least disturbed by others. `PROVISION_BENCH_ONLY=b,d,iso` runs
//! a subset. Run: `cargo bench -p costplus-core --bench provision`.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness: panics and prints

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use costplus_core::customer::isolation::{self, CheckOptions};
use costplus_core::customer::{self, ProvisionOptions, Session};
use costplus_hba::{PgVersion, ReadOptions};
use costplus_testsupport::block_on;

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Customers (role and database, as the naming policy names them) on the server.
async fn count_customers(env: &common::Env) -> (i64, i64) {
    let admin = env.admin().await;
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE '%\\_user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let dbs: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_db'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (roles, dbs)
}

/// Every customer exists completely: role, database, pg_hba rules, an active vault record.
fn assert_complete(env: &common::Env, names: &[String]) {
    let (roles, dbs) = block_on(count_customers(env));
    assert_eq!((roles, dbs), (names.len() as i64, names.len() as i64));
    let hba = costplus_hba::Document::parse(env.hba().as_bytes()).customers();
    assert_eq!(hba.len(), names.len());
    let vault = env.vault();
    for n in names {
        let s = vault.summary(n.as_str()).unwrap();
        assert_eq!(s.status, costplus_vault::Status::Active, "{n}");
    }
}

fn one_by_one(names: &[String]) -> Duration {
    let env = common::env();
    let t = block_on(env.with_ctx(async |ctx| {
        let t = Instant::now();
        for n in names {
            customer::provision(ctx, n, ProvisionOptions::default())
                .await
                .unwrap();
        }
        t.elapsed()
    }));
    assert_complete(&env, names);
    t
}

fn batch(names: &[String]) -> Duration {
    let env = common::env();
    let t = block_on(env.with_ctx(async |ctx| {
        let t = Instant::now();
        customer::provision_batch(ctx, names, ProvisionOptions::default())
            .await
            .unwrap();
        t.elapsed()
    }));
    assert_complete(&env, names);
    t
}

fn seed_script(names: &[String]) -> Duration {
    let env = common::env();
    let cluster = env.cluster.cluster();
    let dir = env.dir.path();
    let list = dir.join("names.txt");
    std::fs::write(&list, names.join("\n") + "\n").unwrap();
    let pgpass = dir.join("pgpass");
    costplus_fs::write_atomic(
        &pgpass,
        format!(
            "*:*:*:{}:{}\n",
            env.cluster.superuser(),
            env.cluster.password()
        )
        .as_bytes(),
        &costplus_fs::WriteOptions::private(),
    )
    .unwrap();
    let creds = dir.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/seed_provision.sh");
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(&list)
        .env("PGHOST", cluster.socket_dir())
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", cluster.superuser())
        .env("PGPASSFILE", &pgpass)
        .env("PG_HBA", cluster.hba_file())
        .env("CREDENTIALS_DIR", &creds)
        .env(
            "CONNECTION_LIMIT",
            env.config.customers.connection_limit.to_string(),
        )
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "seed script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (roles, dbs) = block_on(count_customers(&env));
    assert_eq!((roles, dbs), (names.len() as i64, names.len() as i64));
    assert_eq!(std::fs::read_dir(&creds).unwrap().count(), names.len());
    elapsed
}

/// The floor: per customer only `CREATE ROLE`, `CREATE DATABASE ... OWNER` and `REVOKE ALL ON
/// DATABASE ... FROM PUBLIC`, over `connections` admin connections (customers dealt round-robin).
fn floor(names: &[String], connections: usize) -> Duration {
    let env = common::env();
    let t = block_on(async {
        let mut clients = Vec::new();
        for _ in 0..connections {
            clients.push(env.admin().await);
        }
        let t = Instant::now();
        let lanes = clients.iter().enumerate().map(|(lane, admin)| {
            let mine: Vec<&String> = names.iter().skip(lane).step_by(connections).collect();
            async move {
                for n in mine {
                    let (role, db) = (format!("\"{n}_user\""), format!("\"{n}_db\""));
                    admin
                        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
                        .await
                        .unwrap();
                    admin
                        .batch_execute(&format!("CREATE DATABASE {db} OWNER {role}"))
                        .await
                        .unwrap();
                    admin
                        .batch_execute(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"))
                        .await
                        .unwrap();
                }
            }
        });
        futures_util::future::join_all(lanes).await;
        t.elapsed()
    });
    let (roles, dbs) = block_on(count_customers(&env));
    assert_eq!((roles, dbs), (names.len() as i64, names.len() as i64));
    t
}

/// The isolation proof's figures, each the best of its runs.
struct IsolationTimes {
    /// Provisioning the customers by the batch path (setup, reported for scale).
    provision: Duration,
    /// `isolation::check`: catalog + pg_hba.
    check: Duration,
    /// `Session::open` + `isolation(0)`: the command path, which also looks inside each database.
    command: Duration,
    /// The look inside each database alone (`look_inside`, concurrency 8 as the command uses).
    inside: Duration,
    /// Its floor: only connecting to each database over the socket, concurrency 8, no query.
    connect_floor: Duration,
}

/// Provision `n` customers by the batch path, then time the isolation proof without the live
/// sample: the library's `isolation::check` (catalog + pg_hba) and the whole command path
/// (`Session::isolation(0)`, which also looks inside every customer database), and beside it
/// the floor of any per-database look: a bare connection to each database.
fn isolation_proof(n: usize, runs: usize) -> IsolationTimes {
    let env = common::env();
    let names = names("iso", n);
    let provision = block_on(env.with_ctx(async |ctx| {
        let t = Instant::now();
        customer::provision_batch(ctx, &names, ProvisionOptions::default())
            .await
            .unwrap();
        t.elapsed()
    }));
    let check = block_on(async {
        let admin = env.admin().await;
        let vault = env.vault();
        let opts = CheckOptions {
            live_pairs: 0,
            hba_file: env.cluster.cluster().hba_file(),
            read: ReadOptions::for_version(PgVersion::new(15).unwrap()),
        };
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let t = Instant::now();
            let r = isolation::check(
                &admin,
                &env.config,
                &env.config.servers[0],
                &opts,
                None,
                Some(&vault),
            )
            .await
            .unwrap();
            best = best.min(t.elapsed());
            assert_eq!(r.customers, n);
            assert!(r.violations.is_empty(), "{:?}", &r.violations[..1]);
        }
        best
    });
    let command = block_on(async {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let t = Instant::now();
            let session = Session::open(env.config.clone(), None, None).await.unwrap();
            let r = session.isolation(0).await.unwrap();
            best = best.min(t.elapsed());
            assert_eq!(r.customers, n);
            assert!(r.violations.is_empty(), "{:?}", &r.violations[..1]);
        }
        best
    });
    let (inside, connect_floor) = block_on(async {
        use futures_util::StreamExt;
        let dbs = env
            .texts("SELECT datname FROM pg_database WHERE datname LIKE 'iso%'")
            .await;
        assert_eq!(dbs.len(), n);
        let cluster = env.cluster.cluster();
        let connect = |db: String| async move { cluster.connect_socket(&db).await.ok() };
        let (mut inside, mut floor) = (Duration::MAX, Duration::MAX);
        for _ in 0..runs {
            let t = Instant::now();
            let seen = costplus_core::audit::facts::look_inside(dbs.clone(), connect, 8).await;
            inside = inside.min(t.elapsed());
            assert_eq!(seen.len(), n);
            let t = Instant::now();
            let opened = futures_util::stream::iter(dbs.clone())
                .map(connect)
                .buffer_unordered(8)
                .filter(|c| std::future::ready(c.is_some()))
                .count()
                .await;
            floor = floor.min(t.elapsed());
            assert_eq!(opened, n);
        }
        (inside, floor)
    });
    IsolationTimes {
        provision,
        check,
        command,
        inside,
        connect_floor,
    }
}

/// One way of provisioning a list of customers, timed.
type Variant = dyn Fn(&[String]) -> Duration;

fn main() {
    // `cargo test --benches` runs this without --bench: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, iso_n) = if quick { (10, 20) } else { (200, 1_000) };
    let rounds: usize = std::env::var("PROVISION_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 2 });
    let only = std::env::var("PROVISION_BENCH_ONLY").unwrap_or_default();
    let want = |v: &str| only.is_empty() || only.split(',').any(|o| o == v);
    // The variants in turn, round after round (the machine is shared: each keeps its best).
    let variants: [(&str, &Variant); 5] = [
        ("a", &one_by_one),
        ("b", &batch),
        ("c", &seed_script),
        ("d", &|names| floor(names, 1)),
        ("d4", &|names| floor(names, 4)),
    ];
    let mut best: Vec<Option<Duration>> = vec![None; variants.len()];
    for round in 0..rounds {
        for (i, (label, f)) in variants.iter().enumerate() {
            if want(label) {
                let t = f(&names(&format!("{label}r{round}x"), n));
                best[i] = Some(best[i].map_or(t, |b| b.min(t)));
            }
        }
    }
    let [a, b, c, d, d4] = [best[0], best[1], best[2], best[3], best[4]];
    println!("provision {n} customers, fresh PostgreSQL 15 cluster per variant, best of {rounds}:");
    let row = |label: &str, t: Option<Duration>| {
        if let Some(t) = t {
            let mut line = format!(
                "  {label:<44} {:>9.0} ms  {:>6.1} ms/customer",
                ms(t),
                ms(t) / n as f64
            );
            if let Some(b) = b {
                line.push_str(&format!("   batch/this {:.2}", ms(b) / ms(t)));
            }
            println!("{line}");
        }
    };
    row("(a) costplus one by one", a);
    row("(b) costplus batch", b);
    row("(c) seed bash script (psql per statement)", c);
    row("(d) floor: CREATE ROLE/DATABASE + REVOKE", d);
    row("    the floor over 4 connections (reference)", d4);
    if let (Some(b), Some(c)) = (b, c) {
        println!(
            "  batch is {:.1}x faster than the seed script (target >= 3x)",
            ms(c) / ms(b)
        );
    }
    if let (Some(b), Some(d)) = (b, d) {
        println!(
            "  batch takes {:.2}x the floor (target <= 1.3x)",
            ms(b) / ms(d)
        );
    }

    if want("iso") {
        let t = isolation_proof(iso_n, 3);
        println!(
            "isolation proof, {iso_n} customers (provisioned by batch in {:.1} s), live sample excluded, best of 3:",
            t.provision.as_secs_f64()
        );
        println!(
            "  isolation::check (catalog + pg_hba)           {:>9.0} ms   (target < 2000 ms)",
            ms(t.check)
        );
        println!(
            "  Session::open + isolation(0) (command path)   {:>9.0} ms   (also looks inside each database)",
            ms(t.command)
        );
        println!(
            "  the look inside each database alone           {:>9.0} ms   (one backend start-up per database, 8 at a time)",
            ms(t.inside)
        );
        println!(
            "  floor: a bare connection to each database     {:>9.0} ms   (no query, 8 at a time)",
            ms(t.connect_floor)
        );
    }
}
