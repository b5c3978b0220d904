//! The vault directory: opening, verifying and changing it, every change one atomic commit.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use costplus_fs::{LockFile, WriteOptions, write_atomic};

use crate::crypto::{
    DataKeys, KdfParams, Key32, Keys, NONCE_LEN, TAG_LEN, ct_eq, derive_argon2, hmac, random,
    random_key,
};
use crate::error::{Error, Result, io};
use crate::format::{self, MANIFEST_FILE, RECORD_FILE};
use crate::keys::{
    KeySource, NewKey, check_private_dir, key_file_or_create, read_key_file, read_private,
};
use crate::model::{Entry, Kind, Manifest, NewRecord, Record, Status, Summary, Wrap};

/// Name of the manifest file inside the vault directory.
pub const MANIFEST_NAME: &str = "manifest";
/// Directory of live (pending and active) record files.
pub const RECORDS_DIR: &str = "records";
/// Directory of archived record files.
pub const ARCHIVE_DIR: &str = "archive";
const LOCK_NAME: &str = ".lock";

macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |_| Err(Error::Failpoint($name.to_string())))
    };
}

/// The header of the manifest file (JSON, authenticated by the header MAC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    vault_id: String,
    created: DateTime<Utc>,
    key_epoch: u32,
    key: HeaderKey,
    key_check: String,
    archive_key_check: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
enum HeaderKey {
    KeyFile,
    Passphrase {
        kdf: String,
        version: u32,
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
        salt: String,
    },
}

/// The header of a record file (JSON; authenticated as associated data of the key wrap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordHeader {
    vault_id: String,
    record_id: String,
    name: String,
    generation: u64,
    seq: u64,
    section: Section,
    key: Slot,
    key_epoch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Section {
    Live,
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Slot {
    Vault,
    Archive,
}

/// The encrypted content of a record, before the secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Content {
    kind: Kind,
    role: Option<String>,
    database: Option<String>,
    server: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// A separate key that archived records can be re-wrapped to (a key file in the same format as
/// the vault key file). Keep it off the server: without it, archived credentials cannot be
/// read even with the vault key.
pub struct ArchiveKey {
    root: Key32,
    path: PathBuf,
}

impl std::fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ArchiveKey {
    /// Read an archive key file; with `create`, make one with a fresh key when it is missing.
    pub fn from_file(path: &Path, create: bool) -> Result<Self> {
        let root = if create {
            key_file_or_create(path)?.0
        } else {
            read_key_file(path)?
        };
        Ok(ArchiveKey {
            root,
            path: path.to_path_buf(),
        })
    }
}

/// Which record an operation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Which<'a> {
    /// The live (pending or active) record of this name.
    Live(&'a str),
    /// The most recently archived record of this name.
    Archived(&'a str),
    /// Any record by its id (hex, as in [`Summary::id`]).
    Id(&'a str),
}

impl<'a> From<&'a str> for Which<'a> {
    fn from(name: &'a str) -> Self {
        Which::Live(name)
    }
}

/// What `init` did.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The vault directory.
    pub dir: PathBuf,
    /// The vault id (hex).
    pub vault_id: String,
    /// "key file" or "passphrase".
    pub key_source: &'static str,
    /// Whether a new key file was created.
    pub key_file_created: bool,
    /// Argon2id parameters chosen for a passphrase.
    pub kdf: Option<KdfParams>,
}

/// What `rotate_key` did.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    /// Records whose data key was re-wrapped.
    pub rewrapped: usize,
    /// Records wrapped to the archive key (left alone).
    pub archive_wrapped: usize,
    /// The new key epoch.
    pub key_epoch: u32,
    /// "key file" or "passphrase".
    pub key_source: &'static str,
    /// Whether a new key file was created.
    pub key_file_created: bool,
    /// Argon2id parameters chosen for a passphrase.
    pub kdf: Option<KdfParams>,
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Records fully checked (decrypted).
    pub checked: usize,
    /// Archived records wrapped to the archive key, checked for structure only (no archive key
    /// given).
    pub structure_only: usize,
    /// Problems, one line each (empty: the vault is sound).
    pub problems: Vec<String>,
    /// Files that no manifest entry uses (left by an interrupted write; removed by `gc`).
    pub leftovers: Vec<PathBuf>,
}

/// How the root key of an open vault was obtained (for error messages).
#[derive(Debug, Clone)]
enum Opened {
    KeyFile(PathBuf),
    Passphrase,
}

/// An open vault. It holds the derived keys (wiped on drop) and the verified manifest; every
/// change takes the vault's lock, re-reads the manifest if another process changed it, and
/// commits with one atomic rename of the manifest.
pub struct Vault {
    dir: PathBuf,
    manifest_path: PathBuf,
    opened: Opened,
    keys: Keys,
    vault_id: [u8; 16],
    header: Header,
    manifest: Manifest,
    live: HashMap<String, usize>,
    stamp: Stamp,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("vault_id", &self.header.vault_id)
            .field("records", &self.manifest.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn stamp_of(md: &std::fs::Metadata) -> Stamp {
    Stamp {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn malformed(path: &Path, region: &'static str, message: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        region,
        message: message.into(),
    }
}

fn hex16(path: &Path, region: &'static str, s: &str) -> Result<[u8; 16]> {
    let v = hex::decode(s).map_err(|_| malformed(path, region, format!("bad id {s:?}")))?;
    v.try_into()
        .map_err(|_| malformed(path, region, format!("bad id {s:?}")))
}

/// The associated data that binds a record's ciphertext to its vault, id, name and generation.
fn binding(vault_id: &[u8; 16], record_id: &[u8; 16], generation: u64, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + name.len());
    b.extend_from_slice(RECORD_FILE.magic);
    b.extend_from_slice(&format::VERSION.to_be_bytes());
    b.extend_from_slice(vault_id);
    b.extend_from_slice(record_id);
    b.extend_from_slice(&generation.to_be_bytes());
    b.extend_from_slice(&(name.len() as u16).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

fn data_aad(bind: &[u8]) -> Vec<u8> {
    [&b"data:"[..], bind].concat()
}

fn wrap_aad(bind: &[u8], h: &RecordHeader) -> Vec<u8> {
    let mut a = [&b"wrap:"[..], bind].concat();
    a.extend_from_slice(&h.seq.to_be_bytes());
    a.push(match h.section {
        Section::Live => 0,
        Section::Archive => 1,
    });
    a.push(match h.key {
        Slot::Vault => 0,
        Slot::Archive => 1,
    });
    a.extend_from_slice(&h.key_epoch.to_be_bytes());
    a
}

/// A parsed record file (checksums verified, nothing decrypted).
struct RecordFile<'a> {
    header: RecordHeader,
    wrapped: &'a [u8; NONCE_LEN + 32 + TAG_LEN],
    commitment: &'a [u8; 32],
    nonce: &'a [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

fn parse_record_file<'a>(path: &Path, bytes: &'a [u8]) -> Result<RecordFile<'a>> {
    let r = format::decode(&RECORD_FILE, path, bytes)?;
    let header: RecordHeader =
        serde_json::from_slice(r[0]).map_err(|e| malformed(path, "header", e.to_string()))?;
    let sized = |i: usize, name: &'static str| {
        let len = r[i].len();
        move |_| malformed(path, name, format!("{len} bytes"))
    };
    Ok(RecordFile {
        header,
        wrapped: r[1].try_into().map_err(sized(1, "wrapped key"))?,
        commitment: r[2].try_into().map_err(sized(2, "key commitment"))?,
        nonce: r[3].try_into().map_err(sized(3, "nonce"))?,
        ciphertext: r[4],
        tag: r[5].try_into().map_err(sized(5, "tag"))?,
    })
}

fn wrap_data_key(
    wrap_key: &[u8; 32],
    aad: &[u8],
    dk: &[u8; 32],
) -> Result<[u8; NONCE_LEN + 32 + TAG_LEN]> {
    let mut buf = Zeroizing::new(*dk);
    let (nonce, tag) = crate::crypto::seal(wrap_key, aad, &mut buf[..])?;
    let mut out = [0u8; NONCE_LEN + 32 + TAG_LEN];
    out[..NONCE_LEN].copy_from_slice(&nonce);
    out[NONCE_LEN..NONCE_LEN + 32].copy_from_slice(&buf[..]);
    out[NONCE_LEN + 32..].copy_from_slice(&tag);
    Ok(out)
}

fn unwrap_data_key(
    wrap_key: &[u8; 32],
    aad: &[u8],
    wrapped: &[u8; NONCE_LEN + 32 + TAG_LEN],
) -> Option<Key32> {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&wrapped[NONCE_LEN + 32..]);
    let mut dk = Zeroizing::new([0u8; 32]);
    dk.copy_from_slice(&wrapped[NONCE_LEN..NONCE_LEN + 32]);
    crate::crypto::open(wrap_key, &nonce, aad, &mut dk[..], &tag).then_some(dk)
}

