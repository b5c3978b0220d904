#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Offline inspection of certificates, keys and key files made with the real `openssl` CLI.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Dates, Leaf, Pki, openssl};
use costplus_tls::Severity;
use costplus_tls::inspect::{self, Files, Input, Inspection, Policy};

fn inspect_paths(cert: &Path, key: Option<&Path>, ca: Option<&Path>, hosts: &[&str]) -> Inspection {
    inspect::inspect_files(&Files {
        cert: cert.to_path_buf(),
        key: key.map(Path::to_path_buf),
        ca: ca.map(Path::to_path_buf),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        policy: Policy::default(),
        server_user: Some(inspect::server_identity("postgres").unwrap()),
    })
    .unwrap()
}

/// Make `leaf` with openssl, inspect it with its key, the CA and the usual host names, and
/// compare the finding ids (with their severities) to `expect`.
fn check(name: &str, leaf: Leaf, hosts: &[&str], expect: &[(&str, Severity)]) {
    let pki = Pki::new();
    let (crt, key) = pki.leaf(name, &leaf);
    let r = inspect_paths(&crt, Some(&key), Some(&pki.ca_file()), hosts);
    let mut got: Vec<(&str, Severity)> = r
        .findings
        .iter()
        .map(|f| (f.id.as_str(), f.severity))
        .collect();
    got.sort();
    let mut want = expect.to_vec();
    want.sort();
    assert_eq!(got, want, "{name}: {:#?}", r.findings);
    // Every finding names its problem.
    assert!(r.findings.iter().all(|f| f.message.len() > 10));
}

const HOSTS: &[&str] = &["localhost", "127.0.0.1"];

