//! Shared helpers of the costplus-tls integration tests: certificates made with the real
//! `openssl` CLI, clusters serving them, and the peer tools (`openssl s_client`, `sslscan`).
#![allow(clippy::unwrap_used, dead_code)] // test helpers fail by panicking; not every test uses every helper

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use costplus_testsupport::{TestCluster, require_tool};
use costplus_tls::wire::ProtocolVersion;

/// A private CA made with `openssl` in a temporary directory the server user can enter.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

/// What a leaf certificate made with openssl looks like.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// `-newkey` argument: `ec`, `rsa:2048`, `rsa:1024`.
    pub key: &'static str,
    /// Digest: `sha256`, `sha1`.
    pub md: &'static str,
    /// subjectAltName value, or none.
    pub san: Option<&'static str>,
    /// Subject CN.
    pub cn: &'static str,
    /// `-startdate`/`-enddate` (YYYYMMDDHHMMSSZ) or `-days`.
    pub dates: Dates,
    /// Self-signed instead of signed by the CA.
    pub self_signed: bool,
    /// Extra extension lines.
    pub extra_ext: &'static str,
}

#[derive(Debug, Clone)]
pub enum Dates {
    Days(u32),
    Range(&'static str, &'static str),
}

impl Default for Leaf {
    fn default() -> Self {
        Self {
            key: "ec",
            md: "sha256",
            san: Some("DNS:localhost,IP:127.0.0.1,IP:::1"),
            cn: "localhost",
            dates: Dates::Days(90),
            self_signed: false,
            extra_ext: "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n",
        }
    }
}

pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn newkey_args(key: &str) -> Vec<String> {
    if key == "ec" {
        vec![
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
        ]
    } else {
        vec!["-newkey".into(), key.into()]
    }
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("costplus-tls-pki-")
            .tempdir()
            .unwrap();
        // The server (OS user postgres) must reach the files.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=costplus openssl test CA",
                "-days",
                "30",
            ],
        );
        std::fs::write(d.join("index.txt"), b"").unwrap();
        std::fs::write(d.join("serial"), b"01\n").unwrap();
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n",
        )
        .unwrap();
        Self { dir }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Make a leaf named `name` (files `<name>.crt`, `<name>.key`), owned by postgres, key 0600.
    pub fn leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        let csr = format!("{name}.csr");
        let ext = format!("{name}.ext");
        let mut ext_text = String::from(leaf.extra_ext);
        if let Some(san) = leaf.san {
            ext_text.push_str(&format!("subjectAltName={san}\n"));
        }
        std::fs::write(d.join(&ext), &ext_text).unwrap();
        let subj = format!("/CN={}", leaf.cn);
        let mut args: Vec<String> = vec!["req".into()];
        if leaf.self_signed {
            args.push("-x509".into());
        }
        args.extend(newkey_args(leaf.key));
        args.extend(["-nodes", "-keyout", &key, "-subj", &subj].map(String::from));
        let md = format!("-{}", leaf.md);
        if leaf.self_signed {
            let days = match leaf.dates {
                Dates::Days(n) => n.to_string(),
                Dates::Range(..) => panic!("self-signed leaves take days"),
            };
            args.extend(
                [
                    "-out",
                    &crt,
                    "-days",
                    &days,
                    &md,
                    "-extensions",
                    "v3",
                    "-config",
                ]
                .map(String::from),
            );
            let cfg = format!("{name}.req.cnf");
            std::fs::write(
                d.join(&cfg),
                format!("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n{ext_text}"),
            )
            .unwrap();
            args.push(cfg);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            openssl(d, &a);
        } else {
            args.extend(["-out", &csr].map(String::from));
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            openssl(d, &a);
            let mut ca: Vec<String> = [
                "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
                "-in", &csr, "-out", &crt, "-extfile", &ext, "-notext", "-md", leaf.md,
            ]
            .map(String::from)
            .to_vec();
            match leaf.dates {
                Dates::Days(n) => ca.extend(["-days".to_string(), n.to_string()]),
                Dates::Range(s, e) => ca.extend(["-startdate", s, "-enddate", e].map(String::from)),
            }
            let a: Vec<&str> = ca.iter().map(String::as_str).collect();
            openssl(d, &a);
        }
        let pg = costplus_fs::OsUser::by_name("postgres").unwrap();
        for f in [&key, &crt] {
            costplus_fs::chown(&d.join(f), pg.uid, pg.gid).unwrap();
        }
        std::fs::set_permissions(
            d.join(&key),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        (d.join(crt), d.join(key))
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// A cluster serving this pair, with extra settings.
pub fn cluster_with(cert: &Path, key: &Path, settings: &[(&str, &str)]) -> TestCluster {
    let mut b = TestCluster::builder()
        .setting("ssl_cert_file", &quote(cert))
        .setting("ssl_key_file", &quote(key));
    for (k, v) in settings {
        b = b.setting(k, v);
    }
    b.start()
}

/// A cluster serving a pair that OpenSSL 3 refuses to load at its default security level
/// (Debian: SECLEVEL=2 refuses RSA-1024 keys, "ee key too small", and SHA-1 signatures, "ca md
/// too weak"; PostgreSQL loads the certificate before it applies `ssl_ciphers`, so a
/// `@SECLEVEL=0` there is too late and the server does not start). A legacy server is
/// simulated by starting this one server with `OPENSSL_CONF` pointing at a configuration with
/// security level 0; `ssl_ciphers` keeps level 0 for the handshakes.
pub fn legacy_cluster_with(pki: &Pki, cert: &Path, key: &Path) -> TestCluster {
    let c = TestCluster::builder()
        .setting("ssl_ciphers", "'DEFAULT:@SECLEVEL=0'")
        .start();
    c.cluster().stop().unwrap();
    let cnf = pki.dir.path().join("openssl-seclevel0.cnf");
    std::fs::write(
        &cnf,
        "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\nsystem_default = system_default_sect\n[system_default_sect]\nCipherString = DEFAULT:@SECLEVEL=0\n",
    )
    .unwrap();
    let auto = c.cluster().data_dir().join("postgresql.auto.conf");
    c.write_server_file(
        &auto,
        format!(
            "ssl_cert_file = {}\nssl_key_file = {}\n",
            quote(cert),
            quote(key)
        )
        .as_bytes(),
    );
    let out = c
        .cluster()
        .command("pg_ctl")
        .env("OPENSSL_CONF", &cnf)
        .arg("start")
        .arg("-D")
        .arg(c.cluster().data_dir())
        .arg("-l")
        .arg(c.log_file())
        .args(["-w", "-t", "60", "-s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_ctl start failed:\n{}", c.log());
    c
}

/// `openssl s_client -starttls postgres` with only `version` enabled: did the handshake succeed?
pub fn openssl_accepts(port: u16, version: ProtocolVersion) -> bool {
    let flag = match version {
        ProtocolVersion::Tls10 => "-tls1",
        ProtocolVersion::Tls11 => "-tls1_1",
        ProtocolVersion::Tls12 => "-tls1_2",
        ProtocolVersion::Tls13 => "-tls1_3",
        _ => panic!("openssl 3 cannot speak {version}"),
    };
    let target = format!("127.0.0.1:{port}");
    let out = Command::new(require_tool("openssl"))
        .args([
            "s_client",
            "-connect",
            &target,
            "-starttls",
            "postgres",
            flag,
        ])
        // OpenSSL 3 offers TLS 1.0/1.1 only at security level 0.
        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "New, TLSv1.0, Cipher is X" names the cipher's version, not the protocol's; the
    // protocol is in the SSL-Session block ("Protocol  : TLSv1.1"), printed up to TLS 1.2.
    let negotiated = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Protocol"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let cipher_none = text.contains("Cipher is (NONE)");
    let ok = out.status.success() && !cipher_none;
    if let (true, Some(p)) = (ok, negotiated) {
        // OpenSSL calls TLS 1.0 "TLSv1".
        let want = if version == ProtocolVersion::Tls10 {
            "TLSv1"
        } else {
            version.name()
        };
        assert_eq!(p, want, "openssl output:\n{text}");
    }
    ok
}

/// `sslscan --starttls-psql`: protocol name -> enabled.
pub fn sslscan_verdicts(port: u16) -> BTreeMap<String, bool> {
    let target = format!("127.0.0.1:{port}");
    let out = Command::new(require_tool("sslscan"))
        .args([
            "--starttls-psql",
            "--no-colour",
            "--no-ciphersuites",
            "--no-fallback",
            "--no-renegotiation",
            "--no-compression",
            "--no-heartbleed",
            "--no-groups",
            &target,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    parse_sslscan(&text)
}

pub fn parse_sslscan(text: &str) -> BTreeMap<String, bool> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(name), Some(state)) = (it.next(), it.next())
            && matches!(
                name,
                "SSLv2" | "SSLv3" | "TLSv1.0" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"
            )
            && matches!(state, "enabled" | "disabled")
        {
            m.insert(name.to_string(), state == "enabled");
        }
    }
    assert!(m.len() >= 5, "sslscan output not understood:\n{text}");
    m
}

/// `sslscan --starttls-psql` accepted cipher suites: protocol name -> OpenSSL suite names.
pub fn sslscan_ciphers(port: u16) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let target = format!("127.0.0.1:{port}");
    let out = Command::new(require_tool("sslscan"))
        .args([
            "--starttls-psql",
            "--no-colour",
            "--no-fallback",
            "--no-renegotiation",
            "--no-compression",
            "--no-heartbleed",
            "--no-groups",
            "--no-check-certificate",
            &target,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && matches!(f[0], "Preferred" | "Accepted") && f[3] == "bits" {
            m.entry(f[1].to_string())
                .or_default()
                .insert(f[4].to_string());
        }
    }
    m
}
