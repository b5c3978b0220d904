//! The `[offsite]` section of costplus.toml and Wasabi's region table.

use std::path::PathBuf;

use crate::{Error, Result};

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

/// Wasabi's regions and their S3 endpoints (host names; the scheme is `https`).
pub const WASABI_REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "s3.wasabisys.com"),
    ("us-east-2", "s3.us-east-2.wasabisys.com"),
    ("us-central-1", "s3.us-central-1.wasabisys.com"),
    ("us-west-1", "s3.us-west-1.wasabisys.com"),
    ("us-west-2", "s3.us-west-2.wasabisys.com"),
    ("ca-central-1", "s3.ca-central-1.wasabisys.com"),
    ("eu-central-1", "s3.eu-central-1.wasabisys.com"),
    ("eu-central-2", "s3.eu-central-2.wasabisys.com"),
    ("eu-west-1", "s3.eu-west-1.wasabisys.com"),
    ("eu-west-2", "s3.eu-west-2.wasabisys.com"),
    ("eu-west-3", "s3.eu-west-3.wasabisys.com"),
    ("eu-south-1", "s3.eu-south-1.wasabisys.com"),
    ("ap-northeast-1", "s3.ap-northeast-1.wasabisys.com"),
    ("ap-northeast-2", "s3.ap-northeast-2.wasabisys.com"),
    ("ap-southeast-1", "s3.ap-southeast-1.wasabisys.com"),
    ("ap-southeast-2", "s3.ap-southeast-2.wasabisys.com"),
];

/// The endpoint host of a Wasabi region, `None` for a region Wasabi does not have.
pub fn wasabi_endpoint(region: &str) -> Option<&'static str> {
    WASABI_REGIONS
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, host)| *host)
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
/// Wasabi's pay-as-you-go price per TB-month in USD (2024-2025 list price).
pub const WASABI_PRICE_PER_TB_MONTH_USD: f64 = 6.99;
fn default_price() -> f64 {
    WASABI_PRICE_PER_TB_MONTH_USD
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

    /// The endpoint URL: explicit, or Wasabi's for the region (see [`OffsiteConfig::resolve_endpoint`]
    /// for the checked version).
    pub fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => match wasabi_endpoint(&self.region) {
                Some(host) => format!("https://{host}"),
                None => format!("https://s3.{}.wasabisys.com", self.region),
            },
        }
    }

    /// The endpoint URL, checked: Wasabi regions must be in [`WASABI_REGIONS`] unless an
    /// endpoint is given; S3-compatible services need an explicit `https://` endpoint.
    pub fn resolve_endpoint(&self) -> Result<String> {
        let bad = |message: String| Error::Config { message };
        let url = match (&self.endpoint, self.provider) {
            (Some(e), _) => e.trim_end_matches('/').to_string(),
            (None, Provider::Wasabi) => match wasabi_endpoint(&self.region) {
                Some(host) => format!("https://{host}"),
                None => {
                    let known: Vec<&str> = WASABI_REGIONS.iter().map(|(r, _)| *r).collect();
                    return Err(bad(format!(
                        "offsite.region = {:?} is not a Wasabi region (known: {})",
                        self.region,
                        known.join(", ")
                    )));
                }
            },
            (None, Provider::S3Compatible) => {
                return Err(bad(
                    "offsite.provider = \"s3-compatible\" needs offsite.endpoint (https://host[:port])"
                        .into(),
                ));
            }
        };
        if !url.starts_with("https://") {
            return Err(bad(format!(
                "offsite.endpoint = {url:?} must start with https:// (backups never travel in clear text)"
            )));
        }
        if self.bucket.is_empty() {
            return Err(bad("offsite.bucket is empty".into()));
        }
        if !(self.price_per_tb_month_usd.is_finite() && self.price_per_tb_month_usd >= 0.0) {
            return Err(bad(format!(
                "offsite.price_per_tb_month_usd = {} must be a non-negative number",
                self.price_per_tb_month_usd
            )));
        }
        Ok(url)
    }

    /// The repository prefix as an S3 key prefix: no leading slash, one trailing slash
    /// (`/pgbackrest` -> `pgbackrest/`; `/` -> ``).
    pub fn repo_prefix(&self) -> String {
        key_prefix(&self.repo_path)
    }
}

/// A path-like prefix as an S3 key prefix: no leading slash, a trailing slash unless empty.
pub fn key_prefix(path: &str) -> String {
    let p = path.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wasabi_region_has_its_endpoint() {
        // The table of the reference: us-east-1 is the bare host, the others carry the region.
        for (region, host) in WASABI_REGIONS {
            let cfg = OffsiteConfig::wasabi(region, "b");
            let url = cfg.resolve_endpoint().unwrap();
            if *region == "us-east-1" {
                assert_eq!(url, "https://s3.wasabisys.com");
            } else {
                assert_eq!(url, format!("https://s3.{region}.wasabisys.com"));
            }
            assert_eq!(url, format!("https://{host}"));
            assert_eq!(cfg.endpoint_url(), url);
        }
        assert_eq!(WASABI_REGIONS.len(), 16);
    }

    #[test]
    fn bad_configs_are_named() {
        let err = OffsiteConfig::wasabi("mars-1", "b")
            .resolve_endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("mars-1"), "{err}");
        let mut cfg = OffsiteConfig::wasabi("us-east-1", "b");
        cfg.provider = Provider::S3Compatible;
        assert!(
            cfg.resolve_endpoint()
                .unwrap_err()
                .to_string()
                .contains("endpoint")
        );
        cfg.endpoint = Some("http://localhost:9000".into());
        assert!(
            cfg.resolve_endpoint()
                .unwrap_err()
                .to_string()
                .contains("https://")
        );
        cfg.endpoint = Some("https://localhost:9000/".into());
        assert_eq!(cfg.resolve_endpoint().unwrap(), "https://localhost:9000");
    }

    #[test]
    fn toml_defaults() {
        let cfg: OffsiteConfig = toml_like(r#"{"bucket": "b"}"#);
        assert_eq!(cfg.provider, Provider::Wasabi);
        assert_eq!(cfg.region, "us-east-1");
        assert!(cfg.path_style);
        assert_eq!(cfg.repo_path, "/pgbackrest");
        assert_eq!(cfg.repo_prefix(), "pgbackrest/");
        assert_eq!(cfg.price_per_tb_month_usd, 6.99);
        assert_eq!(key_prefix("/"), "");
        assert_eq!(key_prefix("a/b/"), "a/b/");
    }

    fn toml_like(json: &str) -> OffsiteConfig {
        serde_json::from_str(json).unwrap()
    }
}
