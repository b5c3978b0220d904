//! The isolation proof against a real cluster: clean customers prove isolated (catalog,
//! pg_hba and live attempts), and each kind of leak is reported with its evidence.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

mod common;

use costplus_core::customer::isolation::{self, CheckOptions, IsolationReport};
use costplus_core::customer::{self, ProvisionOptions};
use costplus_hba::{PgVersion, ReadOptions};

async fn prove(env: &common::Env, live_pairs: usize) -> IsolationReport {
    let admin = env.admin().await;
    let opts = CheckOptions {
        live_pairs,
        hba_file: env.cluster.cluster().hba_file(),
        read: ReadOptions::for_version(PgVersion::new(15).unwrap()),
    };
    let vault = env.vault();
    isolation::check(
        &admin,
        &env.config,
        &env.config.servers[0],
        &opts,
        None,
        Some(&vault),
    )
    .await
    .unwrap()
}

fn kinds(r: &IsolationReport) -> Vec<(String, String, &'static str, String)> {
    r.violations
        .iter()
        .map(|v| (v.from.clone(), v.to.clone(), v.source, v.kind.clone()))
        .collect()
}

#[tokio::test]
async fn provisioned_customers_are_isolated_and_leaks_are_found() {
    let env = common::env();
    let names: Vec<String> = ["ann", "bob", "cat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    env.with_ctx(async |ctx| {
        customer::provision_batch(ctx, &names, ProvisionOptions::default())
            .await
            .unwrap()
    })
    .await;

    let clean = prove(&env, 6).await;
    assert_eq!(clean.customers, 3);
    assert_eq!(clean.pairs, 6);
    assert!(clean.violations.is_empty(), "{:#?}", clean.violations);
    assert_eq!((clean.live.pairs_tried, clean.live.pairs_refused), (6, 6));
    assert_eq!(
        (clean.live.plaintext_tried, clean.live.plaintext_refused),
        (3, 3)
    );

    // Now break it, one way after another.
    let admin = env.admin().await;
    for sql in [
        "GRANT CONNECT ON DATABASE ann_db TO bob_user",
        "GRANT CONNECT ON DATABASE cat_db TO PUBLIC",
        "ALTER ROLE ann_user CREATEROLE",
        "GRANT cat_user TO bob_user",
        "GRANT pg_read_all_data TO cat_user",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let r = prove(&env, 0).await;
    let k = kinds(&r);
    for expected in [
        ("bob", "ann", "catalog", "granted-connect"),
        ("*", "cat", "catalog", "public-connect"),
        ("ann", "*", "catalog", "createrole"),
        ("bob", "cat", "catalog", "member-of-role"),
        ("cat", "*", "catalog", "dangerous-role"),
    ] {
        assert!(
            k.iter()
                .any(|(f, t, s, kind)| (f.as_str(), t.as_str(), *s, kind.as_str()) == expected),
            "{expected:?} not found in {k:#?}"
        );
    }

    // A pg_hba.conf line that opens every database to everyone: found in the file, and live.
    let hba = env.cluster.cluster().hba_file();
    let text = std::fs::read_to_string(&hba).unwrap();
    let opened = text.replacen(
        "# BEGIN costplus",
        "hostssl all all 127.0.0.0/8 scram-sha-256\n# BEGIN costplus",
        1,
    );
    env.cluster.write_server_file(&hba, opened.as_bytes());
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let r = prove(&env, 6).await;
    let k = kinds(&r);
    assert!(
        k.iter()
            .any(|(f, t, s, _)| f == "*" && t == "*" && *s == "pg_hba"),
        "{k:#?}"
    );
    // bob reaches ann (granted CONNECT) and anyone reaches cat (PUBLIC): live logins succeed.
    assert!(
        k.iter().any(|(_, t, s, kind)| *s == "live"
            && kind == "login-succeeded"
            && (t == "cat" || t == "ann")),
        "{k:#?}"
    );
    let line = r.violations.iter().find(|v| v.source == "pg_hba").unwrap();
    assert!(
        line.evidence.contains("hostssl all all"),
        "{}",
        line.evidence
    );
}

#[tokio::test]
async fn a_single_customer_still_gets_the_plaintext_check() {
    let env = common::env();
    env.with_ctx(async |ctx| {
        customer::provision(ctx, "solo", ProvisionOptions::default())
            .await
            .unwrap()
    })
    .await;
    let r = prove(&env, 4).await;
    assert_eq!((r.customers, r.pairs), (1, 0));
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert_eq!(
        (
            r.live.pairs_tried,
            r.live.plaintext_tried,
            r.live.plaintext_refused
        ),
        (0, 1, 1)
    );
}
