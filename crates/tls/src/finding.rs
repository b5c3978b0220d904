//! Findings: one problem (or fact worth knowing), with a stable id and a severity.

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing; nothing to fix.
    Info,
    /// Should be fixed.
    Warn,
    /// Must be fixed: a client can be attacked or cannot connect, or soon will not.
    Fail,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
        })
    }
}

/// One finding. `id` is stable across releases (tools and tests match on it); `message` is
/// for people and may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identifier, `area.what` (see [`ids`]).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// What is wrong, with the numbers.
    pub message: String,
}

impl Finding {
    /// A finding.
    pub fn new(id: &str, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            id: id.to_string(),
            severity,
            message: message.into(),
        }
    }
}

/// The worst severity among `findings`.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

/// The stable finding ids.
pub mod ids {
    /// The certificate input does not parse (garbage PEM/DER).
    pub const CERT_UNREADABLE: &str = "cert.unreadable";
    /// A private key (or another PEM object) was given where a certificate belongs.
    pub const CERT_NOT_A_CERTIFICATE: &str = "cert.not-a-certificate";
    /// notAfter is in the past.
    pub const CERT_EXPIRED: &str = "cert.expired";
    /// notBefore is in the future.
    pub const CERT_NOT_YET_VALID: &str = "cert.not-yet-valid";
    /// Few days left before notAfter (warn and fail thresholds).
    pub const CERT_EXPIRES_SOON: &str = "cert.expires-soon";
    /// MD5 or SHA-1 (or worse) signature.
    pub const CERT_WEAK_SIGNATURE: &str = "cert.weak-signature";
    /// RSA key under 2048 bits, or a weak curve.
    pub const CERT_WEAK_KEY: &str = "cert.weak-key";
    /// No subjectAltName extension.
    pub const CERT_SAN_MISSING: &str = "cert.san-missing";
    /// The certificate does not name the host.
    pub const CERT_HOSTNAME_MISMATCH: &str = "cert.hostname-mismatch";
    /// Only the subject CN names the host (libpq accepts it; RFC 6125 clients do not).
    pub const CERT_HOSTNAME_CN_ONLY: &str = "cert.hostname-cn-only";
    /// extendedKeyUsage without serverAuth (fail) or absent (info).
    pub const CERT_EKU: &str = "cert.eku-server-auth";
    /// keyUsage that does not allow a TLS server's use of the key.
    pub const CERT_KEY_USAGE: &str = "cert.key-usage";
    /// The server certificate is a CA certificate.
    pub const CERT_IS_CA: &str = "cert.is-ca";
    /// The certificate signs itself (clients must pin it as a root).
    pub const CERT_SELF_SIGNED: &str = "cert.self-signed";
    /// Lifetime longer than 398 days.
    pub const CERT_LONG_LIFETIME: &str = "cert.lifetime-over-398-days";
    /// X.509 version below 3.
    pub const CERT_VERSION: &str = "cert.not-v3";
    /// The key file does not parse.
    pub const KEY_UNREADABLE: &str = "key.unreadable";
    /// The key file is encrypted (PostgreSQL then needs ssl_passphrase_command).
    pub const KEY_ENCRYPTED: &str = "key.encrypted";
    /// The private key does not belong to the certificate.
    pub const KEY_MISMATCH: &str = "key.mismatch";
    /// Key file readable or writable by group/others beyond PostgreSQL's rules.
    pub const KEY_FILE_PERMISSIONS: &str = "key-file.permissions";
    /// Key file owned by someone other than the server user or root.
    pub const KEY_FILE_OWNER: &str = "key-file.owner";
    /// Key file is not a regular file.
    pub const KEY_FILE_NOT_REGULAR: &str = "key-file.not-regular";
    /// The server cannot read its key file (root-owned but not in the server's group).
    pub const KEY_FILE_UNREADABLE_BY_SERVER: &str = "key-file.unreadable-by-server";
    /// The CA input does not parse.
    pub const CA_UNREADABLE: &str = "ca.unreadable";
    /// The chain does not reach the given CA.
    pub const CHAIN_UNTRUSTED: &str = "chain.untrusted";
    /// Verification as a client would do it (chain, name, EKU, dates) failed.
    pub const CHAIN_VERIFY_FAILED: &str = "chain.verify-failed";
    /// No CA was given, so the chain was not verified.
    pub const CHAIN_NOT_VERIFIED: &str = "chain.not-verified";
    /// The server answered `N` to SSLRequest: TLS is off.
    pub const TLS_DISABLED: &str = "tls.disabled";
    /// The server accepts SSL 3.0.
    pub const PROTOCOL_SSL3: &str = "protocol.sslv3-accepted";
    /// The server accepts TLS 1.0.
    pub const PROTOCOL_TLS10: &str = "protocol.tlsv1.0-accepted";
    /// The server accepts TLS 1.1.
    pub const PROTOCOL_TLS11: &str = "protocol.tlsv1.1-accepted";
    /// The server does not accept TLS 1.3.
    pub const PROTOCOL_NO_TLS13: &str = "protocol.tlsv1.3-missing";
    /// The server accepts no protocol version at all.
    pub const PROTOCOL_NONE: &str = "protocol.none-accepted";
    /// A cipher suite with a weakness is accepted (`cipher.<weakness>`).
    pub const CIPHER_PREFIX: &str = "cipher.";
    /// The server compresses records (CRIME).
    pub const TLS_COMPRESSION: &str = "tls.compression";
    /// DHE with a prime under 2048 bits (Logjam).
    pub const DH_WEAK: &str = "kx.weak-dh";
    /// A handshake ended abnormally (closed without alert, timeout, junk).
    pub const HANDSHAKE_ANOMALY: &str = "probe.handshake-anomaly";
    /// The server accepts a plaintext login attempt for the role and database.
    pub const PLAINTEXT_LOGIN: &str = "plaintext.login-accepted";
    /// The server offers authentication over a plaintext connection.
    pub const PLAINTEXT_AUTH: &str = "plaintext.auth-offered";
    /// PostgreSQL 17 direct TLS (ALPN `postgresql`) is accepted.
    pub const DIRECT_TLS: &str = "direct-tls.accepted";
    /// The chain could not be obtained from the server.
    pub const CHAIN_UNAVAILABLE: &str = "chain.unavailable";
}
