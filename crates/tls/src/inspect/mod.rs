//! Offline checks of a certificate, its private key, its chain and the key file.
//!
//! The checks are pure functions on bytes ([`inspect`]); [`inspect_files`] is the thin layer
//! that reads the files and `stat`s the key file. The same certificate checks run on the chain
//! a live server presents (see [`crate::probe`]).

pub mod der;
pub mod keyfile;
pub mod names;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;
use x509_parser::prelude::*;

use crate::finding::{Finding, Severity, ids};
use crate::{Error, Result};
pub use keyfile::{KeyFileMeta, ServerIdentity, check_key_file};
pub use names::{HostMatch, match_host};

/// Thresholds of the certificate checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Warn when at most this many days are left.
    pub warn_days: i64,
    /// Fail when at most this many days are left.
    pub fail_days: i64,
    /// Longest acceptable lifetime in days (info above it; the CA/Browser limit is 398).
    pub max_lifetime_days: i64,
    /// Smallest acceptable RSA key.
    pub min_rsa_bits: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            warn_days: 30,
            fail_days: 7,
            max_lifetime_days: 398,
            min_rsa_bits: 2048,
        }
    }
}

/// The public key of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyFacts {
    /// `RSA`, `EC`, `Ed25519`, `Ed448`, `DSA` or the OID.
    pub algorithm: String,
    /// Key size in bits.
    pub bits: usize,
    /// Curve name for EC keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
}

/// What a certificate says, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Whole days from now until notAfter (negative when expired).
    pub days_left: i64,
    /// Days from notBefore to notAfter.
    pub lifetime_days: i64,
    /// Signature algorithm name.
    pub signature_algorithm: String,
    /// Public key.
    pub key: KeyFacts,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// IP address subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    /// Subject common names.
    pub common_names: Vec<String>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Subject equals issuer and the certificate verifies with its own key.
    pub self_signed: bool,
    /// extendedKeyUsage allows serverAuth (`None`: no EKU extension, any use allowed).
    pub server_auth: Option<bool>,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

/// Read certificates from PEM (one or more `CERTIFICATE` blocks) or DER. A private key or
/// another PEM object, or garbage, is a finding naming the problem.
pub fn read_certificates(bytes: &[u8]) -> std::result::Result<Vec<Vec<u8>>, Finding> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN") {
        let mut certs = Vec::new();
        let mut others = Vec::new();
        for item in rustls_pemfile::read_all(&mut &bytes[..]) {
            match item {
                Ok(rustls_pemfile::Item::X509Certificate(c)) => certs.push(c.to_vec()),
                Ok(rustls_pemfile::Item::Pkcs1Key(_))
                | Ok(rustls_pemfile::Item::Pkcs8Key(_))
                | Ok(rustls_pemfile::Item::Sec1Key(_)) => others.push("a private key"),
                Ok(rustls_pemfile::Item::Crl(_)) => others.push("a CRL"),
                Ok(rustls_pemfile::Item::Csr(_)) => others.push("a certificate request"),
                Ok(_) => others.push("an unsupported PEM object"),
                Err(e) => {
                    return Err(Finding::new(
                        ids::CERT_UNREADABLE,
                        Severity::Fail,
                        format!("not a readable PEM file: {e:?}"),
                    ));
                }
            }
        }
        if certs.is_empty() {
            let what = others
                .first()
                .copied()
                .unwrap_or(if text.contains("ENCRYPTED") {
                    "an encrypted private key"
                } else {
                    "no CERTIFICATE block"
                });
            return Err(Finding::new(
                ids::CERT_NOT_A_CERTIFICATE,
                Severity::Fail,
                format!("expected a certificate, found {what}"),
            ));
        }
        for (i, c) in certs.iter().enumerate() {
            if let Err(e) = parse_x509_certificate(c) {
                return Err(Finding::new(
                    ids::CERT_UNREADABLE,
                    Severity::Fail,
                    format!("PEM certificate #{} does not parse: {e}", i + 1),
                ));
            }
        }
        return Ok(certs);
    }
    match parse_x509_certificate(bytes) {
        Ok((rest, _)) => {
            let used = bytes.len() - rest.len();
            Ok(vec![bytes[..used].to_vec()])
        }
        Err(e) => {
            let what = if der::pkcs8(bytes).is_ok()
                || der::rsa_private_key(bytes).is_ok()
                || der::ec_private_key(bytes).is_ok()
            {
                return Err(Finding::new(
                    ids::CERT_NOT_A_CERTIFICATE,
                    Severity::Fail,
                    "expected a certificate, found a DER private key",
                ));
            } else if bytes.is_empty() {
                "the input is empty".to_string()
            } else {
                format!("neither PEM nor a DER certificate ({e})")
            };
            Err(Finding::new(ids::CERT_UNREADABLE, Severity::Fail, what))
        }
    }
}

