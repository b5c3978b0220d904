//! Keys and primitives: random bytes, HKDF-SHA256 subkeys, AES-256-GCM, HMAC-SHA256, the key
//! commitment and Argon2id with calibration and caps.

use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A 256-bit key that is wiped when dropped.
pub(crate) type Key32 = Zeroizing<[u8; 32]>;

/// Length of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;

/// Fill a fresh array from the operating system's generator.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

/// A fresh random 256-bit key.
pub(crate) fn random_key() -> Result<Key32> {
    let mut k = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut k[..]).map_err(|e| Error::Random(e.to_string()))?;
    Ok(k)
}

/// HKDF-SHA256 (RFC 5869): a 32-byte subkey of `ikm` for `info`.
pub(crate) fn hkdf(ikm: &[u8], salt: &[u8], info: &str) -> Key32 {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = hk.expand(info.as_bytes(), &mut out[..]);
    out
}

/// HMAC-SHA256 of `parts` under `key`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two byte strings (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AES-256-GCM encryption in place; returns (nonce, tag). The nonce is random.
pub(crate) fn seal(
    key: &[u8; 32],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<([u8; NONCE_LEN], [u8; TAG_LEN])> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let cipher = Aes256Gcm::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), aad, buf.into())
        .map_err(|_| Error::Encode("AES-GCM refused the message length".into()))?;
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&tag);
    Ok((nonce, t))
}

/// AES-256-GCM decryption in place. On failure the buffer is wiped and must not be read.
#[must_use = "the buffer holds plaintext only when this returns true"]
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    let cipher = Aes256Gcm::new(key.into());
    let ok = cipher
        .decrypt_inout_detached(
            &Nonce::from(*nonce),
            aad,
            (&mut *buf).into(),
            &Tag::from(*tag),
        )
        .is_ok();
    if !ok {
        zeroize::Zeroize::zeroize(buf);
    }
    ok
}

/// The key-encryption key and its subkeys, all derived with HKDF from the root key (the key
/// file's key or the Argon2id output), with the vault id as salt.
#[derive(Clone)]
pub(crate) struct Keys {
    /// Wraps data keys (AES-256-GCM).
    pub wrap: Key32,
    /// Encrypts and authenticates the manifest (AES-256-GCM).
    pub manifest: Key32,
    /// Authenticates the header (HMAC-SHA256).
    pub header_mac: Key32,
    /// Stored in the header: tells a wrong key from a damaged file (not secret).
    pub check: [u8; 32],
}

impl Keys {
    pub(crate) fn derive(root: &[u8; 32], vault_id: &[u8; 16]) -> Self {
        Keys {
            wrap: hkdf(root, vault_id, "costplus-vault v1 wrap"),
            manifest: hkdf(root, vault_id, "costplus-vault v1 manifest"),
            header_mac: hkdf(root, vault_id, "costplus-vault v1 header mac"),
            check: *hkdf(root, vault_id, "costplus-vault v1 key check"),
        }
    }

    /// Subkeys of the archive key (wraps archived data keys only).
    pub(crate) fn derive_archive(root: &[u8; 32], vault_id: &[u8; 16]) -> (Key32, [u8; 32]) {
        (
            hkdf(root, vault_id, "costplus-vault v1 archive wrap"),
            *hkdf(root, vault_id, "costplus-vault v1 archive key check"),
        )
    }
}

/// Per-record keys derived from the random data key: the AES key and the commitment.
pub(crate) struct DataKeys {
    pub enc: Key32,
    pub commitment: [u8; 32],
}

impl DataKeys {
    pub(crate) fn derive(data_key: &[u8; 32]) -> Self {
        DataKeys {
            enc: hkdf(data_key, b"", "costplus-vault v1 record encryption"),
            commitment: *hkdf(data_key, b"", "costplus-vault v1 record commitment"),
        }
    }
}

/// Argon2id parameters, as stored in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// The most memory a header may ask for (1 GiB).
pub const MAX_KDF_MEMORY_KIB: u32 = 1 << 20;
/// The most passes a header may ask for.
pub const MAX_KDF_PASSES: u32 = 16;
/// The most lanes a header may ask for.
pub const MAX_KDF_LANES: u32 = 8;
/// The most work (memory in KiB x passes) a header may ask for: 4 GiB-passes, a few seconds.
pub const MAX_KDF_WORK: u64 = 4 << 20;

