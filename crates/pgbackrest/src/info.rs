//! The typed model of `pgbackrest info --output=json` (2.45), tolerant of fields added by
//! newer versions (unknown fields are kept in `other` and written back out).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

type Other = BTreeMap<String, serde_json::Value>;

/// Parse the whole output: an array of stanzas.
pub fn parse(json: &str) -> Result<Vec<Stanza>> {
    serde_json::from_str(&escape_controls(json)).map_err(|e| Error::Parse {
        command: "info --output=json".into(),
        message: e.to_string(),
    })
}

/// pgBackRest 2.45 copies undecodable bytes (a wrongly decrypted info file) raw into JSON
/// strings; escape control characters inside strings so the output parses.
fn escape_controls(json: &str) -> std::borrow::Cow<'_, str> {
    if !json
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 64);
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if c.is_control() {
                out.push_str(&format!("\\u{:04x}", c as u32));
                continue;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// One stanza.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stanza {
    /// Stanza name.
    pub name: String,
    /// Cipher of the stanza (`none`, `aes-256-cbc`, or `mixed` across repositories).
    #[serde(default)]
    pub cipher: String,
    /// Overall status.
    pub status: StanzaStatus,
    /// Status of each repository.
    #[serde(default)]
    pub repo: Vec<Repo>,
    /// Database system history.
    #[serde(default)]
    pub db: Vec<Db>,
    /// WAL archive ranges, per database id and repository.
    #[serde(default)]
    pub archive: Vec<Archive>,
    /// Backups, oldest first.
    #[serde(default)]
    pub backup: Vec<Backup>,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// A status code and message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StanzaStatus {
    /// 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza data, 4 different
    /// across repos, 5 database mismatch across repos, 6 requested backup not found, 99 other.
    pub code: i32,
    /// Human message.
    pub message: String,
    /// Lock state.
    #[serde(default)]
    pub lock: Option<Lock>,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// Lock state of the stanza.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    /// The backup lock.
    pub backup: BackupLock,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// Whether a backup runs, and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupLock {
    /// A backup holds the lock.
    pub held: bool,
    /// Bytes to copy (while a backup runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes copied so far.
    #[serde(default, rename = "size-cplt", skip_serializing_if = "Option::is_none")]
    pub size_complete: Option<u64>,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// One repository of the stanza.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repo {
    /// Repository number (1 for repo1).
    pub key: u32,
    /// Cipher of the repository.
    #[serde(default)]
    pub cipher: String,
    /// Status of the stanza in this repository.
    pub status: RepoStatus,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// Status of one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// Same codes as [`StanzaStatus::code`].
    pub code: i32,
    /// Human message (for 99 it carries pgBackRest's error).
    pub message: String,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// A database system (one entry per `stanza-upgrade`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Db {
    /// History id.
    pub id: u32,
    /// Repository.
    #[serde(rename = "repo-key")]
    pub repo_key: u32,
    /// PostgreSQL system identifier.
    #[serde(rename = "system-id")]
    pub system_id: u64,
    /// PostgreSQL major version (`15`).
    pub version: String,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// Reference to a database history entry in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRef {
    /// History id.
    pub id: u32,
    /// Repository.
    #[serde(rename = "repo-key")]
    pub repo_key: u32,
}

/// The WAL archive of one database in one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archive {
    /// `<version>-<id>` (`15-1`).
    pub id: String,
    /// Oldest segment, if any.
    #[serde(default)]
    pub min: Option<String>,
    /// Newest segment, if any.
    #[serde(default)]
    pub max: Option<String>,
    /// Which database and repository.
    pub database: DbRef,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// Kind of backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackupKind {
    /// Full.
    Full,
    /// Differential (since the last full).
    Diff,
    /// Incremental (since the last backup).
    Incr,
}

impl BackupKind {
    /// `full`, `diff` or `incr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

/// One backup set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    /// Label (`20261204-155746F`, `..._20261204-155749I`).
    pub label: String,
    /// full, diff or incr.
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// The backup this one depends on.
    #[serde(default)]
    pub prior: Option<String>,
    /// Every backup this one references files of.
    #[serde(default)]
    pub reference: Option<Vec<String>>,
    /// WAL range needed to make the backup consistent.
    #[serde(default)]
    pub archive: Option<ArchiveRange>,
    /// pgBackRest that made it.
    pub backrest: Backrest,
    /// Database and repository.
    pub database: DbRef,
    /// Sizes.
    pub info: BackupInfo,
    /// Start and stop time (Unix seconds).
    pub timestamp: Timestamp,
    /// Whether page checksum errors (or other errors) were found while backing up.
    #[serde(default)]
    pub error: Option<bool>,
    /// Start and stop LSN.
    #[serde(default)]
    pub lsn: Option<LsnRange>,
    /// Annotations (`--annotation key=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<BTreeMap<String, String>>,
    /// Databases in the backup (only with `info --set`).
    #[serde(
        default,
        rename = "database-ref",
        skip_serializing_if = "Option::is_none"
    )]
    pub database_ref: Option<Vec<DatabaseRef>>,
    /// Symlinks in the data directory (only with `info --set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Vec<serde_json::Value>>,
    /// Tablespaces (only with `info --set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<Vec<serde_json::Value>>,
    /// Fields of newer pgBackRest versions.
    #[serde(flatten)]
    pub other: Other,
}