/// The public half of a private key in PEM (PKCS#8, PKCS#1 or SEC1) or DER (PKCS#8 / PKCS#1).
pub fn read_private_key(bytes: &[u8]) -> std::result::Result<der::PublicHalf, Finding> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Finding::new(
            ids::KEY_ENCRYPTED,
            Severity::Warn,
            "the private key is encrypted: PostgreSQL needs ssl_passphrase_command to use it, and its match with the certificate cannot be checked",
        ));
    }
    let unreadable = |m: String| Finding::new(ids::KEY_UNREADABLE, Severity::Fail, m);
    if text.contains("-----BEGIN") {
        for item in rustls_pemfile::read_all(&mut &bytes[..]) {
            let half = match item {
                Ok(rustls_pemfile::Item::Pkcs8Key(k)) => der::pkcs8(k.secret_pkcs8_der()),
                Ok(rustls_pemfile::Item::Pkcs1Key(k)) => der::rsa_private_key(k.secret_pkcs1_der()),
                Ok(rustls_pemfile::Item::Sec1Key(k)) => der::ec_private_key(k.secret_sec1_der())
                    .map(|p| match p {
                        Some(point) => der::PublicHalf::Raw(point),
                        None => {
                            der::PublicHalf::Unknown("the SEC1 key carries no public key".into())
                        }
                    }),
                Ok(rustls_pemfile::Item::X509Certificate(_)) => continue,
                Ok(_) => continue,
                Err(e) => return Err(unreadable(format!("not a readable PEM file: {e:?}"))),
            };
            return half.map_err(|e| unreadable(format!("the private key does not parse: {e}")));
        }
        return Err(unreadable(
            if text.contains("CERTIFICATE") {
                "expected a private key, found only a certificate"
            } else {
                "no private key block in the PEM file"
            }
            .into(),
        ));
    }
    der::pkcs8(bytes)
        .or_else(|_| der::rsa_private_key(bytes))
        .or_else(|_| {
            der::ec_private_key(bytes).map(|p| match p {
                Some(point) => der::PublicHalf::Raw(point),
                None => der::PublicHalf::Unknown("the SEC1 key carries no public key".into()),
            })
        })
        .map_err(|e| unreadable(format!("neither PEM nor a DER private key ({e})")))
}

fn rfc3339(t: ASN1Time) -> String {
    t.to_datetime()
        .format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.2" => "md2WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.3" => "dsa-with-SHA1",
        "2.16.840.1.101.3.4.3.2" => "dsa-with-SHA256",
        other => return other.to_string(),
    }
    .to_string()
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.3.1.7" => "P-256",
        "1.3.132.0.34" => "P-384",
        "1.3.132.0.35" => "P-521",
        "1.3.132.0.10" => "secp256k1",
        "1.2.840.10045.3.1.1" => "P-192",
        "1.3.132.0.33" => "P-224",
        other => return other.to_string(),
    }
    .to_string()
}

fn key_facts(spki: &SubjectPublicKeyInfo<'_>) -> KeyFacts {
    let oid = spki.algorithm.algorithm.to_id_string();
    let (algorithm, curve) = match oid.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => ("RSA".to_string(), None),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| curve_name(&o.to_id_string()));
            ("EC".to_string(), curve)
        }
        "1.3.101.112" => ("Ed25519".to_string(), None),
        "1.3.101.113" => ("Ed448".to_string(), None),
        "1.2.840.10040.4.1" => ("DSA".to_string(), None),
        other => (other.to_string(), None),
    };
    let bits = match spki.parsed() {
        Ok(k) => k.key_size(),
        Err(_) => 0,
    };
    let bits = match (algorithm.as_str(), bits) {
        ("Ed25519", 0) => 256,
        ("Ed448", 0) => 456,
        (_, b) => b,
    };
    KeyFacts {
        algorithm,
        bits,
        curve,
    }
}