#[test]
fn certificates_made_with_openssl() {
    use Severity::*;
    check("good", Leaf::default(), HOSTS, &[]);
    check(
        "expired",
        Leaf {
            dates: Dates::Range("20200101000000Z", "20210101000000Z"),
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.expired", Fail)],
    );
    check(
        "future",
        Leaf {
            dates: Dates::Range("20990101000000Z", "20991201000000Z"),
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.not-yet-valid", Fail)],
    );
    check(
        "five-days",
        Leaf {
            dates: Dates::Days(5),
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.expires-soon", Fail)],
    );
    check(
        "twenty-days",
        Leaf {
            dates: Dates::Days(20),
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.expires-soon", Warn)],
    );
    check(
        "sha1",
        Leaf {
            md: "sha1",
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.weak-signature", Fail)],
    );
    check(
        "rsa1024",
        Leaf {
            key: "rsa:1024",
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.weak-key", Fail)],
    );
    check(
        "rsa2048",
        Leaf {
            key: "rsa:2048",
            ..Leaf::default()
        },
        HOSTS,
        &[],
    );
    check(
        "nosan",
        Leaf {
            san: None,
            ..Leaf::default()
        },
        HOSTS,
        &[
            ("cert.san-missing", Warn),
            ("cert.hostname-cn-only", Warn),
            ("cert.hostname-mismatch", Fail),
        ],
    );
    check(
        "wronghost",
        Leaf {
            san: Some("DNS:db.example.com"),
            cn: "db.example.com",
            ..Leaf::default()
        },
        HOSTS,
        &[
            ("cert.hostname-mismatch", Fail),
            ("cert.hostname-mismatch", Fail),
        ],
    );
    check(
        "clientauth",
        Leaf {
            extra_ext: "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.eku-server-auth", Fail)],
    );
    check(
        "noeku",
        Leaf {
            extra_ext: "basicConstraints=CA:FALSE\n",
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.eku-server-auth", Info)],
    );
    check(
        "isca",
        Leaf {
            extra_ext: "extendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:TRUE\nkeyUsage=digitalSignature,keyCertSign\n",
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.is-ca", Fail)],
    );
    check(
        "certsign-only",
        Leaf {
            extra_ext: "extendedKeyUsage=serverAuth\nkeyUsage=keyCertSign\n",
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.key-usage", Fail)],
    );
    check(
        "long",
        Leaf {
            dates: Dates::Days(825),
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.lifetime-over-398-days", Info)],
    );
    check(
        "selfsigned",
        Leaf {
            self_signed: true,
            ..Leaf::default()
        },
        HOSTS,
        &[("cert.self-signed", Warn), ("chain.untrusted", Fail)],
    );
}

#[test]
fn thresholds_are_configurable() {
    let pki = Pki::new();
    let (crt, _) = pki.leaf(
        "t",
        &Leaf {
            dates: Dates::Days(45),
            ..Leaf::default()
        },
    );
    let bytes = std::fs::read(&crt).unwrap();
    let run = |warn, fail| {
        inspect::inspect(&Input {
            cert: &bytes,
            now: inspect::now(),
            policy: Policy {
                warn_days: warn,
                fail_days: fail,
                ..Policy::default()
            },
            ..Default::default()
        })
        .findings
        .into_iter()
        .map(|f| (f.id, f.severity))
        .collect::<Vec<_>>()
    };
    assert!(run(30, 7).is_empty());
    assert_eq!(
        run(60, 7),
        vec![("cert.expires-soon".to_string(), Severity::Warn)]
    );
    assert_eq!(
        run(60, 50),
        vec![("cert.expires-soon".to_string(), Severity::Fail)]
    );
}

#[test]
fn keys_in_every_openssl_format_match_or_not() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let (ec_crt, ec_key) = pki.leaf("ec", &Leaf::default());
    let (rsa_crt, rsa_key) = pki.leaf(
        "rsa",
        &Leaf {
            key: "rsa:2048",
            ..Leaf::default()
        },
    );
    // SEC1 ("EC PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY"), DER PKCS#8, encrypted PKCS#8.
    openssl(d, &["ec", "-in", "ec.key", "-out", "ec.sec1"]);
    openssl(
        d,
        &["rsa", "-in", "rsa.key", "-traditional", "-out", "rsa.pkcs1"],
    );
    openssl(
        d,
        &["pkey", "-in", "ec.key", "-outform", "DER", "-out", "ec.der"],
    );
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "ec.key",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            "ec.enc",
        ],
    );
    assert!(
        std::fs::read_to_string(d.join("ec.sec1"))
            .unwrap()
            .contains("EC PRIVATE KEY")
    );
    assert!(
        std::fs::read_to_string(d.join("rsa.pkcs1"))
            .unwrap()
            .contains("RSA PRIVATE KEY")
    );
    let check = |crt: &Path, key: &str, expect: &[&str]| {
        let cert = std::fs::read(crt).unwrap();
        let der = inspect::read_certificates(&cert).unwrap().remove(0);
        let got = inspect::check_key(&der, &std::fs::read(d.join(key)).unwrap());
        let ids: Vec<&str> = got.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, expect, "{} with {key}", crt.display());
    };
    check(&ec_crt, ec_key.file_name().unwrap().to_str().unwrap(), &[]);
    check(&ec_crt, "ec.sec1", &[]);
    check(&ec_crt, "ec.der", &[]);
    check(
        &rsa_crt,
        rsa_key.file_name().unwrap().to_str().unwrap(),
        &[],
    );
    check(&rsa_crt, "rsa.pkcs1", &[]);
    check(&rsa_crt, "ec.key", &["key.mismatch"]);
    check(&ec_crt, "rsa.pkcs1", &["key.mismatch"]);
    check(&ec_crt, "ec.enc", &["key.encrypted"]);
    check(&ec_crt, "ec.crt", &["key.unreadable"]);
    // A second EC key on the same curve does not match either.
    let (_, other_key) = pki.leaf("ec2", &Leaf::default());
    check(
        &ec_crt,
        other_key.file_name().unwrap().to_str().unwrap(),
        &["key.mismatch"],
    );
}

#[test]
fn chain_must_reach_the_given_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let (crt, key) = pki.leaf("s", &Leaf::default());
    let r = inspect_paths(&crt, Some(&key), Some(&other.ca_file()), HOSTS);
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "chain.untrusted")
        .unwrap();
    // Both CAs are called the same: the name links up, the signature does not.
    assert!(f.message.contains("does not verify"), "{f:?}");
    // A leaf with its intermediate in the same file reaches the root.
    let d = pki.dir.path();
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n";
    let (int_crt, int_key) = pki.leaf(
        "intermediate",
        &Leaf {
            key: "rsa:2048",
            san: None,
            cn: "costplus intermediate",
            extra_ext: ca_ext,
            ..Leaf::default()
        },
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf2.key",
            "-out",
            "leaf2.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("leaf2.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf2.csr",
            "-CA",
            int_crt.to_str().unwrap(),
            "-CAkey",
            int_key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "90",
            "-extfile",
            "leaf2.ext",
            "-out",
            "leaf2.crt",
        ],
    );
    let mut bundle = std::fs::read(d.join("leaf2.crt")).unwrap();
    bundle.extend(std::fs::read(&int_crt).unwrap());
    std::fs::write(d.join("bundle.crt"), &bundle).unwrap();
    let r = inspect_paths(&d.join("bundle.crt"), None, Some(&pki.ca_file()), HOSTS);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.chain.len(), 1);
    // Without the intermediate the chain stops short.
    let r = inspect_paths(&d.join("leaf2.crt"), None, Some(&pki.ca_file()), HOSTS);
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "chain.untrusted")
        .unwrap();
    assert!(f.message.contains("costplus intermediate"), "{f:?}");
}

