#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! The probe against real PostgreSQL 15 servers, cross-checked with `openssl s_client
//! -starttls postgres` and `sslscan --starttls-psql` on the same servers.

mod common;

use std::time::Duration;

use common::{
    Dates, Leaf, Pki, cluster_with, legacy_cluster_with, openssl_accepts, sslscan_ciphers,
    sslscan_verdicts,
};

/// Marker settings: serve the leaf as a legacy server (OpenSSL security level 0).
const LEGACY: &[(&str, &str)] = &[("legacy", "seclevel0")];
use costplus_testsupport::{TestCluster, block_on};
use costplus_tls::probe::{Mode, ProbeOptions, ProbeReport, Verdict, probe};
use costplus_tls::wire::ProtocolVersion;

fn probe_cluster(port: u16, ca: Option<&std::path::Path>, name: Option<&str>) -> ProbeReport {
    let mut o = ProbeOptions::new("127.0.0.1", port);
    o.ca = ca.map(|p| std::fs::read(p).unwrap());
    o.server_name = name.map(str::to_string);
    block_on(probe(&o)).unwrap()
}

fn ids(r: &ProbeReport) -> Vec<&str> {
    r.findings.iter().map(|f| f.id.as_str()).collect()
}

fn accepted(r: &ProbeReport) -> Vec<ProtocolVersion> {
    ProtocolVersion::ALL
        .into_iter()
        .filter(|v| r.protocols.get(*v) == Verdict::Accepted)
        .collect()
}

