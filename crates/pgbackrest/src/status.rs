//! Backup status per repository: last good full/diff/incr, age against the policy, the WAL
//! archive range and its gaps, repository size; plus the server's archiver and the
//! asynchronous archiver's errors (an unreachable offsite shows up here first).
//!
//! [`evaluate`] is pure (info + listings + archiver figures in, report out); [`gather`] runs
//! the commands and queries.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::Client;

use crate::info::{BackupKind, Stanza};
use crate::{BackupConfig, PgBackRest, Result, pg_err};

/// The newest backup of one kind in one repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupSummary {
    /// Label.
    pub label: String,
    /// When it finished (RFC 3339).
    pub stopped_at: String,
    /// Hours since it finished.
    pub age_hours: f64,
    /// Size of the database.
    pub size_bytes: u64,
    /// Bytes this backup stored in the repository.
    pub repo_delta_bytes: u64,
}

/// A hole in the WAL archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalGap {
    /// Last segment before the hole.
    pub after: String,
    /// First segment after it.
    pub before: String,
    /// Segments missing.
    pub missing: u64,
}

/// One repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoReport {
    /// Repository number.
    pub repo: u32,
    /// pgBackRest's status code for the stanza in this repository (0 ok).
    pub status_code: i32,
    /// pgBackRest's status message.
    pub status_message: String,
    /// Newest good full backup.
    pub last_full: Option<BackupSummary>,
    /// Newest good differential backup.
    pub last_diff: Option<BackupSummary>,
    /// Newest good incremental backup.
    pub last_incr: Option<BackupSummary>,
    /// Hours since the newest good backup of any kind.
    pub newest_age_hours: Option<f64>,
    /// No good backup within the policy's hours.
    pub stale: bool,
    /// Oldest WAL segment in the archive.
    pub archive_min: Option<String>,
    /// Newest WAL segment in the archive.
    pub archive_max: Option<String>,
    /// Complete segments the server has written that this archive does not have yet.
    pub wal_behind_segments: Option<u64>,
    /// Segments counted in the archive listing.
    pub wal_segments: Option<u64>,
    /// Holes between `archive_min` and `archive_max`.
    pub wal_gaps: Vec<WalGap>,
    /// Bytes stored: backups and archive from the repository listing, or (when the listing
    /// failed) the sum of the backups' stored sizes from `info`.
    pub size_bytes: Option<u64>,
    /// Why the listing failed, if it did.
    pub listing_error: Option<String>,
}

/// The server's archiver (`pg_stat_archiver`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiverStats {
    /// Segments archived since the statistics reset.
    pub archived_count: i64,
    /// Last archived segment.
    pub last_archived_wal: Option<String>,
    /// When (RFC 3339).
    pub last_archived_time: Option<String>,
    /// Failed attempts.
    pub failed_count: i64,
    /// Last segment that failed.
    pub last_failed_wal: Option<String>,
    /// When (RFC 3339).
    pub last_failed_time: Option<String>,
    /// The last attempt failed (the archive_command is failing now).
    pub failing: bool,
    /// The segment being written now.
    pub current_wal: String,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// No problems.
    pub ok: bool,
    /// Stanza.
    pub stanza: String,
    /// When this report was made (RFC 3339).
    pub checked_at: String,
    /// The policy: a backup older than this is stale.
    pub stale_after_hours: u32,
    /// pgBackRest's overall status code and message.
    pub stanza_status: (i32, String),
    /// Per repository.
    pub repos: Vec<RepoReport>,
    /// The server's archiver, when the server was reachable.
    pub archiver: Option<ArchiverStats>,
    /// Errors the asynchronous archiver left in the spool (one per failing segment).
    pub async_errors: Vec<String>,
    /// Everything that needs attention, in words.
    pub problems: Vec<String>,
    /// What could not be checked (not a problem by itself).
    pub notes: Vec<String>,
}

/// The inputs of [`evaluate`] that do not come from `info`.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Per repository: the file listing (`archive/<stanza>` and `backup/<stanza>`, names
    /// relative to the stanza's archive directory for WAL) or why it failed.
    pub listings: BTreeMap<u32, std::result::Result<Listing, String>>,
    /// The archiver.
    pub archiver: Option<ArchiverStats>,
    /// Async archiver errors.
    pub async_errors: Vec<String>,
}

