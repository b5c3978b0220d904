//! The one error type of the vault. Every way a vault can be damaged, tampered with or misused
//! has its own variant, so callers (and the tests) can tell them apart.

use std::path::PathBuf;

/// Errors of the vault. Variants name the file, region or record concerned.
///
/// None of them carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("read", "list", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file operation of costplus-fs failed (atomic write, lock).
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// A vault file, key file or passphrase file is group/world accessible or owned by someone
    /// else.
    #[error("refusing {path}: {problem}")]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A directory (or another non-file) sits where a file must be.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file of the vault is empty.
    #[error("{path} is empty (0 bytes): the file was truncated or replaced")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The file does not start with the magic of the expected kind of vault file.
    #[error("{path} is not a costplus {expected} file (bad magic)")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// "vault manifest" or "vault record".
        expected: &'static str,
    },
    /// The file uses a format version this program does not know.
    #[error("{path} has format version {found}; this program reads version {supported} only")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u16,
        /// The version we read.
        supported: u16,
    },
    /// The file ends before the end of a region.
    #[error("{path} is truncated in region `{region}` ({found} of {expected} bytes present)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The first region that is incomplete.
        region: &'static str,
        /// Bytes the file should have up to the end of that region.
        expected: u64,
        /// Bytes it has.
        found: u64,
    },
    /// A region's checksum does not match: accidental damage (or clumsy tampering).
    #[error("{path}: region `{region}` is damaged (checksum mismatch)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The damaged region.
        region: &'static str,
    },
    /// A region has a valid checksum but its content is not what the format allows.
    #[error("{path}: region `{region}` is malformed: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The region.
        region: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The header asks for Argon2id parameters above what we accept to spend.
    #[error(
        "{path}: the key derivation asks for {m_cost_kib} KiB x {t_cost} passes x {p_cost} lanes, over the cap ({cap}); refusing to run it"
    )]
    KdfTooExpensive {
        /// The vault file.
        path: PathBuf,
        /// Memory in KiB.
        m_cost_kib: u32,
        /// Passes.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
        /// The cap, described.
        cap: String,
    },
    /// The passphrase does not open this vault.
    #[error("wrong passphrase for the vault {path}")]
    WrongPassphrase {
        /// The vault file.
        path: PathBuf,
    },
    /// The key file does not open this vault.
    #[error("the key file {key_file} does not open the vault {path} (wrong key file)")]
    WrongKeyFile {
        /// The vault file.
        path: PathBuf,
        /// The key file given.
        key_file: PathBuf,
    },
    /// A passphrase was given for a key-file vault or the reverse.
    #[error("the vault {path} is protected by a {expected}, but a {given} was given")]
    WrongKeySource {
        /// The vault file.
        path: PathBuf,
        /// "passphrase" or "key file".
        expected: &'static str,
        /// What was given.
        given: &'static str,
    },
    /// The header authenticates with the right key, but its MAC does not match: it was edited.
    #[error("{path}: the header was modified (header MAC mismatch)")]
    HeaderTampered {
        /// The vault file.
        path: PathBuf,
    },
    /// The manifest fails authentication under the right key: it was edited.
    #[error("{path}: the manifest was modified (authentication failed)")]
    ManifestTampered {
        /// The vault file.
        path: PathBuf,
    },
    /// A record file is newer than the manifest that lists it: the manifest was replaced by an
    /// older copy.
    #[error(
        "{path}: the manifest was rolled back (it is at commit {manifest_seq}, but record `{name}` was written at commit {record_seq})"
    )]
    ManifestRolledBack {
        /// The vault file.
        path: PathBuf,
        /// The record that gave it away.
        name: String,
        /// The manifest's commit counter.
        manifest_seq: u64,
        /// The newer commit counter found in the record file.
        record_seq: u64,
    },
    /// The manifest lists a record whose file is gone.
    #[error("record `{name}`: its file {path} is missing (deleted behind the vault's back)")]
    RecordMissing {
        /// The record.
        name: String,
        /// The file that should be there.
        path: PathBuf,
    },
    /// A record file is an older generation than the manifest says.
    #[error(
        "record `{name}`: {path} holds generation {found}, the manifest expects {expected} (rolled back to an older copy)"
    )]
    RecordRolledBack {
        /// The record.
        name: String,
        /// The file.
        path: PathBuf,
        /// Generation in the manifest.
        expected: u64,
        /// Generation found.
        found: u64,
    },
    /// A record file belongs to another record (copied over this one).
    #[error(
        "record `{name}`: {path} holds the record `{found}` (a record file was swapped in from another record)"
    )]
    RecordSwapped {
        /// The record that was asked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// The record the file really holds.
        found: String,
    },
    /// A record file comes from another vault.
    #[error("{path} belongs to another vault (vault id {found}, expected {expected})")]
    WrongVault {
        /// The file.
        path: PathBuf,
        /// Our vault id.
        expected: String,
        /// The file's vault id.
        found: String,
    },
    /// The wrapped data key does not unwrap: the wrapped key, its nonce or the record header was
    /// modified (or the record is wrapped to another key).
    #[error(
        "record `{name}`: the data key in {path} does not unwrap (wrapped key or header modified)"
    )]
    KeyUnwrapFailed {
        /// The record.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The data key does not match the key commitment stored with the record.
    #[error("record `{name}`: key commitment mismatch in {path}")]
    KeyCommitmentMismatch {
        /// The record.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The record's ciphertext fails authentication (nonce, ciphertext or tag modified).
    #[error("record `{name}`: {path} fails authentication (nonce, ciphertext or tag modified)")]
    RecordTampered {
        /// The record.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The decrypted record disagrees with the manifest.
    #[error("record `{name}`: the record and the manifest disagree about {field}")]
    Inconsistent {
        /// The record.
        name: String,
        /// The field.
        field: &'static str,
    },
    /// There is no vault in the directory.
    #[error("no vault in {dir} (run `costplus-vault init` first)")]
    NotInitialized {
        /// The directory.
        dir: PathBuf,
    },
    /// `init` found a vault already.
    #[error("{dir} already holds a vault")]
    AlreadyInitialized {
        /// The directory.
        dir: PathBuf,
    },
    /// No record of that name.
    #[error("no record named `{name}`")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A record of that name exists already.
    #[error("a record named `{name}` exists already")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// The record name breaks the naming rules.
    #[error("invalid record name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A field of a record is invalid.
    #[error("record `{name}`: invalid {field}: {reason}")]
    InvalidField {
        /// The record.
        name: String,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The status change is not allowed.
    #[error("record `{name}`: cannot go from {from} to {to}")]
    InvalidTransition {
        /// The record.
        name: String,
        /// Current status.
        from: String,
        /// Wanted status.
        to: String,
    },
    /// The record's data key was destroyed.
    #[error("record `{name}` was shredded: its data key is destroyed")]
    Shredded {
        /// The record.
        name: String,
    },
    /// The record is wrapped to the archive key, which was not given or is wrong.
    #[error("record `{name}` is wrapped to the archive key: {problem}")]
    ArchiveKey {
        /// The record.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A key file is not in the key-file format.
    #[error("{path} is not a costplus vault key file: {problem}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The passphrase could not be obtained or is unusable.
    #[error("passphrase: {0}")]
    Passphrase(String),
    /// A legacy credentials file could not be imported.
    #[error("{path}:{line}: {message}")]
    Import {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An export could not be produced.
    #[error("export of `{name}`: {message}")]
    Export {
        /// The record.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
    /// A structure could not be encoded (should not happen).
    #[error("encoding: {0}")]
    Encode(String),
    /// An injected failure (failpoint) stopped the operation; used by the crash tests.
    #[error("failpoint {0}")]
    Failpoint(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
