//! An S3-compatible HTTPS server on loopback, for the sandbox and the tests.
//!
//! It is the `s3s` protocol implementation over the `s3s-fs` directory backend, served over
//! TLS (pgBackRest 2.45 speaks S3 only over HTTPS and checks the certificate's DNS names). It
//! verifies SigV4 signatures, so a wrong secret key fails as it would on Wasabi, and it supports
//! ListObjectsV2 and multipart uploads. A bucket is a directory under the root.
//!
//! ```no_run
//! use costplus_s3local::{RunningServer, ServerConfig};
//! # fn demo(cert_pem: String, key_pem: String) -> Result<(), costplus_s3local::Error> {
//! let root = std::path::PathBuf::from("/tmp/s3root");
//! costplus_s3local::create_bucket(&root, "backups")?;
//! let server = RunningServer::start(ServerConfig {
//!     root,
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     access_key: "AKIDEXAMPLE".into(),
//!     secret_key: "secret".to_string().into(),
//!     cert_pem,
//!     key_pem,
//! })?;
//! println!("https://localhost:{}", server.addr().port());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use secrecy::{ExposeSecret, SecretString};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a path or address.
    #[error("{what}: {source}")]
    Io {
        /// What failed (a path or an address).
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate or key could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A bucket name S3 would refuse.
    #[error("invalid bucket name {0:?}: use 3-63 characters of a-z, 0-9, '-' and '.'")]
    BadBucket(String),
    /// The storage backend refused to start.
    #[error("storage backend at {path}: {message}")]
    Backend {
        /// The root directory.
        path: PathBuf,
        /// What it said.
        message: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the server needs.
pub struct ServerConfig {
    /// Directory holding one sub-directory per bucket.
    pub root: PathBuf,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The one access key accepted.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: SecretString,
    /// Server certificate chain (PEM); should name `localhost`.
    pub cert_pem: String,
    /// Server private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("root", &self.root)
            .field("listen", &self.listen)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Create a bucket (a directory under `root`). Existing buckets are fine.
pub fn create_bucket(root: &Path, name: &str) -> Result<PathBuf> {
    let valid = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        return Err(Error::BadBucket(name.into()));
    }
    let path = root.join(name);
    std::fs::create_dir_all(&path).map_err(|e| Error::Io {
        what: path.display().to_string(),
        source: e,
    })?;
    Ok(path)
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in the PEM".into()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("key: {e}")))?
        .ok_or_else(|| Error::Tls("no private key in the PEM".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serve on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let fs = s3s_fs::FileSystem::new(&cfg.root).map_err(|e| Error::Backend {
        path: cfg.root.clone(),
        message: format!("{e:?}"),
    })?;
    let service = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(
            cfg.access_key.clone(),
            cfg.secret_key.expose_secret(),
        ));
        b.build()
    };
    let acceptor = tls_acceptor(&cfg.cert_pem, &cfg.key_pem)?;
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(socket).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    return;
                }
            };
            if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    Ok(())
}

/// A server running on its own thread and runtime; stopped when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// Bind and start serving in the background. Returns once the port is bound.
    pub fn start(cfg: ServerConfig) -> Result<Self> {
        let listener = std::net::TcpListener::bind(cfg.listen).map_err(|e| Error::Io {
            what: cfg.listen.to_string(),
            source: e,
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::Io {
            what: cfg.listen.to_string(),
            source: e,
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Io {
            what: cfg.listen.to_string(),
            source: e,
        })?;
        // Check TLS material and backend now, so errors surface here, not in the thread.
        tls_acceptor(&cfg.cert_pem, &cfg.key_pem)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3local".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Io {
                        what: "tokio runtime".into(),
                        source: e,
                    })?;
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).map_err(|e| Error::Io {
                            what: addr.to_string(),
                            source: e,
                        })?;
                    serve(listener, &cfg, async {
                        let _ = rx.await;
                    })
                    .await
                })
            })
            .map_err(|e| Error::Io {
                what: "spawn thread".into(),
                source: e,
            })?;
        Ok(Self {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Io {
                what: "s3local thread".into(),
                source: std::io::Error::other("panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        let dir = std::env::temp_dir().join(format!("s3local-test-{}", std::process::id()));
        assert!(create_bucket(&dir, "ok-bucket.1").is_ok());
        for bad in ["ab", "UPPER", "-lead", "sp ace", &"x".repeat(64)] {
            assert!(
                matches!(create_bucket(&dir, bad), Err(Error::BadBucket(_))),
                "{bad}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
