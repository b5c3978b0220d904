//! Offsite verification of a pgBackRest repository stored in a bucket (repo2).
//!
//! The core is sans-IO: [`check`] takes the bucket listing under the repository prefix,
//! optionally pgBackRest's own `info --output=json` (the repository's `backup.info` is itself
//! encrypted, so the listing and pgBackRest's view are what we can compare), and the first
//! bytes of sampled objects ([`sample_keys`] says which), and returns the findings.
//! [`crate::Offsite::verify_repo`] does the requests.
//!
//! What is checked, per stanza:
//! - `backup/<stanza>/backup.info` and `archive/<stanza>/archive.info` and their `.copy` exist
//!   and each pair has the same size;
//! - every backup (from pgBackRest's list and from the listing) has `backup.manifest` and its
//!   copy (same size) and files; with pgBackRest's list, the bytes stored per backup equal its
//!   recorded repository delta, referenced backups exist, and the WAL each backup needs is there;
//! - the WAL archive has no gaps between its first and last segment on each timeline, and a
//!   history file for every timeline after the first;
//! - encryption: every object's size fits the OpenSSL `Salted__` + AES-CBC layout, and sampled
//!   objects start with `Salted__` (and not with a PostgreSQL page, WAL page, compression magic
//!   or a plaintext INI header).

use std::collections::{BTreeMap, BTreeSet};

use crate::ObjectInfo;
use crate::pgbackrest_info::Stanza;

/// Bytes read from the start of each sampled object.
pub const HEAD_BYTES: u64 = 64;

/// Options of a verification.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only this stanza (default: every stanza found in the bucket or in pgBackRest's output).
    pub stanza: Option<String>,
    /// pgBackRest's number of the repository in the bucket (2).
    pub repo: u32,
    /// `wal_segment_size` of the cluster (16 MiB unless initdb said otherwise).
    pub wal_segment_size: u64,
    /// Whether every object must be encrypted (default true).
    pub expect_encrypted: bool,
    /// Data and WAL objects sampled for the encryption check, besides every info and manifest
    /// file (`usize::MAX`: all).
    pub sample: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            stanza: None,
            repo: 2,
            wal_segment_size: 16 * 1024 * 1024,
            expect_encrypted: true,
            sample: 32,
        }
    }
}

/// What kind of problem an object has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// An object that must exist does not.
    Missing,
    /// A file and its `.copy` differ in size.
    CopyMismatch,
    /// A backup's bytes in the bucket differ from what pgBackRest recorded.
    SizeMismatch,
    /// A backup directory holds no files.
    Empty,
    /// WAL segments are missing between the first and the last.
    WalGap,
    /// The object is not encrypted (plaintext, compressed only, a PostgreSQL page).
    NotEncrypted,
    /// The object's size does not fit the encrypted layout (truncated or altered).
    BadCipherLength,
    /// pgBackRest reports the stanza as not healthy.
    StanzaStatus,
    /// Nothing to verify.
    NoRepository,
}

/// One problem, naming the object (or the prefix of the missing objects).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Problem {
    /// The object key (or key prefix) concerned.
    pub key: String,
    /// Machine-readable kind.
    pub kind: ProblemKind,
    /// What is wrong, for a person.
    pub problem: String,
}

/// One backup as found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    /// Label.
    pub label: String,
    /// `full`, `diff` or `incr` (from the label).
    pub kind: String,
    /// Objects under the backup's directory (manifests included).
    pub objects: usize,
    /// Bytes of its files (manifests excluded).
    pub bytes: u64,
    /// Bytes pgBackRest recorded (repository delta), when its output was given.
    pub expected_bytes: Option<u64>,
    /// Whether pgBackRest lists it (`None` without pgBackRest's output).
    pub in_backup_info: Option<bool>,
}

/// A contiguous WAL range found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WalRange {
    /// Archive id (`15-1`).
    pub archive_id: String,
    /// Timeline.
    pub timeline: u32,
    /// First segment.
    pub first: String,
    /// Last segment.
    pub last: String,
    /// Segments present.
    pub segments: usize,
    /// Bytes of those segments.
    pub bytes: u64,
}

/// One stanza as found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StanzaReport {
    /// Name.
    pub name: String,
    /// Backups, oldest first.
    pub backups: Vec<BackupReport>,
    /// WAL per archive id and timeline.
    pub wal: Vec<WalRange>,
    /// Objects of this stanza.
    pub objects: usize,
    /// Bytes of this stanza.
    pub bytes: u64,
}

/// The findings of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Findings {
    /// Per stanza.
    pub stanzas: Vec<StanzaReport>,
    /// Problems (any one makes the repository not OK).
    pub problems: Vec<Problem>,
    /// Things to know that do not make the copy unusable.
    pub warnings: Vec<String>,
    /// Objects whose first bytes were examined.
    pub sampled: usize,
}

