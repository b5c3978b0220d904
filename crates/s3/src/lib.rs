//! The Wasabi/S3 offsite of costplus: a well-configured S3 client, offsite verification of
//! pgBackRest's second repository, and the cost model.
//!
//! - [`OffsiteConfig`]: the `[offsite]` section (Wasabi region table, or any S3-compatible
//!   endpoint with its own CA).
//! - [`Credentials`]: from the vault (callers build the value), a 0600 shared-credentials file
//!   or the standard AWS environment; never from argv.
//! - [`Offsite`]: the client. Path style, request checksums and response validation only "when
//!   required" (newer SDKs add CRC32 by default, which Wasabi rejects; we send Content-MD5),
//!   rustls with the ring provider and an optional private CA, timeouts, retries with back-off,
//!   and typed errors for wrong keys, a missing bucket, clock skew, TLS and the network.
//!   Uploads are parallel multipart for large files, resumable, and verified (size and ETag)
//!   on the server; downloads are verified too; listings follow pagination.
//! - [`verify`]: checks a pgBackRest repository in the bucket from its listing, pgBackRest's
//!   own `info --output=json`, and sampled object headers (sans-IO; [`Offsite::verify_repo`]
//!   does the requests).
//! - [`cost`]: the monthly bill of the offsite with Wasabi's 1 TB minimum and 90-day minimum
//!   storage duration (pure arithmetic).
//!
//! ```
//! use costplus_s3::{OffsiteConfig, cost};
//!
//! let cfg = OffsiteConfig::wasabi("eu-central-1", "acme-backups");
//! assert_eq!(cfg.resolve_endpoint().unwrap(), "https://s3.eu-central-1.wasabisys.com");
//!
//! // A 10 GB full backup weekly and 1 GB of WAL a day, kept 90 days: about 0.23 TB stored,
//! // below the 1 TB minimum, so the bill is the minimum; nothing lives less than 90 days.
//! let input = cost::CostInput {
//!     full_bytes: 10e9,
//!     wal_bytes_per_day: 1e9,
//!     ..cost::CostInput::example()
//! };
//! let bill = cost::estimate(&input);
//! assert_eq!(bill.monthly_usd, 6.99);
//! assert_eq!(bill.early_deletion_usd, 0.0);
//! ```

pub mod client;
pub mod config;
pub mod cost;
pub mod credentials;
mod error;
pub mod pgbackrest_info;
pub mod transfer;
pub mod verify;

pub use client::{BucketProtection, ClientOptions, FeatureState, ObjectInfo, Offsite};
pub use config::{OffsiteConfig, Provider, WASABI_REGIONS, wasabi_endpoint};
pub use credentials::Credentials;
pub use error::{Error, Result, ServiceError};
pub use transfer::{Downloaded, Progress, ProgressFn, UploadOptions, Uploaded};
