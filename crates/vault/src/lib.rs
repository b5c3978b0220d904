//! An encrypted, tamper-evident credential vault for customer passwords and service secrets.
//!
//! ```
//! use costplus_vault::{NewKey, NewRecord, Status, Vault, KeySource};
//! use secrecy::ExposeSecret;
//!
//! let tmp = tempfile::tempdir()?;
//! let dir = tmp.path().join("vault");
//! let key = tmp.path().join("vault.key");
//! // A key file for unattended runs (created with a random key, 0600).
//! let (mut vault, _) = Vault::init(&dir, &NewKey::key_file(&key))?;
//!
//! // Provisioning: write the customer pending, create the role, then flip it to active.
//! vault.put(NewRecord::customer("acme", "acme_user", "acme_db", "main", "s3cret".into()))?;
//! vault.set_status("acme", Status::Active)?;
//! // A service secret.
//! vault.put(NewRecord::service("pgbackrest/repo1-cipher-pass", "x".into()))?;
//!
//! let vault = Vault::open(&dir, &KeySource::KeyFile(key))?;
//! let acme = vault.get("acme")?;
//! assert_eq!(acme.secret.expose_secret(), "s3cret");
//! assert_eq!(acme.summary.status, Status::Active);
//! assert_eq!(vault.list().len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Records
//!
//! A record has a name, a kind, a status, a generation, timestamps, optional `role`,
//! `database` and `server`, a free-form metadata map, and one secret.
//!
//! - **Naming convention.** A customer record is named after the customer (`acme`, no `/`); a
//!   service secret is `<service>/<item>` (`pgbackrest/repo1-cipher-pass`,
//!   `s3/offsite/secret-access-key`). The kind follows from the name ([`Kind::of_name`]) and is
//!   stored too; a record whose kind disagrees with its name is refused. Names are 1 to 200
//!   bytes of ASCII letters, digits, `. _ - @ +`, with `/` between non-empty segments.
//! - **Status.** `pending` → `active` → `archived` (→ `shredded`). Provisioning writes a
//!   customer `pending` *before* creating the role and sets it `active` at the end
//!   ([`Vault::set_status`], a manifest-only change); a password rotation is another
//!   [`Vault::put`], which writes the next generation. [`Vault::archive`] moves a record to the
//!   archive section, [`Vault::shred`] destroys its data key and keeps a tombstone.
//! - **Generation.** Every write of a record's content increments it; the manifest records it,
//!   so an older copy of a record file is detected.
//!
//! # On-disk format (version 1)
//!
//! ```text
//! <dir>/            0700
//!   manifest        0600  header + header MAC + encrypted manifest: the commit point
//!   records/        0700  live (pending, active) record files
//!   archive/        0700  archived record files
//!   .lock                 flock taken by every change
//! ```
//!
//! Both kinds of file use the same container ([`mod@format`]): a prologue (magic, `u16` format
//! version, region count, region lengths, a 4-byte SHA-256 check) and then the regions, each
//! followed by a 4-byte check. The checks catch accidental damage and name the damaged region;
//! security comes from the MACs and AEAD tags. All integers are big-endian.
//!
//! **The manifest file** (magic `CPVAULT\x01`) has three regions:
//!
//! 1. `header`: JSON `{vault_id (16 bytes hex), created, key_epoch, key, key_check (hex),
//!    archive_key_check}` where `key` is `{"source":"key-file"}` or
//!    `{"source":"passphrase","kdf":"argon2id","version":19,"m_cost_kib","t_cost","p_cost",
//!    "salt" (base64, 16 bytes)}`.
//! 2. `header mac`: HMAC-SHA256 under the header key of `"header:" magic version header`.
//! 3. `manifest`: `nonce (12) | ciphertext | tag (16)`, AES-256-GCM under the manifest key,
//!    associated data `"manifest:" magic version header header-mac`. The plaintext is
//!    `seq u64 | count u32 | entries`, each entry `id [16] | generation u64 | key slot u8
//!    (0 vault key, 1 archive key, 2 none) | key epoch u32 | kind u8 (0 customer, 1 service) |
//!    status u8 (0 pending, 1 active, 2 archived, 3 shredded) | created i64 ms | updated i64 ms |
//!    name | role | database | server` (strings: `u16` length + UTF-8, empty = none).
//!
//! **A record file** (magic `CPVREC\0\x01`) is named `<id hex>-<generation>-k<epoch>.rec`
//! (wrapped to the vault key of that epoch) or `<id hex>-<generation>-a.rec` (archive key) and
//! has six regions:
//!
//! 1. `header`: JSON `{vault_id, record_id, name, generation, seq, section ("live" |
//!    "archive"), key ("vault" | "archive"), key_epoch}`; `seq` is the manifest commit that wrote
//!    the file.
//! 2. `wrapped key`: `nonce (12) | encrypted data key (32) | tag (16)`: the record's random
//!    256-bit data key under AES-256-GCM with the wrap key; associated data `"wrap:" binding seq
//!    section key-slot key-epoch`.
//! 3. `key commitment` (32): HKDF-SHA256(data key, info `costplus-vault v1 record commitment`),
//!    checked in constant time before decrypting (AES-GCM alone does not commit to its key).
//! 4. `nonce` (12), 5. `ciphertext`, 6. `tag` (16): AES-256-GCM under HKDF(data key, info
//!    `costplus-vault v1 record encryption`), associated data `"data:" binding`. The plaintext
//!    is `u32 length | JSON {kind, role, database, server, metadata} | secret (UTF-8)`.
//!
//! `binding` = record magic, format version, vault id, record id, generation, `u16` name length,
//! name. A record file copied to another record, another vault or another generation fails.
//!
//! # Keys
//!
//! The root key is the 32-byte key of a key file (`costplus-vault-key-v1:<base64>`, 0600) or
//! Argon2id v0x13 of the passphrase with the header's salt and parameters (calibrated at `init`
//! to about half a second; refused without running when over [`crypto::MAX_KDF_MEMORY_KIB`]
//! KiB, [`crypto::MAX_KDF_PASSES`] passes, [`crypto::MAX_KDF_LANES`] lanes or
//! [`crypto::MAX_KDF_WORK`] KiB-passes). HKDF-SHA256 with the vault id as salt derives from it
//! the wrap key, the manifest key, the header MAC key and the key check stored in the header
//! (which tells a wrong key from damage). An optional archive key (another key file) derives an
//! archive wrap key and check the same way.
//!
//! # Consistency and crash safety
//!
//! Every change takes `.lock`, writes new record files under new names (write, fsync, rename,
//! fsync directory), then replaces `manifest` the same way: that rename is the commit. Only
//! then are superseded files removed. A crash leaves the old manifest with its old files (plus
//! unused new files, which [`Vault::gc`] removes) or the new one. Opening checks the header,
//! the key, the header MAC and the manifest; reading a record checks that its file exists, that
//! its header names this vault, record, generation and section, that it is not newer than the
//! manifest (a rolled-back manifest), unwraps the data key, checks the commitment and decrypts.
//! A consistent rollback of the whole directory (restoring an old backup of all of it) cannot
//! be detected from inside it. Files and directories readable by group or others, or owned by
//! another user, are refused.

pub mod crypto;
pub mod error;
pub mod export;
pub mod format;
pub mod import;
pub mod keys;
pub mod model;
mod vault;

use std::path::PathBuf;

pub use crypto::KdfParams;
pub use error::{Error, Result};
pub use keys::{KeySource, NewKey};
pub use model::{Kind, NewRecord, Record, Status, Summary};
pub use vault::{
    ARCHIVE_DIR, ArchiveKey, InitReport, MANIFEST_NAME, RECORDS_DIR, RotateReport, Vault,
    VerifyReport, Which, inspect_header,
};

/// The `[vault]` section of costplus.toml.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// The vault directory (0700).
    pub dir: PathBuf,
    /// Random key file (0600) for unattended runs.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// File holding the passphrase (0600), when a passphrase protects the vault.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
}