/// What the first bytes of an object look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// OpenSSL `Salted__` header: encrypted by pgBackRest (or `openssl enc`).
    Encrypted,
    /// A pgBackRest INI file in clear (`[backrest]`).
    PlainIni,
    /// gzip (compressed, not encrypted).
    Gzip,
    /// lz4 frame.
    Lz4,
    /// zstd frame.
    Zstd,
    /// bzip2.
    Bzip2,
    /// A PostgreSQL WAL page.
    WalPage,
    /// A PostgreSQL heap/index page.
    DataPage,
    /// Zero bytes.
    Zeros,
    /// Printable text.
    Text,
    /// Empty object.
    Empty,
    /// Anything else (not recognised as encrypted).
    Unknown,
}

impl Content {
    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            Content::Encrypted => "encrypted (Salted__ header)",
            Content::PlainIni => "a plaintext pgBackRest INI file",
            Content::Gzip => "gzip data (compressed, not encrypted)",
            Content::Lz4 => "lz4 data (compressed, not encrypted)",
            Content::Zstd => "zstd data (compressed, not encrypted)",
            Content::Bzip2 => "bzip2 data (compressed, not encrypted)",
            Content::WalPage => "a PostgreSQL WAL page",
            Content::DataPage => "a PostgreSQL data page",
            Content::Zeros => "zero bytes",
            Content::Text => "plaintext",
            Content::Empty => "nothing (empty object)",
            Content::Unknown => "no encryption header",
        }
    }
}

/// Recognise the start of an object.
pub fn sniff(head: &[u8]) -> Content {
    let u16le = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    if head.is_empty() {
        return Content::Empty;
    }
    if head.starts_with(b"Salted__") {
        return Content::Encrypted;
    }
    if head.starts_with(b"[backrest]") {
        return Content::PlainIni;
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Content::Gzip;
    }
    if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        return Content::Lz4;
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Content::Zstd;
    }
    if head.starts_with(b"BZh") {
        return Content::Bzip2;
    }
    // XLogPageHeaderData: xlp_magic (0xD0xx/0xD1xx for 9.x..17), xlp_info (low flag bits).
    if head.len() >= 4 && (0xD000..=0xD1FF).contains(&u16le(0)) && u16le(2) & !0x000F == 0 {
        return Content::WalPage;
    }
    // PageHeaderData: pd_lower <= pd_upper <= pd_special <= 8192, pd_pagesize_version 8192|4.
    if head.len() >= 20 {
        let (lower, upper, special, version) = (u16le(12), u16le(14), u16le(16), u16le(18));
        if version == 0x2004 && lower <= upper && upper <= special && special <= 8192 {
            return Content::DataPage;
        }
    }
    if head.iter().take(16).all(|b| *b == 0) {
        return Content::Zeros;
    }
    if head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        return Content::Text;
    }
    Content::Unknown
}

/// Why a sample of a file (its first bytes, up to 64 KiB) does not look encrypted, or `None`
/// when it does: an OpenSSL `Salted__` header, or bytes as random as ciphertext (Shannon entropy
/// within half a bit of what uniform random bytes of that length give). Used to refuse shipping
/// plaintext offsite.
pub fn plaintext_reason(sample: &[u8]) -> Option<String> {
    match sniff(sample) {
        Content::Encrypted => return None,
        Content::Unknown => {}
        other => return Some(format!("it starts with {}", other.describe())),
    }
    if sample.len() < 64 {
        return Some(format!(
            "{} bytes are too few to tell ciphertext from plaintext",
            sample.len()
        ));
    }
    let mut counts = [0u32; 256];
    for b in sample {
        counts[*b as usize] += 1;
    }
    let n = sample.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    // Expected entropy of n uniform bytes: about 8 - 255 / (2 n ln 2) bits per byte.
    let expected = (8.0 - 255.0 / (2.0 * n * std::f64::consts::LN_2)).max(0.0);
    (entropy < expected - 0.5).then(|| {
        format!("its bytes are not random enough for ciphertext ({entropy:.2} bits/byte, ciphertext gives about {expected:.2})")
    })
}

/// Whether `size` fits `Salted__` + 8-byte salt + AES-CBC blocks (PKCS#7: at least one block).
pub fn cipher_length_ok(size: u64) -> bool {
    size >= 32 && (size - 16).is_multiple_of(16)
}

/// A WAL segment name (`TTTTTTTTXXXXXXXXYYYYYYYY`) as (timeline, linear segment number).
pub fn parse_segment(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    if seg >= per_log {
        return None;
    }
    Some((tli, log * per_log + seg))
}

/// The name of segment `n` on timeline `tli`.
pub fn segment_name(tli: u32, n: u64, segment_size: u64) -> String {
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    format!("{tli:08X}{:08X}{:08X}", n / per_log, n % per_log)
}

/// The kind of a backup from its label (`F`, `D`, `I` suffix).
pub fn label_kind(label: &str) -> Option<&'static str> {
    let valid_stamp = |s: &str| {
        s.len() == 15
            && s.as_bytes()[8] == b'-'
            && s.bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit())
    };
    let (base, rest) = match label.split_once('_') {
        Some((b, r)) => (b, Some(r)),
        None => (label, None),
    };
    let full = base.strip_suffix('F').filter(|s| valid_stamp(s))?;
    let _ = full;
    match rest {
        None => Some("full"),
        Some(r) => match (r.strip_suffix('D'), r.strip_suffix('I')) {
            (Some(s), _) if valid_stamp(s) => Some("diff"),
            (_, Some(s)) if valid_stamp(s) => Some("incr"),
            _ => None,
        },
    }
}