/// Days between two unix times, rounded down (toward minus infinity).
fn days(seconds: i64) -> i64 {
    seconds.div_euclid(86_400)
}

/// The facts of one DER certificate at `now` (unix seconds).
pub fn facts(der: &[u8], now: i64) -> std::result::Result<CertFacts, String> {
    let (_, cert) = parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(facts_of(&cert, der, now))
}

fn facts_of(cert: &X509Certificate<'_>, der: &[u8], now: i64) -> CertFacts {
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ip_addresses.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ip_addresses.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    let common_names = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let self_signed =
        cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok();
    let server_auth = match cert.extended_key_usage() {
        Ok(Some(eku)) => Some(eku.value.server_auth || eku.value.any),
        _ => None,
    };
    CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: rfc3339(cert.validity().not_before),
        not_after: rfc3339(cert.validity().not_after),
        days_left: days(na - now),
        lifetime_days: days(na - nb),
        signature_algorithm: signature_name(&cert.signature_algorithm.algorithm.to_id_string()),
        key: key_facts(cert.public_key()),
        dns_names,
        ip_addresses,
        common_names,
        is_ca: cert.is_ca(),
        self_signed,
        server_auth,
        sha256: hex::encode(sha2::Sha256::digest(der)),
    }
}

/// Check a server (leaf) certificate: dates, signature, key, names, usage, lifetime.
/// `hosts` are the names clients connect to (none: the name checks are skipped except for
/// the missing-SAN warning).
pub fn check_certificate(der: &[u8], now: i64, policy: &Policy, hosts: &[String]) -> Vec<Finding> {
    let (_, cert) = match parse_x509_certificate(der) {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding::new(
                ids::CERT_UNREADABLE,
                Severity::Fail,
                format!("the certificate does not parse: {e}"),
            )];
        }
    };
    let f = facts_of(&cert, der, now);
    let mut out = Vec::new();
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    if na < now {
        out.push(Finding::new(
            ids::CERT_EXPIRED,
            Severity::Fail,
            format!(
                "the certificate expired on {} ({} days ago)",
                f.not_after, -f.days_left
            ),
        ));
    } else if f.days_left <= policy.fail_days || f.days_left <= policy.warn_days {
        let sev = if f.days_left <= policy.fail_days {
            Severity::Fail
        } else {
            Severity::Warn
        };
        out.push(Finding::new(
            ids::CERT_EXPIRES_SOON,
            sev,
            format!(
                "the certificate expires in {} days, on {} (warn at {}, fail at {})",
                f.days_left, f.not_after, policy.warn_days, policy.fail_days
            ),
        ));
    }
    if nb > now {
        out.push(Finding::new(
            ids::CERT_NOT_YET_VALID,
            Severity::Fail,
            format!("the certificate is not valid before {}", f.not_before),
        ));
    }
    let sig = f.signature_algorithm.to_ascii_lowercase();
    if sig.contains("md5") || sig.contains("md2") || sig.contains("sha1") {
        out.push(Finding::new(
            ids::CERT_WEAK_SIGNATURE,
            Severity::Fail,
            format!(
                "signed with {}: collisions are practical; reissue with SHA-256",
                f.signature_algorithm
            ),
        ));
    }
    match (f.key.algorithm.as_str(), f.key.curve.as_deref()) {
        ("RSA", _) if f.key.bits < policy.min_rsa_bits => out.push(Finding::new(
            ids::CERT_WEAK_KEY,
            Severity::Fail,
            format!(
                "RSA key of {} bits (at least {} required)",
                f.key.bits, policy.min_rsa_bits
            ),
        )),
        ("DSA", _) => out.push(Finding::new(
            ids::CERT_WEAK_KEY,
            Severity::Fail,
            format!(
                "DSA key of {} bits: TLS 1.3 clients cannot use it",
                f.key.bits
            ),
        )),
        ("EC", Some(c)) if matches!(c, "P-192" | "P-224") => out.push(Finding::new(
            ids::CERT_WEAK_KEY,
            Severity::Fail,
            format!("EC key on {c}: too small"),
        )),
        ("EC", Some(c)) if !matches!(c, "P-256" | "P-384" | "P-521") => out.push(Finding::new(
            ids::CERT_WEAK_KEY,
            Severity::Warn,
            format!("EC key on {c}: TLS clients do not support this curve"),
        )),
        _ => {}
    }
    if f.dns_names.is_empty() && f.ip_addresses.is_empty() {
        out.push(Finding::new(
            ids::CERT_SAN_MISSING,
            Severity::Warn,
            "no subjectAltName: libpq falls back to the common name, but RFC 6125 clients (JDBC, rustls, Go) refuse the certificate",
        ));
    }
    for host in hosts {
        match match_host(host, &f.dns_names, &f.ip_addresses, &f.common_names) {
            HostMatch::SubjectAltName => {}
            HostMatch::CommonNameOnly => out.push(Finding::new(
                ids::CERT_HOSTNAME_CN_ONLY,
                Severity::Warn,
                format!("{host} matches only the common name, not a subjectAltName"),
            )),
            HostMatch::None => out.push(Finding::new(
                ids::CERT_HOSTNAME_MISMATCH,
                Severity::Fail,
                format!(
                    "the certificate does not name {host} (DNS names {:?}, IP addresses {:?}, CN {:?}); verify-full clients refuse it",
                    f.dns_names,
                    f.ip_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    f.common_names
                ),
            )),
        }
    }
    match f.server_auth {
        Some(false) => out.push(Finding::new(
            ids::CERT_EKU,
            Severity::Fail,
            "extendedKeyUsage does not include serverAuth: TLS clients refuse it as a server certificate",
        )),
        None => out.push(Finding::new(
            ids::CERT_EKU,
            Severity::Info,
            "no extendedKeyUsage extension (any use allowed); a server certificate should say serverAuth",
        )),
        Some(true) => {}
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        let ku = ku.value;
        let ok = match f.key.algorithm.as_str() {
            "RSA" => ku.digital_signature() || ku.key_encipherment(),
            _ => ku.digital_signature(),
        };
        if !ok {
            out.push(Finding::new(
                ids::CERT_KEY_USAGE,
                Severity::Fail,
                format!(
                    "keyUsage ({ku}) lacks digitalSignature: the key cannot sign the TLS handshake"
                ),
            ));
        } else if ku.key_cert_sign() && !f.is_ca {
            out.push(Finding::new(
                ids::CERT_KEY_USAGE,
                Severity::Warn,
                format!("keyUsage ({ku}) includes keyCertSign on a server certificate"),
            ));
        }
    }
    if f.is_ca {
        out.push(Finding::new(
            ids::CERT_IS_CA,
            Severity::Fail,
            "the server certificate is a CA certificate (basicConstraints CA:TRUE): whoever holds its key can issue certificates your clients trust",
        ));
    }
    if f.self_signed && !f.is_ca {
        out.push(Finding::new(
            ids::CERT_SELF_SIGNED,
            Severity::Warn,
            "self-signed: clients must install this very certificate as their root (sslrootcert); use a private CA so that renewals do not break clients",
        ));
    } else if f.self_signed {
        out.push(Finding::new(
            ids::CERT_SELF_SIGNED,
            Severity::Warn,
            "self-signed CA certificate used as the server certificate",
        ));
    }
    if f.lifetime_days > policy.max_lifetime_days {
        out.push(Finding::new(
            ids::CERT_LONG_LIFETIME,
            Severity::Info,
            format!(
                "lifetime of {} days (more than {}): long-lived certificates hide broken renewal",
                f.lifetime_days, policy.max_lifetime_days
            ),
        ));
    }
    if cert.version() != X509Version::V3 {
        out.push(Finding::new(
            ids::CERT_VERSION,
            Severity::Warn,
            format!(
                "X.509 version {} (extensions need v3)",
                cert.version().0 + 1
            ),
        ));
    }
    out
}

