//! A local PostgreSQL cluster: locate the binaries, `initdb`, configure, start, stop, check
//! status and connect.
//!
//! This is the one implementation used by the test harness (`costplus-testsupport`), the
//! sandbox (`costplus-sandbox`) and the restore drill (`costplus-pgbackrest`). When the
//! calling process runs as root, the server runs as the `postgres` OS user and every file it
//! needs is owned by that user; otherwise it runs as the calling user.
//!
//! ```no_run
//! # async fn demo() -> Result<(), costplus_pgcluster::Error> {
//! use costplus_pgcluster::{Cluster, ClusterOptions};
//! let dir = std::path::Path::new("/tmp/my-cluster");
//! let cluster = Cluster::create(ClusterOptions::new(dir))?;
//! cluster.start()?;
//! let client = cluster.connect("postgres").await?;
//! let row = client.query_one("SELECT 1::int4", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 1);
//! cluster.stop()?;
//! # Ok(()) }
//! ```

mod bin;
mod cluster;
pub mod connect;

pub use bin::PgBin;
pub use cluster::{AdoptOptions, Cluster, ClusterOptions, Status, TlsFiles, free_port};
pub use costplus_fs::OsUser;

use std::path::PathBuf;

/// Errors of this crate. Each names the command, file or setting concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PostgreSQL server binaries could not be found.
    #[error(
        "PostgreSQL binaries not found ({0}); install them (Debian: apt-get install -y postgresql) or set COSTPLUS_PG_BINDIR"
    )]
    BinariesNotFound(String),
    /// An external command failed.
    #[error("{command} failed ({status}){}", log_hint(.log))]
    Command {
        /// The command line (no secrets are ever passed in argv).
        command: String,
        /// Exit status or spawn error.
        status: String,
        /// The last lines of its output or of the server log.
        log: String,
    },
    /// The port is already used by another process.
    #[error("port {port} is already in use")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A database error (the message includes the server's SQLSTATE and text).
    #[error("PostgreSQL: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The cluster or connection configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// TLS setup failed (bad CA file, bad server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// Timed out waiting for something.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        seconds: u64,
    },
}

fn log_hint(log: &str) -> String {
    if log.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", log.trim_end())
    }
}

/// The full text of a tokio-postgres error: the server's message and SQLSTATE for database
/// errors, the cause chain for the others (its `Display` alone says only "db error").
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