fn encode_record_file(
    header: &RecordHeader,
    wrapped: &[u8],
    commitment: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>> {
    let h = serde_json::to_vec(header).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(format::encode(
        &RECORD_FILE,
        &[&h, wrapped, commitment, nonce, ciphertext, tag],
    ))
}

fn encode_content(rec: &NewRecord) -> Result<Zeroizing<Vec<u8>>> {
    let content = Content {
        kind: rec.kind,
        role: rec.role.clone(),
        database: rec.database.clone(),
        server: rec.server.clone(),
        metadata: rec.metadata.clone(),
    };
    let json = serde_json::to_vec(&content).map_err(|e| Error::Encode(e.to_string()))?;
    let secret = rec.secret.expose_secret().as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(4 + json.len() + secret.len()));
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(secret);
    Ok(out)
}

fn decode_content(path: &Path, pt: &[u8]) -> Result<(Content, SecretString)> {
    let bad = |m: &str| malformed(path, "ciphertext", m.to_string());
    if pt.len() < 4 {
        return Err(bad("content too short"));
    }
    let n = u32::from_be_bytes([pt[0], pt[1], pt[2], pt[3]]) as usize;
    if pt.len() < 4 + n {
        return Err(bad("content length out of range"));
    }
    let content: Content =
        serde_json::from_slice(&pt[4..4 + n]).map_err(|e| bad(&e.to_string()))?;
    let secret = std::str::from_utf8(&pt[4 + n..]).map_err(|_| bad("secret is not UTF-8"))?;
    // `String::from` allocates exactly the length, so no unwiped copy is left behind when
    // SecretString boxes it.
    Ok((content, SecretString::from(String::from(secret))))
}

