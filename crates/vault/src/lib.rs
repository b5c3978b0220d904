//! An encrypted, tamper-evident credential vault for customer passwords (issue 5; only the
//! configuration section exists so far).
//!
//! ```
//! let cfg: costplus_vault::VaultConfig = toml_like();
//! # fn toml_like() -> costplus_vault::VaultConfig {
//! #     costplus_vault::VaultConfig { dir: "/var/lib/costplus/vault".into(), key_file: Some("/etc/costplus/vault.key".into()), passphrase_file: None }
//! # }
//! assert!(cfg.key_file.is_some());
//! ```

use std::path::PathBuf;

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