/// What a repository listing gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// WAL segment names (24 hex digits) in the archive of the current database.
    pub segments: Vec<String>,
    /// Total bytes.
    pub bytes: u64,
}

/// Segment number along a timeline (for 16 MiB segments: log * 256 + seg).
fn seg_number(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_log = 0x1_0000_0000u64 / seg_size.max(1);
    Some((tli, log * per_log + seg))
}

/// Holes in a list of segment names, per timeline.
pub fn wal_gaps(segments: &[String], seg_size: u64) -> Vec<WalGap> {
    let mut by_tli: BTreeMap<u32, Vec<(u64, &str)>> = BTreeMap::new();
    for s in segments {
        if let Some((tli, n)) = seg_number(s, seg_size) {
            by_tli.entry(tli).or_default().push((n, s));
        }
    }
    let mut gaps = Vec::new();
    for list in by_tli.values_mut() {
        list.sort_unstable();
        list.dedup();
        for w in list.windows(2) {
            if w[1].0 > w[0].0 + 1 {
                gaps.push(WalGap {
                    after: w[0].1.to_string(),
                    before: w[1].1.to_string(),
                    missing: w[1].0 - w[0].0 - 1,
                });
            }
        }
    }
    gaps
}

fn summary(b: Option<&crate::info::Backup>, now: i64) -> Option<BackupSummary> {
    let b = b?;
    Some(BackupSummary {
        label: b.label.clone(),
        stopped_at: chrono::DateTime::from_timestamp(b.timestamp.stop, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        age_hours: hours(now - b.timestamp.stop),
        size_bytes: b.info.size,
        repo_delta_bytes: b.info.repository.delta,
    })
}

fn hours(seconds: i64) -> f64 {
    ((seconds.max(0) as f64 / 3600.0) * 100.0).round() / 100.0
}

/// Build the report (pure).
pub fn evaluate(
    info: &Stanza,
    repos: &[u32],
    obs: &Observations,
    now: i64,
    stale_after_hours: u32,
) -> StatusReport {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let seg_size = obs
        .archiver
        .as_ref()
        .map(|a| a.wal_segment_size)
        .unwrap_or(16 * 1024 * 1024);
    let mut out = Vec::new();
    for &repo in repos {
        let (status_code, status_message) = info
            .repo_status(repo)
            .map(|s| (s.code, crate::failure::printable(&s.message, 1000)))
            .unwrap_or((99, "not in pgBackRest's info output".into()));
        if status_code != 0 {
            problems.push(format!(
                "repo{repo}: status {status_code}: {status_message} ({})",
                crate::failure::classify(None, &status_message).next_step()
            ));
        }
        let newest = info.latest(repo, None);
        let newest_age = newest.map(|b| hours(now - b.timestamp.stop));
        let stale = newest_age.is_none_or(|h| h > stale_after_hours as f64);
        if stale {
            problems.push(match newest_age {
                Some(h) => format!(
                    "repo{repo}: newest good backup is {h:.1} hours old (policy: {stale_after_hours})"
                ),
                None => format!("repo{repo}: no good backup"),
            });
        }
        for b in info.backups_in(repo).filter(|b| b.error == Some(true)) {
            problems.push(format!(
                "repo{repo}: backup {} recorded errors (page checksums?)",
                b.label
            ));
        }
        let archive = info.archive_in(repo);
        let archive_max = archive.and_then(|a| a.max.clone());
        let (wal_segments, wal_gaps, size_bytes, listing_error) = match obs.listings.get(&repo) {
            Some(Ok(l)) => {
                let gaps = wal_gaps(&l.segments, seg_size);
                for g in &gaps {
                    problems.push(format!(
                        "repo{repo}: {} WAL segment(s) missing between {} and {}",
                        g.missing, g.after, g.before
                    ));
                }
                (Some(l.segments.len() as u64), gaps, Some(l.bytes), None)
            }
            Some(Err(e)) => {
                notes.push(format!(
                    "repo{repo}: cannot list the repository ({e}); size estimated from backup sizes, WAL gaps not checked"
                ));
                let from_info = info.backups_in(repo).map(|b| b.info.repository.delta).sum();
                (None, Vec::new(), Some(from_info), Some(e.clone()))
            }
            None => (None, Vec::new(), None, None),
        };
        let wal_behind_segments = obs.archiver.as_ref().and_then(|a| {
            let (tli, cur) = seg_number(&a.current_wal, seg_size)?;
            match archive_max.as_deref().and_then(|m| seg_number(m, seg_size)) {
                Some((t, max)) if t == tli => Some(cur.saturating_sub(max + 1)),
                Some(_) => None,
                None => Some(cur),
            }
        });
        out.push(RepoReport {
            repo,
            status_code,
            status_message,
            last_full: summary(info.latest(repo, Some(BackupKind::Full)), now),
            last_diff: summary(info.latest(repo, Some(BackupKind::Diff)), now),
            last_incr: summary(info.latest(repo, Some(BackupKind::Incr)), now),
            newest_age_hours: newest_age,
            stale,
            archive_min: archive.and_then(|a| a.min.clone()),
            archive_max,
            wal_behind_segments,
            wal_segments,
            wal_gaps,
            size_bytes,
            listing_error,
        });
    }
    if let Some(a) = &obs.archiver
        && a.failing
    {
        problems.push(format!(
            "archive_command is failing (last failed segment {}, {} failures); PostgreSQL keeps the WAL in pg_wal until it succeeds",
            a.last_failed_wal.as_deref().unwrap_or("?"),
            a.failed_count
        ));
    }
    for e in &obs.async_errors {
        problems.push(format!("asynchronous archiving: {e}"));
    }
    StatusReport {
        ok: problems.is_empty(),
        stanza: info.name.clone(),
        checked_at: chrono::DateTime::from_timestamp(now, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        stale_after_hours,
        stanza_status: (
            info.status.code,
            crate::failure::printable(&info.status.message, 500),
        ),
        repos: out,
        archiver: obs.archiver.clone(),
        async_errors: obs.async_errors.clone(),
        problems,
        notes,
    }
}

/// Run `info`, list every repository, read the archiver and the spool, and evaluate.
///
/// pgBackRest commands run with `--io-timeout=10` unless `pgbr` sets one: an unreachable
/// offsite then costs seconds, not minutes.
pub async fn gather(
    pgbr: &PgBackRest,
    cfg: &BackupConfig,
    repos: &[u32],
    client: Option<&Client>,
) -> Result<StatusReport> {
    let quick;
    let pgbr = if pgbr.io_timeout().is_some() {
        pgbr
    } else {
        quick = pgbr.clone().with_io_timeout(10);
        &quick
    };
    let info = pgbr.info(None)?;
    let mut obs = Observations::default();
    if let Some(c) = client {
        obs.archiver = Some(archiver(c).await?);
    }
    for &repo in repos {
        let l = match info.repo_status(repo) {
            // Unreachable: listing it would only wait for the same timeouts again.
            Some(st) if st.code == 99 => Err(format!(
                "not listed: {}",
                crate::failure::printable(&st.message, 300)
            )),
            _ => listing(pgbr, repo, &info),
        };
        obs.listings.insert(repo, l);
    }
    obs.async_errors = async_errors(cfg);
    Ok(evaluate(
        &info,
        repos,
        &obs,
        chrono::Utc::now().timestamp(),
        cfg.stale_after_hours,
    ))
}

fn listing(pgbr: &PgBackRest, repo: u32, info: &Stanza) -> std::result::Result<Listing, String> {
    let stanza = pgbr.stanza();
    let mut l = Listing::default();
    let archive_id = info.archive_in(repo).map(|a| a.id.clone());
    for path in [format!("archive/{stanza}"), format!("backup/{stanza}")] {
        let files = pgbr.repo_files(repo, &path).map_err(|e| match e {
            crate::Error::PgBackRest(f) => f.message,
            other => other.to_string(),
        })?;
        for (name, size) in files {
            l.bytes += size;
            if path.starts_with("archive/")
                && archive_id
                    .as_deref()
                    .is_some_and(|id| name.starts_with(&format!("{id}/")))
            {
                let file = name.rsplit('/').next().unwrap_or("");
                if file.len() > 24 && file.as_bytes()[24] == b'-' {
                    l.segments.push(file[..24].to_string());
                }
            }
        }
    }
    Ok(l)
}

/// The server's archiver statistics.
pub async fn archiver(client: &Client) -> Result<ArchiverStats> {
    let row = client
        .query_one(
            "SELECT archived_count, last_archived_wal, last_archived_time::text,
                    failed_count, last_failed_wal, last_failed_time::text,
                    coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),
                    pg_walfile_name(pg_current_wal_lsn()),
                    (SELECT setting::int8 * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 ELSE 1 END
                       FROM pg_settings WHERE name = 'wal_segment_size')
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(pg_err("reading pg_stat_archiver"))?;
    Ok(ArchiverStats {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time: row.get(2),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        last_failed_time: row.get(5),
        failing: row.get(6),
        current_wal: row.get(7),
        wal_segment_size: row.get::<_, i64>(8) as u64,
    })
}

/// Messages of the `.error` files the asynchronous archive-push left in the spool.
pub fn async_errors(cfg: &BackupConfig) -> Vec<String> {
    let dir = cfg.spool_path.join("archive").join(&cfg.stanza).join("out");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".error"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let text = text.lines().skip(1).collect::<Vec<_>>().join(" ");
            format!(
                "{}: {}",
                name.trim_end_matches(".error"),
                crate::failure::printable(text.trim(), 500)
            )
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_per_timeline() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let segs = s(&[
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "0000000100000000000000FF",
            "000000010000000100000000",
            "000000020000000100000007",
        ]);
        let gaps = wal_gaps(&segs, 16 * 1024 * 1024);
        assert_eq!(
            gaps.iter().map(|g| g.missing).collect::<Vec<_>>(),
            [2, 249],
            "{gaps:?}"
        );
        assert_eq!(gaps[0].after, "000000010000000000000002");
    }

    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000005","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":100,"repository":{"delta":10,"size":10},"size":100},"label":"F1","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,"timestamp":{"start":1000,"stop":1000},"type":"full"}],"cipher":"aes-256-cbc","db":[],"name":"main","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}},{"cipher":"aes-256-cbc","key":2,"status":{"code":99,"message":"[HostConnectError] unable to connect to 'localhost:1'"}}],"status":{"code":4,"lock":{"backup":{"held":false}},"message":"different across repos"}}]"#;

    #[test]
    fn stale_and_unreachable_repositories_are_problems() {
        let info = crate::info::parse(INFO).unwrap().remove(0);
        let mut obs = Observations::default();
        obs.listings.insert(
            1,
            Ok(Listing {
                segments: vec![
                    "000000010000000000000001".into(),
                    "000000010000000000000003".into(),
                ],
                bytes: 1234,
            }),
        );
        obs.listings.insert(2, Err("connection refused".into()));
        // 25 hours after the backup: fresh under the 26-hour policy.
        let r = evaluate(&info, &[1, 2], &obs, 1000 + 25 * 3600, 26);
        let repo1 = &r.repos[0];
        assert!(!repo1.stale);
        assert_eq!(repo1.last_full.as_ref().unwrap().label, "F1");
        assert_eq!(repo1.size_bytes, Some(1234));
        assert_eq!(repo1.wal_gaps.len(), 1);
        assert!(r.repos[1].stale);
        assert!(!r.ok);
        let all = r.problems.join("\n");
        assert!(all.contains("repo2: status 99"), "{all}");
        assert!(all.contains("S3 endpoint"), "{all}");
        assert!(r.notes[0].contains("repo2: cannot list"), "{:?}", r.notes);
        assert!(all.contains("1 WAL segment(s) missing"), "{all}");
        // 27 hours: stale.
        let r = evaluate(&info, &[1], &Observations::default(), 1000 + 27 * 3600, 26);
        assert!(r.repos[0].stale);
        assert!(r.problems[0].contains("27.0 hours old"), "{:?}", r.problems);
    }
}