impl Vault {
    /// Create a new, empty vault in `dir` (created 0700 if needed). A key file that does not
    /// exist is created with a fresh random key (0600).
    pub fn init(dir: &Path, key: &NewKey) -> Result<(Vault, InitReport)> {
        let manifest_path = dir.join(MANIFEST_NAME);
        if manifest_path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        costplus_fs::create_dir_with_mode(dir, 0o700)?;
        check_private_dir(dir)?;
        let _lock = LockFile::acquire(&dir.join(LOCK_NAME))?;
        if manifest_path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyInitialized {
                dir: dir.to_path_buf(),
            });
        }
        for sub in [RECORDS_DIR, ARCHIVE_DIR] {
            costplus_fs::create_dir_with_mode(&dir.join(sub), 0o700)?;
        }
        let vault_id: [u8; 16] = random()?;
        let (root, hkey, opened, created, kdf) = new_root(key, &vault_id)?;
        let keys = Keys::derive(&root, &vault_id);
        let header = Header {
            vault_id: hex::encode(vault_id),
            created: Utc::now(),
            key_epoch: 0,
            key: hkey,
            key_check: hex::encode(keys.check),
            archive_key_check: None,
        };
        let manifest = Manifest::default();
        let bytes = encode_manifest_file(&header, &keys, &manifest)?;
        write_atomic(&manifest_path, &bytes, &WriteOptions::private())?;
        let stamp =
            stamp_of(&std::fs::metadata(&manifest_path).map_err(io("stat", &manifest_path))?);
        let report = InitReport {
            dir: dir.to_path_buf(),
            vault_id: header.vault_id.clone(),
            key_source: key.source.describe(),
            key_file_created: created,
            kdf,
        };
        let vault = Vault {
            dir: dir.to_path_buf(),
            manifest_path,
            opened,
            keys,
            vault_id,
            header,
            manifest,
            live: HashMap::new(),
            stamp,
        };
        Ok((vault, report))
    }

    /// Open the vault in `dir` with `source`, verifying the header, the key and the manifest.
    pub fn open(dir: &Path, source: &KeySource) -> Result<Vault> {
        let manifest_path = dir.join(MANIFEST_NAME);
        match dir.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotInitialized {
                    dir: dir.to_path_buf(),
                });
            }
            _ => {}
        }
        check_private_dir(dir)?;
        if let Err(e) = manifest_path.symlink_metadata()
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return Err(Error::NotInitialized {
                dir: dir.to_path_buf(),
            });
        }
        let (bytes, stamp) = read_manifest_bytes(&manifest_path)?;
        let parsed = parse_manifest_file(&manifest_path, &bytes)?;
        let vault_id = hex16(&manifest_path, "header", &parsed.header.vault_id)?;
        let (root, opened) = derive_root(&manifest_path, &parsed.header, source, &vault_id)?;
        let keys = Keys::derive(&root, &vault_id);
        let manifest = verify_manifest(&manifest_path, &parsed, &keys, &opened)?;
        let mut v = Vault {
            dir: dir.to_path_buf(),
            manifest_path,
            opened,
            keys,
            vault_id,
            header: parsed.header,
            manifest,
            live: HashMap::new(),
            stamp,
        };
        v.index();
        Ok(v)
    }

    /// Open the vault a `[vault]` section describes: its key file, else `passphrase`, else its
    /// passphrase file.
    pub fn open_config(
        cfg: &crate::VaultConfig,
        passphrase: Option<SecretString>,
    ) -> Result<Vault> {
        let source = match (&cfg.key_file, passphrase, &cfg.passphrase_file) {
            (Some(k), _, _) => KeySource::KeyFile(k.clone()),
            (None, Some(p), _) => KeySource::Passphrase(p),
            (None, None, Some(f)) => KeySource::Passphrase(crate::keys::passphrase_from_file(f)?),
            (None, None, None) => {
                return Err(Error::Passphrase(
                    "the [vault] section has no key_file or passphrase_file, and no passphrase was given".into(),
                ));
            }
        };
        Vault::open(&cfg.dir, &source)
    }

    fn index(&mut self) {
        self.live = self
            .manifest
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status.is_live())
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The vault id (hex).
    pub fn id(&self) -> &str {
        &self.header.vault_id
    }

    /// The commit counter of the manifest (incremented by every change).
    pub fn seq(&self) -> u64 {
        self.manifest.seq
    }

    /// The key epoch (incremented by every key rotation).
    pub fn key_epoch(&self) -> u32 {
        self.header.key_epoch
    }

    /// The Argon2id parameters of a passphrase vault.
    pub fn kdf_params(&self) -> Option<KdfParams> {
        match &self.header.key {
            HeaderKey::KeyFile => None,
            HeaderKey::Passphrase {
                m_cost_kib,
                t_cost,
                p_cost,
                ..
            } => Some(KdfParams::new(*m_cost_kib, *t_cost, *p_cost)),
        }
    }

    /// Every record (live, archived and shredded), without secrets, in name order.
    pub fn list(&self) -> Vec<Summary> {
        let mut v: Vec<Summary> = self.manifest.entries.iter().map(Entry::summary).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.updated.cmp(&b.updated)));
        v
    }

    fn find(&self, which: Which<'_>) -> Result<usize> {
        let not_found = |name: &str| Error::NotFound {
            name: name.to_string(),
        };
        match which {
            Which::Live(name) => self.live.get(name).copied().ok_or_else(|| not_found(name)),
            Which::Archived(name) => self
                .manifest
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.name == name && !e.status.is_live())
                .max_by_key(|(_, e)| e.updated_ms)
                .map(|(i, _)| i)
                .ok_or_else(|| not_found(name)),
            Which::Id(id) => self
                .manifest
                .entries
                .iter()
                .position(|e| hex::encode(e.id) == id.to_ascii_lowercase())
                .ok_or_else(|| not_found(id)),
        }
    }

    /// The summary of one record (nothing decrypted).
    pub fn summary<'a>(&self, which: impl Into<Which<'a>>) -> Result<Summary> {
        Ok(self.manifest.entries[self.find(which.into())?].summary())
    }

    /// Decrypt one record. Archived records wrapped to the archive key need
    /// [`Vault::get_archived`].
    pub fn get<'a>(&self, which: impl Into<Which<'a>>) -> Result<Record> {
        self.get_with(which.into(), None)
    }

    /// Decrypt one record that may be wrapped to the archive key.
    pub fn get_archived(&self, which: Which<'_>, archive_key: &ArchiveKey) -> Result<Record> {
        self.get_with(which, Some(archive_key))
    }

    fn get_with(&self, which: Which<'_>, archive_key: Option<&ArchiveKey>) -> Result<Record> {
        match self.get_once(which, archive_key) {
            // Another process may have committed a change (and removed the file we were told
            // about) since we read the manifest: read it again before crying wolf.
            Err(
                e @ (Error::RecordMissing { .. }
                | Error::RecordRolledBack { .. }
                | Error::ManifestRolledBack { .. }),
            ) => match self.fresh()? {
                Some(v) => v.get_once(which, archive_key),
                None => Err(e),
            },
            other => other,
        }
    }

    /// A copy of this vault with the manifest as it is now on disk, when another process changed
    /// it since we read it (`None` when it did not change).
    fn fresh(&self) -> Result<Option<Vault>> {
        let md = std::fs::metadata(&self.manifest_path).map_err(io("stat", &self.manifest_path))?;
        if stamp_of(&md) == self.stamp {
            return Ok(None);
        }
        let (bytes, stamp) = read_manifest_bytes(&self.manifest_path)?;
        let parsed = parse_manifest_file(&self.manifest_path, &bytes)?;
        let manifest = verify_manifest(&self.manifest_path, &parsed, &self.keys, &self.opened)?;
        if manifest.seq < self.manifest.seq {
            return Err(Error::ManifestRolledBack {
                path: self.manifest_path.clone(),
                name: String::new(),
                manifest_seq: manifest.seq,
                record_seq: self.manifest.seq,
            });
        }
        let mut v = Vault {
            dir: self.dir.clone(),
            manifest_path: self.manifest_path.clone(),
            opened: self.opened.clone(),
            keys: self.keys.clone(),
            vault_id: self.vault_id,
            header: parsed.header,
            manifest,
            live: HashMap::new(),
            stamp,
        };
        v.index();
        Ok(Some(v))
    }

    fn get_once(&self, which: Which<'_>, archive_key: Option<&ArchiveKey>) -> Result<Record> {
        let entry = &self.manifest.entries[self.find(which)?];
        let (content, secret) = self.read_entry(entry, archive_key, true)?;
        let content = content.ok_or_else(|| Error::Inconsistent {
            name: entry.name.clone(),
            field: "content",
        })?;
        Ok(Record {
            summary: entry.summary(),
            metadata: content.metadata,
            secret: secret.ok_or_else(|| Error::Inconsistent {
                name: entry.name.clone(),
                field: "secret",
            })?,
        })
    }

    fn section_dir(&self, status: Status) -> PathBuf {
        self.dir.join(if status.is_live() {
            RECORDS_DIR
        } else {
            ARCHIVE_DIR
        })
    }

    fn entry_path(&self, e: &Entry) -> Option<PathBuf> {
        e.file_name().map(|f| self.section_dir(e.status).join(f))
    }

    fn archive_wrap_key(&self, name: &str, key: Option<&ArchiveKey>) -> Result<Key32> {
        let Some(key) = key else {
            return Err(Error::ArchiveKey {
                name: name.to_string(),
                problem: "give the archive key file to read it".into(),
            });
        };
        let (wrap, check) = Keys::derive_archive(&key.root, &self.vault_id);
        match &self.header.archive_key_check {
            Some(c) if ct_eq(hex::encode(check).as_bytes(), c.as_bytes()) => Ok(wrap),
            _ => Err(Error::ArchiveKey {
                name: name.to_string(),
                problem: format!("{} is not this vault's archive key", key.path.display()),
            }),
        }
    }

    /// Read and verify an entry's file. With `decrypt`, return the content and secret;
    /// otherwise stop after the key commitment (used by rotation checks).
    fn read_entry(
        &self,
        e: &Entry,
        archive_key: Option<&ArchiveKey>,
        decrypt: bool,
    ) -> Result<(Option<Content>, Option<SecretString>)> {
        let Some(path) = self.entry_path(e) else {
            return Err(Error::Shredded {
                name: e.name.clone(),
            });
        };
        let bytes = match read_private(&path, "record file") {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.missing(e, &path));
            }
            Err(other) => return Err(other),
        };
        let rf = parse_record_file(&path, &bytes)?;
        let dk = self.check_and_unwrap(e, &path, &rf, archive_key)?;
        if !decrypt {
            return Ok((None, None));
        }
        let keys = DataKeys::derive(&dk);
        let aad = data_aad(&binding(&self.vault_id, &e.id, e.generation, &e.name));
        let mut buf = Zeroizing::new(rf.ciphertext.to_vec());
        if !crate::crypto::open(&keys.enc, rf.nonce, &aad, &mut buf, rf.tag) {
            // `open` wiped the buffer; it is dropped unread.
            return Err(Error::RecordTampered {
                name: e.name.clone(),
                path,
            });
        }
        let (content, secret) = decode_content(&path, &buf)?;
        let inconsistent = |field| Error::Inconsistent {
            name: e.name.clone(),
            field,
        };
        if content.kind != e.kind {
            return Err(inconsistent("kind"));
        }
        if content.role != e.role {
            return Err(inconsistent("role"));
        }
        if content.database != e.database {
            return Err(inconsistent("database"));
        }
        if content.server != e.server {
            return Err(inconsistent("server"));
        }
        Ok((Some(content), Some(secret)))
    }

    /// Check a parsed record file against its manifest entry, unwrap the data key and check the
    /// key commitment.
    fn check_and_unwrap(
        &self,
        e: &Entry,
        path: &Path,
        rf: &RecordFile<'_>,
        archive_key: Option<&ArchiveKey>,
    ) -> Result<Key32> {
        let h = &rf.header;
        if h.vault_id != self.header.vault_id {
            return Err(Error::WrongVault {
                path: path.to_path_buf(),
                expected: self.header.vault_id.clone(),
                found: h.vault_id.clone(),
            });
        }
        if h.record_id != hex::encode(e.id) || h.name != e.name {
            return Err(Error::RecordSwapped {
                name: e.name.clone(),
                path: path.to_path_buf(),
                found: h.name.clone(),
            });
        }
        if h.seq > self.manifest.seq || h.generation > e.generation {
            return Err(Error::ManifestRolledBack {
                path: self.manifest_path.clone(),
                name: e.name.clone(),
                manifest_seq: self.manifest.seq,
                record_seq: h.seq,
            });
        }
        if h.generation < e.generation {
            return Err(Error::RecordRolledBack {
                name: e.name.clone(),
                path: path.to_path_buf(),
                expected: e.generation,
                found: h.generation,
            });
        }
        let want_section = if e.status.is_live() {
            Section::Live
        } else {
            Section::Archive
        };
        let (want_slot, want_epoch) = match e.wrap {
            Wrap::Vault { epoch } => (Slot::Vault, epoch),
            Wrap::Archive => (Slot::Archive, 0),
            Wrap::None => {
                return Err(Error::Shredded {
                    name: e.name.clone(),
                });
            }
        };
        if h.section != want_section || h.key != want_slot || h.key_epoch != want_epoch {
            return Err(Error::Inconsistent {
                name: e.name.clone(),
                field: "section or key slot of the record file",
            });
        }
        let wrap_key = match want_slot {
            Slot::Vault => self.keys.wrap.clone(),
            Slot::Archive => self.archive_wrap_key(&e.name, archive_key)?,
        };
        let bind = binding(&self.vault_id, &e.id, e.generation, &e.name);
        let Some(dk) = unwrap_data_key(&wrap_key, &wrap_aad(&bind, h), rf.wrapped) else {
            return Err(Error::KeyUnwrapFailed {
                name: e.name.clone(),
                path: path.to_path_buf(),
            });
        };
        if !ct_eq(&DataKeys::derive(&dk).commitment, rf.commitment) {
            return Err(Error::KeyCommitmentMismatch {
                name: e.name.clone(),
                path: path.to_path_buf(),
            });
        }
        Ok(dk)
    }

    /// The error for a record whose file is missing: rolled back if an older generation of it
    /// is there, manifest rolled back if a newer one is, deleted otherwise.
    fn missing(&self, e: &Entry, path: &Path) -> Error {
        let prefix = format!("{}-", hex::encode(e.id));
        let mut older = None;
        let mut newer = None;
        for sub in [RECORDS_DIR, ARCHIVE_DIR] {
            let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for f in rd.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(&prefix) else {
                    continue;
                };
                let Some(g) = rest.split('-').next().and_then(|g| g.parse::<u64>().ok()) else {
                    continue;
                };
                if g < e.generation {
                    older = older.max(Some(g));
                } else if g > e.generation {
                    let seq = std::fs::read(f.path())
                        .ok()
                        .and_then(|b| parse_record_file(&f.path(), &b).ok().map(|r| r.header.seq))
                        .unwrap_or(self.manifest.seq + 1);
                    newer = newer.max(Some(seq));
                }
            }
        }
        if let Some(record_seq) = newer {
            return Error::ManifestRolledBack {
                path: self.manifest_path.clone(),
                name: e.name.clone(),
                manifest_seq: self.manifest.seq,
                record_seq,
            };
        }
        if let Some(found) = older {
            return Error::RecordRolledBack {
                name: e.name.clone(),
                path: path.to_path_buf(),
                expected: e.generation,
                found,
            };
        }
        Error::RecordMissing {
            name: e.name.clone(),
            path: path.to_path_buf(),
        }
    }

    // ----- changes -----

    /// Take the lock and catch up with commits made by other processes since we read the
    /// manifest.
    fn lock(&mut self) -> Result<LockFile> {
        let lock = LockFile::acquire(&self.dir.join(LOCK_NAME))?;
        let md = std::fs::metadata(&self.manifest_path).map_err(io("stat", &self.manifest_path))?;
        if stamp_of(&md) != self.stamp {
            let (bytes, stamp) = read_manifest_bytes(&self.manifest_path)?;
            let parsed = parse_manifest_file(&self.manifest_path, &bytes)?;
            if parsed.header.vault_id != self.header.vault_id {
                return Err(Error::WrongVault {
                    path: self.manifest_path.clone(),
                    expected: self.header.vault_id.clone(),
                    found: parsed.header.vault_id,
                });
            }
            if !ct_eq(
                parsed.header.key_check.as_bytes(),
                self.header.key_check.as_bytes(),
            ) {
                return Err(wrong_key(&self.manifest_path, &self.opened));
            }
            let manifest = verify_manifest(&self.manifest_path, &parsed, &self.keys, &self.opened)?;
            if manifest.seq < self.manifest.seq {
                return Err(Error::ManifestRolledBack {
                    path: self.manifest_path.clone(),
                    name: String::new(),
                    manifest_seq: manifest.seq,
                    record_seq: self.manifest.seq,
                });
            }
            self.header = parsed.header;
            self.manifest = manifest;
            self.stamp = stamp;
            self.index();
        }
        Ok(lock)
    }

    /// Write the new manifest (the commit point), then remove files it no longer uses.
    fn commit(
        &mut self,
        header: Header,
        keys: Option<Keys>,
        manifest: Manifest,
        obsolete: Vec<PathBuf>,
    ) -> Result<()> {
        self.stamp = write_manifest(
            &self.manifest_path,
            &header,
            keys.as_ref().unwrap_or(&self.keys),
            &manifest,
        )?;
        self.header = header;
        if let Some(k) = keys {
            self.keys = k;
        }
        self.manifest = manifest;
        self.index();
        remove_obsolete(obsolete);
        Ok(())
    }

    /// [`Vault::commit`] for changed and added entries, applied in place (no copy of a large
    /// manifest): on failure the in-memory manifest is restored, and the stamp (not updated)
    /// makes the next change re-read whatever reached the disk.
    fn commit_changes(
        &mut self,
        seq: u64,
        changes: Vec<(Option<usize>, Entry)>,
        obsolete: Vec<PathBuf>,
    ) -> Result<()> {
        let old_seq = self.manifest.seq;
        let old_len = self.manifest.entries.len();
        let mut undo = Vec::new();
        for (at, e) in changes {
            match at {
                Some(i) => undo.push((i, std::mem::replace(&mut self.manifest.entries[i], e))),
                None => self.manifest.entries.push(e),
            }
        }
        self.manifest.seq = seq;
        let written = write_manifest(
            &self.manifest_path,
            &self.header,
            &self.keys,
            &self.manifest,
        );
        match written {
            Ok(stamp) => self.stamp = stamp,
            Err(e) => {
                self.manifest.entries.truncate(old_len);
                for (i, old) in undo.into_iter().rev() {
                    self.manifest.entries[i] = old;
                }
                self.manifest.seq = old_seq;
                return Err(e);
            }
        }
        for i in old_len..self.manifest.entries.len() {
            let e = &self.manifest.entries[i];
            if e.status.is_live() {
                self.live.insert(e.name.clone(), i);
            }
        }
        remove_obsolete(obsolete);
        Ok(())
    }

    /// A record file's path and encrypted contents (not yet written).
    fn seal_record(
        &self,
        e: &Entry,
        seq: u64,
        wrap_key: &[u8; 32],
        plaintext: &[u8],
    ) -> Result<(PathBuf, Vec<u8>)> {
        let header = self.record_header(e, seq);
        let bind = binding(&self.vault_id, &e.id, e.generation, &e.name);
        let dk = random_key()?;
        let dkeys = DataKeys::derive(&dk);
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let (nonce, tag) = crate::crypto::seal(&dkeys.enc, &data_aad(&bind), &mut buf)?;
        let wrapped = wrap_data_key(wrap_key, &wrap_aad(&bind, &header), &dk)?;
        let bytes = encode_record_file(&header, &wrapped, &dkeys.commitment, &nonce, &buf, &tag)?;
        let path = self.entry_path(e).ok_or_else(|| Error::Shredded {
            name: e.name.clone(),
        })?;
        Ok((path, bytes))
    }

    fn record_header(&self, e: &Entry, seq: u64) -> RecordHeader {
        let (key, key_epoch) = match e.wrap {
            Wrap::Vault { epoch } => (Slot::Vault, epoch),
            _ => (Slot::Archive, 0),
        };
        RecordHeader {
            vault_id: self.header.vault_id.clone(),
            record_id: hex::encode(e.id),
            name: e.name.clone(),
            generation: e.generation,
            seq,
            section: if e.status.is_live() {
                Section::Live
            } else {
                Section::Archive
            },
            key,
            key_epoch,
        }
    }

    /// Re-wrap an entry's data key for `new` (new section, key slot, epoch or seq), keeping the
    /// ciphertext. The old file is fully checked first (key unwrap and commitment).
    fn rewrap(
        &self,
        old: &Entry,
        new: &Entry,
        seq: u64,
        new_wrap_key: &[u8; 32],
        archive_key: Option<&ArchiveKey>,
    ) -> Result<(PathBuf, PathBuf)> {
        let old_path = self.entry_path(old).ok_or_else(|| Error::Shredded {
            name: old.name.clone(),
        })?;
        let bytes = match read_private(&old_path, "record file") {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.missing(old, &old_path));
            }
            Err(other) => return Err(other),
        };
        let rf = parse_record_file(&old_path, &bytes)?;
        let dk = self.check_and_unwrap(old, &old_path, &rf, archive_key)?;
        let header = self.record_header(new, seq);
        let bind = binding(&self.vault_id, &new.id, new.generation, &new.name);
        let wrapped = wrap_data_key(new_wrap_key, &wrap_aad(&bind, &header), &dk)?;
        let out = encode_record_file(
            &header,
            &wrapped,
            rf.commitment,
            rf.nonce,
            rf.ciphertext,
            rf.tag,
        )?;
        let new_path = self.entry_path(new).ok_or_else(|| Error::Shredded {
            name: new.name.clone(),
        })?;
        write_atomic(&new_path, &out, &WriteOptions::private())?;
        Ok((old_path, new_path))
    }

    /// Write a record: a new one (generation 1) or the next generation of the live record of
    /// that name (the id and creation time are kept). Provisioning writes a customer
    /// `pending` before creating the role, then [`Vault::set_status`] to `active`; a password
    /// rotation is another `put`.
    pub fn put(&mut self, rec: NewRecord) -> Result<Summary> {
        let mut out = self.put_many(vec![rec], true)?;
        out.pop().ok_or_else(|| Error::Inconsistent {
            name: String::new(),
            field: "put result",
        })
    }

    /// Write several records in one commit (all or nothing). With `replace` false, every name
    /// must be new.
    pub fn put_many(&mut self, recs: Vec<NewRecord>, replace: bool) -> Result<Vec<Summary>> {
        let mut seen = std::collections::HashSet::new();
        for r in &recs {
            r.validate()?;
            if !seen.insert(r.name.clone()) {
                return Err(Error::AlreadyExists {
                    name: r.name.clone(),
                });
            }
        }
        let _lock = self.lock()?;
        if !replace && let Some(r) = recs.iter().find(|r| self.live.contains_key(&r.name)) {
            return Err(Error::AlreadyExists {
                name: r.name.clone(),
            });
        }
        let seq = self.manifest.seq + 1;
        let now = now_ms();
        let mut changes: Vec<(Option<usize>, Entry)> = Vec::with_capacity(recs.len());
        let mut obsolete = Vec::new();
        let mut out = Vec::new();
        let mut files = Vec::with_capacity(recs.len());
        for rec in &recs {
            let existing = self.live.get(&rec.name).copied();
            let entry = match existing {
                Some(i) => {
                    let old = &self.manifest.entries[i];
                    if let Some(p) = self.entry_path(old) {
                        obsolete.push(p);
                    }
                    Entry {
                        generation: old.generation + 1,
                        ..old.clone()
                    }
                }
                None => Entry {
                    id: random()?,
                    name: rec.name.clone(),
                    kind: rec.kind,
                    status: rec.status,
                    generation: 1,
                    created_ms: now,
                    updated_ms: now,
                    role: None,
                    database: None,
                    server: None,
                    wrap: Wrap::None,
                },
            };
            let entry = Entry {
                kind: rec.kind,
                status: rec.status,
                updated_ms: now,
                role: rec.role.clone(),
                database: rec.database.clone(),
                server: rec.server.clone(),
                wrap: Wrap::Vault {
                    epoch: self.header.key_epoch,
                },
                ..entry
            };
            let content = encode_content(rec)?;
            files.push(self.seal_record(&entry, seq, &self.keys.wrap, &content)?);
            out.push(entry.summary());
            changes.push((existing, entry));
        }
        // The record files, their syncs batched (a batch of customers costs one sync round,
        // not one per record); the manifest that uses them comes after.
        costplus_fs::write_atomic_many(&files, &WriteOptions::private())?;
        failpoint!("vault::put::record-written");
        self.commit_changes(seq, changes, obsolete)?;
        Ok(out)
    }

    /// Replace the secret of a live record (next generation), keeping everything else.
    pub fn set_secret(&mut self, name: &str, secret: SecretString) -> Result<Summary> {
        let rec = self.get(name)?;
        let s = rec.summary;
        self.put(NewRecord {
            name: s.name,
            kind: s.kind,
            status: s.status,
            secret,
            role: s.role,
            database: s.database,
            server: s.server,
            metadata: rec.metadata,
        })
    }

    /// Change the status of several live records in one commit (all or nothing): a batch of
    /// provisioned customers turns `active` with one manifest write instead of one each.
    pub fn set_status_many(&mut self, names: &[&str], status: Status) -> Result<Vec<Summary>> {
        let _lock = self.lock()?;
        if !status.is_live() {
            return Err(Error::InvalidTransition {
                name: names.join(", "),
                from: "live".into(),
                to: format!("{status} (use archive or shred)"),
            });
        }
        let mut manifest = self.manifest.clone();
        manifest.seq += 1;
        let now = now_ms();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let i = self.find(Which::Live(name))?;
            manifest.entries[i].status = status;
            manifest.entries[i].updated_ms = now;
            out.push(manifest.entries[i].summary());
        }
        self.commit(self.header.clone(), None, manifest, vec![])?;
        Ok(out)
    }

    /// Change a live record's status between `pending` and `active` (a manifest change only;
    /// the record file is untouched). Archiving and shredding have their own operations.
    pub fn set_status(&mut self, name: &str, status: Status) -> Result<Summary> {
        let _lock = self.lock()?;
        let i = self.find(Which::Live(name))?;
        let e = &self.manifest.entries[i];
        if !status.is_live() {
            return Err(Error::InvalidTransition {
                name: name.to_string(),
                from: e.status.to_string(),
                to: format!("{status} (use archive or shred)"),
            });
        }
        if e.status == status {
            return Ok(e.summary());
        }
        let mut manifest = self.manifest.clone();
        manifest.seq += 1;
        manifest.entries[i].status = status;
        manifest.entries[i].updated_ms = now_ms();
        let summary = manifest.entries[i].summary();
        self.commit(self.header.clone(), None, manifest, vec![])?;
        Ok(summary)
    }

    /// Remove a record entirely (its entry and its file). For a tombstone, use
    /// [`Vault::shred`].
    pub fn remove(&mut self, which: Which<'_>) -> Result<Summary> {
        let _lock = self.lock()?;
        let i = self.find(which)?;
        let mut manifest = self.manifest.clone();
        manifest.seq += 1;
        let e = manifest.entries.remove(i);
        let obsolete = self.entry_path(&e).into_iter().collect();
        self.commit(self.header.clone(), None, manifest, obsolete)?;
        Ok(e.summary())
    }

    /// Move a live record to the archive section. With `archive_key`, its data key is
    /// re-wrapped to that key (the first archive key used is remembered in the header; later
    /// ones must match).
    pub fn archive(&mut self, name: &str, archive_key: Option<&ArchiveKey>) -> Result<Summary> {
        let _lock = self.lock()?;
        let i = self.find(Which::Live(name))?;
        let old = self.manifest.entries[i].clone();
        let mut header = self.header.clone();
        let (wrap, wrap_key) = match archive_key {
            None => (
                Wrap::Vault {
                    epoch: self.header.key_epoch,
                },
                self.keys.wrap.clone(),
            ),
            Some(k) => {
                let (wk, check) = Keys::derive_archive(&k.root, &self.vault_id);
                let check = hex::encode(check);
                match &header.archive_key_check {
                    Some(c) if !ct_eq(c.as_bytes(), check.as_bytes()) => {
                        return Err(Error::ArchiveKey {
                            name: name.to_string(),
                            problem: format!(
                                "{} is not the archive key this vault used before",
                                k.path.display()
                            ),
                        });
                    }
                    _ => header.archive_key_check = Some(check),
                }
                (Wrap::Archive, wk)
            }
        };
        let seq = self.manifest.seq + 1;
        let new = Entry {
            status: Status::Archived,
            updated_ms: now_ms(),
            wrap,
            ..old.clone()
        };
        let (old_path, _) = {
            // The new header (archive key check) must be in place for the rewrap's checks of
            // the new entry; the old entry is checked with the current keys.
            self.rewrap(&old, &new, seq, &wrap_key, None)?
        };
        failpoint!("vault::archive::record-written");
        let mut manifest = self.manifest.clone();
        manifest.seq = seq;
        manifest.entries[i] = new.clone();
        self.commit(header, None, manifest, vec![old_path])?;
        Ok(new.summary())
    }

    /// Destroy a record's data key: its file is wiped and removed, a tombstone stays in the
    /// manifest. Copies of the file in old backups stay readable with the current vault key
    /// until the key is rotated and the old key destroyed.
    pub fn shred(&mut self, which: Which<'_>) -> Result<Summary> {
        let _lock = self.lock()?;
        let i = self.find(which)?;
        let old = self.manifest.entries[i].clone();
        if old.wrap == Wrap::None {
            return Err(Error::Shredded { name: old.name });
        }
        let path = self.entry_path(&old);
        let mut manifest = self.manifest.clone();
        manifest.seq += 1;
        let e = &mut manifest.entries[i];
        e.status = Status::Shredded;
        e.wrap = Wrap::None;
        e.updated_ms = now_ms();
        let summary = e.summary();
        self.commit(self.header.clone(), None, manifest, vec![])?;
        if let Some(p) = path {
            wipe_and_remove(&p);
        }
        Ok(summary)
    }

    /// Rotate the key-encryption key: derive a new one from `new` (a key file, created if
    /// missing, or a passphrase) and re-wrap every data key wrapped to the vault key. The
    /// record ciphertexts are not touched. Changing the passphrase is this operation.
    pub fn rotate_key(&mut self, new: &NewKey) -> Result<RotateReport> {
        let _lock = self.lock()?;
        let (root, hkey, opened, created, kdf) = new_root(new, &self.vault_id)?;
        let keys = Keys::derive(&root, &self.vault_id);
        let epoch = self.header.key_epoch + 1;
        let header = Header {
            key_epoch: epoch,
            key: hkey,
            key_check: hex::encode(keys.check),
            ..self.header.clone()
        };
        let seq = self.manifest.seq + 1;
        let mut manifest = self.manifest.clone();
        manifest.seq = seq;
        let mut obsolete = Vec::new();
        let mut rewrapped = 0;
        let mut archive_wrapped = 0;
        for (i, old) in self.manifest.entries.iter().enumerate() {
            match old.wrap {
                Wrap::Vault { .. } => {
                    let new_entry = Entry {
                        wrap: Wrap::Vault { epoch },
                        ..old.clone()
                    };
                    let (old_path, _) = self.rewrap(old, &new_entry, seq, &keys.wrap, None)?;
                    obsolete.push(old_path);
                    manifest.entries[i] = new_entry;
                    rewrapped += 1;
                    if rewrapped == 1 {
                        failpoint!("vault::rotate::record-written");
                    }
                }
                Wrap::Archive => archive_wrapped += 1,
                Wrap::None => {}
            }
        }
        self.commit(header, Some(keys), manifest, obsolete)?;
        self.opened = opened;
        Ok(RotateReport {
            rewrapped,
            archive_wrapped,
            key_epoch: epoch,
            key_source: new.source.describe(),
            key_file_created: created,
            kdf,
        })
    }

    /// Read and check every record (decrypting all that the given keys can), and look for
    /// files the manifest does not use. Problems are collected, not returned as errors.
    pub fn verify(&self, archive_key: Option<&ArchiveKey>) -> VerifyReport {
        let mut report = VerifyReport::default();
        let mut used = std::collections::HashSet::new();
        for e in &self.manifest.entries {
            let Some(p) = self.entry_path(e) else {
                continue;
            };
            used.insert(p);
            let structure_only = e.wrap == Wrap::Archive && archive_key.is_none();
            let result = if structure_only {
                self.read_structure(e)
            } else {
                self.read_entry(e, archive_key, true).map(|_| ())
            };
            match result {
                Ok(()) if structure_only => report.structure_only += 1,
                Ok(()) => report.checked += 1,
                Err(err) => report.problems.push(err.to_string()),
            }
        }
        for sub in [RECORDS_DIR, ARCHIVE_DIR] {
            let dir = self.dir.join(sub);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    report.problems.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            for f in rd.flatten() {
                let p = f.path();
                if used.contains(&p) {
                    continue;
                }
                // A file written by a commit that never happened has seq = ours + 1; anything
                // newer means the manifest went back in time.
                if let Ok(b) = std::fs::read(&p)
                    && let Ok(rf) = parse_record_file(&p, &b)
                    && rf.header.seq > self.manifest.seq + 1
                {
                    report.problems.push(
                        Error::ManifestRolledBack {
                            path: self.manifest_path.clone(),
                            name: rf.header.name.clone(),
                            manifest_seq: self.manifest.seq,
                            record_seq: rf.header.seq,
                        }
                        .to_string(),
                    );
                }
                report.leftovers.push(p);
            }
        }
        report.leftovers.extend(self.manifest_temps());
        report.leftovers.sort();
        report
    }

    /// Check an archive-key-wrapped record without the archive key: the file parses and its
    /// header agrees with the manifest.
    fn read_structure(&self, e: &Entry) -> Result<()> {
        let Some(path) = self.entry_path(e) else {
            return Ok(());
        };
        let bytes = match read_private(&path, "record file") {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.missing(e, &path));
            }
            Err(other) => return Err(other),
        };
        let rf = parse_record_file(&path, &bytes)?;
        match self.check_and_unwrap(e, &path, &rf, None) {
            Err(Error::ArchiveKey { .. }) => Ok(()),
            Err(other) => Err(other),
            Ok(_) => Ok(()),
        }
    }

    /// Remove files no manifest entry uses (left by interrupted writes). Returns them.
    pub fn gc(&mut self) -> Result<Vec<PathBuf>> {
        let _lock = self.lock()?;
        let leftovers = self.verify_leftovers();
        for p in &leftovers {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io("remove", p)(e));
            }
        }
        Ok(leftovers)
    }

    fn verify_leftovers(&self) -> Vec<PathBuf> {
        let used: std::collections::HashSet<PathBuf> = self
            .manifest
            .entries
            .iter()
            .filter_map(|e| self.entry_path(e))
            .collect();
        let mut out = self.manifest_temps();
        for sub in [RECORDS_DIR, ARCHIVE_DIR] {
            if let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) {
                out.extend(rd.flatten().map(|f| f.path()).filter(|p| !used.contains(p)));
            }
        }
        out.sort();
        out
    }

    /// Temporary files of a manifest write that was interrupted.
    fn manifest_temps(&self) -> Vec<PathBuf> {
        let prefix = format!(".{MANIFEST_NAME}.tmp-");
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|f| f.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|f| f.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Encode and write the manifest file (the commit point); the stamp of the new file.
fn write_manifest(path: &Path, header: &Header, keys: &Keys, manifest: &Manifest) -> Result<Stamp> {
    let bytes = encode_manifest_file(header, keys, manifest)?;
    failpoint!("vault::commit::before");
    write_atomic(path, &bytes, &WriteOptions::private())?;
    failpoint!("vault::commit::after");
    Ok(stamp_of(
        &std::fs::metadata(path).map_err(io("stat", path))?,
    ))
}

/// Remove files a commit superseded (best effort: a leftover is harmless, `gc` removes it).
fn remove_obsolete(obsolete: Vec<PathBuf>) {
    for p in obsolete {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove the superseded file {}: {e}", p.display());
        }
    }
}

