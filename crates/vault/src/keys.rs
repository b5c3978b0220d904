//! Where the key-encryption key comes from: a random key file, or a passphrase (read from a file
//! descriptor, a file or an environment variable; the TTY prompt lives in the CLI).
//!
//! A key file is text, mode 0600:
//!
//! ```text
//! # costplus vault key: keep it secret, keep a copy off this server
//! costplus-vault-key-v1:<32 random bytes, base64>
//! ```

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::crypto::{KdfParams, Key32, random_key};
use crate::error::{Error, Result, io};

const KEY_PREFIX: &str = "costplus-vault-key-v1:";

/// How the vault's key-encryption key is obtained.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A random key file (unattended runs).
    KeyFile(PathBuf),
    /// A passphrase, stretched with Argon2id.
    Passphrase(SecretString),
}

impl KeySource {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            KeySource::KeyFile(_) => "key file",
            KeySource::Passphrase(_) => "passphrase",
        }
    }
}

/// How `init` and `rotate-key` set up the new key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The source of the new key.
    pub source: KeySource,
    /// Argon2id parameters for a passphrase (`None`: calibrate to about half a second).
    pub kdf: Option<KdfParams>,
}

impl NewKey {
    /// A key file (created with a fresh random key when it does not exist).
    pub fn key_file(path: &Path) -> Self {
        NewKey {
            source: KeySource::KeyFile(path.to_path_buf()),
            kdf: None,
        }
    }
    /// A passphrase with calibrated Argon2id parameters.
    pub fn passphrase(p: SecretString) -> Self {
        NewKey {
            source: KeySource::Passphrase(p),
            kdf: None,
        }
    }
}

/// Read a file that holds a secret: it must be a regular file, not group/world accessible,
/// owned by us. Empty files are refused too.
pub(crate) fn read_private(path: &Path, what: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    read_private_md(path, what).map(|(b, _)| b)
}

/// [`read_private`], also returning the metadata of the very file read (one open, no race with
/// a rename in between).
pub(crate) fn read_private_md(
    path: &Path,
    what: &'static str,
) -> Result<(Zeroizing<Vec<u8>>, std::fs::Metadata)> {
    let mut f = std::fs::File::open(path).map_err(io("open", path))?;
    let md = f.metadata().map_err(io("stat", path))?;
    check_private_md(path, &md, what)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(md.len() as usize));
    f.read_to_end(&mut buf).map_err(io("read", path))?;
    if buf.is_empty() {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok((buf, md))
}

pub(crate) fn check_private_md(
    path: &Path,
    md: &std::fs::Metadata,
    what: &'static str,
) -> Result<()> {
    if !md.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Insecure {
            path: path.to_path_buf(),
            problem: format!(
                "the {what} has mode {mode:04o}, readable or writable by group or others; chmod 600 it (and rotate what it protects if others could read it)"
            ),
        });
    }
    let me = nix_uid();
    if md.uid() != me {
        return Err(Error::Insecure {
            path: path.to_path_buf(),
            problem: format!(
                "the {what} is owned by uid {}, not by uid {me} running this command",
                md.uid()
            ),
        });
    }
    Ok(())
}

pub(crate) fn nix_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Refuse a vault directory that others can enter or that someone else owns.
pub(crate) fn check_private_dir(dir: &Path) -> Result<()> {
    let md = std::fs::metadata(dir).map_err(io("stat", dir))?;
    if !md.is_dir() {
        return Err(Error::Io {
            action: "open vault directory",
            path: dir.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Insecure {
            path: dir.to_path_buf(),
            problem: format!("the vault directory has mode {mode:04o}; chmod 700 it"),
        });
    }
    let me = nix_uid();
    if md.uid() != me {
        return Err(Error::Insecure {
            path: dir.to_path_buf(),
            problem: format!(
                "the vault directory is owned by uid {}, not by uid {me} running this command",
                md.uid()
            ),
        });
    }
    Ok(())
}

/// Read the 32-byte key of a key file.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let bytes = read_private(path, "key file")?;
    let bad = |problem: &str| Error::KeyFile {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8 text"))?;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(b64) = line.strip_prefix(KEY_PREFIX) else {
            return Err(bad(&format!("expected a line `{KEY_PREFIX}<base64>`")));
        };
        if found.is_some() {
            return Err(bad("more than one key line"));
        }
        let raw = Zeroizing::new(
            STANDARD
                .decode(b64)
                .map_err(|_| bad("the key is not valid base64"))?,
        );
        if raw.len() != 32 {
            return Err(bad(&format!("the key has {} bytes, not 32", raw.len())));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&raw);
        found = Some(k);
    }
    found.ok_or_else(|| bad("no key line"))
}