/// Our verdicts must equal openssl s_client's (TLS 1.0-1.3; OpenSSL 3 has no SSLv3) and
/// sslscan's (all five) on the same server.
/// The accepted suites per version must equal sslscan's on the same server.
fn cross_check_ciphers(port: u16, r: &ProbeReport) {
    let scan = sslscan_ciphers(port);
    let ours: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = r
        .ciphers
        .iter()
        .map(|(v, list)| {
            (
                v.clone(),
                list.iter().map(|c| c.openssl_name.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        ours, scan,
        "accepted cipher suites: costplus-tls (left) vs sslscan (right)"
    );
}

fn cross_check(port: u16, r: &ProbeReport) {
    for v in [
        ProtocolVersion::Tls10,
        ProtocolVersion::Tls11,
        ProtocolVersion::Tls12,
        ProtocolVersion::Tls13,
    ] {
        let ours = r.protocols.get(v) == Verdict::Accepted;
        assert_eq!(
            ours,
            openssl_accepts(port, v),
            "{v}: costplus-tls vs openssl s_client"
        );
    }
    let scan = sslscan_verdicts(port);
    for v in ProtocolVersion::ALL {
        let ours = r.protocols.get(v) == Verdict::Accepted;
        assert_eq!(
            Some(&ours),
            scan.get(v.name()),
            "{v}: costplus-tls vs sslscan {scan:?}"
        );
    }
}

#[test]
fn tls12_floor_default_cluster() {
    let c = TestCluster::start();
    let ca = c.ca_file();
    let r = probe_cluster(c.port(), Some(&ca), None);
    assert_eq!(
        accepted(&r),
        vec![ProtocolVersion::Tls12, ProtocolVersion::Tls13],
        "{r:#?}"
    );
    cross_check(c.port(), &r);
    cross_check_ciphers(c.port(), &r);
    let cert = r.certificate.as_ref().unwrap();
    assert_eq!(cert.trusted, Some(true));
    assert_eq!(cert.leaf.key.algorithm, "EC");
    assert!(cert.source.contains("TLSv1.2"));
    // The server's TLS 1.3 suites are the three OpenSSL enables by default.
    let t13: Vec<&str> = r.ciphers["TLSv1.3"]
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        t13,
        [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256"
        ]
    );
    // Every TLS 1.2 suite is an ECDSA one (the key is ECDSA) and none is weak beyond CBC.
    for s in &r.ciphers["TLSv1.2"] {
        assert!(s.name.contains("ECDSA"), "{}", s.name);
    }
    assert!(
        ids(&r).iter().all(|i| *i == "cipher.cbc"),
        "{:?}",
        r.findings
    );
    assert_eq!(
        r.direct_tls,
        Verdict::Refused,
        "PostgreSQL 15 has no direct TLS"
    );
}

#[test]
fn tls13_floor_reads_the_chain_through_rustls() {
    let c = TestCluster::builder()
        .setting("ssl_min_protocol_version", "'TLSv1.3'")
        .start();
    let ca = c.ca_file();
    let r = probe_cluster(c.port(), Some(&ca), Some("localhost"));
    assert_eq!(accepted(&r), vec![ProtocolVersion::Tls13]);
    cross_check(c.port(), &r);
    cross_check_ciphers(c.port(), &r);
    let cert = r.certificate.as_ref().unwrap();
    assert!(cert.source.contains("rustls"), "{}", cert.source);
    assert_eq!(cert.trusted, Some(true));
    assert_eq!(
        r.protocol_details["TLSv1.2"].reason,
        "alert protocol_version (70)"
    );
    assert!(ids(&r).is_empty(), "{:?}", r.findings);
}

#[test]
fn legacy_tls10_and_tls11_are_found_and_failed() {
    let c = TestCluster::builder()
        .setting("ssl_min_protocol_version", "'TLSv1'")
        .setting("ssl_ciphers", "'DEFAULT:@SECLEVEL=0'")
        .start();
    let ca = c.ca_file();
    let r = probe_cluster(c.port(), Some(&ca), None);
    assert_eq!(
        accepted(&r),
        vec![
            ProtocolVersion::Tls10,
            ProtocolVersion::Tls11,
            ProtocolVersion::Tls12,
            ProtocolVersion::Tls13
        ]
    );
    cross_check(c.port(), &r);
    cross_check_ciphers(c.port(), &r);
    let found = ids(&r);
    assert!(found.contains(&"protocol.tlsv1.0-accepted"), "{found:?}");
    assert!(found.contains(&"protocol.tlsv1.1-accepted"), "{found:?}");
    assert!(!found.contains(&"protocol.sslv3-accepted"));
    assert_eq!(r.worst(), Some(costplus_tls::Severity::Fail));
    // TLS 1.0 has no GCM: every suite there is CBC (or worse).
    assert!(r.ciphers["TLSv1.0"].iter().all(|s| !s.name.contains("GCM")));
}

#[test]
fn tls_off_is_a_failing_finding_not_an_error() {
    let c = TestCluster::builder().without_tls().start();
    let r = probe_cluster(c.port(), None, None);
    assert!(!r.tls_enabled);
    assert!(accepted(&r).is_empty());
    assert_eq!(ids(&r), vec!["tls.disabled"]);
}

#[test]
fn plaintext_login_is_detected() {
    let hba = "local all all peer map=costplus_admin\n\
               host all all 127.0.0.1/32 scram-sha-256\n\
               hostssl all all 127.0.0.1/32 scram-sha-256\n";
    let c = TestCluster::builder().hba(hba).start();
    let mut o = ProbeOptions::new("127.0.0.1", c.port());
    o.plaintext_login = Some(("postgres".into(), "postgres".into()));
    o.ciphers = false;
    let r = block_on(probe(&o)).unwrap();
    let login = r.plaintext_login.as_ref().unwrap();
    assert_eq!(login.result, "password-requested", "{login:?}");
    assert!(ids(&r).contains(&"plaintext.auth-offered"));

    // The default pg_hba (hostssl only) refuses it.
    let c = TestCluster::start();
    let mut o = ProbeOptions::new("127.0.0.1", c.port());
    o.plaintext_login = Some(("postgres".into(), "postgres".into()));
    o.ciphers = false;
    let r = block_on(probe(&o)).unwrap();
    assert_eq!(r.plaintext_login.as_ref().unwrap().result, "refused");
    assert!(!ids(&r).iter().any(|i| i.starts_with("plaintext.")));
}

/// Probe a cluster serving an openssl-made leaf; returns the report and the finding ids.
fn probe_leaf(
    name: &str,
    leaf: Leaf,
    settings: &[(&str, &str)],
    server_name: Option<&str>,
) -> (ProbeReport, Vec<String>) {
    let pki = Pki::new();
    let (crt, key) = pki.leaf(name, &leaf);
    let c = if settings == LEGACY {
        legacy_cluster_with(&pki, &crt, &key)
    } else {
        cluster_with(&crt, &key, settings)
    };
    let r = probe_cluster(c.port(), Some(&pki.ca_file()), server_name);
    let found = r.findings.iter().map(|f| f.id.clone()).collect();
    (r, found)
}

#[test]
fn openssl_made_good_certificate_is_clean() {
    let (r, found) = probe_leaf("good", Leaf::default(), &[], None);
    assert_eq!(r.certificate.as_ref().unwrap().trusted, Some(true));
    assert!(found.iter().all(|i| i == "cipher.cbc"), "{found:?}");
}

#[test]
fn expired_certificate() {
    let leaf = Leaf {
        dates: Dates::Range("20200101000000Z", "20210101000000Z"),
        ..Leaf::default()
    };
    let (r, found) = probe_leaf("expired", leaf, &[], None);
    assert!(found.contains(&"cert.expired".to_string()), "{found:?}");
    assert!(
        found.contains(&"chain.verify-failed".to_string()),
        "{found:?}"
    );
    assert!(r.certificate.unwrap().leaf.days_left < -1000);
}

#[test]
fn self_signed_certificate() {
    let leaf = Leaf {
        self_signed: true,
        ..Leaf::default()
    };
    let (r, found) = probe_leaf("selfsigned", leaf, &[], None);
    assert!(found.contains(&"cert.self-signed".to_string()), "{found:?}");
    assert!(
        found.contains(&"chain.verify-failed".to_string()),
        "{found:?}"
    );
    assert!(found.contains(&"chain.untrusted".to_string()), "{found:?}");
    assert_eq!(r.certificate.unwrap().trusted, Some(false));
}

// OpenSSL 3 at its default security level refuses to load a SHA-1-signed or RSA-1024
// certificate (PostgreSQL would not start), so these servers run at OpenSSL security level 0,
// as a legacy server would (see `common::legacy_cluster_with`).
#[test]
fn sha1_signed_certificate() {
    let leaf = Leaf {
        md: "sha1",
        ..Leaf::default()
    };
    let (r, found) = probe_leaf("sha1", leaf, LEGACY, None);
    assert!(
        found.contains(&"cert.weak-signature".to_string()),
        "{found:?}"
    );
    assert_eq!(
        r.certificate.unwrap().leaf.signature_algorithm,
        "sha1WithRSAEncryption"
    );
}

#[test]
fn rsa_1024_key() {
    let leaf = Leaf {
        key: "rsa:1024",
        ..Leaf::default()
    };
    let (r, found) = probe_leaf("rsa1024", leaf, LEGACY, None);
    assert!(found.contains(&"cert.weak-key".to_string()), "{found:?}");
    let cert = r.certificate.unwrap();
    assert_eq!(
        (cert.leaf.key.algorithm.as_str(), cert.leaf.key.bits),
        ("RSA", 1024)
    );
    // RSA key exchange suites come with an RSA key: no forward secrecy.
    assert!(
        found.contains(&"cipher.no-forward-secrecy".to_string()),
        "{found:?}"
    );
}

#[test]
fn certificate_without_san() {
    let leaf = Leaf {
        san: None,
        ..Leaf::default()
    };
    let (_, found) = probe_leaf("nosan", leaf.clone(), &[], None);
    assert!(found.contains(&"cert.san-missing".to_string()), "{found:?}");
    assert!(
        found.contains(&"cert.hostname-mismatch".to_string()),
        "CN=localhost does not name 127.0.0.1: {found:?}"
    );
    // Verified as localhost, libpq would accept the CN; rustls/webpki would not.
    let (_, found) = probe_leaf("nosan2", leaf, &[], Some("localhost"));
    assert!(
        found.contains(&"cert.hostname-cn-only".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"chain.verify-failed".to_string()),
        "{found:?}"
    );
}

#[test]
fn certificate_for_another_host() {
    let leaf = Leaf {
        san: Some("DNS:db.example.com"),
        cn: "db.example.com",
        ..Leaf::default()
    };
    let (r, found) = probe_leaf("wronghost", leaf, &[], None);
    assert!(
        found.contains(&"cert.hostname-mismatch".to_string()),
        "{found:?}"
    );
    assert!(
        found.contains(&"chain.verify-failed".to_string()),
        "{found:?}"
    );
    assert!(
        !found.contains(&"chain.untrusted".to_string()),
        "the chain itself is fine: {found:?}"
    );
    assert_eq!(
        r.certificate.unwrap().leaf.dns_names,
        vec!["db.example.com"]
    );
}

// --- not PostgreSQL, silent, closing mid-handshake, nothing listening -------------------

fn short(port: u16) -> ProbeOptions {
    let mut o = ProbeOptions::new("127.0.0.1", port);
    o.connect_timeout = Duration::from_millis(500);
    o.io_timeout = Duration::from_millis(500);
    o
}

/// A TCP server on loopback running `serve` for every connection; returns its port.
fn fake_server<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let serve = std::sync::Arc::new(serve);
            loop {
                let (s, _) = l.accept().await.unwrap();
                let serve = serve.clone();
                tokio::spawn(async move { serve(s).await });
            }
        });
    });
    rx.recv().unwrap()
}