fn wipe_and_remove(p: &Path) {
    use std::io::Write;
    if let Ok(md) = std::fs::metadata(p)
        && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(p)
    {
        let _ = f.write_all(&vec![0u8; md.len() as usize]);
        let _ = f.sync_all();
    }
    let _ = std::fs::remove_file(p);
}

fn wrong_key(path: &Path, opened: &Opened) -> Error {
    match opened {
        Opened::KeyFile(k) => Error::WrongKeyFile {
            path: path.to_path_buf(),
            key_file: k.clone(),
        },
        Opened::Passphrase => Error::WrongPassphrase {
            path: path.to_path_buf(),
        },
    }
}

type NewRoot = (Key32, HeaderKey, Opened, bool, Option<KdfParams>);

/// The root key, header key description and bookkeeping for a new key.
fn new_root(key: &NewKey, _vault_id: &[u8; 16]) -> Result<NewRoot> {
    match &key.source {
        KeySource::KeyFile(path) => {
            let (root, created) = key_file_or_create(path)?;
            Ok((
                root,
                HeaderKey::KeyFile,
                Opened::KeyFile(path.clone()),
                created,
                None,
            ))
        }
        KeySource::Passphrase(p) => {
            crate::keys::check_new_passphrase(p)?;
            let params = match key.kdf {
                Some(k) => k,
                None => KdfParams::calibrate(crate::crypto::DEFAULT_KDF_TARGET)?,
            };
            if !params.within_caps() {
                return Err(Error::Passphrase(format!(
                    "Argon2id parameters {params:?} are over the cap ({})",
                    KdfParams::caps_text()
                )));
            }
            let salt: [u8; 16] = random()?;
            let root = derive_argon2(p.expose_secret().as_bytes(), &salt, &params)?;
            Ok((
                root,
                HeaderKey::Passphrase {
                    kdf: "argon2id".into(),
                    version: 0x13,
                    m_cost_kib: params.m_cost_kib,
                    t_cost: params.t_cost,
                    p_cost: params.p_cost,
                    salt: STANDARD.encode(salt),
                },
                Opened::Passphrase,
                false,
                Some(params),
            ))
        }
    }
}

