//! The record model (names, kinds, statuses, what callers write and read) and the binary
//! encoding of the manifest (pure).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a record holds.
///
/// The kind follows from the name (see [`Kind::of_name`]): a customer record is named after
/// the customer (`acme`), a service secret is `<service>/<item>`
/// (`pgbackrest/repo1-cipher-pass`, `s3/offsite/secret-access-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// One customer's login: role, database, server and password.
    Customer,
    /// A secret of a costplus service (backup cipher passphrase, S3 keys, ...).
    Service,
}

impl Kind {
    /// The kind a name implies: a name with a `/` is a service secret, one without is a
    /// customer.
    pub fn of_name(name: &str) -> Kind {
        if name.contains('/') {
            Kind::Service
        } else {
            Kind::Customer
        }
    }
    fn code(self) -> u8 {
        match self {
            Kind::Customer => 0,
            Kind::Service => 1,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Kind::Customer),
            1 => Some(Kind::Service),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Customer => "customer",
            Kind::Service => "service",
        })
    }
}

/// Where a record is in its life.
///
/// Provisioning writes a customer `pending` before it creates the role and flips it to
/// `active` when everything is done; deprovisioning archives it; shredding destroys its data
/// key and leaves a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Written, but the thing it describes is not (yet) in place.
    Pending,
    /// In use.
    Active,
    /// In the archive section (a deprovisioned customer).
    Archived,
    /// The data key is destroyed; only this tombstone is left.
    Shredded,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Active => 1,
            Status::Archived => 2,
            Status::Shredded => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Status::Pending),
            1 => Some(Status::Active),
            2 => Some(Status::Archived),
            3 => Some(Status::Shredded),
            _ => None,
        }
    }
    /// Whether the record is in the live section (pending or active).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Pending | Status::Active)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Archived => "archived",
            Status::Shredded => "shredded",
        })
    }
}

/// Check a record name: 1 to 200 bytes, segments separated by `/`, each made of ASCII letters,
/// digits and `. _ - @ +`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() || name.len() > 200 {
        return bad("a name has 1 to 200 bytes");
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return bad("empty segment (leading, trailing or double `/`)");
        }
        if seg == "." || seg == ".." {
            return bad("`.` and `..` are not allowed as segments");
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-@+".contains(*c)))
        {
            return bad(&format!(
                "character {c:?} is not allowed (letters, digits, `. _ - @ +` and `/`)"
            ));
        }
    }
    Ok(())
}

/// A record to write: everything but the bookkeeping (id, generation, timestamps).
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The record name (the customer name, or `<service>/<item>`).
    pub name: String,
    /// Must agree with the name ([`Kind::of_name`]).
    pub kind: Kind,
    /// `Pending` or `Active`.
    pub status: Status,
    /// The secret (password, passphrase, key).
    pub secret: SecretString,
    /// The customer's login role.
    pub role: Option<String>,
    /// The customer's database.
    pub database: Option<String>,
    /// The name of the server (in costplus.toml) that holds them.
    pub server: Option<String>,
    /// Free-form, non-secret key/value pairs.
    pub metadata: BTreeMap<String, String>,
}

impl NewRecord {
    /// A customer's credentials, `pending` (flip to active with
    /// [`crate::Vault::set_status`] once the role exists).
    pub fn customer(
        name: &str,
        role: &str,
        database: &str,
        server: &str,
        password: SecretString,
    ) -> Self {
        NewRecord {
            name: name.to_string(),
            kind: Kind::Customer,
            status: Status::Pending,
            secret: password,
            role: Some(role.to_string()),
            database: Some(database.to_string()),
            server: Some(server.to_string()),
            metadata: BTreeMap::new(),
        }
    }

