//! `costplus-backup run`: one backup to one repository, with the fingerprint the restore
//! drill checks against (see [`crate::fingerprint`]).

use std::time::Instant;

use serde::Serialize;

use crate::fingerprint::{self, BackupFingerprint};
use crate::info::BackupKind;
use crate::{BackupConfig, BackupType, Error, PgBackRest, Result};
use costplus_pgcluster::connect::ConnectOptions;

/// What one backup did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRecord {
    /// The new backup set.
    pub label: String,
    /// Repository.
    pub repo: u32,
    /// full, diff or incr.
    #[serde(rename = "type")]
    pub kind: BackupType,
    /// Wall-clock seconds of `pgbackrest backup` (expire included).
    pub seconds: f64,
    /// Size of the database.
    pub size_bytes: u64,
    /// Bytes this backup read and copied (its delta).
    pub delta_bytes: u64,
    /// Bytes it stored in the repository (compressed, encrypted).
    pub repo_delta_bytes: u64,
    /// Throughput: delta bytes per second, in MB/s (10^6).
    pub mb_per_second: f64,
    /// Where the fingerprint was stored (`None` when no live connection was given).
    pub fingerprint_file: Option<std::path::PathBuf>,
}

/// Take a backup of `kind` to `repo`; with `live` (administrator connection options), record
/// a fingerprint just before and just after it.
pub async fn run(
    pgbr: &PgBackRest,
    cfg: &BackupConfig,
    live: Option<&ConnectOptions>,
    kind: BackupType,
    repo: u32,
) -> Result<BackupRecord> {
    let before = match live {
        Some(o) => Some(fingerprint::snapshot(o, cfg.exact_count_max_rows).await?),
        None => None,
    };
    let t = Instant::now();
    pgbr.backup(kind, repo)?;
    let seconds = t.elapsed().as_secs_f64();
    let info = pgbr.info(Some(repo))?;
    let want = match kind {
        BackupType::Full => BackupKind::Full,
        BackupType::Diff => BackupKind::Diff,
        BackupType::Incr => BackupKind::Incr,
    };
    let b = info.latest(repo, Some(want)).ok_or_else(|| Error::Parse {
        command: "info --output=json".into(),
        message: format!(
            "the {} backup just taken is not in repo{repo}",
            kind.as_str()
        ),
    })?;
    let mut fingerprint_file = None;
    if let (Some(o), Some(before)) = (live, before) {
        let after = fingerprint::snapshot(o, cfg.exact_count_max_rows).await?;
        let fp = BackupFingerprint {
            label: b.label.clone(),
            repo,
            before,
            after,
        };
        fingerprint_file = Some(fingerprint::save(&cfg.fingerprint_dir(), &fp)?);
    }
    Ok(BackupRecord {
        label: b.label.clone(),
        repo,
        kind,
        seconds: (seconds * 1000.0).round() / 1000.0,
        size_bytes: b.info.size,
        delta_bytes: b.info.delta,
        repo_delta_bytes: b.info.repository.delta,
        mb_per_second: ((b.info.delta as f64 / 1e6 / seconds.max(0.001)) * 100.0).round() / 100.0,
        fingerprint_file,
    })
}