#[test]
fn key_file_rules_of_postgresql() {
    let pki = Pki::new();
    let (crt, key) = pki.leaf("k", &Leaf::default());
    let pg = costplus_fs::OsUser::by_name("postgres").unwrap();
    let ids = |r: &Inspection| r.findings.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    // postgres:postgres 0600: fine.
    assert!(ids(&inspect_paths(&crt, Some(&key), None, HOSTS)).is_empty());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        ids(&inspect_paths(&crt, Some(&key), None, HOSTS)),
        ["key-file.permissions"]
    );
    // root:postgres 0640 is PostgreSQL's other accepted layout.
    costplus_fs::chown(&key, 0, pg.gid).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(ids(&inspect_paths(&crt, Some(&key), None, HOSTS)).is_empty());
    costplus_fs::chown(&key, 0, 0).unwrap();
    assert_eq!(
        ids(&inspect_paths(&crt, Some(&key), None, HOSTS)),
        ["key-file.unreadable-by-server"]
    );
    let nobody = costplus_fs::OsUser::by_name("nobody").unwrap();
    costplus_fs::chown(&key, nobody.uid, nobody.gid).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        ids(&inspect_paths(&crt, Some(&key), None, HOSTS)),
        ["key-file.owner"]
    );
}

#[test]
fn bad_input_is_a_clear_finding() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let (crt, key) = pki.leaf("b", &Leaf::default());
    openssl(
        d,
        &[
            "x509",
            "-in",
            crt.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            "b.der",
        ],
    );
    let check = |bytes: &[u8], expect_id: &str, expect_text: &str| {
        let r = inspect::inspect(&Input {
            cert: bytes,
            now: inspect::now(),
            ..Default::default()
        });
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        let f = &r.findings[0];
        assert_eq!(
            (f.id.as_str(), f.severity),
            (expect_id, Severity::Fail),
            "{f:?}"
        );
        assert!(f.message.contains(expect_text), "{f:?}");
        assert!(r.certificate.is_none());
    };
    check(
        b"hello, I am not a certificate",
        "cert.unreadable",
        "neither PEM nor",
    );
    check(
        &[0x30, 0x82, 0x01, 0x00, 0xde, 0xad],
        "cert.unreadable",
        "neither PEM nor",
    );
    check(b"", "cert.unreadable", "empty");
    check(
        &std::fs::read(&key).unwrap(),
        "cert.not-a-certificate",
        "private key",
    );
    check(
        b"-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n",
        "cert.unreadable",
        "",
    );
    check(
        b"-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END CERTIFICATE-----\n",
        "cert.unreadable",
        "does not parse",
    );
    let pkcs8_der = {
        openssl(
            d,
            &[
                "pkey",
                "-in",
                key.to_str().unwrap(),
                "-outform",
                "DER",
                "-out",
                "k.der",
            ],
        );
        std::fs::read(d.join("k.der")).unwrap()
    };
    check(&pkcs8_der, "cert.not-a-certificate", "DER private key");
    // A DER certificate is fine.
    let der = std::fs::read(d.join("b.der")).unwrap();
    let r = inspect::inspect(&Input {
        cert: &der,
        now: inspect::now(),
        hosts: vec!["localhost".into()],
        ..Default::default()
    });
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    // A garbage CA and a garbage key name themselves.
    let pem = std::fs::read(&crt).unwrap();
    let r = inspect::inspect(&Input {
        cert: &pem,
        ca: Some(b"junk"),
        key: Some(b"junk"),
        now: inspect::now(),
        ..Default::default()
    });
    let ids: Vec<&str> = r.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["ca.unreadable", "key.unreadable"], "{:?}", r.findings);
    // A missing file is an error naming it.
    let e = inspect::inspect_files(&Files {
        cert: d.join("absent.crt"),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("absent.crt"), "{e}");
}
