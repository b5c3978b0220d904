#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Renewal against a real server: install with backups, reload without downtime, verify.

use std::os::unix::fs::MetadataExt;

use costplus_testsupport::{TestCluster, block_on};
use costplus_tls::issue::ServerCertRequest;
use costplus_tls::probe::{ProbeOptions, fetch_chain};
use costplus_tls::renew::{self, InstallOptions, Reload};

async fn leaf_sha_async(port: u16) -> String {
    use sha2::Digest;
    let chain = fetch_chain(&ProbeOptions::new("127.0.0.1", port))
        .await
        .unwrap();
    hex::encode(sha2::Sha256::digest(&chain[0]))
}

fn leaf_sha(port: u16) -> String {
    block_on(leaf_sha_async(port))
}

fn options(c: &TestCluster, force: bool) -> InstallOptions {
    let tls = c.cluster().root().join("tls");
    InstallOptions {
        cert_file: tls.join("server.crt"),
        key_file: tls.join("server.key"),
        owner: Some(c.cluster().os_user().clone()),
        request: ServerCertRequest::localhost(),
        force,
        reload: Reload::Cluster(c.cluster().root().to_path_buf()),
        verify: Some(("127.0.0.1".into(), c.port())),
    }
}

#[test]
fn renew_installs_reloads_and_keeps_sessions() {
    let c = TestCluster::start();
    let ca = c.ca().unwrap();
    let before = leaf_sha(c.port());
    let opts = options(&c, false);
    let key_before = std::fs::read(&opts.key_file).unwrap();

    // The fresh 397-day certificate needs nothing; plan and renew agree, nothing is touched.
    let plan = renew::plan(&opts).unwrap();
    assert!(!plan.decision.renew && plan.steps.is_empty(), "{plan:?}");
    let out = block_on(renew::renew(&opts, ca)).unwrap();
    assert!(out.new_sha256.is_none() && out.backups.is_empty());
    assert_eq!(leaf_sha(c.port()), before);

    // Names changed: renew. A session opened before survives the reload.
    let mut opts = opts;
    opts.request.dns_names.push("db.internal".into());
    let plan = renew::plan(&opts).unwrap();
    assert!(
        plan.decision.renew && plan.decision.reasons[0].contains("names changed"),
        "{plan:?}"
    );
    assert!(plan.steps.iter().all(|s| !s.done));
    assert_eq!(
        std::fs::read(&opts.key_file).unwrap(),
        key_before,
        "a plan writes nothing"
    );

    block_on(async {
        let session = c.connect().await;
        let out = renew::renew(&opts, ca).await.unwrap();
        assert_eq!(out.verified, Some(true));
        assert!(out.steps.iter().all(|s| s.done), "{:?}", out.steps);
        let row = session.query_one("SELECT 1::int4", &[]).await.unwrap();
        assert_eq!(
            row.get::<_, i32>(0),
            1,
            "the open session survived the reload"
        );
        // New connections verify against the same CA and see the new certificate.
        let fresh = c.connect().await;
        fresh.query_one("SELECT 1::int4", &[]).await.unwrap();
        assert_eq!(
            leaf_sha_async(c.port()).await,
            out.new_sha256.clone().unwrap()
        );
        assert_ne!(out.new_sha256.unwrap(), before);
        // Both old files were backed up, with the key's mode and owner.
        assert_eq!(out.backups.len(), 2, "{:?}", out.backups);
        let key_backup = out
            .backups
            .iter()
            .find(|p| p.to_string_lossy().contains("server.key.bak-"))
            .unwrap();
        assert_eq!(std::fs::read(key_backup).unwrap(), key_before);
        let md = std::fs::metadata(key_backup).unwrap();
        assert_eq!(
            (md.mode() & 0o777, md.uid()),
            (0o600, c.cluster().os_user().uid)
        );
        let md = std::fs::metadata(&opts.key_file).unwrap();
        assert_eq!(
            (md.mode() & 0o777, md.uid()),
            (0o600, c.cluster().os_user().uid)
        );
    });
}

#[test]
fn forced_rsa_renewal_over_sql_reload() {
    let c = TestCluster::start();
    let mut opts = options(&c, true);
    opts.request.key_type = costplus_tls::issue::KeyType::Rsa3072;
    opts.reload = Reload::Sql(c.connect_options("postgres"));
    let out = block_on(renew::renew(&opts, c.ca().unwrap())).unwrap();
    assert_eq!(out.verified, Some(true));
    let r = block_on(costplus_tls::probe::probe(&{
        let mut o = ProbeOptions::new("127.0.0.1", c.port());
        o.ca = Some(std::fs::read(c.ca_file()).unwrap());
        o.ciphers = false;
        o
    }))
    .unwrap();
    let cert = r.certificate.unwrap();
    assert_eq!(
        (cert.leaf.key.algorithm.as_str(), cert.leaf.key.bits),
        ("RSA", 3072)
    );
    assert_eq!(cert.trusted, Some(true));
}