/// The root key of an existing vault from `source`, after checking the header's key
/// description and the KDF caps.
fn derive_root(
    path: &Path,
    header: &Header,
    source: &KeySource,
    _vault_id: &[u8; 16],
) -> Result<(Key32, Opened)> {
    match (&header.key, source) {
        (HeaderKey::KeyFile, KeySource::KeyFile(k)) => {
            Ok((read_key_file(k)?, Opened::KeyFile(k.clone())))
        }
        (
            HeaderKey::Passphrase {
                kdf,
                version,
                m_cost_kib,
                t_cost,
                p_cost,
                salt,
            },
            KeySource::Passphrase(p),
        ) => {
            if kdf != "argon2id" || *version != 0x13 {
                return Err(malformed(
                    path,
                    "header",
                    format!("unknown key derivation {kdf} version {version}"),
                ));
            }
            let params = KdfParams::new(*m_cost_kib, *t_cost, *p_cost);
            if !params.within_caps() {
                return Err(Error::KdfTooExpensive {
                    path: path.to_path_buf(),
                    m_cost_kib: *m_cost_kib,
                    t_cost: *t_cost,
                    p_cost: *p_cost,
                    cap: KdfParams::caps_text(),
                });
            }
            let salt = STANDARD
                .decode(salt)
                .map_err(|_| malformed(path, "header", "the salt is not base64"))?;
            if salt.len() < 16 {
                return Err(malformed(
                    path,
                    "header",
                    "the salt is shorter than 16 bytes",
                ));
            }
            let root = derive_argon2(p.expose_secret().as_bytes(), &salt, &params)
                .map_err(|e| malformed(path, "header", e.to_string()))?;
            Ok((root, Opened::Passphrase))
        }
        (HeaderKey::KeyFile, given) => Err(Error::WrongKeySource {
            path: path.to_path_buf(),
            expected: "key file",
            given: given.describe(),
        }),
        (HeaderKey::Passphrase { .. }, given) => Err(Error::WrongKeySource {
            path: path.to_path_buf(),
            expected: "passphrase",
            given: given.describe(),
        }),
    }
}