fn probe_err(o: &ProbeOptions) -> String {
    let started = std::time::Instant::now();
    let e = block_on(probe(o)).unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    e
}

#[test]
fn a_server_that_writes_junk_is_not_postgresql() {
    use tokio::io::AsyncWriteExt;
    let port = fake_server(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    let e = probe_err(&short(port));
    assert!(
        e.contains("not a PostgreSQL server") && e.contains("HTTP/1.1"),
        "{e}"
    );
}

#[test]
fn a_plain_tls_server_is_not_postgresql() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = fake_server(|mut s| async move {
        let mut b = [0u8; 8];
        let _ = s.read(&mut b).await;
        let _ = s.write_all(&[0x15, 3, 1, 0, 2, 2, 50]).await; // alert decode_error
    });
    let e = probe_err(&short(port));
    assert!(
        e.contains("not a PostgreSQL server") && e.contains("--direct"),
        "{e}"
    );
}

#[test]
fn a_silent_port_times_out() {
    let port = fake_server(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let e = probe_err(&short(port));
    assert!(e.contains("no answer to SSLRequest"), "{e}");
}

#[test]
fn a_server_closing_mid_handshake_is_a_finding() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = fake_server(|mut s| async move {
        let mut b = [0u8; 8];
        let _ = s.read_exact(&mut b).await;
        let _ = s.write_all(b"S").await;
        let mut hello = [0u8; 64];
        let _ = s.read(&mut hello).await;
        // Half a ServerHello record, then close.
        let _ = s.write_all(&[22, 3, 3, 0, 80, 2, 0, 0]).await;
    });
    let r = block_on(probe(&short(port))).unwrap();
    assert!(accepted(&r).is_empty());
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "probe.handshake-anomaly")
        .unwrap();
    assert_eq!(f.severity, costplus_tls::Severity::Fail, "{f:?}");
    assert!(f.message.contains("closed without an alert"), "{f:?}");
}