/// Check that `key` (PEM or DER) is the private key of the certificate `cert_der`.
pub fn check_key(cert_der: &[u8], key: &[u8]) -> Vec<Finding> {
    let half = match read_private_key(key) {
        Ok(h) => h,
        Err(f) => return vec![f],
    };
    let Ok((_, cert)) = parse_x509_certificate(cert_der) else {
        return Vec::new(); // reported by check_certificate
    };
    match der::matches(&half, cert.public_key()) {
        Some(true) => Vec::new(),
        Some(false) => vec![Finding::new(
            ids::KEY_MISMATCH,
            Severity::Fail,
            "the private key does not belong to the certificate: PostgreSQL refuses to start (or keeps the old pair on reload)",
        )],
        None => match half {
            der::PublicHalf::Unknown(why) => {
                vec![Finding::new(ids::KEY_UNREADABLE, Severity::Warn, why)]
            }
            _ => Vec::new(),
        },
    }
}

/// Check that `chain` (leaf first, then intermediates) reaches a certificate of `ca` (PEM or
/// DER): names link up and every signature verifies.
pub fn check_chain(chain: &[Vec<u8>], ca: &[u8]) -> Vec<Finding> {
    let cas = match read_certificates(ca) {
        Ok(c) => c,
        Err(f) => {
            return vec![Finding::new(
                ids::CA_UNREADABLE,
                Severity::Fail,
                format!("CA: {}", f.message),
            )];
        }
    };
    let parsed_cas: Vec<X509Certificate<'_>> = cas
        .iter()
        .filter_map(|d| parse_x509_certificate(d).ok().map(|(_, c)| c))
        .collect();
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .filter_map(|d| parse_x509_certificate(d).ok().map(|(_, c)| c))
        .collect();
    let Some(leaf) = parsed.first() else {
        return Vec::new();
    };
    let untrusted = |m: String| vec![Finding::new(ids::CHAIN_UNTRUSTED, Severity::Fail, m)];
    let mut current = leaf;
    for _depth in 0..10 {
        if parsed_cas.iter().any(|c| c.as_raw() == current.as_raw()) {
            return Vec::new(); // the CA file pins this very certificate
        }
        let mut bad_signature = None;
        for ca in parsed_cas
            .iter()
            .filter(|c| c.subject().as_raw() == current.issuer().as_raw())
        {
            match current.verify_signature(Some(ca.public_key())) {
                Ok(()) => return Vec::new(),
                Err(X509Error::SignatureUnsupportedAlgorithm) => {
                    return vec![Finding::new(
                        ids::CHAIN_UNTRUSTED,
                        Severity::Warn,
                        format!(
                            "{} names the CA {} as issuer, but its signature algorithm cannot be verified here",
                            current.subject(),
                            ca.subject()
                        ),
                    )];
                }
                Err(e) => bad_signature = Some(format!("{}: {e}", ca.subject())),
            }
        }
        if let Some(why) = bad_signature {
            return untrusted(format!(
                "the signature on {} does not verify with the CA's key ({why}): it was signed by another key with the same name",
                current.subject()
            ));
        }
        let next = parsed[1..].iter().find(|c| {
            c.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(c.public_key())).is_ok()
                && c.as_raw() != current.as_raw()
        });
        match next {
            Some(n) => current = n,
            None => {
                return untrusted(format!(
                    "the chain does not reach the given CA: {} is issued by {}, which is neither in the CA file ({}) nor among the intermediates",
                    current.subject(),
                    current.issuer(),
                    parsed_cas
                        .iter()
                        .map(|c| c.subject().to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }
    untrusted("the chain is longer than 10 certificates".into())
}

/// What to inspect, as bytes.
#[derive(Debug, Clone, Default)]
pub struct Input<'a> {
    /// The certificate (PEM or DER; PEM may hold the chain after the leaf).
    pub cert: &'a [u8],
    /// The private key, when it should be checked against the certificate.
    pub key: Option<&'a [u8]>,
    /// The CA certificate(s) the chain must reach.
    pub ca: Option<&'a [u8]>,
    /// Host names clients use.
    pub hosts: Vec<String>,
    /// Now, unix seconds.
    pub now: i64,
    /// Thresholds.
    pub policy: Policy,
}

/// The result of an inspection.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The leaf certificate, when it could be read.
    pub certificate: Option<CertFacts>,
    /// The other certificates of the chain given with it.
    pub chain: Vec<CertFacts>,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
}

impl Inspection {
    /// The worst severity found.
    pub fn worst(&self) -> Option<Severity> {
        crate::finding::worst(&self.findings)
    }
}

/// Inspect certificate, key and CA bytes. Never fails: unreadable input is a finding.
pub fn inspect(input: &Input<'_>) -> Inspection {
    let mut findings = Vec::new();
    let mut inspection = Inspection {
        certificate: None,
        chain: Vec::new(),
        findings: Vec::new(),
    };
    match read_certificates(input.cert) {
        Err(f) => findings.push(f),
        Ok(chain) => {
            let leaf = &chain[0];
            inspection.certificate = facts(leaf, input.now).ok();
            inspection.chain = chain[1..]
                .iter()
                .filter_map(|d| facts(d, input.now).ok())
                .collect();
            findings.extend(check_certificate(
                leaf,
                input.now,
                &input.policy,
                &input.hosts,
            ));
            if let Some(key) = input.key {
                findings.extend(check_key(leaf, key));
            }
            if let Some(ca) = input.ca {
                findings.extend(check_chain(&chain, ca));
            }
        }
    }
    sort(&mut findings);
    inspection.findings = findings;
    inspection
}

/// Sort findings worst first, then by id (stable output).
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What to inspect, as files.
#[derive(Debug, Clone, Default)]
pub struct Files {
    /// Certificate file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: Option<PathBuf>,
    /// CA file.
    pub ca: Option<PathBuf>,
    /// Host names clients use.
    pub hosts: Vec<String>,
    /// Thresholds.
    pub policy: Policy,
    /// The server's OS user, to apply PostgreSQL's key file rules.
    pub server_user: Option<ServerIdentity>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// The identity of an OS user (uid, primary and supplementary groups).
pub fn server_identity(name: &str) -> Result<ServerIdentity> {
    let user = costplus_fs::OsUser::by_name(name)?;
    let mut gids = vec![user.gid];
    if let Ok(cname) = std::ffi::CString::new(name)
        && let Ok(groups) = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(user.gid))
    {
        gids.extend(groups.iter().map(|g| g.as_raw()));
    }
    Ok(ServerIdentity {
        name: user.name,
        uid: user.uid,
        gids,
    })
}

/// The metadata the key file rules need.
pub fn key_file_meta(path: &Path) -> Result<KeyFileMeta> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(KeyFileMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        regular: md.is_file(),
    })
}