/// The time `init` aims the passphrase derivation at.
pub const DEFAULT_KDF_TARGET: Duration = Duration::from_millis(500);

impl KdfParams {
    /// Whether these parameters are within the caps.
    pub fn within_caps(&self) -> bool {
        self.m_cost_kib <= MAX_KDF_MEMORY_KIB
            && self.t_cost <= MAX_KDF_PASSES
            && self.p_cost <= MAX_KDF_LANES
            && u64::from(self.m_cost_kib) * u64::from(self.t_cost) <= MAX_KDF_WORK
    }

    /// The caps, in words.
    pub fn caps_text() -> String {
        format!(
            "at most {MAX_KDF_MEMORY_KIB} KiB, {MAX_KDF_PASSES} passes, {MAX_KDF_LANES} lanes and {MAX_KDF_WORK} KiB-passes"
        )
    }

    /// Fixed parameters (tests and fast machines); validated when used.
    pub const fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Self {
        KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        }
    }

    /// Parameters that take about `target` on this machine: 64 MiB (more, up to 256 MiB, on a
    /// fast machine), one lane, and as many passes as fit.
    pub fn calibrate(target: Duration) -> Result<Self> {
        let salt = [0u8; 16];
        let mut m = 64 * 1024;
        let start = Instant::now();
        derive_argon2(b"calibration", &salt, &KdfParams::new(m, 1, 1))?;
        let mut one_pass = start.elapsed().max(Duration::from_micros(100));
        while one_pass * 4 < target && m < 256 * 1024 {
            m *= 2;
            one_pass *= 2;
        }
        let t = (target.as_secs_f64() / one_pass.as_secs_f64()).round();
        let t = (t as u32).clamp(1, MAX_KDF_PASSES);
        Ok(KdfParams::new(m, t, 1))
    }
}

impl KdfParams {
    /// Run the derivation once with a dummy passphrase and report how long it took (for
    /// calibration reports and benchmarks; no key leaves this function).
    pub fn time_once(&self) -> Result<Duration> {
        let start = Instant::now();
        derive_argon2(b"timing", &[0u8; 16], self)?;
        Ok(start.elapsed())
    }
}

/// Argon2id (version 0x13) of `passphrase` with `salt`: the 32-byte root key.
pub(crate) fn derive_argon2(passphrase: &[u8], salt: &[u8], p: &KdfParams) -> Result<Key32> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::Passphrase(format!("invalid Argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| Error::Passphrase(format!("Argon2id failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_wipe_on_failure() {
        let key = [7u8; 32];
        let mut buf = b"hello".to_vec();
        let (nonce, tag) = seal(&key, b"aad", &mut buf).unwrap();
        assert_ne!(buf, b"hello");
        let mut ok = buf.clone();
        assert!(open(&key, &nonce, b"aad", &mut ok, &tag));
        assert_eq!(ok, b"hello");
        let mut bad = buf.clone();
        assert!(!open(&key, &nonce, b"other", &mut bad, &tag));
        assert!(bad.iter().all(|&b| b == 0), "the buffer was not wiped");
    }

    #[test]
    fn caps() {
        assert!(KdfParams::new(64 * 1024, 4, 1).within_caps());
        assert!(!KdfParams::new(MAX_KDF_MEMORY_KIB + 1, 1, 1).within_caps());
        assert!(!KdfParams::new(1024, MAX_KDF_PASSES + 1, 1).within_caps());
        assert!(!KdfParams::new(1024, 1, MAX_KDF_LANES + 1).within_caps());
        assert!(!KdfParams::new(MAX_KDF_MEMORY_KIB, MAX_KDF_PASSES, 1).within_caps());
    }

    #[test]
    fn hkdf_separates_purposes() {
        let k = Keys::derive(&[1; 32], &[2; 16]);
        assert_ne!(*k.wrap, *k.manifest);
        assert_ne!(*k.manifest, *k.header_mac);
        let other = Keys::derive(&[1; 32], &[3; 16]);
        assert_ne!(k.check, other.check, "the vault id must salt the keys");
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
