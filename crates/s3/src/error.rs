//! The one error type of this crate, and the mapping of SDK errors onto it.

use std::path::PathBuf;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Errors of the offsite client, transfers and verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `[offsite]` section cannot be used as written.
    #[error("offsite configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// Credentials could not be loaded.
    #[error("S3 credentials from {origin}: {message}")]
    Credentials {
        /// A file path or "the environment".
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The service refused the access key or the signature (`InvalidAccessKeyId`,
    /// `SignatureDoesNotMatch`).
    #[error(
        "{endpoint} refused the credentials ({code}): check the access key id and the secret key; {message}"
    )]
    WrongKeys {
        /// The endpoint.
        endpoint: String,
        /// The S3 error code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// The keys are valid but not allowed to do this.
    #[error("{endpoint}: access denied to bucket {bucket:?}{}: {message}", key_suffix(.key))]
    AccessDenied {
        /// The endpoint.
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// The object, when one was involved.
        key: Option<String>,
        /// The service's message.
        message: String,
    },
    /// The bucket does not exist.
    #[error(
        "bucket {bucket:?} does not exist on {endpoint} (create it first; pgBackRest does not create buckets)"
    )]
    NoSuchBucket {
        /// The endpoint.
        endpoint: String,
        /// The bucket.
        bucket: String,
    },
    /// The object does not exist.
    #[error("object {key:?} does not exist in bucket {bucket:?}")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// The clocks of this host and the service differ too much for SigV4.
    #[error(
        "{endpoint}: the request time is too skewed from the server's clock ({message}); fix this host's clock (chrony/systemd-timesyncd)"
    )]
    ClockSkew {
        /// The endpoint.
        endpoint: String,
        /// The service's message.
        message: String,
    },
    /// The TLS handshake failed (unknown CA, wrong host name, expired certificate).
    #[error("TLS with {endpoint} failed: {message} (for a private CA set offsite.ca_file)")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// The TLS error.
        message: String,
    },
    /// No connection could be made.
    #[error("{endpoint} is unreachable: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The connection error.
        message: String,
    },
    /// The service did not answer in time.
    #[error("{endpoint}: {operation} timed out")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The operation.
        operation: String,
    },
    /// Any other answer of the service.
    #[error("{0}")]
    Service(Box<ServiceError>),
    /// What arrived differs from what was sent (size or checksum).
    #[error("integrity check of {key:?} failed: {message}")]
    Integrity {
        /// The object key.
        key: String,
        /// Expected and found.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A local file could not be written atomically.
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// Text that should be JSON or INI is not.
    #[error("{what}: {message}")]
    Parse {
        /// What was parsed (a file, "pgbackrest info output").
        what: String,
        /// The parser's message.
        message: String,
    },
}

/// An answer of the service that is none of the specific kinds.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint}: {operation} on {bucket:?}{} failed: {code} (HTTP {status}): {message}", key_suffix(.key))]
pub struct ServiceError {
    /// The endpoint.
    pub endpoint: String,
    /// The operation (`PutObject`, ...).
    pub operation: String,
    /// The bucket.
    pub bucket: String,
    /// The object, when one was involved.
    pub key: Option<String>,
    /// The S3 error code, or `-`.
    pub code: String,
    /// The HTTP status, 0 when there was no response.
    pub status: u16,
    /// The service's message.
    pub message: String,
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" key {k:?}"))
        .unwrap_or_default()
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a request went, to give errors their context.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    pub endpoint: &'a str,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
}

impl Error {
    /// Whether retrying later could succeed (network, timeout, 5xx); wrong keys, missing
    /// buckets and integrity failures are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout { .. } => true,
            Error::Service(s) => s.status == 0 || s.status >= 500,
            _ => false,
        }
    }

    /// Map an SDK error onto our kinds.
    pub(crate) fn from_sdk<E, R>(operation: &str, ctx: &Ctx<'_>, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HasStatus + Send + Sync + 'static,
    {
        let endpoint = ctx.endpoint.to_string();
        let service = |code: String, status: u16, message: String| {
            Error::Service(Box::new(ServiceError {
                endpoint: endpoint.clone(),
                operation: operation.into(),
                bucket: ctx.bucket.into(),
                key: ctx.key.map(str::to_string),
                code,
                status,
                message,
            }))
        };
        match &err {
            SdkError::TimeoutError(_) => Error::Timeout {
                endpoint,
                operation: operation.into(),
            },
            SdkError::DispatchFailure(df) => {
                let chain = error_chain(&err);
                if let Some(tls) = find_tls_error(&err) {
                    return Error::Tls {
                        endpoint,
                        message: tls,
                    };
                }
                if df.is_timeout() {
                    return Error::Timeout {
                        endpoint,
                        operation: operation.into(),
                    };
                }
                Error::Unreachable {
                    endpoint,
                    message: chain,
                }
            }
            SdkError::ServiceError(se) => {
                let status = se.raw().status();
                let code = err.code().unwrap_or("").to_string();
                let message = err.message().unwrap_or("").to_string();
                classify_code(operation, ctx, &code, status, message)
                    .unwrap_or_else(|(code, message)| service(code, status, message))
            }
            SdkError::ResponseError(re) => {
                let status = re.raw().status();
                service("-".into(), status, error_chain(&err))
            }
            _ => service("-".into(), 0, error_chain(&err)),
        }
    }
}

