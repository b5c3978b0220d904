//! S3 credentials: a small value callers fill from the vault, a 0600 shared-credentials file
//! or the standard AWS environment. Never from argv.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

/// An access key id and its secret (and an optional session token).
#[derive(Clone)]
pub struct Credentials {
    /// The access key id (not secret; shown in messages).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// A session token for temporary credentials.
    pub session_token: Option<SecretString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from their parts (for example, read from the vault).
    pub fn new(access_key_id: impl Into<String>, secret_access_key: SecretString) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token: None,
        }
    }

    /// Read profile `profile` (usually `default`) of an AWS shared-credentials file, which must
    /// be private to its owner (0600 or stricter).
    pub fn from_file(path: &Path, profile: &str) -> Result<Self> {
        let origin = || path.display().to_string();
        costplus_fs::check_private(path).map_err(|e| Error::Credentials {
            origin: origin(),
            message: e.to_string(),
        })?;
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Credentials {
                origin: origin(),
                message: e.to_string(),
            }
        })?);
        parse_shared_credentials(&text, profile).map_err(|message| Error::Credentials {
            origin: origin(),
            message,
        })
    }

    /// The standard AWS environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`; or, when those are absent, the file named by
    /// `AWS_SHARED_CREDENTIALS_FILE` with profile `AWS_PROFILE` (default `default`).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Credentials::from_env`] over any variable lookup (testable without touching the
    /// process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let origin = "the environment".to_string();
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(Self {
                access_key_id: id,
                secret_access_key: secret.into(),
                session_token: var("AWS_SESSION_TOKEN")
                    .filter(|t| !t.is_empty())
                    .map(SecretString::from),
            }),
            (Some(_), _) | (_, Some(_)) => Err(Error::Credentials {
                origin,
                message: "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            }),
            (None, None) => match var("AWS_SHARED_CREDENTIALS_FILE") {
                Some(file) => {
                    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
                    Self::from_file(Path::new(&file), &profile)
                }
                None => Err(Error::Credentials {
                    origin,
                    message: "no credentials: set offsite.credentials_file (a 0600 AWS credentials file) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                }),
            },
        }
    }

    /// The credentials for an `[offsite]` section: its `credentials_file` when set, else the
    /// environment.
    pub fn for_config(cfg: &crate::OffsiteConfig) -> Result<Self> {
        match &cfg.credentials_file {
            Some(file) => Self::from_file(file, "default"),
            None => Self::from_env(),
        }
    }

    pub(crate) fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret().to_string(),
            self.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            None,
            "costplus",
        )
    }
}

/// Parse an AWS shared-credentials (INI) text and return profile `profile`. Errors name the
/// line. Pure: no IO.
pub fn parse_shared_credentials(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut section: Option<String> = None;
    let mut id = None;
    let mut secret = None;
    let mut token = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: unterminated section header", n + 1))?
                .trim();
            // The config-file form `[profile x]` is accepted too.
            let name = name.strip_prefix("profile ").unwrap_or(name).trim();
            section = Some(name.to_string());
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        if section.as_deref() != Some(profile) {
            continue;
        }
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(SecretString::from(v)),
            "aws_session_token" => token = Some(SecretString::from(v)),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() => Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
        }),
        _ => Err(format!(
            "profile [{profile}] needs aws_access_key_id and aws_secret_access_key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles() {
        let text = "# comment\n[other]\naws_access_key_id = X\naws_secret_access_key = Y\n\n[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr=t\n";
        let c = parse_shared_credentials(text, "default").unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key.expose_secret(), "s3cr=t");
        let o = parse_shared_credentials(text, "other").unwrap();
        assert_eq!(o.access_key_id, "X");
        assert!(parse_shared_credentials(text, "nope").is_err());
        let err = parse_shared_credentials("[default]\nbroken\n", "default").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        // Debug never shows the secret.
        assert!(!format!("{c:?}").contains("s3cr"));
    }

    #[test]
    fn environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Credentials::from_vars(env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert!(c.session_token.is_none());
        let err = Credentials::from_vars(env(&[("AWS_ACCESS_KEY_ID", "AK")])).unwrap_err();
        assert!(err.to_string().contains("both"), "{err}");
        let err = Credentials::from_vars(env(&[])).unwrap_err();
        assert!(err.to_string().contains("credentials_file"), "{err}");
    }

    #[test]
    fn file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Credentials::from_file(&path, "default").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Credentials::from_file(&path, "default")
                .unwrap()
                .access_key_id,
            "A"
        );
    }
}
