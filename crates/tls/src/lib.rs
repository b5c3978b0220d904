//! Certificates for PostgreSQL servers: issue, renew, inspect and probe.
//!
//! [`issue`] creates a private certificate authority and server certificates with the right
//! subject alternative names (ECDSA P-256 by default, RSA 3072 on request).
//!
//! ```
//! use costplus_tls::issue::{Authority, ServerCertRequest};
//! let ca = Authority::generate("costplus test CA", 3650).unwrap();
//! let server = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
//! assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

pub mod issue;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written or read.
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// A PEM or DER input could not be understood.
    #[error("{what}: {problem}")]
    BadInput {
        /// Which input (a file name, "certificate", "key").
        what: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
