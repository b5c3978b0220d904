//! The region container shared by the manifest file and the record files (pure: bytes in,
//! bytes out).
//!
//! ```text
//! prologue  magic (8) | version (u16 BE) | region count (u8) | 0 (u8)
//!           | region lengths (u32 BE each) | check (4)
//! regions   body (length bytes) | check (4)        one after the other, nothing after the last
//! ```
//!
//! A `check` is the first 4 bytes of SHA-256 over a domain label and the bytes it covers
//! (`"costplus-vault prologue"` + the prologue, or the region name + `0x00` + the body). Checks
//! catch accidental damage and say *where* it is; they are not security: authenticity comes from
//! the MACs and AEAD tags inside the regions.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The format version this program writes and reads.
pub const VERSION: u16 = 1;

/// Largest region we accept (64 MiB): a damaged length cannot make us allocate more.
const MAX_REGION: u32 = 64 << 20;

/// A kind of file: its magic and its regions, in order.
#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    /// The first 8 bytes.
    pub magic: &'static [u8; 8],
    /// What to call it in messages.
    pub what: &'static str,
    /// Region names in file order.
    pub regions: &'static [&'static str],
}

/// The manifest file (`<vault>/manifest`).
pub const MANIFEST_FILE: FileKind = FileKind {
    magic: b"CPVAULT\x01",
    what: "vault manifest",
    regions: &["header", "header mac", "manifest"],
};

/// A record file (`<vault>/records/*.rec`, `<vault>/archive/*.rec`).
pub const RECORD_FILE: FileKind = FileKind {
    magic: b"CPVREC\x00\x01",
    what: "vault record",
    regions: &[
        "header",
        "wrapped key",
        "key commitment",
        "nonce",
        "ciphertext",
        "tag",
    ],
};

/// Where one region (or the prologue) lies in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpan {
    /// Region name (`"prologue"` for the prologue).
    pub name: &'static str,
    /// Offset of the first byte of the body.
    pub offset: usize,
    /// Length of the body (the 4-byte check follows it).
    pub len: usize,
}

fn check(label: &[u8], body: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(label);
    h.update([0u8]);
    h.update(body);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

const PROLOGUE_LABEL: &[u8] = b"costplus-vault prologue";

/// Encode `bodies` (one per region of `kind`, in order) into a file.
pub fn encode(kind: &FileKind, bodies: &[&[u8]]) -> Vec<u8> {
    debug_assert_eq!(bodies.len(), kind.regions.len());
    let total: usize = bodies.iter().map(|b| b.len() + 4).sum();
    let mut out = Vec::with_capacity(16 + 4 * bodies.len() + total);
    out.extend_from_slice(kind.magic);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(bodies.len() as u8);
    out.push(0);
    for b in bodies {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    }
    let c = check(PROLOGUE_LABEL, &out);
    out.extend_from_slice(&c);
    for (name, b) in kind.regions.iter().zip(bodies) {
        out.extend_from_slice(b);
        out.extend_from_slice(&check(name.as_bytes(), b));
    }
    out
}

/// Decode a file of `kind`: every region's body, in order, after checking magic, version,
/// lengths and checksums. `path` is used in errors only.
pub fn decode<'a>(kind: &FileKind, path: &Path, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    let spans = spans(kind, path, bytes)?;
    Ok(spans
        .iter()
        .skip(1)
        .map(|s| &bytes[s.offset..s.offset + s.len])
        .collect())
}

/// The layout of a file of `kind`: the prologue, then every region. Checks everything
/// [`decode`] checks. For diagnostics and the tamper tests.
pub fn spans(kind: &FileKind, path: &Path, bytes: &[u8]) -> Result<Vec<RegionSpan>> {
    let truncated = |region: &'static str, expected: usize| Error::Truncated {
        path: path.to_path_buf(),
        region,
        expected: expected as u64,
        found: bytes.len() as u64,
    };
    if bytes.is_empty() {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let magic_len = kind.magic.len();
    let head = &bytes[..bytes.len().min(magic_len)];
    if head != &kind.magic[..head.len()] {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            expected: kind.what,
        });
    }
    let n = kind.regions.len();
    let prologue_len = magic_len + 4 + 4 * n;
    if bytes.len() < magic_len + 2 {
        return Err(truncated("prologue", prologue_len + 4));
    }
    let version = u16::from_be_bytes([bytes[magic_len], bytes[magic_len + 1]]);
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    if bytes.len() < prologue_len + 4 {
        return Err(truncated("prologue", prologue_len + 4));
    }
    if check(PROLOGUE_LABEL, &bytes[..prologue_len]) != bytes[prologue_len..prologue_len + 4] {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            region: "prologue",
        });
    }
    let malformed = |message: String| Error::Malformed {
        path: path.to_path_buf(),
        region: "prologue",
        message,
    };
    if bytes[magic_len + 2] as usize != n || bytes[magic_len + 3] != 0 {
        return Err(malformed(format!(
            "{} regions (flags {}), expected {n}",
            bytes[magic_len + 2],
            bytes[magic_len + 3]
        )));
    }
    let mut out = vec![RegionSpan {
        name: "prologue",
        offset: 0,
        len: prologue_len,
    }];
    let mut off = prologue_len + 4;
    for (i, name) in kind.regions.iter().enumerate() {
        let at = magic_len + 4 + 4 * i;
        let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if len > MAX_REGION {
            return Err(malformed(format!("region `{name}` claims {len} bytes")));
        }
        let len = len as usize;
        let end = off + len + 4;
        if bytes.len() < end {
            return Err(truncated(name, end));
        }
        if check(name.as_bytes(), &bytes[off..off + len]) != bytes[off + len..end] {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                region: name,
            });
        }
        out.push(RegionSpan {
            name,
            offset: off,
            len,
        });
        off = end;
    }
    if off != bytes.len() {
        return Err(Error::Malformed {
            path: path.to_path_buf(),
            region: "end of file",
            message: format!(
                "{} unexpected bytes after the last region",
                bytes.len() - off
            ),
        });
    }
    Ok(out)
}