#[test]
fn nothing_listening() {
    let port = costplus_pgcluster::free_port().unwrap();
    let e = probe_err(&short(port));
    assert!(e.contains("cannot connect"), "{e}");
}

#[test]
fn direct_mode_against_postgresql_15_is_a_clear_error() {
    let c = TestCluster::shared();
    let mut o = short(c.port());
    o.mode = Mode::Direct;
    let e = probe_err(&o);
    assert!(e.contains("does not support direct TLS"), "{e}");
}

#[test]
fn direct_tls_against_a_pg17_style_rustls_server() {
    // PostgreSQL 15 has no direct TLS; this rustls server stands in for a PostgreSQL 17 one
    // (TLS from the first byte, ALPN `postgresql` required), beside the real PG15 test above.
    let ca = costplus_tls::issue::Authority::generate("direct", 30).unwrap();
    let pair = ca
        .issue_server(&costplus_tls::issue::ServerCertRequest::localhost())
        .unwrap();
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pair.cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
    let key = rustls_pemfile::private_key(&mut pair.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let port = fake_server(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let _ = acceptor.accept(s).await;
        }
    });
    let mut o = short(port);
    o.mode = Mode::Direct;
    o.ca = Some(ca.cert_pem().as_bytes().to_vec());
    let r = block_on(probe(&o)).unwrap();
    assert_eq!(accepted(&r), vec![ProtocolVersion::Tls13]);
    assert_eq!(r.protocol_details["TLSv1.3"].reason, "server-hello");
    let cert = r.certificate.unwrap();
    assert_eq!(cert.trusted, Some(true));
    assert!(cert.source.contains("rustls"));
}
