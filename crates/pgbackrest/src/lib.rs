//! pgBackRest orchestration (issue 7; only the configuration section exists so far).
//!
//! ```
//! let cfg = costplus_pgbackrest::BackupConfig::default();
//! assert_eq!(cfg.stanza, "main");
//! ```

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
    /// Full backups kept in repo1.
    pub repo1_retention_full: u32,
    /// Days of full backups kept in repo2 (at least 90: Wasabi bills deleted objects to 90 days).
    pub repo2_retention_days: u32,
    /// A backup older than this many hours is stale.
    pub stale_after_hours: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            stanza: "main".into(),
            config_file: "/etc/pgbackrest/pgbackrest.conf".into(),
            repo1_path: "/var/lib/pgbackrest".into(),
            spool_path: "/var/spool/pgbackrest".into(),
            log_path: "/var/log/pgbackrest".into(),
            repo1_retention_full: 2,
            repo2_retention_days: 90,
            stale_after_hours: 26,
        }
    }
}
