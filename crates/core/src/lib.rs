//! The costplus server model: configuration of a fleet of PostgreSQL servers and the naming
//! policy for customers. Provisioning, isolation and the audit build on it (and on the leaf
//! crates `costplus-hba`, `costplus-tls`, `costplus-vault`, `costplus-pgbackrest`, `costplus-s3`).
//!
//! ```
//! let cfg = costplus_core::config::Config::from_toml_str(r#"
//!     [[servers]]
//!     name = "vps1"
//!     host = "db.example.com"
//!     port = 5433
//!     sslrootcert = "/etc/costplus/ca.crt"
//!     password_file = "/etc/costplus/admin.password"
//! "#, std::path::Path::new("costplus.toml")).unwrap();
//! let server = cfg.server(None).unwrap();
//! assert_eq!(server.port, 5433);
//! assert_eq!(cfg.naming.database_for("acme"), "acme_db");
//! ```

pub mod audit;
pub mod checklist;
pub mod config;
pub mod customer;
pub mod exporter;
pub mod fail2ban;
pub mod incident;
pub mod maintain;
pub mod metrics;
pub mod pglog;
pub mod servercert;
pub mod status;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file is missing, unreadable or invalid.
    #[error("configuration {path}: {message}")]
    Config {
        /// The configuration file.
        path: std::path::PathBuf,
        /// What is wrong (with line and column when the TOML parser knows them).
        message: String,
    },
    /// No server of that name in the configuration.
    #[error("no server named {name:?} in {path} (known: {known})")]
    UnknownServer {
        /// The requested name.
        name: String,
        /// The configuration file.
        path: std::path::PathBuf,
        /// The names that exist.
        known: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// A PostgreSQL cluster or connection error.
    #[error(transparent)]
    Pg(#[from] costplus_pgcluster::Error),
    /// The vault refused or failed.
    #[error(transparent)]
    Vault(#[from] costplus_vault::Error),
    /// pg_hba.conf could not be read, edited or applied.
    #[error(transparent)]
    Hba(#[from] costplus_hba::Error),
    /// An input or option is not acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An external tool failed or said something unexpected.
    #[error("{tool}: {message}")]
    Tool {
        /// The tool.
        tool: String,
        /// What happened.
        message: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