/// A WAL object's archive id, segment name (`None` for history and other files) and key.
fn wal_segment_of(rest: &str) -> Option<(&str, &str)> {
    // <archive-id>/<16 hex>/<24 hex>-<40 hex>[.ext]
    let mut parts = rest.splitn(3, '/');
    let id = parts.next()?;
    let dir = parts.next()?;
    let file = parts.next()?;
    if dir.len() != 16 || file.len() < 24 + 1 + 40 || file.as_bytes()[24] != b'-' {
        return None;
    }
    let seg = &file[..24];
    (seg.starts_with(dir) && file[25..65].bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((id, seg))
}

/// The objects whose first [`HEAD_BYTES`] the encryption check needs: every info and manifest
/// file, and `opts.sample` others spread evenly over the listing.
pub fn sample_keys(listing: &[ObjectInfo], opts: &VerifyOptions) -> Vec<String> {
    let is_meta = |k: &str| {
        k.ends_with("/backup.info")
            || k.ends_with("/backup.info.copy")
            || k.ends_with("/archive.info")
            || k.ends_with("/archive.info.copy")
            || k.ends_with("/backup.manifest")
            || k.ends_with("/backup.manifest.copy")
    };
    let mut keys: Vec<String> = listing
        .iter()
        .filter(|o| is_meta(&o.key))
        .map(|o| o.key.clone())
        .collect();
    let others: Vec<&ObjectInfo> = listing
        .iter()
        .filter(|o| !is_meta(&o.key) && o.size > 0)
        .collect();
    let n = opts.sample.min(others.len());
    for i in 0..n {
        // Evenly spread, deterministic: the same objects each run unless the listing changed.
        let idx = if n == others.len() {
            i
        } else {
            i * others.len() / n
        };
        keys.push(others[idx].key.clone());
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Verify the repository under `prefix` (e.g. `pgbackrest/`) from its listing, pgBackRest's
/// output (when given) and the sampled heads (`key -> first bytes`).
pub fn check(
    prefix: &str,
    listing: &[ObjectInfo],
    info: Option<&[Stanza]>,
    heads: &BTreeMap<String, Vec<u8>>,
    opts: &VerifyOptions,
) -> Findings {
    let mut f = Findings {
        sampled: heads.len(),
        ..Findings::default()
    };
    let by_key: BTreeMap<&str, &ObjectInfo> = listing.iter().map(|o| (o.key.as_str(), o)).collect();

    // Stanzas: from the listing and from pgBackRest.
    let mut names: BTreeSet<String> = BTreeSet::new();
    for o in listing {
        let Some(rest) = o.key.strip_prefix(prefix) else {
            continue;
        };
        let mut it = rest.splitn(3, '/');
        if let (Some("backup" | "archive"), Some(s), Some(_)) = (it.next(), it.next(), it.next()) {
            names.insert(s.to_string());
        }
    }
    if let Some(info) = info {
        names.extend(info.iter().map(|s| s.name.clone()));
    }
    if let Some(only) = &opts.stanza {
        names.retain(|n| n == only);
        names.insert(only.clone());
    }
    if names.is_empty() {
        f.problems.push(Problem {
            key: prefix.into(),
            kind: ProblemKind::NoRepository,
            problem: format!("no pgBackRest repository under {prefix:?} (no backup/<stanza>/ or archive/<stanza>/ objects)"),
        });
    }

    for name in &names {
        let stanza_info = info.and_then(|i| i.iter().find(|s| &s.name == name));
        let report = check_stanza(
            prefix,
            name,
            listing,
            &by_key,
            stanza_info,
            heads,
            opts,
            &mut f,
        );
        f.stanzas.push(report);
    }

    // Encryption of the sampled objects.
    if opts.expect_encrypted {
        for (key, head) in heads {
            let c = sniff(head);
            if c != Content::Encrypted {
                f.problems.push(Problem {
                    key: key.clone(),
                    kind: ProblemKind::NotEncrypted,
                    problem: format!("not encrypted: starts with {}", c.describe()),
                });
            }
        }
    }
    f.problems.sort();
    f.problems.dedup();
    f
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces are what a stanza check needs
fn check_stanza(
    prefix: &str,
    name: &str,
    listing: &[ObjectInfo],
    by_key: &BTreeMap<&str, &ObjectInfo>,
    info: Option<&Stanza>,
    _heads: &BTreeMap<String, Vec<u8>>,
    opts: &VerifyOptions,
    f: &mut Findings,
) -> StanzaReport {
    let backup_dir = format!("{prefix}backup/{name}/");
    let archive_dir = format!("{prefix}archive/{name}/");
    let mut problem = |key: String, kind: ProblemKind, text: String| {
        f.problems.push(Problem {
            key,
            kind,
            problem: text,
        })
    };
    let mine: Vec<&ObjectInfo> = listing
        .iter()
        .filter(|o| o.key.starts_with(&backup_dir) || o.key.starts_with(&archive_dir))
        .collect();

    if let Some(s) = info {
        // The status of our repository; the stanza's own is an aggregate over all of them
        // ("different across repos" when repo1 and repo2 differ, which is normal).
        let status = s
            .repo
            .iter()
            .find(|r| r.key == opts.repo)
            .map(|r| &r.status)
            .unwrap_or(&s.status);
        if status.code != 0 {
            problem(
                format!("{backup_dir}backup.info"),
                ProblemKind::StanzaStatus,
                format!(
                    "pgBackRest reports status {} for stanza {name} in repo{}: {}",
                    status.code, opts.repo, status.message
                ),
            );
        }
    }

    // 1. The info files and their copies.
    for base in [
        format!("{backup_dir}backup.info"),
        format!("{archive_dir}archive.info"),
    ] {
        let copy = format!("{base}.copy");
        let (a, b) = (by_key.get(base.as_str()), by_key.get(copy.as_str()));
        for (key, o) in [(&base, a), (&copy, b)] {
            if o.is_none() {
                problem(
                    key.clone(),
                    ProblemKind::Missing,
                    "missing: pgBackRest cannot use this repository without it (and its copy)"
                        .into(),
                );
            }
        }
        if let (Some(a), Some(b)) = (a, b)
            && a.size != b.size
        {
            problem(
                copy.clone(),
                ProblemKind::CopyMismatch,
                format!(
                    "{} bytes, but the original has {} (one of them was altered or truncated)",
                    b.size, a.size
                ),
            );
        }
    }

    // 2. Backups.
    let mut listed: BTreeMap<String, Vec<&ObjectInfo>> = BTreeMap::new();
    for o in &mine {
        let Some(rest) = o.key.strip_prefix(&backup_dir) else {
            continue;
        };
        if let Some((label, _)) = rest.split_once('/')
            && label_kind(label).is_some()
        {
            listed.entry(label.to_string()).or_default().push(o);
        }
    }
    let known: Option<Vec<&crate::pgbackrest_info::Backup>> =
        info.map(|s| s.backups_in(opts.repo).collect());
    let mut labels: BTreeSet<String> = listed.keys().cloned().collect();
    if let Some(k) = &known {
        labels.extend(k.iter().map(|b| b.label.clone()));
    }
    let mut backups = Vec::new();
    for label in &labels {
        let dir = format!("{backup_dir}{label}/");
        let objs = listed.get(label).cloned().unwrap_or_default();
        let json = known
            .as_ref()
            .and_then(|k| k.iter().find(|b| &b.label == label).copied());
        let manifest = format!("{dir}backup.manifest");
        let manifest_copy = format!("{manifest}.copy");
        let files: Vec<&&ObjectInfo> = objs
            .iter()
            .filter(|o| o.key != manifest && o.key != manifest_copy)
            .collect();
        let bytes: u64 = files.iter().map(|o| o.size).sum();
        if objs.is_empty() {
            problem(
                dir.clone(),
                ProblemKind::Missing,
                format!("backup {label} is listed by pgBackRest but has no objects in the bucket"),
            );
        } else {
            let (m, mc) = (
                by_key.get(manifest.as_str()),
                by_key.get(manifest_copy.as_str()),
            );
            if m.is_none() {
                problem(
                    manifest.clone(),
                    ProblemKind::Missing,
                    format!("missing: backup {label} cannot be restored without its manifest"),
                );
            }
            if mc.is_none() {
                problem(
                    manifest_copy.clone(),
                    ProblemKind::Missing,
                    format!("missing: the copy of backup {label}'s manifest"),
                );
            }
            if let (Some(a), Some(b)) = (m, mc)
                && a.size != b.size
            {
                problem(
                    manifest_copy.clone(),
                    ProblemKind::CopyMismatch,
                    format!("{} bytes, but backup.manifest has {}", b.size, a.size),
                );
            }
            if files.is_empty() {
                problem(
                    dir.clone(),
                    ProblemKind::Empty,
                    format!("backup {label} has a manifest but no files"),
                );
            }
        }
        if let Some(b) = json {
            if !objs.is_empty() && bytes != b.info.repository.delta {
                problem(
                    dir.clone(),
                    ProblemKind::SizeMismatch,
                    format!(
                        "backup {label} holds {bytes} bytes in {} files, pgBackRest recorded {} (a file is missing, truncated or altered)",
                        files.len(),
                        b.info.repository.delta
                    ),
                );
            }
            for r in b.reference.iter().flatten() {
                if !listed.contains_key(r) {
                    problem(
                        format!("{backup_dir}{r}/"),
                        ProblemKind::Missing,
                        format!("backup {r}, which {label} depends on, is not in the bucket"),
                    );
                }
            }
        } else if known.is_some() && !objs.is_empty() {
            f.warnings.push(format!("{dir}: not in pgBackRest's backup list (a backup in progress, or left over by an interrupted one)"));
        }
        backups.push(BackupReport {
            label: label.clone(),
            kind: label_kind(label).unwrap_or("unknown").into(),
            objects: objs.len(),
            bytes,
            expected_bytes: json.map(|b| b.info.repository.delta),
            in_backup_info: known.as_ref().map(|_| json.is_some()),
        });
    }

    // 3. WAL.
    let mut segs: BTreeMap<(String, u32), BTreeMap<u64, u64>> = BTreeMap::new();
    let mut histories: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut names_present: BTreeSet<(String, String)> = BTreeSet::new();
    for o in &mine {
        let Some(rest) = o.key.strip_prefix(&archive_dir) else {
            continue;
        };
        if let Some((id, seg)) = wal_segment_of(rest) {
            if let Some((tli, n)) = parse_segment(seg, opts.wal_segment_size) {
                let e = segs.entry((id.to_string(), tli)).or_default();
                if e.insert(n, o.size).is_some() {
                    f.warnings.push(format!(
                        "{}: segment {seg} is archived more than once",
                        o.key
                    ));
                }
                names_present.insert((id.to_string(), seg.to_string()));
            }
        } else if let Some((id, file)) = rest.split_once('/')
            && let Some(t) = file.strip_suffix(".history")
            && let Ok(tli) = u32::from_str_radix(t, 16)
        {
            histories.insert((id.to_string(), tli));
        }
    }
    let mut wal = Vec::new();
    let seg_key = |id: &str, seg: &str| format!("{archive_dir}{id}/{}/{seg}", &seg[..16]);
    for ((id, tli), present) in &segs {
        let (Some((&first, _)), Some((&last, _))) =
            (present.first_key_value(), present.last_key_value())
        else {
            continue;
        };
        let mut prev = first;
        for &n in present.keys().skip(1) {
            if n > prev + 1 {
                let (a, b) = (prev + 1, n - 1);
                let missing = b - a + 1;
                let first_missing = segment_name(*tli, a, opts.wal_segment_size);
                problem(
                    seg_key(id, &first_missing),
                    ProblemKind::WalGap,
                    format!(
                        "WAL gap: {missing} segment(s) {}..{} missing between {} and {}",
                        first_missing,
                        segment_name(*tli, b, opts.wal_segment_size),
                        segment_name(*tli, prev, opts.wal_segment_size),
                        segment_name(*tli, n, opts.wal_segment_size),
                    ),
                );
            }
            prev = n;
        }
        if *tli > 1 && !histories.contains(&(id.clone(), *tli)) {
            let key = format!("{archive_dir}{id}/{tli:08X}.history");
            problem(
                key,
                ProblemKind::Missing,
                format!("missing: the history file of timeline {tli}"),
            );
        }
        wal.push(WalRange {
            archive_id: id.clone(),
            timeline: *tli,
            first: segment_name(*tli, first, opts.wal_segment_size),
            last: segment_name(*tli, last, opts.wal_segment_size),
            segments: present.len(),
            bytes: present.values().sum(),
        });
    }
    if !labels.is_empty() && segs.is_empty() {
        problem(
            archive_dir.clone(),
            ProblemKind::Missing,
            "no WAL segments archived: the backups cannot be made consistent".into(),
        );
    }
    if let Some(s) = info {
        // The WAL each backup needs, and the range pgBackRest believes it has.
        let db_version = |db_id: u32| {
            s.db.iter()
                .find(|d| d.id == db_id)
                .map(|d| format!("{}-{}", d.version, d.id))
        };
        for b in s.backups_in(opts.repo) {
            let Some(id) = db_version(b.database.id) else {
                continue;
            };
            for seg in [&b.archive.start, &b.archive.stop].into_iter().flatten() {
                if seg.len() == 24 && !names_present.contains(&(id.clone(), seg.clone())) {
                    problem(
                        seg_key(&id, seg),
                        ProblemKind::Missing,
                        format!("missing: WAL segment {seg} needed by backup {}", b.label),
                    );
                }
            }
        }
        for a in s.archives_in(opts.repo) {
            for seg in [&a.min, &a.max].into_iter().flatten() {
                if seg.len() == 24 && !names_present.contains(&(a.id.clone(), seg.clone())) {
                    problem(
                        seg_key(&a.id, seg),
                        ProblemKind::Missing,
                        format!(
                            "missing: WAL segment {seg}, which pgBackRest lists as the archive's {}",
                            if Some(seg) == a.min.as_ref() {
                                "first"
                            } else {
                                "last"
                            }
                        ),
                    );
                }
            }
        }
        if opts.expect_encrypted {
            let cipher = s.cipher_of(opts.repo);
            if cipher == "none" {
                problem(
                    format!("{backup_dir}backup.info"),
                    ProblemKind::NotEncrypted,
                    format!(
                        "pgBackRest reports repo{} of stanza {name} as not encrypted (cipher none)",
                        opts.repo
                    ),
                );
            }
        }
    }

    // 4. Encryption layout of every object of the stanza.
    if opts.expect_encrypted {
        for o in &mine {
            if !cipher_length_ok(o.size) {
                problem(
                    o.key.clone(),
                    ProblemKind::BadCipherLength,
                    format!(
                        "{} bytes: not the size of an encrypted object (16-byte header + whole AES blocks); truncated, altered or not encrypted",
                        o.size
                    ),
                );
            }
        }
    }

    StanzaReport {
        name: name.into(),
        backups,
        wal,
        objects: mine.len(),
        bytes: mine.iter().map(|o| o.size).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "pgbackrest/";
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn obj(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: format!("{P}{key}"),
            size,
            last_modified: None,
            etag: None,
        }
    }

    fn wal(seg: &str) -> ObjectInfo {
        obj(&format!("archive/t/15-1/{}/{seg}-{SHA}.gz", &seg[..16]), 48)
    }

    /// A healthy repository: info files, one full backup, WAL 1..=3.
    fn healthy() -> Vec<ObjectInfo> {
        vec![
            obj("archive/t/archive.info", 272),
            obj("archive/t/archive.info.copy", 272),
            wal("000000010000000000000001"),
            wal("000000010000000000000002"),
            wal("000000010000000000000003"),
            obj("backup/t/backup.info", 1040),
            obj("backup/t/backup.info.copy", 1040),
            obj("backup/t/20240101-020000F/backup.manifest", 4000),
            obj("backup/t/20240101-020000F/backup.manifest.copy", 4000),
            obj("backup/t/20240101-020000F/pg_data/PG_VERSION.gz", 48),
            obj("backup/t/20240101-020000F/pg_data/base/1/1259.gz", 4096),
        ]
    }

    fn info(delta: u64) -> Vec<Stanza> {
        crate::pgbackrest_info::parse(&format!(
            r#"[{{"name":"t","cipher":"aes-256-cbc","status":{{"code":0,"message":"ok"}},
            "db":[{{"id":1,"version":"15","repo-key":2}}],
            "archive":[{{"id":"15-1","min":"000000010000000000000001","max":"000000010000000000000003","database":{{"id":1,"repo-key":2}}}}],
            "backup":[{{"label":"20240101-020000F","type":"full","archive":{{"start":"000000010000000000000002","stop":"000000010000000000000002"}},
              "database":{{"id":1,"repo-key":2}},"info":{{"repository":{{"size":{delta},"delta":{delta}}}}}}}]}}]"#
        ))
        .unwrap()
    }

    fn heads_all_encrypted(listing: &[ObjectInfo]) -> BTreeMap<String, Vec<u8>> {
        sample_keys(listing, &VerifyOptions::default())
            .into_iter()
            .map(|k| (k, b"Salted__12345678".to_vec()))
            .collect()
    }

    /// Run the check and compare (kind, key without prefix) of every problem.
    fn check_problems(
        listing: Vec<ObjectInfo>,
        info: Option<&[Stanza]>,
        expect: &[(ProblemKind, &str)],
    ) {
        let heads = heads_all_encrypted(&listing);
        let f = check(P, &listing, info, &heads, &VerifyOptions::default());
        let got: Vec<(ProblemKind, String)> = f
            .problems
            .iter()
            .map(|p| (p.kind, p.key.strip_prefix(P).unwrap_or(&p.key).to_string()))
            .collect();
        let want: Vec<(ProblemKind, String)> =
            expect.iter().map(|(k, s)| (*k, s.to_string())).collect();
        assert_eq!(got, want, "{:#?}", f.problems);
    }

    #[test]
    fn healthy_repository_passes() {
        check_problems(healthy(), None, &[]);
        check_problems(healthy(), Some(&info(4144)), &[]);
    }

    #[test]
    fn missing_and_altered_objects_are_named() {
        let without = |key: &str| {
            healthy()
                .into_iter()
                .filter(|o| o.key != format!("{P}{key}"))
                .collect::<Vec<_>>()
        };
        check_problems(
            without("backup/t/backup.info.copy"),
            None,
            &[(ProblemKind::Missing, "backup/t/backup.info.copy")],
        );
        check_problems(
            without("archive/t/archive.info"),
            None,
            &[(ProblemKind::Missing, "archive/t/archive.info")],
        );
        check_problems(
            without("backup/t/20240101-020000F/backup.manifest"),
            None,
            &[(
                ProblemKind::Missing,
                "backup/t/20240101-020000F/backup.manifest",
            )],
        );
        // A data file gone: only pgBackRest's recorded size can tell.
        check_problems(
            without("backup/t/20240101-020000F/pg_data/base/1/1259.gz"),
            None,
            &[],
        );
        check_problems(
            without("backup/t/20240101-020000F/pg_data/base/1/1259.gz"),
            Some(&info(4144)),
            &[(ProblemKind::SizeMismatch, "backup/t/20240101-020000F/")],
        );
        // A WAL segment in the middle: a gap naming the missing segment.
        check_problems(
            without(&format!(
                "archive/t/15-1/0000000100000000/000000010000000000000002-{SHA}.gz"
            )),
            None,
            &[(
                ProblemKind::WalGap,
                "archive/t/15-1/0000000100000000/000000010000000000000002",
            )],
        );
        // The last WAL segment: no gap, but pgBackRest lists it as the archive's last.
        check_problems(
            without(&format!(
                "archive/t/15-1/0000000100000000/000000010000000000000003-{SHA}.gz"
            )),
            Some(&info(4144)),
            &[(
                ProblemKind::Missing,
                "archive/t/15-1/0000000100000000/000000010000000000000003",
            )],
        );
        // Truncated: the size no longer fits the cipher layout; and the copy differs.
        let mut l = healthy();
        l[6].size = 1000;
        check_problems(
            l,
            None,
            &[
                (ProblemKind::CopyMismatch, "backup/t/backup.info.copy"),
                (ProblemKind::BadCipherLength, "backup/t/backup.info.copy"),
            ],
        );
        // A backup pgBackRest knows but the bucket lacks entirely.
        let l: Vec<_> = healthy()
            .into_iter()
            .filter(|o| !o.key.contains("20240101-020000F"))
            .collect();
        check_problems(
            l,
            Some(&info(4144)),
            &[(ProblemKind::Missing, "backup/t/20240101-020000F/")],
        );
        // Nothing at all.
        check_problems(vec![], None, &[(ProblemKind::NoRepository, "")]);
    }

    #[test]
    fn plaintext_is_named() {
        let listing = healthy();
        let mut heads = heads_all_encrypted(&listing);
        heads.insert(
            format!("{P}backup/t/backup.info"),
            b"[backrest]\nbackrest-format=5\n".to_vec(),
        );
        let f = check(P, &listing, None, &heads, &VerifyOptions::default());
        assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
        assert_eq!(f.problems[0].kind, ProblemKind::NotEncrypted);
        assert_eq!(f.problems[0].key, format!("{P}backup/t/backup.info"));
        assert!(
            f.problems[0].problem.contains("INI"),
            "{}",
            f.problems[0].problem
        );
    }

    #[test]
    fn sniffing() {
        let check = |head: &[u8], expect: Content| assert_eq!(sniff(head), expect, "{head:02x?}");
        check(b"Salted__abcdefgh", Content::Encrypted);
        check(b"[backrest]\n", Content::PlainIni);
        check(&[0x1f, 0x8b, 8, 0], Content::Gzip);
        check(&[0x04, 0x22, 0x4d, 0x18, 0], Content::Lz4);
        check(&[0x28, 0xb5, 0x2f, 0xfd], Content::Zstd);
        // PG 15 WAL long page header: magic 0xD110, info XLP_LONG_HEADER (2).
        check(&[0x10, 0xd1, 0x02, 0x00, 1, 0, 0, 0], Content::WalPage);
        // A heap page: lsn, checksum, flags, lower 40, upper 8000, special 8192, version 0x2004.
        let mut page = vec![0u8; 24];
        page[12..14].copy_from_slice(&40u16.to_le_bytes());
        page[14..16].copy_from_slice(&8000u16.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        page[18..20].copy_from_slice(&0x2004u16.to_le_bytes());
        page[0] = 1;
        check(&page, Content::DataPage);
        check(&[0u8; 32], Content::Zeros);
        check(b"host all all\n", Content::Text);
        check(&[], Content::Empty);
        check(&[0x9c, 0x01, 0xff, 0x7e], Content::Unknown);
    }

    #[test]
    fn plaintext_guard() {
        assert_eq!(plaintext_reason(b"Salted__12345678abc"), None);
        assert!(plaintext_reason(b"[global]\nrepo1-cipher-pass=x\n").is_some());
        assert!(plaintext_reason(&[0x1f, 0x8b, 8, 0, 0, 0]).is_some());
        let text = "host all all 0.0.0.0/0 scram-sha-256 # a comment that goes on\n".repeat(40);
        let mut binary_text = text.into_bytes();
        binary_text[0] = 0x01; // not printable: the entropy test, not the text test, refuses it
        assert!(plaintext_reason(&binary_text).unwrap().contains("random"));
        // A sample of a real ciphertext stand-in: high entropy passes.
        let mut h = sha2::Sha256::default();
        let mut ct = Vec::new();
        for i in 0..128u32 {
            use sha2::Digest;
            h.update(i.to_le_bytes());
            ct.extend_from_slice(&h.clone().finalize());
        }
        ct[0] = 0x9c; // not a known magic
        assert_eq!(plaintext_reason(&ct), None, "{:?}", plaintext_reason(&ct));
    }

    #[test]
    fn segments_and_labels() {
        let ss = 16 * 1024 * 1024;
        assert_eq!(parse_segment("000000010000000000000001", ss), Some((1, 1)));
        // Segment 0xFF of log 0 is followed by segment 0 of log 1 (256 segments per log).
        assert_eq!(
            parse_segment("0000000100000000000000FF", ss),
            Some((1, 255))
        );
        assert_eq!(
            parse_segment("000000020000000100000000", ss),
            Some((2, 256))
        );
        assert_eq!(parse_segment("000000010000000000000100", ss), None);
        assert_eq!(segment_name(1, 256, ss), "000000010000000100000000");
        // 1 GiB segments: 4 per log.
        assert_eq!(
            parse_segment("000000010000000100000003", 1 << 30),
            Some((1, 7))
        );
        assert_eq!(label_kind("20240101-020000F"), Some("full"));
        assert_eq!(
            label_kind("20240101-020000F_20240102-020000D"),
            Some("diff")
        );
        assert_eq!(
            label_kind("20240101-020000F_20240102-020000I"),
            Some("incr")
        );
        assert_eq!(label_kind("backup.history"), None);
        assert_eq!(label_kind("20240101-0200F"), None);
        assert!(cipher_length_ok(32));
        assert!(cipher_length_ok(48));
        assert!(!cipher_length_ok(16));
        assert!(!cipher_length_ok(47));
    }

    #[test]
    fn wal_gap_across_a_log_boundary() {
        let listing: Vec<_> = healthy()
            .into_iter()
            .filter(|o| !o.key.contains("/15-1/"))
            .chain([
                wal("0000000100000000000000FE"),
                wal("0000000100000000000000FF"),
                wal("000000010000000100000001"),
            ])
            .collect();
        check_problems(
            listing,
            None,
            &[(
                ProblemKind::WalGap,
                "archive/t/15-1/0000000100000001/000000010000000100000000",
            )],
        );
    }

    #[test]
    fn samples_are_deterministic_and_include_metadata() {
        let l = healthy();
        let opts = VerifyOptions {
            sample: 2,
            ..VerifyOptions::default()
        };
        let s = sample_keys(&l, &opts);
        assert_eq!(s, sample_keys(&l, &opts));
        // 6 info/manifest files + 2 others.
        assert_eq!(s.len(), 8);
        assert!(s.iter().any(|k| k.ends_with("archive.info.copy")));
    }
}

/// A sampled object: its key and first bytes.
type Sampled = (String, Vec<u8>);

/// The result of [`crate::Offsite::verify_repo`]: the JSON of `costplus-offsite verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// No problems.
    pub ok: bool,
    /// The endpoint.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The repository prefix in the bucket.
    pub repo_prefix: String,
    /// Whether pgBackRest's own view (`info --output=json`) was compared.
    pub compared_with_pgbackrest: bool,
    /// Objects under the prefix.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Objects whose first bytes were examined.
    pub sampled: usize,
    /// Bucket versioning.
    pub versioning: crate::FeatureState,
    /// Bucket object lock.
    pub object_lock: crate::FeatureState,
    /// Object lock's default retention.
    pub default_retention: Option<String>,
    /// Per stanza.
    pub stanzas: Vec<StanzaReport>,
    /// Problems, each naming the object.
    pub problems: Vec<Problem>,
    /// Things to know.
    pub warnings: Vec<String>,
}

impl crate::Offsite {
    /// Verify the pgBackRest repository under `repo_path` (e.g. `/pgbackrest`): list it, read
    /// the bucket's protection settings and the first bytes of sampled objects, and [`check`].
    pub async fn verify_repo(
        &self,
        repo_path: &str,
        info: Option<&[Stanza]>,
        opts: &VerifyOptions,
    ) -> crate::Result<VerifyReport> {
        use futures_util::StreamExt as _;
        let prefix = crate::config::key_prefix(repo_path);
        let listing = self.list(&prefix).await?;
        let protection = self.protection().await?;
        let keys = sample_keys(&listing, opts);
        let fetched: Vec<crate::Result<Option<Sampled>>> = futures_util::stream::iter(keys)
            .map(|key| async move {
                match self.read_head(&key, HEAD_BYTES).await {
                    Ok(head) => Ok(Some((key, head))),
                    // Deleted between the listing and now (expire running): not a finding.
                    Err(crate::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;
        let mut heads = BTreeMap::new();
        for r in fetched {
            if let Some((k, h)) = r? {
                heads.insert(k, h);
            }
        }
        let mut f = check(&prefix, &listing, info, &heads, opts);
        for (what, state) in [
            ("versioning", protection.versioning),
            ("object lock", protection.object_lock),
        ] {
            if state != crate::FeatureState::Enabled {
                f.warnings.push(format!(
                    "bucket {what} is {}: a compromised host with these keys can delete the offsite copies",
                    state.as_str()
                ));
            }
        }
        f.warnings.extend(protection.notes.iter().cloned());
        Ok(VerifyReport {
            ok: f.problems.is_empty(),
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            repo_prefix: prefix,
            compared_with_pgbackrest: info.is_some(),
            objects: listing.len(),
            bytes: listing.iter().map(|o| o.size).sum(),
            sampled: f.sampled,
            versioning: protection.versioning,
            object_lock: protection.object_lock,
            default_retention: protection.default_retention,
            stanzas: f.stanzas,
            problems: f.problems,
            warnings: f.warnings,
        })
    }
}