/// Map an S3 error code (and HTTP status, for HEAD requests that carry no body) onto our kinds;
/// `Err((code, message))` when it is none of the known ones.
fn classify_code(
    operation: &str,
    ctx: &Ctx<'_>,
    code: &str,
    status: u16,
    message: String,
) -> Result<Error, (String, String)> {
    let endpoint = ctx.endpoint.to_string();
    match code {
        // `NotSignedUp`: what some S3 implementations answer for an unknown access key id.
        "SignatureDoesNotMatch"
        | "InvalidAccessKeyId"
        | "NotSignedUp"
        | "InvalidToken"
        | "ExpiredToken" => Ok(Error::WrongKeys {
            endpoint,
            code: code.into(),
            message,
        }),
        "RequestTimeTooSkewed" => Ok(Error::ClockSkew { endpoint, message }),
        "NoSuchBucket" => Ok(Error::NoSuchBucket {
            endpoint,
            bucket: ctx.bucket.into(),
        }),
        "NoSuchKey" => Ok(Error::NotFound {
            bucket: ctx.bucket.into(),
            key: ctx.key.unwrap_or_default().into(),
        }),
        "AccessDenied" => Ok(Error::AccessDenied {
            endpoint,
            bucket: ctx.bucket.into(),
            key: ctx.key.map(str::to_string),
            message,
        }),
        // HEAD answers have no body, so no code: go by the status.
        "" | "NotFound" if status == 404 => Ok(match ctx.key {
            Some(key) => Error::NotFound {
                bucket: ctx.bucket.into(),
                key: key.into(),
            },
            None => Error::NoSuchBucket {
                endpoint,
                bucket: ctx.bucket.into(),
            },
        }),
        "" | "Forbidden" if status == 403 => Ok(Error::AccessDenied {
            endpoint,
            bucket: ctx.bucket.into(),
            key: ctx.key.map(str::to_string),
            message: format!(
                "{operation} answered 403 without details (wrong keys or no permission)"
            ),
        }),
        _ => Err((
            if code.is_empty() {
                "-".into()
            } else {
                code.into()
            },
            message,
        )),
    }
}

/// The HTTP status of a raw response (the SDK's response type), for error mapping.
pub(crate) trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn find_tls_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        cur = e.source();
    }
    // Fallback on the text, in case the connector wrapped the error without a source chain.
    let text = error_chain(err);
    [
        "certificate",
        "InvalidCertificate",
        "UnknownIssuer",
        "handshake",
    ]
    .iter()
    .any(|w| text.contains(w))
    .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &str, status: u16, key: Option<&str>, expect: &str) {
        let ctx = Ctx {
            endpoint: "https://e",
            bucket: "b",
            key,
        };
        let got = match classify_code("Op", &ctx, code, status, "m".into()) {
            Ok(e) => format!("{e:?}"),
            Err((code, _)) => format!("Service {code}"),
        };
        assert!(got.starts_with(expect), "{code} {status}: {got}");
    }

    #[test]
    fn codes_map_to_kinds() {
        check("SignatureDoesNotMatch", 403, None, "WrongKeys");
        check("InvalidAccessKeyId", 403, None, "WrongKeys");
        check("NotSignedUp", 403, None, "WrongKeys");
        check("RequestTimeTooSkewed", 403, None, "ClockSkew");
        check("NoSuchBucket", 404, None, "NoSuchBucket");
        check("NoSuchKey", 404, Some("k"), "NotFound");
        check("", 404, Some("k"), "NotFound");
        check("", 404, None, "NoSuchBucket");
        check("", 403, None, "AccessDenied");
        check("AccessDenied", 403, Some("k"), "AccessDenied");
        check("SlowDown", 503, None, "Service SlowDown");
        check("", 500, None, "Service -");
    }

    #[test]
    fn transient_errors() {
        let e = Error::Service(Box::new(ServiceError {
            endpoint: "e".into(),
            operation: "Op".into(),
            bucket: "b".into(),
            key: None,
            code: "SlowDown".into(),
            status: 503,
            message: String::new(),
        }));
        assert!(e.is_transient());
        let e = Error::WrongKeys {
            endpoint: "e".into(),
            code: "SignatureDoesNotMatch".into(),
            message: String::new(),
        };
        assert!(!e.is_transient());
    }
}
