//! pgBackRest, end to end: encrypted backups to a local repository (repo1, posix) and an
//! offsite one (repo2, S3/Wasabi), their status and schedules, and an automated restore drill
//! that restores a backup into a scratch cluster and checks what came back.
//!
//! The crate is layered like the rest of costplus: pure cores that build text and parse
//! output ([`conf`], [`info`], [`failure`], [`status`], [`schedule`]), and thin adapters that
//! run `pgbackrest` and PostgreSQL for real ([`PgBackRest`], [`archiving`], [`fingerprint`],
//! [`drill`], [`customer`]).
//!
//! Secrets (the two repository cipher passphrases and the S3 keys) enter through
//! [`secrets::SecretSource`] as [`secrecy::SecretString`]s and leave only into the
//! generated `pgbackrest.conf` (0640 root:postgres, or 0600 when we are the server's user);
//! they are never put on a command line. Until the vault holds them, [`secrets::FileSecrets`]
//! reads them from 0600 files named in the `[backup]` section.
//!
//! ```
//! use costplus_pgbackrest::{BackupConfig, conf};
//! let cfg = BackupConfig::default();
//! assert_eq!(cfg.stanza, "main");
//! // repo2 keeps full backups for at least 90 days (Wasabi bills deleted objects to 90 days).
//! assert!(cfg.repo2_retention_days >= 90);
//! let cmd = conf::archive_command(&cfg);
//! assert_eq!(cmd, "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=main archive-push %p");
//! ```

pub mod archiving;
pub mod backup;
pub mod conf;
pub mod customer;
pub mod drill;
mod exec;
pub mod failure;
pub mod fingerprint;
pub mod info;
pub mod schedule;
pub mod secrets;
pub mod status;

pub use exec::{BackupType, PgBackRest, RestoreOptions};
pub use failure::{Failure, FailureKind};

use std::path::PathBuf;

/// The `[backup]` section of costplus.toml. Repository 2 (offsite) is described by the
/// `[offsite]` section (`costplus-s3`); the caller passes it in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// pgBackRest stanza name.
    pub stanza: String,
    /// Where the generated pgbackrest.conf lives (0600 or 0640, it holds cipher passphrases).
    pub config_file: PathBuf,
    /// Repository 1 (local, posix).
    pub repo1_path: PathBuf,
    /// Spool path for asynchronous archiving.
    pub spool_path: PathBuf,
    /// pgBackRest's log directory.
    pub log_path: PathBuf,
    /// pgBackRest's lock directory (one per installation: two stanzas of the same name on one
    /// host must not share it).
    pub lock_path: PathBuf,
    /// costplus's own backup state: fingerprints recorded at backup time, drill history, and
    /// the scratch clusters of drills (`scratch/`).
    pub state_path: PathBuf,
    /// Full backups kept in repo1.
    pub repo1_retention_full: u32,
    /// Days of full backups kept in repo2 (at least 90: Wasabi bills deleted objects to 90 days).
    pub repo2_retention_days: u32,
    /// A backup older than this many hours is stale.
    pub stale_after_hours: u32,
    /// Compression of both repositories (`zst`, `lz4`, `gz`, `bz2`, `none`).
    pub compress_type: String,
    /// Parallel processes for backup and restore.
    pub process_max: u32,
    /// Seconds `check` and `backup` wait for a WAL segment to reach the archive.
    pub archive_timeout_seconds: u32,
    /// File (0600) holding repo1's cipher passphrase. Until the vault holds it.
    pub repo1_cipher_pass_file: Option<PathBuf>,
    /// File (0600) holding repo2's cipher passphrase. Until the vault holds it.
    pub repo2_cipher_pass_file: Option<PathBuf>,
    /// The data directory of the server (`pg1-path`) when costplus did not create the cluster
    /// (Debian: `/var/lib/postgresql/<ver>/main`).
    pub pg_data: Option<PathBuf>,
    /// The server's Unix socket directory (`pg1-socket-path`) in the same case.
    pub pg_socket_dir: Option<PathBuf>,
    /// Tables with more (estimated) rows than this are fingerprinted by size, not by an exact
    /// `count(*)` (see [`fingerprint`]).
    pub exact_count_max_rows: u64,
    /// When full backups run (see [`schedule`]): `daily 02:00`, `sun 02:00`, ...
    pub schedule_full: String,
    /// When differential backups run, if at all (`mon-sat 02:00`).
    pub schedule_diff: Option<String>,
    /// When incremental backups run, if at all (`daily 08:00,14:00,20:00`).
    pub schedule_incr: Option<String>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            stanza: "main".into(),
            config_file: "/etc/pgbackrest/pgbackrest.conf".into(),
            repo1_path: "/var/lib/pgbackrest".into(),
            spool_path: "/var/spool/pgbackrest".into(),
            log_path: "/var/log/pgbackrest".into(),
            lock_path: "/tmp/pgbackrest".into(),
            state_path: "/var/lib/costplus/backup".into(),
            repo1_retention_full: 2,
            repo2_retention_days: 90,
            stale_after_hours: 26,
            compress_type: "zst".into(),
            process_max: 2,
            archive_timeout_seconds: 60,
            repo1_cipher_pass_file: None,
            repo2_cipher_pass_file: None,
            pg_data: None,
            pg_socket_dir: None,
            exact_count_max_rows: 1_000_000,
            schedule_full: "daily 02:00".into(),
            schedule_diff: None,
            schedule_incr: None,
        }
    }
}