fn read_manifest_bytes(path: &Path) -> Result<(Zeroizing<Vec<u8>>, Stamp)> {
    // The stamp must describe the file whose bytes we read: a commit by another process
    // between a read and a separate stat would otherwise go unnoticed by `lock`.
    let (bytes, md) = crate::keys::read_private_md(path, "vault manifest")?;
    Ok((bytes, stamp_of(&md)))
}

struct ParsedManifestFile {
    header: Header,
    header_bytes: Vec<u8>,
    mac: Vec<u8>,
    sealed: Vec<u8>,
}

fn parse_manifest_file(path: &Path, bytes: &[u8]) -> Result<ParsedManifestFile> {
    let r = format::decode(&MANIFEST_FILE, path, bytes)?;
    let header: Header =
        serde_json::from_slice(r[0]).map_err(|e| malformed(path, "header", e.to_string()))?;
    if r[1].len() != 32 {
        return Err(malformed(
            path,
            "header mac",
            format!("{} bytes", r[1].len()),
        ));
    }
    if r[2].len() < NONCE_LEN + TAG_LEN {
        return Err(malformed(path, "manifest", "shorter than nonce and tag"));
    }
    Ok(ParsedManifestFile {
        header,
        header_bytes: r[0].to_vec(),
        mac: r[1].to_vec(),
        sealed: r[2].to_vec(),
    })
}

