//! Certificates for PostgreSQL servers: issue, renew, inspect and probe.
//!
//! - [`issue`] creates a private certificate authority and server certificates with the right
//!   subject alternative names (ECDSA P-256 by default, RSA 3072 on request).
//! - [`renew`] decides when a certificate needs renewing, installs the new pair with backups
//!   and reloads PostgreSQL without downtime.
//! - [`inspect`] checks certificate, key and CA files offline (pure functions on bytes) and
//!   reports [`Finding`]s with stable ids.
//! - [`probe`] asks a live server, over PostgreSQL's SSLRequest or PostgreSQL 17's direct TLS,
//!   which protocol versions and cipher suites it accepts (with a ClientHello of our own,
//!   [`wire`]), which chain it presents, and whether it lets a login in without TLS.
//!
//! ```
//! use costplus_tls::issue::{Authority, ServerCertRequest};
//! use costplus_tls::inspect::{inspect, Input};
//! let ca = Authority::generate("costplus test CA", 3650).unwrap();
//! let server = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
//! assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! let report = inspect(&Input {
//!     cert: server.cert_pem.as_bytes(),
//!     key: Some(server.key_pem.as_bytes()),
//!     ca: Some(ca.cert_pem().as_bytes()),
//!     hosts: vec!["localhost".into(), "127.0.0.1".into()],
//!     now: costplus_tls::inspect::now(),
//!     ..Default::default()
//! });
//! assert!(report.findings.is_empty(), "{:?}", report.findings);
//! ```

pub mod finding;
pub mod inspect;
pub mod issue;
pub mod probe;
pub mod renew;
pub mod wire;

pub use finding::{Finding, Severity};

use std::path::PathBuf;

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
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The probe could not talk to the server at all.
    #[error("{target}: {problem}")]
    Probe {
        /// `host:port`.
        target: String,
        /// What went wrong (refused, timed out, not PostgreSQL, ...).
        problem: String,
    },
    /// Reloading or checking the server failed.
    #[error(transparent)]
    Cluster(#[from] costplus_pgcluster::Error),
    /// A renewal step failed; nothing after it was done.
    #[error("renew: {0}")]
    Renew(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