    /// A service secret such as `pgbackrest/repo1-cipher-pass`, `active`.
    pub fn service(name: &str, secret: SecretString) -> Self {
        NewRecord {
            name: name.to_string(),
            kind: Kind::Service,
            status: Status::Active,
            secret,
            role: None,
            database: None,
            server: None,
            metadata: BTreeMap::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let field = |field: &'static str, reason: String| Error::InvalidField {
            name: self.name.clone(),
            field,
            reason,
        };
        if self.kind != Kind::of_name(&self.name) {
            return Err(field(
                "kind",
                format!(
                    "a {} record must be named {}",
                    self.kind,
                    match self.kind {
                        Kind::Customer => "without `/` (the customer name)",
                        Kind::Service => "`<service>/<item>`",
                    }
                ),
            ));
        }
        if !self.status.is_live() {
            return Err(field(
                "status",
                format!("a record is written pending or active, not {}", self.status),
            ));
        }
        for (f, v) in [
            ("role", &self.role),
            ("database", &self.database),
            ("server", &self.server),
        ] {
            if let Some(v) = v {
                check_text(v, 255).map_err(|r| field(f, r))?;
            }
        }
        for (k, v) in &self.metadata {
            check_text(k, 255).map_err(|r| field("metadata key", r))?;
            check_text(v, 4096).map_err(|r| field("metadata value", r))?;
        }
        Ok(())
    }
}

fn check_text(v: &str, max: usize) -> std::result::Result<(), String> {
    if v.is_empty() || v.len() > max {
        return Err(format!("must have 1 to {max} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    Ok(())
}

/// A record as listed: everything but the secret and the metadata map (read from the manifest,
/// nothing decrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Random record id (hex), stable across generations.
    pub id: String,
    /// The record name.
    pub name: String,
    /// Customer or service.
    pub kind: Kind,
    /// Life-cycle status.
    pub status: Status,
    /// Incremented by every write of the record's content.
    pub generation: u64,
    /// When the record was first written.
    pub created: DateTime<Utc>,
    /// When it last changed (content or status).
    pub updated: DateTime<Utc>,
    /// The customer's role.
    pub role: Option<String>,
    /// The customer's database.
    pub database: Option<String>,
    /// The server name.
    pub server: Option<String>,
    /// "vault key", "archive key" or "none" (shredded).
    pub wrapped_to: &'static str,
}

/// A decrypted record. `Debug` does not show the secret.
#[derive(Debug, Clone)]
pub struct Record {
    /// What the manifest says.
    pub summary: Summary,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// The secret.
    pub secret: SecretString,
}

/// Which key a record's data key is wrapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrap {
    /// The vault key of this epoch (bumped by every key rotation).
    Vault { epoch: u32 },
    /// The archive key.
    Archive,
    /// Shredded: no data key any more.
    None,
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: [u8; 16],
    pub name: String,
    pub kind: Kind,
    pub status: Status,
    pub generation: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub role: Option<String>,
    pub database: Option<String>,
    pub server: Option<String>,
    pub wrap: Wrap,
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Entry {
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            id: hex::encode(self.id),
            name: self.name.clone(),
            kind: self.kind,
            status: self.status,
            generation: self.generation,
            created: ms_to_time(self.created_ms),
            updated: ms_to_time(self.updated_ms),
            role: self.role.clone(),
            database: self.database.clone(),
            server: self.server.clone(),
            wrapped_to: match self.wrap {
                Wrap::Vault { .. } => "vault key",
                Wrap::Archive => "archive key",
                Wrap::None => "none",
            },
        }
    }

    /// The file name of the record's current file.
    pub(crate) fn file_name(&self) -> Option<String> {
        let w = match self.wrap {
            Wrap::Vault { epoch } => format!("k{epoch}"),
            Wrap::Archive => "a".into(),
            Wrap::None => return None,
        };
        Some(format!(
            "{}-{}-{w}.rec",
            hex::encode(self.id),
            self.generation
        ))
    }
}