fn manifest_aad(header_bytes: &[u8], mac: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header_bytes.len() + 64);
    a.extend_from_slice(b"manifest:");
    a.extend_from_slice(MANIFEST_FILE.magic);
    a.extend_from_slice(&format::VERSION.to_be_bytes());
    a.extend_from_slice(header_bytes);
    a.extend_from_slice(mac);
    a
}

fn header_mac(keys: &Keys, header_bytes: &[u8]) -> [u8; 32] {
    hmac(
        &keys.header_mac[..],
        &[
            b"header:",
            MANIFEST_FILE.magic,
            &format::VERSION.to_be_bytes(),
            header_bytes,
        ],
    )
}

fn verify_manifest(
    path: &Path,
    p: &ParsedManifestFile,
    keys: &Keys,
    opened: &Opened,
) -> Result<Manifest> {
    let check = hex::decode(&p.header.key_check)
        .map_err(|_| malformed(path, "header", "key_check is not hex"))?;
    if !ct_eq(&keys.check, &check) {
        return Err(wrong_key(path, opened));
    }
    if !ct_eq(&header_mac(keys, &p.header_bytes), &p.mac) {
        return Err(Error::HeaderTampered {
            path: path.to_path_buf(),
        });
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&p.sealed[..NONCE_LEN]);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&p.sealed[p.sealed.len() - TAG_LEN..]);
    let mut buf = Zeroizing::new(p.sealed[NONCE_LEN..p.sealed.len() - TAG_LEN].to_vec());
    if !crate::crypto::open(
        &keys.manifest,
        &nonce,
        &manifest_aad(&p.header_bytes, &p.mac),
        &mut buf,
        &tag,
    ) {
        return Err(Error::ManifestTampered {
            path: path.to_path_buf(),
        });
    }
    Manifest::decode(&buf).map_err(|m| malformed(path, "manifest", m))
}

fn encode_manifest_file(header: &Header, keys: &Keys, manifest: &Manifest) -> Result<Vec<u8>> {
    let header_bytes = serde_json::to_vec(header).map_err(|e| Error::Encode(e.to_string()))?;
    let mac = header_mac(keys, &header_bytes);
    let mut buf = manifest.encode();
    let (nonce, tag) =
        crate::crypto::seal(&keys.manifest, &manifest_aad(&header_bytes, &mac), &mut buf)?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + buf.len() + TAG_LEN);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&buf);
    sealed.extend_from_slice(&tag);
    Ok(format::encode(
        &MANIFEST_FILE,
        &[&header_bytes, &mac, &sealed],
    ))
}

/// Decode the header of a manifest file without any key: vault id, key source and KDF
/// parameters. For `inspect`-style diagnostics.
pub fn inspect_header(path: &Path) -> Result<serde_json::Value> {
    let bytes = read_private(path, "vault manifest")?;
    let p = parse_manifest_file(path, &bytes)?;
    serde_json::to_value(&p.header).map_err(|e| malformed(path, "header", e.to_string()))
}
