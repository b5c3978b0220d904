//! Connecting to PostgreSQL with tokio-postgres over rustls.
//!
//! The only TLS mode that verifies anything is [`SslMode::VerifyFull`]: the certificate must
//! chain to the given CA and name the host. There is deliberately no mode that encrypts
//! without verifying.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::Client;

use crate::{Error, Result};

/// TLS policy of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS (Unix sockets, or a deliberate plaintext probe).
    Disable,
    /// TLS required; the chain must reach `ca_file` and the certificate must name the host
    /// (or `server_name` when given, for connections by IP address).
    VerifyFull {
        /// PEM file of the trusted CA(s).
        ca_file: PathBuf,
        /// Name to verify instead of the host.
        server_name: Option<String>,
    },
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Host name, IP address, or a directory holding a Unix socket (starts with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role name.
    pub user: String,
    /// Password; `None` for peer/trust.
    pub password: Option<SecretString>,
    /// Database.
    pub dbname: String,
    /// TLS policy.
    pub ssl: SslMode,
    /// `application_name` shown in pg_stat_activity.
    pub application_name: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Local address to connect from (e.g. `127.0.0.2`, to appear as another client).
    pub bind: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("ssl", &self.ssl)
            .finish()
    }
}

impl ConnectOptions {
    /// Options with no password and no TLS.
    pub fn new(host: &str, port: u16, user: &str, dbname: &str) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            password: None,
            dbname: dbname.into(),
            ssl: SslMode::Disable,
            application_name: "costplus".into(),
            connect_timeout: Duration::from_secs(10),
            bind: None,
        }
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        if self.host.starts_with('/') {
            cfg.host_path(&self.host);
        } else {
            cfg.host(&self.host);
        }
        cfg.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout);
        if let Some(pw) = &self.password {
            cfg.password(pw.expose_secret().as_bytes());
        }
        cfg
    }
}

/// A rustls client configuration trusting only the CAs in `ca_file`.
pub fn rustls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(ca_file).map_err(|e| Error::Io {
        path: ca_file.to_path_buf(),
        source: e,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::Tls(format!(
            "{}: no PEM certificate found",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// Connect; the connection task runs on the current tokio runtime until the client is dropped.
pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
    let mut cfg = opts.config();
    if opts.host.starts_with('/') {
        // Unix socket: never TLS.
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        spawn_connection(conn);
        return Ok(client);
    }
    let stream = tcp_connect(opts).await?;
    match &opts.ssl {
        SslMode::Disable => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = cfg.connect_raw(stream, tokio_postgres::NoTls).await?;
            spawn_connection(conn);
            Ok(client)
        }
        SslMode::VerifyFull {
            ca_file,
            server_name,
        } => {
            use tokio_postgres::tls::MakeTlsConnect;
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let mut connector =
                tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(ca_file)?);
            // Verify the certificate against `server_name` when given, else the host.
            let name = server_name
                .as_deref()
                .unwrap_or(opts.host.trim_start_matches('[').trim_end_matches(']'));
            let tls = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<
                tokio::net::TcpStream,
            >>::make_tls_connect(&mut connector, name)
            .map_err(|e| Error::Tls(format!("server name {name:?}: {e}")))?;
            let (client, conn) = cfg.connect_raw(stream, tls).await?;
            spawn_connection(conn);
            Ok(client)
        }
    }
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection closed: {e}");
        }
    });
}

/// Open the TCP connection: every resolved address in turn, from `opts.bind` when set, within
/// the connect timeout.
async fn tcp_connect(opts: &ConnectOptions) -> Result<tokio::net::TcpStream> {
    let target = format!("{}:{}", opts.host, opts.port);
    let io_err = |e: std::io::Error| Error::Io {
        path: target.clone().into(),
        source: e,
    };
    let attempt = async {
        let mut last = None;
        for addr in tokio::net::lookup_host((opts.host.as_str(), opts.port))
            .await
            .map_err(io_err)?
        {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(io_err)?;
            if let Some(ip) = opts.bind {
                if ip.is_ipv4() != addr.is_ipv4() {
                    continue;
                }
                socket
                    .bind(std::net::SocketAddr::new(ip, 0))
                    .map_err(io_err)?;
            }
            match socket.connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(io_err(last.unwrap_or_else(|| {
            std::io::Error::other("no address to connect to")
        })))
    };
    tokio::time::timeout(opts.connect_timeout, attempt)
        .await
        .map_err(|_| Error::Timeout {
            what: target.clone(),
            seconds: opts.connect_timeout.as_secs(),
        })?
}