/// Read the files and inspect them; a missing or unreadable file is an error naming it.
pub fn inspect_files(files: &Files) -> Result<Inspection> {
    let cert = read(&files.cert)?;
    let key = files.key.as_deref().map(read).transpose()?;
    let ca = files.ca.as_deref().map(read).transpose()?;
    let mut inspection = inspect(&Input {
        cert: &cert,
        key: key.as_deref(),
        ca: ca.as_deref(),
        hosts: files.hosts.clone(),
        now: now(),
        policy: files.policy,
    });
    if let (Some(path), Some(server)) = (&files.key, &files.server_user) {
        let meta = key_file_meta(path)?;
        inspection
            .findings
            .extend(check_key_file(&path.display().to_string(), meta, server));
        sort(&mut inspection.findings);
    }
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Garbage certificates, keys and CAs are findings, never panics.
        #[test]
        fn garbage_is_a_finding(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..800)) {
            let r = inspect(&Input { cert: &bytes, key: Some(&bytes), ca: Some(&bytes), now: 0, ..Default::default() });
            proptest::prop_assert!(r.certificate.is_some() || !r.findings.is_empty());
            let _ = read_private_key(&bytes);
        }

        /// A PEM envelope around garbage.
        #[test]
        fn garbage_pem_is_a_finding(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            use base64::Engine;
            let pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            );
            let r = inspect(&Input { cert: pem.as_bytes(), now: 0, ..Default::default() });
            proptest::prop_assert!(!r.findings.is_empty());
        }
    }
}