/// The decrypted manifest: the commit counter and every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Incremented by every commit.
    pub seq: u64,
    pub entries: Vec<Entry>,
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    let s = s.unwrap_or("");
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Manifest {
    /// The binary plaintext (see the crate docs for the layout).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.entries.len() * 96);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.id);
            out.extend_from_slice(&e.generation.to_be_bytes());
            let (w, epoch) = match e.wrap {
                Wrap::Vault { epoch } => (0u8, epoch),
                Wrap::Archive => (1, 0),
                Wrap::None => (2, 0),
            };
            out.push(w);
            out.extend_from_slice(&epoch.to_be_bytes());
            out.push(e.kind.code());
            out.push(e.status.code());
            out.extend_from_slice(&e.created_ms.to_be_bytes());
            out.extend_from_slice(&e.updated_ms.to_be_bytes());
            put_str(&mut out, Some(&e.name));
            put_str(&mut out, e.role.as_deref());
            put_str(&mut out, e.database.as_deref());
            put_str(&mut out, e.server.as_deref());
        }
        out
    }

    /// Parse the binary plaintext; `Err` carries a description.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader { b, at: 0 };
        let seq = r.u64()?;
        let n = r.u32()? as usize;
        if n > b.len() / 40 {
            return Err(format!("{n} entries cannot fit in {} bytes", b.len()));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let id: [u8; 16] = r.take(16)?.try_into().map_err(|_| "id")?;
            let generation = r.u64()?;
            let w = r.u8()?;
            let epoch = r.u32()?;
            let wrap = match w {
                0 => Wrap::Vault { epoch },
                1 => Wrap::Archive,
                2 => Wrap::None,
                _ => return Err(format!("unknown key slot {w}")),
            };
            let kind = Kind::from_code(r.u8()?).ok_or("unknown kind")?;
            let status = Status::from_code(r.u8()?).ok_or("unknown status")?;
            let created_ms = r.u64()? as i64;
            let updated_ms = r.u64()? as i64;
            let name = r.str()?.ok_or("empty record name")?;
            entries.push(Entry {
                id,
                name,
                kind,
                status,
                generation,
                created_ms,
                updated_ms,
                role: r.str()?,
                database: r.str()?,
                server: r.str()?,
                wrap,
            });
        }
        if r.at != b.len() {
            return Err(format!("{} bytes after the last entry", b.len() - r.at));
        }
        Ok(Manifest { seq, entries })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err("ends in the middle of an entry".into());
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn str(&mut self) -> std::result::Result<Option<String>, String> {
        let s = self.take(2)?;
        let n = u16::from_be_bytes([s[0], s[1]]) as usize;
        let s = self.take(n)?;
        if s.is_empty() {
            return Ok(None);
        }
        String::from_utf8(s.to_vec())
            .map(Some)
            .map_err(|_| "invalid UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, ok: bool) {
        assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn names() {
        for n in [
            "acme",
            "acme_corp",
            "a.b-c@d+e",
            "pgbackrest/repo1-cipher-pass",
            "s3/offsite/secret-access-key",
        ] {
            check_name(n, true);
        }
        for n in [
            "", "/a", "a/", "a//b", "a/../b", ".", "a b", "a:b", "a\nb", "é",
        ] {
            check_name(n, false);
        }
        check_name(&"a".repeat(201), false);
        assert_eq!(Kind::of_name("acme"), Kind::Customer);
        assert_eq!(Kind::of_name("pgbackrest/x"), Kind::Service);
    }

    #[test]
    fn new_record_validation() {
        let mut r = NewRecord::customer("acme", "acme_user", "acme_db", "main", "pw".into());
        r.validate().unwrap();
        r.kind = Kind::Service;
        assert!(matches!(
            r.validate(),
            Err(Error::InvalidField { field: "kind", .. })
        ));
        let mut s = NewRecord::service("pgbackrest/repo1-cipher-pass", "x".into());
        s.validate().unwrap();
        s.status = Status::Archived;
        assert!(matches!(
            s.validate(),
            Err(Error::InvalidField {
                field: "status",
                ..
            })
        ));
        let mut s = NewRecord::service("pgbackrest/repo1-cipher-pass", "x".into());
        s.metadata.insert("k".into(), "line\nbreak".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn manifest_roundtrip() {
        let m = Manifest {
            seq: 42,
            entries: vec![
                Entry {
                    id: [9; 16],
                    name: "acme".into(),
                    kind: Kind::Customer,
                    status: Status::Active,
                    generation: 3,
                    created_ms: 1_700_000_000_000,
                    updated_ms: 1_700_000_001_000,
                    role: Some("acme_user".into()),
                    database: Some("acme_db".into()),
                    server: None,
                    wrap: Wrap::Vault { epoch: 2 },
                },
                Entry {
                    id: [1; 16],
                    name: "old".into(),
                    kind: Kind::Customer,
                    status: Status::Shredded,
                    generation: 1,
                    created_ms: 0,
                    updated_ms: 0,
                    role: None,
                    database: None,
                    server: None,
                    wrap: Wrap::None,
                },
            ],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(Manifest::decode(&extra).is_err());
        assert_eq!(
            m.entries[0].file_name().unwrap(),
            format!("{}-3-k2.rec", hex::encode([9u8; 16]))
        );
        assert_eq!(m.entries[1].file_name(), None);
    }
}