/// Recompute every checksum of a file of `kind` after a deliberate edit of its bodies, keeping
/// the edit. The checksums are not a security measure (anyone can recompute them); the tamper
/// tests use this to show that the cryptographic checks behind them still catch the edit.
pub fn danger_recompute_checksums(kind: &FileKind, bytes: &[u8]) -> Vec<u8> {
    let n = kind.regions.len();
    let magic_len = kind.magic.len();
    let prologue_len = magic_len + 4 + 4 * n;
    let mut bodies = Vec::with_capacity(n);
    let mut off = prologue_len + 4;
    for i in 0..n {
        let at = magic_len + 4 + 4 * i;
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        bodies.push(&bytes[off..off + len]);
        off += len + 4;
    }
    let mut out = encode(kind, &bodies);
    // Keep the version as found (a test may have set an unknown one on purpose).
    out[magic_len..magic_len + 2].copy_from_slice(&bytes[magic_len..magic_len + 2]);
    out
}

/// Replace the body of region `index` (0-based, prologue excluded) of a well-formed file and
/// recompute the checksums. For the tamper tests.
pub fn danger_replace_region(kind: &FileKind, bytes: &[u8], index: usize, body: &[u8]) -> Vec<u8> {
    let spans = spans(kind, Path::new("-"), bytes).unwrap_or_default();
    let mut bodies: Vec<&[u8]> = spans
        .iter()
        .skip(1)
        .map(|s| &bytes[s.offset..s.offset + s.len])
        .collect();
    if index < bodies.len() {
        bodies[index] = body;
    }
    encode(kind, &bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(&MANIFEST_FILE, &[b"head", b"mac", b"manifest body"])
    }

    #[test]
    fn roundtrip() {
        let bytes = sample();
        let bodies = decode(&MANIFEST_FILE, Path::new("f"), &bytes).unwrap();
        assert_eq!(
            bodies,
            vec![&b"head"[..], &b"mac"[..], &b"manifest body"[..]]
        );
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode(&MANIFEST_FILE, Path::new("f"), &b).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncation_names_the_region() {
        let bytes = sample();
        let spans = spans(&MANIFEST_FILE, Path::new("f"), &bytes).unwrap();
        // Truncating at the end of each region (before its check) or at its start.
        for w in spans.windows(2) {
            let cut = &bytes[..w[1].offset];
            match decode(&MANIFEST_FILE, Path::new("f"), cut) {
                Err(Error::Truncated { region, .. }) => assert_eq!(region, w[1].name),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            decode(&MANIFEST_FILE, Path::new("f"), &[]),
            Err(Error::EmptyFile { .. })
        ));
        assert!(matches!(
            decode(&MANIFEST_FILE, Path::new("f"), &bytes[..5]),
            Err(Error::Truncated {
                region: "prologue",
                ..
            })
        ));
    }

    #[test]
    fn version_and_magic() {
        let mut b = sample();
        b[9] = 2;
        assert!(matches!(
            decode(&MANIFEST_FILE, Path::new("f"), &b),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let b = sample();
        assert!(matches!(
            decode(&RECORD_FILE, Path::new("f"), &b),
            Err(Error::BadMagic { .. })
        ));
        let mut b = sample();
        b.push(0);
        assert!(matches!(
            decode(&MANIFEST_FILE, Path::new("f"), &b),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn recompute_keeps_edits() {
        let b = sample();
        let edited = danger_replace_region(&MANIFEST_FILE, &b, 0, b"HEAD");
        let bodies = decode(&MANIFEST_FILE, Path::new("f"), &edited).unwrap();
        assert_eq!(bodies[0], b"HEAD");
        let mut raw = b.clone();
        let s = spans(&MANIFEST_FILE, Path::new("f"), &b).unwrap();
        raw[s[1].offset] ^= 1;
        assert!(decode(&MANIFEST_FILE, Path::new("f"), &raw).is_err());
        let fixed = danger_recompute_checksums(&MANIFEST_FILE, &raw);
        assert_eq!(
            decode(&MANIFEST_FILE, Path::new("f"), &fixed).unwrap()[0],
            b"iead"
        );
    }
}
