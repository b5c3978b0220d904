//! The configured S3 client: endpoint, path style, checksums "when required", custom CA,
//! timeouts, retries; listing, small reads, deletes and the bucket's protection settings.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_smithy_http_client::tls;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::sync::Semaphore;

use crate::error::Ctx;
use crate::{Credentials, Error, OffsiteConfig, Result};

/// Network behaviour of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TCP + TLS connection timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response.
    pub read_timeout: Duration,
    /// Longest duration of one attempt of an operation (a 64 MiB part on a slow line fits).
    pub attempt_timeout: Duration,
    /// Attempts per request (1 = no retry). Retries back off exponentially with jitter.
    pub max_attempts: u32,
    /// First back-off delay.
    pub initial_backoff: Duration,
    /// Requests in flight at once (all transfers of this client share the limit).
    pub concurrency: usize,
    /// Size of one multipart part (at least 5 MiB; grown when a file would need more than
    /// 10,000 parts).
    pub part_size: u64,
    /// Files at least this large are uploaded in parts.
    pub multipart_threshold: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(600),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            concurrency: 16,
            part_size: 16 * 1024 * 1024,
            multipart_threshold: 16 * 1024 * 1024,
        }
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    /// The full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the epoch.
    pub last_modified: Option<i64>,
    /// The ETag without quotes.
    pub etag: Option<String>,
}

/// Whether a bucket feature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FeatureState {
    /// On.
    Enabled,
    /// Was on, now paused (versioning).
    Suspended,
    /// Off / never configured.
    Disabled,
    /// The service does not implement the query.
    Unsupported,
    /// The query failed (for example, not permitted).
    Unknown,
}

impl FeatureState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureState::Enabled => "enabled",
            FeatureState::Suspended => "suspended",
            FeatureState::Disabled => "disabled",
            FeatureState::Unsupported => "unsupported",
            FeatureState::Unknown => "unknown",
        }
    }
}

/// Versioning and object lock of a bucket: what protects the offsite copies from deletion by a
/// compromised host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketProtection {
    /// Bucket versioning.
    pub versioning: FeatureState,
    /// Object lock (needs versioning; only at bucket creation).
    pub object_lock: FeatureState,
    /// The default retention when object lock is on (`COMPLIANCE 30 days`).
    pub default_retention: Option<String>,
    /// Why a state is unknown or unsupported.
    pub notes: Vec<String>,
}

