//! The secrets pgBackRest needs: one cipher passphrase per repository and the S3 keys of repo2.
//!
//! They come from a [`SecretSource`]. Until the credential vault holds them,
//! [`FileSecrets`] reads them from 0600 files: the passphrases from
//! `backup.repo1_cipher_pass_file` / `backup.repo2_cipher_pass_file`, the S3 keys from the
//! offsite's AWS shared-credentials file (`offsite.credentials_file`) or, without one, from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` of this process.

use std::path::Path;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::{BackupConfig, Error, Result};
use costplus_s3::OffsiteConfig;

/// Everything secret that goes into pgbackrest.conf.
pub struct RepoSecrets {
    /// repo1 (local) cipher passphrase.
    pub repo1_cipher_pass: SecretString,
    /// repo2 (offsite) cipher passphrase; `None` when there is no offsite.
    pub repo2_cipher_pass: Option<SecretString>,
    /// S3 access key id of repo2.
    pub s3_key: Option<SecretString>,
    /// S3 secret access key of repo2.
    pub s3_key_secret: Option<SecretString>,
}

impl std::fmt::Debug for RepoSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoSecrets").finish_non_exhaustive()
    }
}

/// Where the repository secrets come from (the vault, files, a test).
pub trait SecretSource {
    /// The secrets for this configuration (repo2's only when `offsite` is given).
    fn repo_secrets(
        &self,
        cfg: &BackupConfig,
        offsite: Option<&OffsiteConfig>,
    ) -> Result<RepoSecrets>;
}

/// Secrets read from 0600 files (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSecrets;

impl SecretSource for FileSecrets {
    fn repo_secrets(
        &self,
        cfg: &BackupConfig,
        offsite: Option<&OffsiteConfig>,
    ) -> Result<RepoSecrets> {
        let repo1 = cfg
            .repo1_cipher_pass_file
            .as_deref()
            .ok_or_else(|| Error::Secret {
                what: "repo1 cipher passphrase".into(),
                message: "backup.repo1_cipher_pass_file is not set".into(),
            })?;
        let repo1_cipher_pass = read_secret_file(repo1, "repo1 cipher passphrase")?;
        let (mut repo2_cipher_pass, mut s3_key, mut s3_key_secret) = (None, None, None);
        if let Some(off) = offsite {
            let repo2 = cfg
                .repo2_cipher_pass_file
                .as_deref()
                .ok_or_else(|| Error::Secret {
                    what: "repo2 cipher passphrase".into(),
                    message:
                        "an [offsite] is configured but backup.repo2_cipher_pass_file is not set"
                            .into(),
                })?;
            repo2_cipher_pass = Some(read_secret_file(repo2, "repo2 cipher passphrase")?);
            let (k, s) = match &off.credentials_file {
                Some(file) => {
                    costplus_fs::check_private(file)?;
                    let text = std::fs::read_to_string(file).map_err(crate::io_err(file))?;
                    parse_aws_credentials(&text, "default").ok_or_else(|| Error::Secret {
                        what: "S3 keys".into(),
                        message: format!(
                            "{}: no aws_access_key_id / aws_secret_access_key in [default]",
                            file.display()
                        ),
                    })?
                }
                None => {
                    let get = |v: &str| {
                        std::env::var(v).map_err(|_| Error::Secret {
                            what: "S3 keys".into(),
                            message: format!(
                                "offsite.credentials_file is not set and ${v} is missing"
                            ),
                        })
                    };
                    (
                        SecretString::from(get("AWS_ACCESS_KEY_ID")?),
                        SecretString::from(get("AWS_SECRET_ACCESS_KEY")?),
                    )
                }
            };
            s3_key = Some(k);
            s3_key_secret = Some(s);
        }
        Ok(RepoSecrets {
            repo1_cipher_pass,
            repo2_cipher_pass,
            s3_key,
            s3_key_secret,
        })
    }
}

/// Read a one-line secret from a file that must be private (0600, ours).
pub fn read_secret_file(path: &Path, what: &str) -> Result<SecretString> {
    costplus_fs::check_private(path)?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(crate::io_err(path))?);
    let value = text.trim();
    if value.is_empty() {
        return Err(Error::Secret {
            what: what.into(),
            message: format!("{} is empty", path.display()),
        });
    }
    check_passphrase_chars(value).map_err(|message| Error::Secret {
        what: what.into(),
        message: format!("{}: {message}", path.display()),
    })?;
    Ok(SecretString::from(value.to_string()))
}

fn check_passphrase_chars(v: &str) -> std::result::Result<(), String> {
    if v.chars().any(|c| c.is_control() || c == '#') {
        return Err(
            "contains a control character or '#', which pgbackrest.conf cannot hold".into(),
        );
    }
    Ok(())
}

/// A new cipher passphrase: 48 random bytes, base64 (64 characters).
pub fn generate_passphrase() -> Result<SecretString> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 48]);
    getrandom::fill(bytes.as_mut()).map_err(|e| Error::Secret {
        what: "new cipher passphrase".into(),
        message: format!("no randomness: {e}"),
    })?;
    Ok(SecretString::from(
        base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()),
    ))
}

/// Write a new passphrase to `path` (0600) unless the file exists already. Returns whether it
/// wrote one. A repository's passphrase must never change once it holds backups.
pub fn ensure_passphrase_file(path: &Path) -> Result<bool> {
    if path.exists() {
        costplus_fs::check_private(path)?;
        return Ok(false);
    }
    let pass = generate_passphrase()?;
    let mut text = zeroize::Zeroizing::new(pass.expose_secret().to_string());
    text.push('\n');
    costplus_fs::write_atomic(path, text.as_bytes(), &costplus_fs::WriteOptions::private())?;
    Ok(true)
}

/// The key id and secret of `profile` in an AWS shared-credentials file.
pub fn parse_aws_credentials(text: &str, profile: &str) -> Option<(SecretString, SecretString)> {
    let mut in_profile = false;
    let (mut key, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            in_profile = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => key = Some(SecretString::from(v.trim().to_string())),
                "aws_secret_access_key" => secret = Some(SecretString::from(v.trim().to_string())),
                _ => {}
            }
        }
    }
    Some((key?, secret?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_are_long_and_fresh() {
        let a = generate_passphrase().unwrap();
        let b = generate_passphrase().unwrap();
        assert_eq!(a.expose_secret().len(), 64);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn credentials_file() {
        let text = "[other]\naws_access_key_id = X\n[default]\naws_access_key_id = AK\naws_secret_access_key=SK \n";
        let (k, s) = parse_aws_credentials(text, "default").unwrap();
        assert_eq!((k.expose_secret(), s.expose_secret()), ("AK", "SK"));
        assert!(parse_aws_credentials("[default]\naws_access_key_id=A\n", "default").is_none());
    }

    #[test]
    fn passphrase_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        assert!(ensure_passphrase_file(&p).unwrap());
        assert!(!ensure_passphrase_file(&p).unwrap());
        let first = read_secret_file(&p, "x").unwrap();
        assert_eq!(first.expose_secret().len(), 64);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&p, "x").unwrap_err().to_string();
        assert!(e.contains("not private"), "{e}");
    }
}
