//! The parts of `pgbackrest info --output=json` that the offsite checks and the cost model
//! read. Lenient: unknown keys are ignored and missing ones default, so newer pgBackRest
//! versions parse too. (The full model lives in `costplus-pgbackrest`; this crate does not
//! depend on it.)

use serde::Deserialize;

use crate::{Error, Result};

/// One stanza of the output (the output is an array of these).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Stanza {
    /// Stanza name.
    pub name: String,
    /// `aes-256-cbc` or `none` (for a multi-repo stanza: `mixed`).
    pub cipher: String,
    /// Status code and message.
    pub status: Status,
    /// Repositories (2.33+): key and cipher per repository.
    pub repo: Vec<Repo>,
    /// Database history: id, system id, version.
    pub db: Vec<Db>,
    /// WAL archive range per database id.
    pub archive: Vec<Archive>,
    /// Backups, oldest first.
    pub backup: Vec<Backup>,
}

/// Stanza status.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    /// 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza data, ...
    pub code: i64,
    /// The message.
    pub message: String,
}

/// One repository of a stanza.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Repo {
    /// Repository number (`1`, `2`).
    pub key: u32,
    /// Cipher of this repository.
    pub cipher: String,
    /// Status of the stanza in this repository.
    pub status: Status,
}

/// One database of the history.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Db {
    /// History id (archive ids are `<version>-<id>`).
    pub id: u32,
    /// PostgreSQL major version (`15`).
    pub version: String,
    /// Repository.
    #[serde(rename = "repo-key")]
    pub repo_key: u32,
}

/// WAL range of one database id.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Archive {
    /// Archive id (`15-1`).
    pub id: String,
    /// First segment.
    pub min: Option<String>,
    /// Last segment.
    pub max: Option<String>,
    /// Database and repository.
    pub database: DatabaseRef,
}

/// Database and repository a backup or archive belongs to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DatabaseRef {
    /// History id.
    pub id: u32,
    /// Repository.
    #[serde(rename = "repo-key")]
    pub repo_key: u32,
}

/// One backup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Backup {
    /// Label (`20240101-020000F`, `..._20240102-020000D`).
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Labels of the backups this one depends on.
    pub reference: Option<Vec<String>>,
    /// WAL needed for consistency.
    pub archive: BackupArchive,
    /// Database and repository.
    pub database: DatabaseRef,
    /// Sizes.
    pub info: BackupInfo,
    /// Start and stop, seconds since the epoch.
    pub timestamp: Timestamp,
    /// Whether page checksum errors were found.
    pub error: Option<bool>,
}

/// WAL range of one backup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BackupArchive {
    /// First segment.
    pub start: Option<String>,
    /// Last segment.
    pub stop: Option<String>,
}

/// Sizes of one backup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BackupInfo {
    /// Database size.
    pub size: u64,
    /// Bytes copied by this backup.
    pub delta: u64,
    /// Sizes in the repository (compressed, encrypted).
    pub repository: RepoSize,
}

/// Sizes of one backup in the repository.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RepoSize {
    /// The whole backup set (with what it references).
    pub size: u64,
    /// What this backup stored itself.
    pub delta: u64,
}

/// Start and stop of a backup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Timestamp {
    /// Start (epoch seconds).
    pub start: i64,
    /// Stop (epoch seconds).
    pub stop: i64,
}

/// Parse the output of `pgbackrest info --output=json`.
pub fn parse(json: &str) -> Result<Vec<Stanza>> {
    serde_json::from_str(json).map_err(|e| Error::Parse {
        what: "pgbackrest info --output=json".into(),
        message: e.to_string(),
    })
}

impl Stanza {
    /// Backups stored in repository `repo` (all when the output names no repository).
    pub fn backups_in(&self, repo: u32) -> impl Iterator<Item = &Backup> {
        self.backup
            .iter()
            .filter(move |b| b.database.repo_key == 0 || b.database.repo_key == repo)
    }
    /// Archive ranges in repository `repo`.
    pub fn archives_in(&self, repo: u32) -> impl Iterator<Item = &Archive> {
        self.archive
            .iter()
            .filter(move |a| a.database.repo_key == 0 || a.database.repo_key == repo)
    }
    /// The cipher of repository `repo`, else the stanza's.
    pub fn cipher_of(&self, repo: u32) -> &str {
        self.repo
            .iter()
            .find(|r| r.key == repo)
            .map(|r| r.cipher.as_str())
            .unwrap_or(self.cipher.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_two_repo_stanza() {
        let json = r#"[{"name":"main","cipher":"mixed","status":{"code":0,"message":"ok","lock":{"backup":{"held":false}}},
          "repo":[{"key":1,"cipher":"none","status":{"code":0,"message":"ok"}},{"key":2,"cipher":"aes-256-cbc","status":{"code":0,"message":"ok"}}],
          "db":[{"id":1,"repo-key":2,"system-id":7,"version":"15"}],
          "archive":[{"id":"15-1","min":"000000010000000000000001","max":"000000010000000000000004","database":{"id":1,"repo-key":2}}],
          "backup":[{"label":"20240101-020000F","type":"full","prior":null,"reference":null,
            "archive":{"start":"000000010000000000000002","stop":"000000010000000000000002"},
            "database":{"id":1,"repo-key":2},"info":{"size":30000000,"delta":30000000,"repository":{"size":4000000,"delta":4000000}},
            "timestamp":{"start":1704074400,"stop":1704074460},"error":false,"extra":1}]}]"#;
        let s = parse(json).unwrap();
        assert_eq!(s[0].name, "main");
        assert_eq!(s[0].cipher_of(2), "aes-256-cbc");
        assert_eq!(s[0].cipher_of(1), "none");
        assert_eq!(s[0].backups_in(2).count(), 1);
        assert_eq!(s[0].backups_in(1).count(), 0);
        assert_eq!(s[0].backup[0].info.repository.size, 4_000_000);
        assert_eq!(
            s[0].archives_in(2).next().unwrap().max.as_deref(),
            Some("000000010000000000000004")
        );
        assert!(parse("{").is_err());
    }
}