/// A client bound to one bucket.
#[derive(Clone)]
pub struct Offsite {
    pub(crate) sdk: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) endpoint: String,
    pub(crate) opts: ClientOptions,
    pub(crate) permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Offsite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offsite")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Offsite {
    /// Build a client for `cfg` (no request is made; see [`Offsite::check`]).
    pub fn new(cfg: &OffsiteConfig, creds: &Credentials, opts: ClientOptions) -> Result<Self> {
        let endpoint = cfg.resolve_endpoint()?;
        let mut trust = tls::TrustStore::empty().with_native_roots(cfg.ca_file.is_none());
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::Io {
                path: ca.clone(),
                source: e,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::Config {
                    message: format!("offsite.ca_file {} holds no PEM certificate", ca.display()),
                });
            }
            trust = trust.with_pem_certificate(pem);
        }
        let tls_context = tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| Error::Config {
                message: format!("TLS setup: {e}"),
            })?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(tls_context)
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .operation_attempt_timeout(opts.attempt_timeout)
            .build();
        let retry = RetryConfig::standard()
            .with_max_attempts(opts.max_attempts.max(1))
            .with_initial_backoff(opts.initial_backoff)
            .with_max_backoff(Duration::from_secs(20));
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .endpoint_url(&endpoint)
            .force_path_style(cfg.path_style)
            .credentials_provider(creds.to_sdk())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(retry)
            // SDKs >= 1.69 add CRC32 checksums to every upload by default, which Wasabi and
            // other S3-compatible stores reject. We send Content-MD5 ourselves instead.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let concurrency = opts.concurrency.max(1);
        Ok(Self {
            sdk: aws_sdk_s3::Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            endpoint,
            permits: Arc::new(Semaphore::new(concurrency)),
            opts,
        })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }
    /// The underlying SDK client, for operations this crate does not wrap.
    pub fn sdk(&self) -> &aws_sdk_s3::Client {
        &self.sdk
    }

    pub(crate) fn ctx<'a>(&'a self, key: Option<&'a str>) -> Ctx<'a> {
        Ctx {
            endpoint: &self.endpoint,
            bucket: &self.bucket,
            key,
        }
    }

    /// One signed request that needs the keys and the bucket: fails with
    /// [`Error::WrongKeys`], [`Error::NoSuchBucket`], [`Error::ClockSkew`], [`Error::Tls`] or
    /// [`Error::Unreachable`] with the cause.
    pub async fn check(&self) -> Result<()> {
        self.sdk
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| Error::from_sdk("ListObjectsV2", &self.ctx(None), e))?;
        Ok(())
    }

    /// Every object under `prefix`, following continuation tokens (1,000 keys per page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .sdk
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| Error::from_sdk("ListObjectsV2", &self.ctx(None), e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().map(|t| t.secs()),
                    etag: o.e_tag().map(unquote),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Size, ETag and metadata of one object; `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(self.head_full(key).await?.map(|(info, _)| info))
    }

    pub(crate) async fn head_full(
        &self,
        key: &str,
    ) -> Result<Option<(ObjectInfo, std::collections::HashMap<String, String>)>> {
        match self
            .sdk
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some((
                ObjectInfo {
                    key: key.into(),
                    size: h.content_length().unwrap_or(0).max(0) as u64,
                    last_modified: h.last_modified().map(|t| t.secs()),
                    etag: h.e_tag().map(unquote),
                },
                h.metadata().cloned().unwrap_or_default(),
            ))),
            Err(e) => match Error::from_sdk("HeadObject", &self.ctx(Some(key)), e) {
                Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The first `len` bytes of an object (fewer when it is shorter).
    pub async fn read_head(&self, key: &str, len: u64) -> Result<Vec<u8>> {
        let range = format!("bytes=0-{}", len.saturating_sub(1));
        let out = self
            .sdk
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .send()
            .await
            .map_err(|e| Error::from_sdk("GetObject", &self.ctx(Some(key)), e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!("reading {key}: {e}"),
            })?
            .into_bytes();
        // A server that ignores Range sends everything: keep what was asked.
        Ok(bytes[..bytes.len().min(len as usize)].to_vec())
    }

    /// A whole (small) object in memory.
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let out = self
            .sdk
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("GetObject", &self.ctx(Some(key)), e))?;
        Ok(out
            .body
            .collect()
            .await
            .map_err(|e| Error::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!("reading {key}: {e}"),
            })?
            .into_bytes()
            .to_vec())
    }

    /// Delete one object (deleting a missing object is not an error in S3).
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.sdk
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("DeleteObject", &self.ctx(Some(key)), e))?;
        Ok(())
    }

    /// Versioning and object-lock settings of the bucket. Servers that do not implement the
    /// queries give [`FeatureState::Unsupported`], refusals [`FeatureState::Unknown`].
    pub async fn protection(&self) -> Result<BucketProtection> {
        let mut notes = Vec::new();
        let versioning = match self
            .sdk
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(v) => match v.status().map(|s| s.as_str()) {
                Some("Enabled") => FeatureState::Enabled,
                Some("Suspended") => FeatureState::Suspended,
                _ => FeatureState::Disabled,
            },
            Err(e) => self.feature_error("GetBucketVersioning", e, &mut notes)?,
        };
        let mut default_retention = None;
        let object_lock = match self
            .sdk
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => match o.object_lock_configuration() {
                Some(c) if c.object_lock_enabled().map(|s| s.as_str()) == Some("Enabled") => {
                    default_retention = c.rule().and_then(|r| r.default_retention()).map(|d| {
                        let mode = d.mode().map(|m| m.as_str().to_string()).unwrap_or_default();
                        match (d.days(), d.years()) {
                            (Some(days), _) => format!("{mode} {days} days"),
                            (_, Some(y)) => format!("{mode} {y} years"),
                            _ => mode,
                        }
                    });
                    FeatureState::Enabled
                }
                _ => FeatureState::Disabled,
            },
            Err(e) => {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e)
                    .unwrap_or("")
                    .to_string();
                if code == "ObjectLockConfigurationNotFoundError" {
                    FeatureState::Disabled
                } else {
                    self.feature_error("GetObjectLockConfiguration", e, &mut notes)?
                }
            }
        };
        Ok(BucketProtection {
            versioning,
            object_lock,
            default_retention,
            notes,
        })
    }

    fn feature_error<E>(
        &self,
        op: &str,
        e: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
        notes: &mut Vec<String>,
    ) -> Result<FeatureState>
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match Error::from_sdk(op, &self.ctx(None), e) {
            Error::Service(s) if s.code == "NotImplemented" || s.status == 501 => {
                notes.push(format!("{op}: not implemented by the server"));
                Ok(FeatureState::Unsupported)
            }
            Error::AccessDenied { message, .. } => {
                notes.push(format!("{op}: access denied ({message})"));
                Ok(FeatureState::Unknown)
            }
            Error::Service(s) => {
                notes.push(format!("{op}: {}: {}", s.code, s.message));
                Ok(FeatureState::Unknown)
            }
            other => Err(other),
        }
    }
}

pub(crate) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}
