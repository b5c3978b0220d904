//! A private certificate authority and the server certificates it signs.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{Error, Result};
use costplus_fs::{WriteOptions, write_atomic};

/// Key algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (default: small, fast, accepted by every libpq).
    #[default]
    EcdsaP256,
    /// RSA 3072 with SHA-256, for clients that cannot do ECDSA.
    Rsa3072,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair> {
        Ok(match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)?
            }
        })
    }
}

/// What a server certificate should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertRequest {
    /// Subject common name (informational; clients check the SANs).
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Validity in days from now (default 397: within the 398-day browser limit).
    pub validity_days: u32,
}

impl ServerCertRequest {
    /// Default validity of a server certificate in days.
    pub const DEFAULT_VALIDITY_DAYS: u32 = 397;

    /// A certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn localhost() -> Self {
        Self::for_names(
            vec!["localhost".into()],
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
        )
    }

    /// A certificate for the given names and addresses, with defaults for the rest.
    pub fn for_names(dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Self {
        let common_name = dns_names
            .first()
            .cloned()
            .or_else(|| ip_addresses.first().map(ToString::to_string))
            .unwrap_or_else(|| "postgresql".into());
        Self {
            common_name,
            dns_names,
            ip_addresses,
            key_type: KeyType::default(),
            validity_days: Self::DEFAULT_VALIDITY_DAYS,
        }
    }
}

/// A certificate with its private key, both PEM encoded.
///
/// `Debug` does not show the key.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM. Secret.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertifiedKey {
    /// Write the certificate (0644) and the key (0600) atomically, both owned by `owner` when
    /// given (the server's OS user: PostgreSQL refuses a key it does not own or that others read).
    /// An existing key (and certificate) with other contents is first copied to
    /// `<name>.bak-<timestamp>` (same mode and owner): a key is never overwritten without a backup.
    pub fn write(
        &self,
        cert_path: &Path,
        key_path: &Path,
        owner: Option<&costplus_fs::OsUser>,
    ) -> Result<()> {
        let (mut cert_opts, mut key_opts) = (WriteOptions::public(), WriteOptions::private());
        if let Some(user) = owner {
            cert_opts = cert_opts.owned_by(user);
            key_opts = key_opts.owned_by(user);
        }
        for (path, new) in [(key_path, &self.key_pem), (cert_path, &self.cert_pem)] {
            if std::fs::read(path).is_ok_and(|old| old != new.as_bytes()) {
                crate::renew::backup(path)?;
            }
        }
        write_atomic(key_path, self.key_pem.as_bytes(), &key_opts)?;
        write_atomic(cert_path, self.cert_pem.as_bytes(), &cert_opts)?;
        Ok(())
    }
}

/// A private certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Generate a new self-signed CA (ECDSA P-256) valid for `validity_days`.
    pub fn generate(common_name: &str, validity_days: u32) -> Result<Self> {
        let key = KeyType::EcdsaP256.generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "costplus");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity_days);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Load a CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::BadInput {
            what: "CA key".into(),
            problem: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| Error::BadInput {
            what: "CA certificate".into(),
            problem: e.to_string(),
        })?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA certificate, PEM (what clients put in `sslrootcert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issue a server certificate (serverAuth, digitalSignature, not a CA).
    pub fn issue_server(&self, req: &ServerCertRequest) -> Result<CertifiedKey> {
        let key = req.key_type.generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.common_name.as_str());
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for name in &req.dns_names {
            sans.push(SanType::DnsName(name.clone().try_into().map_err(
                |e: rcgen::Error| Error::BadInput {
                    what: format!("DNS name {name:?}"),
                    problem: e.to_string(),
                },
            )?));
        }
        sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match req.key_type {
            KeyType::EcdsaP256 => vec![KeyUsagePurpose::DigitalSignature],
            KeyType::Rsa3072 => {
                vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ]
            }
        };
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, req.validity_days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    // Backdate a little so that small clock differences between hosts do not matter.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days));
    let mut serial = [0u8; 16];
    let nanos = now.unix_timestamp_nanos().to_be_bytes();
    serial.copy_from_slice(&nanos);
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn server_cert_has_sans_and_server_auth() {
        let ca = Authority::generate("t", 30).unwrap();
        let ck = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
        let (_, pem) = parse_x509_pem(ck.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("7f:00:00:01")), "{names:?}");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(!cert.is_ca());
        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
            + 3600)
            / 86_400;
        assert_eq!(days, 397);
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = Authority::generate("t", 30).unwrap();
        let again = Authority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let ck = again.issue_server(&ServerCertRequest::localhost()).unwrap();
        let (_, pem) = parse_x509_pem(ck.cert_pem.as_bytes()).unwrap();
        let (_, ca_pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        pem.parse_x509()
            .unwrap()
            .verify_signature(Some(ca_pem.parse_x509().unwrap().public_key()))
            .unwrap();
    }

    #[test]
    fn write_backs_up_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
        let ca = Authority::generate("t", 30).unwrap();
        let first = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
        first.write(&crt, &key, None).unwrap();
        first.write(&crt, &key, None).unwrap(); // same contents: nothing to back up
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        let second = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
        second.write(&crt, &key, None).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let backup = names.iter().find(|n| n.starts_with("s.key.bak-")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(backup)).unwrap(),
            first.key_pem
        );
        assert_eq!(std::fs::read_to_string(&key).unwrap(), second.key_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(backup))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn debug_hides_key() {
        let ca = Authority::generate("t", 30).unwrap();
        let ck = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
        assert!(!format!("{ck:?}").contains("PRIVATE KEY"));
    }
}
