//! The Wasabi/S3 offsite (issue 8; only the configuration section exists so far).
//!
//! ```
//! let cfg = costplus_s3::OffsiteConfig::wasabi("eu-central-1", "acme-backups");
//! assert_eq!(cfg.endpoint_url(), "https://s3.eu-central-1.wasabisys.com");
//! ```

use std::path::PathBuf;

/// Which kind of S3 service the offsite is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Provider {
    /// Wasabi: endpoint derived from the region, path style, 90-day minimum storage.
    #[default]
    Wasabi,
    /// Any S3-compatible endpoint (`endpoint` required).
    S3Compatible,
}

/// The `[offsite]` section of costplus.toml: the bucket that holds pgBackRest's repo2 and other
/// offsite copies.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsiteConfig {
    /// Wasabi or another S3-compatible service.
    #[serde(default)]
    pub provider: Provider,
    /// Region (`us-east-1`, `eu-central-1`, ...).
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint URL; derived from the region for Wasabi when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket (must exist).
    pub bucket: String,
    /// CA certificate to trust for the endpoint (self-hosted or test servers).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// AWS shared-credentials file (0600); absent: the standard AWS environment.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Path-style addressing (Wasabi recommends it; default true).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Prefix of pgBackRest's repo2 inside the bucket.
    #[serde(default = "default_repo_path")]
    pub repo_path: String,
    /// Price per TB-month in USD (default: Wasabi pay-as-you-go).
    #[serde(default = "default_price")]
    pub price_per_tb_month_usd: f64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_repo_path() -> String {
    "/pgbackrest".into()
}
fn default_price() -> f64 {
    6.99
}

impl OffsiteConfig {
    /// A Wasabi offsite in `region` with the defaults.
    pub fn wasabi(region: &str, bucket: &str) -> Self {
        Self {
            provider: Provider::Wasabi,
            region: region.into(),
            endpoint: None,
            bucket: bucket.into(),
            ca_file: None,
            credentials_file: None,
            path_style: true,
            repo_path: default_repo_path(),
            price_per_tb_month_usd: default_price(),
        }
    }

    /// The endpoint URL: explicit, or Wasabi's for the region.
    pub fn endpoint_url(&self) -> String {
        match (&self.endpoint, self.provider) {
            (Some(e), _) => e.clone(),
            (None, _) if self.region == "us-east-1" => "https://s3.wasabisys.com".into(),
            (None, _) => format!("https://s3.{}.wasabisys.com", self.region),
        }
    }
}