/// A database inside a backup set (`info --set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRef {
    /// Database name.
    pub name: String,
    /// Database OID.
    pub oid: u32,
}

/// WAL segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRange {
    /// First segment.
    pub start: Option<String>,
    /// Last segment.
    pub stop: Option<String>,
}

/// LSNs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsnRange {
    /// Start LSN.
    pub start: Option<String>,
    /// Stop LSN.
    pub stop: Option<String>,
}

/// pgBackRest version and repository format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backrest {
    /// Repository format.
    pub format: u32,
    /// pgBackRest version.
    pub version: String,
}

/// Sizes of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Size of the database.
    pub size: u64,
    /// Bytes copied by this backup.
    pub delta: u64,
    /// Sizes in the repository (compressed).
    pub repository: RepoSize,
}

/// Sizes in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSize {
    /// Size of the whole set (with references).
    #[serde(default)]
    pub size: Option<u64>,
    /// Bytes stored by this backup.
    pub delta: u64,
}

/// Start and stop of a backup, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// Start.
    pub start: i64,
    /// Stop.
    pub stop: i64,
}

impl Stanza {
    /// Backups stored in repository `repo`, oldest first.
    pub fn backups_in(&self, repo: u32) -> impl Iterator<Item = &Backup> {
        self.backup
            .iter()
            .filter(move |b| b.database.repo_key == repo)
    }

    /// The newest backup in `repo` without errors, optionally of one kind.
    pub fn latest(&self, repo: u32, kind: Option<BackupKind>) -> Option<&Backup> {
        self.backups_in(repo)
            .filter(|b| b.error != Some(true))
            .filter(|b| kind.is_none_or(|k| b.kind == k))
            .max_by_key(|b| b.timestamp.stop)
    }

    /// The archive range of the current database in `repo`.
    pub fn archive_in(&self, repo: u32) -> Option<&Archive> {
        self.archive
            .iter()
            .filter(|a| a.database.repo_key == repo)
            .max_by_key(|a| a.database.id)
    }

    /// The status of `repo`.
    pub fn repo_status(&self, repo: u32) -> Option<&RepoStatus> {
        self.repo.iter().find(|r| r.key == repo).map(|r| &r.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of pgBackRest 2.45 (a full and an incremental backup in repo1).
    const REAL: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000005","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":22992307,"repository":{"delta":2845712,"size":2845712},"size":22992307},"label":"20261204-155746F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,"timestamp":{"start":1796399866,"stop":1796399869},"type":"full"},{"archive":{"start":"000000010000000000000004","stop":"000000010000000000000005"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":8458,"repository":{"delta":464,"size":2845712},"size":22992307},"label":"20261204-155746F_20261204-155749I","lsn":{"start":"0/4000028","stop":"0/5000050"},"prior":"20261204-155746F","reference":["20261204-155746F"],"timestamp":{"start":1796399869,"stop":1796399871},"type":"incr"}],"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7715478665316506372,"version":"15"}],"name":"main","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn parses_real_output() {
        let s = parse(REAL).unwrap();
        let st = &s[0];
        assert_eq!((st.name.as_str(), st.status.code), ("main", 0));
        assert_eq!(st.backup.len(), 2);
        assert_eq!(st.latest(1, None).unwrap().kind, BackupKind::Incr);
        assert_eq!(
            st.latest(1, Some(BackupKind::Full)).unwrap().label,
            "20261204-155746F"
        );
        assert!(st.latest(2, None).is_none());
        assert_eq!(
            st.archive_in(1).unwrap().max.as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(st.db[0].system_id, 7715478665316506372);
        assert_eq!(st.backup[1].reference.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn round_trips_and_keeps_unknown_fields() {
        let with_new = REAL.replacen(
            r#""cipher":"aes-256-cbc","db""#,
            r#""cipher":"aes-256-cbc","future":{"x":1},"db""#,
            1,
        );
        let s = parse(&with_new).unwrap();
        assert_eq!(s[0].other["future"]["x"], 1);
        let again: serde_json::Value = serde_json::to_value(&s).unwrap();
        let orig: serde_json::Value = serde_json::from_str(&with_new).unwrap();
        assert_eq!(again, orig);
    }

    #[test]
    fn missing_stanza_and_repo_errors() {
        let s = parse(r#"[{"archive":[],"backup":[],"cipher":"aes-256-cbc","db":[],"name":"other","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":1,"message":"missing stanza path"}}],"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]"#).unwrap();
        assert_eq!(s[0].repo_status(1).unwrap().code, 1);
        assert!(
            parse("not json")
                .unwrap_err()
                .to_string()
                .contains("info --output=json")
        );
    }
}
