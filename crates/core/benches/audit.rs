//! Benchmark of a full audit (`audit::gather` + `audit::evaluate`, as `costplus-audit` runs it
//! on the database host: catalog, one query inside every customer database, host facts, the
//! certificate and key file, the TLS probe, the pg_hba lint and the isolation proof) of one real
//! PostgreSQL 15 cluster with 10, 100 and 1,000 customers, each with its own database, role and
//! hostssl line in pg_hba.conf.
//!
//! The peer, measured in the same run on the same cluster: the floor of looking inside every
//! customer database, i.e. opening one socket connection per customer database and running
//! `SELECT 1`, with the same concurrency (8). The ratio audit / floor says what the audit costs
//! beyond that unavoidable per-database round trip.
//!
//! Targets (issue #9): 1,000 customers under 5 s, growing at most linearly. Each figure is the
//! best of 3 runs. Run: `cargo bench -p costplus-core --bench audit`.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a benchmark harness: panics and prints

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::config_of;
use costplus_core::audit;
use costplus_core::config::{Config, ServerConfig};
use costplus_testsupport::{TestCluster, block_on};

const ADMIN_HBA: &str = "\
local   all   postgres   peer map=costplus_admin
hostssl all   postgres   127.0.0.1/32   scram-sha-256
hostssl all   postgres   ::1/128        scram-sha-256
";

fn hba(customers: usize) -> String {
    let mut s = String::from(ADMIN_HBA);
    for i in 0..customers {
        s.push_str(&format!(
            "hostssl c{i}_db c{i}_user 0.0.0.0/0 scram-sha-256\nhostssl c{i}_db c{i}_user ::/0 scram-sha-256\n"
        ));
    }
    s.push_str("host all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n");
    s
}

/// Add customers `from..to` as provisioning leaves them (role with a SCRAM password and a
/// connection limit, database owned by it, PUBLIC revoked), and their pg_hba lines.
async fn add_customers(c: &TestCluster, from: usize, to: usize) {
    let admin = c.cluster().connect_socket("postgres").await.unwrap();
    let roles: String = (from..to)
        .map(|i| format!("CREATE ROLE c{i}_user LOGIN CONNECTION LIMIT 20 PASSWORD 'bench-{i}';"))
        .collect();
    admin.batch_execute(&roles).await.unwrap();
    // CREATE DATABASE runs alone (not in a transaction block).
    for i in from..to {
        admin
            .batch_execute(&format!("CREATE DATABASE c{i}_db OWNER c{i}_user"))
            .await
            .unwrap();
    }
    let grants: String = (from..to)
        .map(|i| {
            format!(
                "REVOKE ALL ON DATABASE c{i}_db FROM PUBLIC;\
                 GRANT CONNECT, TEMPORARY ON DATABASE c{i}_db TO c{i}_user;"
            )
        })
        .collect();
    admin.batch_execute(&grants).await.unwrap();
    c.write_server_file(&c.cluster().hba_file(), hba(to).as_bytes());
    c.cluster().reload().unwrap();
}

fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap_or_default()
}

fn audit_once(config: &Config, server: &ServerConfig, customers: usize) -> Duration {
    let t = Instant::now();
    let report = block_on(async {
        let facts = audit::gather(config, server, true).await.unwrap();
        assert_eq!(facts.customers.len(), customers);
        audit::evaluate(&facts)
    });
    let elapsed = t.elapsed();
    // The work really happened: the proof and the lint saw every customer.
    let isolation = report.checks.iter().find(|c| c.id == "ROLE-012").unwrap();
    assert!(
        isolation
            .evidence
            .starts_with(&format!("{customers} customers")),
        "{}",
        isolation.evidence
    );
    std::hint::black_box(report);
    elapsed
}

fn floor_once(c: &TestCluster, customers: usize) -> Duration {
    use futures_util::StreamExt;
    let t = Instant::now();
    let n = block_on(async {
        futures_util::stream::iter(0..customers)
            .map(|i| async move {
                let client = c
                    .cluster()
                    .connect_socket(&format!("c{i}_db"))
                    .await
                    .unwrap();
                client.query_one("SELECT 1", &[]).await.unwrap();
            })
            .buffer_unordered(8)
            .count()
            .await
    });
    assert_eq!(n, customers);
    t.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if quick { &[3, 10] } else { &[10, 100, 1000] };
    let c = TestCluster::builder()
        .hba(ADMIN_HBA)
        .setting("max_connections", "200")
        .start();
    let (config, server) = config_of(&c);
    println!("full audit (gather + evaluate) of one PostgreSQL 15 cluster, best of 3");
    println!(
        "{:>10} {:>10} {:>14} {:>16} {:>12}",
        "customers", "audit s", "ms/customer", "floor s (peer)", "audit/floor"
    );
    let mut have = 0;
    let mut rows = Vec::new();
    for &n in sizes {
        let t = Instant::now();
        block_on(add_customers(&c, have, n));
        have = n;
        eprintln!(
            "provisioned {n} customers in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let audit = best(3, || audit_once(&config, &server, n));
        let floor = best(3, || floor_once(&c, n));
        println!(
            "{:>10} {:>10.3} {:>14.2} {:>16.3} {:>11.1}x",
            n,
            audit.as_secs_f64(),
            audit.as_secs_f64() * 1000.0 / n as f64,
            floor.as_secs_f64(),
            audit.as_secs_f64() / floor.as_secs_f64().max(1e-9)
        );
        rows.push((n, audit));
    }
    for w in rows.windows(2) {
        let ((n0, t0), (n1, t1)) = (w[0], w[1]);
        println!(
            "growth {n0} -> {n1} customers: {:.2} ms per added customer; time x{:.2} for customers x{:.0} (linear would be at most x{:.0})",
            (t1.as_secs_f64() - t0.as_secs_f64()) * 1000.0 / (n1 - n0) as f64,
            t1.as_secs_f64() / t0.as_secs_f64().max(1e-9),
            n1 as f64 / n0 as f64,
            n1 as f64 / n0 as f64
        );
    }
    if let Some((n, t)) = rows.last()
        && *n == 1000
    {
        println!(
            "target: 1,000 customers under 5 s: {} ({:.3} s)",
            if *t < Duration::from_secs(5) {
                "met"
            } else {
                "NOT met"
            },
            t.as_secs_f64()
        );
    }
}