impl BackupConfig {
    /// Where fingerprints recorded at backup time are kept.
    pub fn fingerprint_dir(&self) -> PathBuf {
        self.state_path.join("fingerprints")
    }
    /// Where drill history records are kept.
    pub fn drill_history_dir(&self) -> PathBuf {
        self.state_path.join("drills")
    }
    /// Where drills create their scratch clusters.
    pub fn scratch_dir(&self) -> PathBuf {
        self.state_path.join("scratch")
    }

    /// Check the values that pgBackRest would only reject later (or accept wrongly).
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config(message));
        if self.stanza.is_empty()
            || !self
                .stanza
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(format!(
                "backup.stanza = {:?}: use letters, digits, '-' and '_' only",
                self.stanza
            ));
        }
        if !["zst", "lz4", "gz", "bz2", "none"].contains(&self.compress_type.as_str()) {
            return bad(format!(
                "backup.compress_type = {:?}: one of zst, lz4, gz, bz2, none",
                self.compress_type
            ));
        }
        if self.repo1_retention_full == 0 {
            return bad("backup.repo1_retention_full must be at least 1".into());
        }
        if self.repo2_retention_days < 90 {
            return bad(format!(
                "backup.repo2_retention_days = {}: keep at least 90 days offsite (Wasabi bills objects deleted earlier for the full 90 days anyway)",
                self.repo2_retention_days
            ));
        }
        if self.process_max == 0 {
            return bad("backup.process_max must be at least 1".into());
        }
        for (name, p) in [
            ("config_file", &self.config_file),
            ("repo1_path", &self.repo1_path),
            ("spool_path", &self.spool_path),
            ("log_path", &self.log_path),
            ("lock_path", &self.lock_path),
            ("state_path", &self.state_path),
        ] {
            if !p.is_absolute() {
                return bad(format!(
                    "backup.{name} = {}: must be an absolute path",
                    p.display()
                ));
            }
            let s = p.to_string_lossy();
            if s.contains(['\n', '\r', ' ', '%', '\'', '"']) {
                return bad(format!(
                    "backup.{name} = {s:?}: no spaces, quotes, '%' or newlines (the path goes into archive_command and pgbackrest.conf)"
                ));
            }
        }
        schedule::Plan::from_config(self)?;
        Ok(())
    }
}

/// Errors of this crate. Each names the command, file or setting concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// pgBackRest ran and failed; the failure says what to do next.
    #[error(transparent)]
    PgBackRest(#[from] Failure),
    /// pgBackRest could not be started at all.
    #[error(
        "cannot run {exe}: {source}; install pgBackRest (Debian: apt-get install -y pgbackrest)"
    )]
    NotInstalled {
        /// The executable tried.
        exe: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// pgBackRest's output could not be understood.
    #[error("cannot parse the output of `pgbackrest {command}`: {message}")]
    Parse {
        /// The command.
        command: String,
        /// What went wrong.
        message: String,
    },
    /// The configuration is not usable.
    #[error("backup configuration: {0}")]
    Config(String),
    /// A secret is missing or not private.
    #[error("secret {what}: {message}")]
    Secret {
        /// Which secret.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// The local cluster (live or scratch) failed.
    #[error(transparent)]
    Cluster(#[from] costplus_pgcluster::Error),
    /// A database error (server message and SQLSTATE).
    #[error("PostgreSQL ({context}): {}", costplus_pgcluster::pg_message(.source))]
    Postgres {
        /// What we were doing.
        context: String,
        /// The error.
        source: tokio_postgres::Error,
    },
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another tool (pg_amcheck, pg_dump, pg_restore) failed.
    #[error("{command} failed ({status}): {output}")]
    Tool {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// A stored record (fingerprint, drill history) is damaged.
    #[error("{path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn pg_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |source| Error::Postgres {
        context: context.to_string(),
        source,
    }
}

/// Quote an SQL identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal (standard_conforming_strings on).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_setting() {
        BackupConfig::default().validate().unwrap();
        let check = |f: fn(&mut BackupConfig), expect: &str| {
            let mut c = BackupConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        };
        check(|c| c.repo2_retention_days = 30, "at least 90 days");
        check(|c| c.stanza = "a b".into(), "backup.stanza");
        check(|c| c.compress_type = "xz".into(), "compress_type");
        check(|c| c.repo1_path = "rel/path".into(), "absolute");
        check(|c| c.spool_path = "/a b".into(), "no spaces");
        check(|c| c.schedule_full = "someday".into(), "schedule");
    }

    #[test]
    fn section_parses_with_defaults_and_rejects_unknown_keys() {
        let c: BackupConfig = serde_json::from_str(r#"{"stanza":"x"}"#).unwrap();
        assert_eq!((c.stanza.as_str(), c.stale_after_hours), ("x", 26));
        let e = serde_json::from_str::<BackupConfig>(r#"{"bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