/// Create a key file with a fresh random key (0600). Fails if the file exists.
pub fn create_key_file(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            problem: "exists already; refusing to overwrite a key".into(),
        });
    }
    let key = random_key()?;
    let text = Zeroizing::new(format!(
        "# costplus vault key: keep it secret, keep a copy off this server\n{KEY_PREFIX}{}\n",
        STANDARD.encode(&key[..])
    ));
    costplus_fs::write_atomic(path, text.as_bytes(), &costplus_fs::WriteOptions::private())?;
    Ok(())
}

/// The key file's key, creating the file first when it does not exist. Returns whether it
/// was created.
pub(crate) fn key_file_or_create(path: &Path) -> Result<(Key32, bool)> {
    let created = match path.symlink_metadata() {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_key_file(path)?;
            true
        }
        Err(e) => return Err(io("stat", path)(e)),
    };
    Ok((read_key_file(path)?, created))
}

fn passphrase_from_bytes(bytes: &[u8], from: &str) -> Result<SecretString> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::Passphrase(format!("the passphrase from {from} is not UTF-8")))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(Error::Passphrase(format!(
            "the passphrase from {from} is empty"
        )));
    }
    Ok(SecretString::from(text.to_string()))
}

/// Read a passphrase from an open file descriptor (e.g. `--passphrase-fd 3` with `3<file` or a
/// pipe), up to end of file; one trailing newline is dropped.
pub fn passphrase_from_fd(fd: i32) -> Result<SecretString> {
    let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let mut f = std::fs::File::open(&path)
        .map_err(|e| Error::Passphrase(format!("file descriptor {fd} is not open: {e}")))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.read_to_end(&mut buf)
        .map_err(|e| Error::Passphrase(format!("reading file descriptor {fd}: {e}")))?;
    passphrase_from_bytes(&buf, &format!("file descriptor {fd}"))
}

/// Read a passphrase from a private file (0600, ours); one trailing newline is dropped.
pub fn passphrase_from_file(path: &Path) -> Result<SecretString> {
    let buf = read_private(path, "passphrase file")?;
    passphrase_from_bytes(&buf, &path.display().to_string())
}

/// Read a passphrase from an environment variable (the last resort: the environment leaks to
/// child processes and `/proc`). `None` when it is unset.
pub fn passphrase_from_env(var: &str) -> Result<Option<SecretString>> {
    match std::env::var_os(var) {
        None => Ok(None),
        Some(v) => {
            let v = Zeroizing::new(v.into_encoded_bytes());
            passphrase_from_bytes(&v, &format!("${var}")).map(Some)
        }
    }
}

/// Check that a passphrase is usable as a new passphrase (at least 8 characters).
pub fn check_new_passphrase(p: &SecretString) -> Result<()> {
    if p.expose_secret().chars().count() < 8 {
        return Err(Error::Passphrase(
            "a new passphrase needs at least 8 characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_roundtrip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let (k1, created) = key_file_or_create(&p).unwrap();
        assert!(created);
        let (k2, created) = key_file_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(*k1, *k2);
        assert!(create_key_file(&p).is_err(), "must not overwrite a key");

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(read_key_file(&p), Err(Error::Insecure { .. })));

        let bad = dir.path().join("bad");
        costplus_fs::write_atomic(&bad, b"hello\n", &costplus_fs::WriteOptions::private()).unwrap();
        assert!(matches!(read_key_file(&bad), Err(Error::KeyFile { .. })));
        assert!(matches!(
            read_key_file(dir.path()),
            Err(Error::NotAFile { .. })
        ));
        let empty = dir.path().join("empty");
        costplus_fs::write_atomic(&empty, b"", &costplus_fs::WriteOptions::private()).unwrap();
        assert!(matches!(
            read_key_file(&empty),
            Err(Error::EmptyFile { .. })
        ));
    }

    #[test]
    fn passphrases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pp");
        costplus_fs::write_atomic(
            &p,
            b"correct horse\n",
            &costplus_fs::WriteOptions::private(),
        )
        .unwrap();
        assert_eq!(
            passphrase_from_file(&p).unwrap().expose_secret(),
            "correct horse"
        );
        let f = std::fs::File::open(&p).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        assert_eq!(
            passphrase_from_fd(fd).unwrap().expose_secret(),
            "correct horse"
        );
        assert!(passphrase_from_fd(987).is_err());
        assert!(check_new_passphrase(&"short".into()).is_err());
        assert!(
            passphrase_from_env("COSTPLUS_VAULT_TEST_UNSET_VAR")
                .unwrap()
                .is_none()
        );
    }
}
