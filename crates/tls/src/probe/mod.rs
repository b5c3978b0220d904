//! Probe a live PostgreSQL server's TLS: which protocol versions (SSL 3.0 to TLS 1.3) and
//! cipher suites it accepts, the chain it presents and whether a verify-full client accepts
//! it, PostgreSQL 17 direct TLS, and whether a login is possible without TLS.
//!
//! Every version is tested on its own connection with a ClientHello of our own
//! ([`crate::wire::hello`]) offering that one version; the server's first flight (ServerHello
//! or alert) is the verdict. Cipher suites are enumerated per accepted version by elimination
//! (offer, remove what the server picked, offer again) in several chunks at once. Every
//! connection runs under a timeout; all of them run concurrently on tokio, bounded by a
//! per-target limit and an optional global one ([`probe_many`]).

pub mod chain;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::finding::{Finding, Severity, ids};
use crate::inspect::{self, CertFacts, Policy};
use crate::wire::pg::{self, SslAnswer, StartupAnswer};
use crate::wire::server::{End, Flight, KeyExchange, ServerFlight};
use crate::wire::{self, ClientHello, ProtocolVersion};
use crate::{Error, Result};

/// How the TLS handshake starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mode {
    /// PostgreSQL's SSLRequest, then TLS (every version of PostgreSQL).
    #[default]
    SslRequest,
    /// TLS from the first byte with ALPN `postgresql` (PostgreSQL 17+ `sslnegotiation=direct`).
    Direct,
}

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Name for SNI and certificate verification (default: `host`).
    pub server_name: Option<String>,
    /// CA certificate(s), PEM or DER, to verify the chain against.
    pub ca: Option<Vec<u8>>,
    /// SSLRequest or direct TLS.
    pub mode: Mode,
    /// Versions to test (default: all five).
    pub versions: Vec<ProtocolVersion>,
    /// Enumerate the cipher suites of every accepted version.
    pub ciphers: bool,
    /// Also test PostgreSQL 17 direct TLS (when `mode` is SSLRequest).
    pub check_direct_tls: bool,
    /// Try a login without TLS as this (role, database), without sending any password.
    pub plaintext_login: Option<(String, String)>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of every read.
    pub io_timeout: Duration,
    /// Parallel elimination chunks per version.
    pub chunks: usize,
    /// Connections in flight at once against this target.
    pub max_connections: usize,
    /// Certificate thresholds.
    pub policy: Policy,
}

impl ProbeOptions {
    /// Defaults for `host:port`: every version, cipher enumeration, 5 s timeouts.
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            port,
            server_name: None,
            ca: None,
            mode: Mode::SslRequest,
            versions: ProtocolVersion::ALL.to_vec(),
            ciphers: true,
            check_direct_tls: true,
            plaintext_login: None,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
            chunks: 8,
            max_connections: 16,
            policy: Policy::default(),
        }
    }

    fn target(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }
}

/// Whether the server accepts a version (or direct TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Verdict {
    /// The server answered with a ServerHello for exactly this version.
    Accepted,
    /// The server refused (alert, another version, or closed the connection).
    Refused,
    /// Not tested (not asked for).
    NotTested,
}

/// The verdict per version, serialised as `{"SSLv3": "refused", ..., "TLSv1.3": "accepted"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protocols {
    /// SSL 3.0.
    #[serde(rename = "SSLv3")]
    pub ssl3: Verdict,
    /// TLS 1.0.
    #[serde(rename = "TLSv1.0")]
    pub tls10: Verdict,
    /// TLS 1.1.
    #[serde(rename = "TLSv1.1")]
    pub tls11: Verdict,
    /// TLS 1.2.
    #[serde(rename = "TLSv1.2")]
    pub tls12: Verdict,
    /// TLS 1.3.
    #[serde(rename = "TLSv1.3")]
    pub tls13: Verdict,
}

impl Protocols {
    fn all(v: Verdict) -> Self {
        Self {
            ssl3: v,
            tls10: v,
            tls11: v,
            tls12: v,
            tls13: v,
        }
    }
    /// The verdict for one version.
    pub fn get(&self, v: ProtocolVersion) -> Verdict {
        match v {
            ProtocolVersion::Ssl3 => self.ssl3,
            ProtocolVersion::Tls10 => self.tls10,
            ProtocolVersion::Tls11 => self.tls11,
            ProtocolVersion::Tls12 => self.tls12,
            ProtocolVersion::Tls13 => self.tls13,
        }
    }
    fn set(&mut self, v: ProtocolVersion, verdict: Verdict) {
        *match v {
            ProtocolVersion::Ssl3 => &mut self.ssl3,
            ProtocolVersion::Tls10 => &mut self.tls10,
            ProtocolVersion::Tls11 => &mut self.tls11,
            ProtocolVersion::Tls12 => &mut self.tls12,
            ProtocolVersion::Tls13 => &mut self.tls13,
        } = verdict;
    }
}

/// Why a version got its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionDetail {
    /// The verdict.
    pub verdict: Verdict,
    /// What the server did: `server-hello`, `alert protocol_version (70)`, `closed`, ...
    pub reason: String,
    /// The suite the server chose when offered all of them (its preference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_cipher: Option<String>,
    /// The key exchange group (or DH prime size) of that handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_exchange: Option<String>,
}

/// One accepted cipher suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CipherReport {
    /// Code point, `0xC02B`.
    pub id: String,
    /// IANA name.
    pub name: String,
    /// OpenSSL name.
    pub openssl_name: String,
    /// Known weaknesses.
    pub weaknesses: Vec<wire::Weakness>,
}

/// The chain the server presented and what a client makes of it.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateReport {
    /// The leaf certificate.
    #[serde(flatten)]
    pub leaf: CertFacts,
    /// The rest of the chain as sent.
    pub chain: Vec<CertFacts>,
    /// Number of certificates sent.
    pub chain_length: usize,
    /// The name verified.
    pub verified_name: String,
    /// Whether a verify-full client (webpki) accepts it; `None` without a CA.
    pub trusted: Option<bool>,
    /// Why it is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// Where the chain was read: the clear-text TLS 1.2-or-older handshake, or a TLS 1.3
    /// handshake completed by rustls.
    pub source: String,
}

/// The result of a login attempt without TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaintextLogin {
    /// Role tried.
    pub user: String,
    /// Database tried.
    pub database: String,
    /// `refused`, `password-requested`, `trusted` (logged in without any password) or `error`.
    pub result: String,
    /// The server's answer.
    pub detail: String,
}

/// Everything the probe found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// `host:port`.
    pub target: String,
    /// The name used for SNI and verification.
    pub server_name: String,
    /// SSLRequest or direct.
    pub mode: Mode,
    /// The server answered SSLRequest with `S` (TLS on).
    pub tls_enabled: bool,
    /// Verdict per version.
    pub protocols: Protocols,
    /// Details per version.
    pub protocol_details: BTreeMap<String, VersionDetail>,
    /// Accepted suites per version.
    pub ciphers: BTreeMap<String, Vec<CipherReport>>,
    /// The certificate, when one was obtained.
    pub certificate: Option<CertificateReport>,
    /// PostgreSQL 17 direct TLS (ALPN `postgresql`).
    pub direct_tls: Verdict,
    /// The login attempt without TLS, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext_login: Option<PlaintextLogin>,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// Connections made.
    pub connections: usize,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

impl ProbeReport {
    /// The worst severity found.
    pub fn worst(&self) -> Option<Severity> {
        crate::finding::worst(&self.findings)
    }
}

/// Shared limits and counters of one probe.
struct Ctx {
    opts: ProbeOptions,
    local: Semaphore,
    global: Option<Arc<Semaphore>>,
    connections: std::sync::atomic::AtomicUsize,
}

/// What one connection got.
#[derive(Debug)]
enum Attempt {
    /// The TLS exchange happened (or started): what the server sent.
    Flight(Flight),
    /// The server answered `N` to SSLRequest.
    TlsOff,
    /// The server answered SSLRequest with an ErrorResponse.
    PgError(pg::ErrorFields),
    /// The server answered SSLRequest with something that is not PostgreSQL.
    NotPostgres(Vec<u8>),
    /// No answer to SSLRequest within the timeout.
    Silent,
    /// The server closed the connection before answering SSLRequest.
    ClosedEarly,
    /// The TCP connection failed.
    Connect(String),
}

async fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    t: Duration,
) -> std::io::Result<Option<usize>> {
    match tokio::time::timeout(t, stream.read(buf)).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

impl Ctx {
    async fn permits(
        &self,
    ) -> (
        Option<tokio::sync::SemaphorePermit<'_>>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let global = match &self.global {
            Some(g) => g.clone().acquire_owned().await.ok(),
            None => None,
        };
        // Neither semaphore is ever closed, so acquiring only fails in theory.
        let local = self.local.acquire().await.ok();
        (local, global)
    }

    async fn connect(&self) -> std::result::Result<TcpStream, String> {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addr = (
            self.opts.host.trim_start_matches('[').trim_end_matches(']'),
            self.opts.port,
        );
        match tokio::time::timeout(self.opts.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err(format!(
                "no TCP connection within {:?} (filtered port or host down)",
                self.opts.connect_timeout
            )),
        }
    }

    /// SSLRequest and its answer; `Ok(())` means go ahead with TLS.
    async fn ssl_request(&self, stream: &mut TcpStream) -> std::result::Result<(), Attempt> {
        if stream.write_all(&pg::SSL_REQUEST).await.is_err() {
            return Err(Attempt::ClosedEarly);
        }
        let mut buf = vec![0u8; 1];
        match read_some(stream, &mut buf, self.opts.io_timeout).await {
            Ok(None) => return Err(Attempt::Silent),
            Ok(Some(0)) | Err(_) => return Err(Attempt::ClosedEarly),
            Ok(Some(_)) => {}
        }
        match buf[0] {
            b'S' => Ok(()),
            b'N' => Err(Attempt::TlsOff),
            b'E' => {
                // Read the rest of the ErrorResponse (bounded, with the same timeout).
                let mut msg = buf;
                let mut chunk = [0u8; 1024];
                while msg.len() < 4096 {
                    if let Some(n) = pg::error_response_len(&msg)
                        && msg.len() >= n
                    {
                        break;
                    }
                    match read_some(stream, &mut chunk, self.opts.io_timeout).await {
                        Ok(Some(n)) if n > 0 => msg.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                match pg::ssl_answer(&msg) {
                    SslAnswer::Error(f) => Err(Attempt::PgError(f)),
                    _ => Err(Attempt::NotPostgres(msg.into_iter().take(16).collect())),
                }
            }
            _ => {
                let mut first = buf;
                let mut more = [0u8; 15];
                if let Ok(Some(n)) = read_some(stream, &mut more, Duration::from_millis(50)).await {
                    first.extend_from_slice(&more[..n]);
                }
                Err(Attempt::NotPostgres(first))
            }
        }
    }

    /// One connection: (SSLRequest,) ClientHello, read the first flight.
    async fn attempt_once(&self, hello: &ClientHello, mode: Mode, want_rest: bool) -> Attempt {
        let _permits = self.permits().await;
        let mut stream = match self.connect().await {
            Ok(s) => s,
            Err(e) => return Attempt::Connect(e),
        };
        if mode == Mode::SslRequest
            && let Err(a) = self.ssl_request(&mut stream).await
        {
            return a;
        }
        if stream.write_all(&hello.encode()).await.is_err() {
            return Attempt::Flight(ServerFlight::new(want_rest).finish());
        }
        let mut reader = ServerFlight::new(want_rest);
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = Instant::now() + self.opts.io_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match read_some(&mut stream, &mut buf, left).await {
                Ok(Some(n)) if n > 0 => {
                    if reader.feed(&buf[..n]) {
                        break;
                    }
                }
                Ok(None) => {
                    let mut f = reader.finish();
                    if f.end == End::Closed && f.hello.is_none() {
                        f.end = End::Malformed(format!(
                            "no answer to the ClientHello within {:?}",
                            self.opts.io_timeout
                        ));
                    }
                    return Attempt::Flight(f);
                }
                _ => break, // EOF or reset
            }
        }
        Attempt::Flight(reader.finish())
    }

    /// [`Ctx::attempt_once`], retried when the server is momentarily out of backend slots.
    async fn attempt(&self, hello: &ClientHello, mode: Mode, want_rest: bool) -> Attempt {
        let mut delay = Duration::from_millis(20);
        for _ in 0..4 {
            match self.attempt_once(hello, mode, want_rest).await {
                Attempt::PgError(f) if f.code == "53300" || f.code == "57P03" => {
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                }
                other => return other,
            }
        }
        self.attempt_once(hello, mode, want_rest).await
    }

    fn hello(&self, v: ProtocolVersion, suites: Vec<u16>, mode: Mode) -> ClientHello {
        let mut h = ClientHello::new(v, suites).server_name(Some(self.opts.name()));
        if mode == Mode::Direct || v >= ProtocolVersion::Tls12 {
            h = h.alpn(pg::ALPN_POSTGRESQL);
        }
        h
    }
}

/// The outcome of one version.
#[derive(Debug)]
struct VersionResult {
    version: ProtocolVersion,
    detail: VersionDetail,
    ciphers: Vec<u16>,
    flight: Option<Flight>,
    anomalies: Vec<String>,
    compression: bool,
    dh_bits: Option<usize>,
}

fn describe(a: &Attempt) -> String {
    match a {
        Attempt::Flight(f) => match &f.end {
            End::Alert(al) => al.to_string(),
            End::Closed if f.hello.is_none() => "closed without an alert".into(),
            End::NotTls(b) => format!("answered with non-TLS bytes {}", printable(b)),
            End::Malformed(m) => m.clone(),
            _ => "server-hello".into(),
        },
        Attempt::TlsOff => "TLS is off (SSLRequest answered N)".into(),
        Attempt::PgError(e) => e.to_string(),
        Attempt::NotPostgres(b) => {
            format!("not PostgreSQL: answered SSLRequest with {}", printable(b))
        }
        Attempt::Silent => "no answer to SSLRequest".into(),
        Attempt::ClosedEarly => "closed before answering SSLRequest".into(),
        Attempt::Connect(e) => e.clone(),
    }
}

/// Bytes for a message: text when printable, hex otherwise.
fn printable(b: &[u8]) -> String {
    if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!("0x{}", hex::encode(b))
    }
}

fn accepted_hello(a: &Attempt, v: ProtocolVersion) -> Option<&wire::server::ServerHello> {
    match a {
        Attempt::Flight(f) => f.hello.as_ref().filter(|h| h.version == v.wire()),
        _ => None,
    }
}

fn is_abnormal(a: &Attempt) -> bool {
    match a {
        Attempt::Flight(f) => f.hello.is_none() && !matches!(f.end, End::Alert(_)),
        _ => true,
    }
}

/// The elimination chunks of a version: TLS 1.3 has five suites, each tested on its own;
/// older versions are split round-robin into `opts.chunks` lists.
fn chunks_for(ctx: &Ctx, v: ProtocolVersion) -> Vec<Vec<u16>> {
    let all = wire::suites_for(v);
    let k = if v == ProtocolVersion::Tls13 {
        all.len()
    } else {
        ctx.opts.chunks.max(1)
    };
    let mut chunks: Vec<Vec<u16>> = vec![Vec::new(); k];
    for (i, s) in all.iter().enumerate() {
        chunks[i % k].push(*s);
    }
    chunks
}

/// What one elimination chunk found: accepted suites and anomalies.
type ChunkOutcome = (Vec<u16>, Vec<String>);

/// Every chunk's elimination, concurrently.
async fn enumerate(ctx: &Ctx, v: ProtocolVersion) -> Vec<ChunkOutcome> {
    futures_join_all(chunks_for(ctx, v).into_iter().map(|c| eliminate(ctx, v, c))).await
}

/// Judge one version from its full offer; enumerate its suites when accepted (unless `spec`
/// already holds a speculative enumeration).
async fn probe_version(
    ctx: &Ctx,
    v: ProtocolVersion,
    full: Attempt,
    spec: Option<Vec<ChunkOutcome>>,
) -> VersionResult {
    let mut res = VersionResult {
        version: v,
        detail: VersionDetail {
            verdict: Verdict::Refused,
            reason: describe(&full),
            preferred_cipher: None,
            key_exchange: None,
        },
        ciphers: Vec::new(),
        flight: None,
        anomalies: Vec::new(),
        compression: false,
        dh_bits: None,
    };
    if is_abnormal(&full) {
        res.anomalies.push(format!("{v}: {}", res.detail.reason));
    }
    let Some(hello) = accepted_hello(&full, v).cloned() else {
        if let Attempt::Flight(f) = &full
            && let Some(h) = &f.hello
        {
            res.detail.reason = format!(
                "server answered with {} instead",
                ProtocolVersion::from_wire(h.version)
                    .map_or_else(|| format!("0x{:04x}", h.version), |p| p.to_string())
            );
        }
        return res;
    };
    res.detail.verdict = Verdict::Accepted;
    res.detail.reason = if hello.hello_retry {
        "hello-retry-request".into()
    } else {
        "server-hello".into()
    };
    res.detail.preferred_cipher = Some(wire::suite_name(hello.cipher_suite));
    res.compression = hello.compression != 0;
    if let Some(g) = hello.key_share_group {
        res.detail.key_exchange = Some(wire::server::group_name(g));
    }
    if let Attempt::Flight(f) = full {
        if let Some(ske) = &f.server_key_exchange {
            let name = wire::suite_name(hello.cipher_suite);
            let ecdhe = name.contains("ECDHE");
            if ecdhe || name.contains("DHE") {
                match wire::server::parse_key_exchange(ske, ecdhe) {
                    Ok(KeyExchange::Ecdhe { group }) => {
                        res.detail.key_exchange = Some(wire::server::group_name(group))
                    }
                    Ok(KeyExchange::Dhe { bits }) => {
                        res.detail.key_exchange = Some(format!("DH {bits} bits"));
                        res.dh_bits = Some(bits);
                    }
                    Err(_) => {}
                }
            }
        }
        res.flight = Some(f);
    }
    if !ctx.opts.ciphers {
        res.ciphers.push(hello.cipher_suite);
        return res;
    }
    let outcomes = match spec {
        Some(done) => done,
        None => enumerate(ctx, v).await,
    };
    for (found, anomalies) in outcomes {
        res.ciphers.extend(found);
        res.anomalies.extend(anomalies);
    }
    if !res.ciphers.contains(&hello.cipher_suite) {
        res.ciphers.push(hello.cipher_suite);
    }
    res.ciphers.sort_unstable();
    res.ciphers.dedup();
    res
}

async fn eliminate(
    ctx: &Ctx,
    v: ProtocolVersion,
    mut offered: Vec<u16>,
) -> (Vec<u16>, Vec<String>) {
    let mut found = Vec::new();
    let mut anomalies = Vec::new();
    while !offered.is_empty() {
        let a = ctx
            .attempt(
                &ctx.hello(v, offered.clone(), ctx.opts.mode),
                ctx.opts.mode,
                false,
            )
            .await;
        match accepted_hello(&a, v) {
            Some(h) if offered.contains(&h.cipher_suite) => {
                found.push(h.cipher_suite);
                offered.retain(|s| *s != h.cipher_suite);
            }
            Some(h) => {
                anomalies.push(format!(
                    "{v}: the server chose {} which was not offered",
                    wire::suite_name(h.cipher_suite)
                ));
                break;
            }
            None => {
                if is_abnormal(&a) {
                    anomalies.push(format!("{v}: {}", describe(&a)));
                }
                break;
            }
        }
    }
    (found, anomalies)
}

/// Run futures concurrently on the current task and collect their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => {
                outputs[*i] = Some(out);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Read the chain with rustls (TLS 1.3 encrypts it), after SSLRequest or directly.
async fn chain_via_rustls(ctx: &Ctx) -> std::result::Result<Vec<Vec<u8>>, String> {
    let _permits = ctx.permits().await;
    let mut stream = ctx.connect().await?;
    if ctx.opts.mode == Mode::SslRequest {
        ctx.ssl_request(&mut stream)
            .await
            .map_err(|a| describe(&a))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(chain::ChainRecorder::new(provider.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![pg::ALPN_POSTGRESQL.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = chain::server_name(ctx.opts.name())?;
    let result = tokio::time::timeout(ctx.opts.io_timeout, connector.connect(name, stream)).await;
    let recorded = recorder.chain.lock().ok().and_then(|mut c| c.take());
    if let Ok(Ok(mut tls)) = result {
        let _ = tokio::time::timeout(Duration::from_millis(200), tls.shutdown()).await;
    }
    recorded
        .ok_or_else(|| "the TLS handshake ended before the server sent its certificate".to_string())
}

async fn plaintext_login(ctx: &Ctx, user: &str, database: &str) -> PlaintextLogin {
    let mut out = PlaintextLogin {
        user: user.to_string(),
        database: database.to_string(),
        result: "error".into(),
        detail: String::new(),
    };
    let _permits = ctx.permits().await;
    let mut stream = match ctx.connect().await {
        Ok(s) => s,
        Err(e) => {
            out.detail = e;
            return out;
        }
    };
    if stream
        .write_all(&pg::startup_message(user, database, "costplus-tls probe"))
        .await
        .is_err()
    {
        out.detail = "connection closed".into();
        return out;
    }
    let mut msg = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(n) = pg::message_len(&msg)
            && msg.len() >= n
        {
            break;
        }
        match read_some(&mut stream, &mut chunk, ctx.opts.io_timeout).await {
            Ok(Some(n)) if n > 0 => msg.extend_from_slice(&chunk[..n]),
            Ok(None) => {
                out.detail = "no answer to the startup message".into();
                return out;
            }
            _ => break,
        }
        if msg.len() > 70_000 {
            break;
        }
    }
    match pg::startup_answer(&msg) {
        StartupAnswer::Trusted => {
            out.result = "trusted".into();
            out.detail =
                "AuthenticationOk without any password over an unencrypted connection".into();
        }
        StartupAnswer::AuthRequested { method, .. } => {
            out.result = "password-requested".into();
            out.detail = format!(
                "the server asks for {method} authentication over an unencrypted connection"
            );
        }
        StartupAnswer::Refused(f) => {
            out.result = "refused".into();
            out.detail = f.to_string();
        }
        StartupAnswer::Other(b) => out.detail = format!("unexpected answer {}", printable(&b)),
    }
    out
}

/// The certificate chain the server presents (leaf first), read through a rustls handshake
/// (TLS 1.3 or 1.2) after SSLRequest (or directly in [`Mode::Direct`]). Not verified.
pub async fn fetch_chain(opts: &ProbeOptions) -> Result<Vec<Vec<u8>>> {
    let ctx = Ctx {
        local: Semaphore::new(1),
        global: None,
        connections: std::sync::atomic::AtomicUsize::new(0),
        opts: opts.clone(),
    };
    chain_via_rustls(&ctx)
        .await
        .map_err(|problem| Error::Probe {
            target: opts.target(),
            problem,
        })
}

/// Probe one server.
///
/// Errors when the server cannot be probed at all: no TCP connection, no answer to SSLRequest
/// (timeout), not PostgreSQL. A server with TLS off is not an error: the report says so.
pub async fn probe(opts: &ProbeOptions) -> Result<ProbeReport> {
    probe_with(opts.clone(), None).await
}

/// [`probe`] on a runtime of its own, for synchronous callers (the CLI).
pub fn probe_blocking(opts: &ProbeOptions) -> Result<ProbeReport> {
    runtime()?.block_on(probe(opts))
}

/// A multi-threaded tokio runtime for the blocking entry points.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: "tokio runtime".into(),
            source: e,
        })
}

/// Probe many servers concurrently, at most `max_connections` connections in flight overall.
pub async fn probe_many(
    targets: Vec<ProbeOptions>,
    max_connections: usize,
) -> Vec<Result<ProbeReport>> {
    let global = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.into_iter().enumerate() {
        let g = global.clone();
        set.spawn(async move { (i, probe_with(t, Some(g)).await) });
    }
    let mut results: Vec<(usize, Result<ProbeReport>)> = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(pair) => results.push(pair),
            Err(e) => results.push((
                usize::MAX,
                Err(Error::Probe {
                    target: "?".into(),
                    problem: format!("probe task failed: {e}"),
                }),
            )),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

async fn probe_with(opts: ProbeOptions, global: Option<Arc<Semaphore>>) -> Result<ProbeReport> {
    let started = Instant::now();
    let ctx = Ctx {
        local: Semaphore::new(opts.max_connections.max(1)),
        global,
        connections: std::sync::atomic::AtomicUsize::new(0),
        opts,
    };
    let target = ctx.opts.target();
    let err = |problem: String| Error::Probe {
        target: target.clone(),
        problem,
    };
    let mut report = ProbeReport {
        target: target.clone(),
        server_name: ctx.opts.name().to_string(),
        mode: ctx.opts.mode,
        tls_enabled: true,
        protocols: Protocols::all(Verdict::NotTested),
        protocol_details: BTreeMap::new(),
        ciphers: BTreeMap::new(),
        certificate: None,
        direct_tls: Verdict::NotTested,
        plaintext_login: None,
        findings: Vec::new(),
        connections: 0,
        elapsed_ms: 0,
    };
    let mut versions = ctx.opts.versions.clone();
    versions.sort_by(|a, b| b.cmp(a));
    versions.dedup();
    let Some(&top_version) = versions.first() else {
        return Err(err("no protocol version to test".into()));
    };
    let mode = ctx.opts.mode;

    // Phase 1, all at once: the full offer of every version; the suite elimination of TLS 1.3
    // and 1.2, which nearly every server accepts (speculative: its connections are wasted only
    // when the version is refused); the plaintext login; direct TLS.
    let full_offers = versions.iter().map(|v| {
        let (v, ctx) = (*v, &ctx);
        async move {
            ctx.attempt(
                &ctx.hello(v, wire::suites_for(v), mode),
                mode,
                v <= ProtocolVersion::Tls12,
            )
            .await
        }
    });
    let speculative: Vec<ProtocolVersion> = if ctx.opts.ciphers {
        versions
            .iter()
            .copied()
            .filter(|v| *v >= ProtocolVersion::Tls12)
            .collect()
    } else {
        Vec::new()
    };
    let spec_tasks = speculative.iter().map(|v| enumerate(&ctx, *v));
    let plaintext = async {
        match &ctx.opts.plaintext_login {
            Some((u, d)) => Some(plaintext_login(&ctx, u, d).await),
            None => None,
        }
    };
    let check_direct = mode == Mode::SslRequest && ctx.opts.check_direct_tls;
    let direct_first = async {
        if !check_direct {
            return None;
        }
        let v = top_version;
        Some(
            ctx.attempt(
                &ctx.hello(v, wire::suites_for(v), Mode::Direct),
                Mode::Direct,
                false,
            )
            .await,
        )
    };
    let (fulls, specs, login, direct_attempt) = tokio::join!(
        futures_join_all(full_offers),
        futures_join_all(spec_tasks),
        plaintext,
        direct_first
    );

    // Is this a PostgreSQL server with TLS at all?
    let spoke_tls = fulls.iter().any(
        |a| matches!(a, Attempt::Flight(f) if f.hello.is_some() || matches!(f.end, End::Alert(_))),
    );
    if fulls.iter().any(|a| matches!(a, Attempt::TlsOff)) {
        report.tls_enabled = false;
        report.protocols = Protocols::all(Verdict::Refused);
        report.direct_tls = Verdict::Refused;
        report.findings.push(Finding::new(
            ids::TLS_DISABLED,
            Severity::Fail,
            "the server answered SSLRequest with N: TLS is off (ssl = off); passwords and data cross the network in clear",
        ));
        if let Some(login) = login {
            plaintext_findings(&login, &mut report.findings);
            report.plaintext_login = Some(login);
        }
        inspect::sort(&mut report.findings);
        report.connections = ctx.connections.load(std::sync::atomic::Ordering::Relaxed);
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    if !spoke_tls && let Some(e) = not_probeable(&fulls, mode, ctx.opts.io_timeout) {
        return Err(err(e));
    }

    // Phase 2: judge every version; enumerate the accepted ones not enumerated yet.
    let accepted_now: Vec<ProtocolVersion> = versions
        .iter()
        .zip(&fulls)
        .filter(|(v, a)| accepted_hello(a, **v).is_some())
        .map(|(v, _)| *v)
        .collect();
    let mut spec_by_version: BTreeMap<ProtocolVersion, Vec<ChunkOutcome>> =
        speculative.into_iter().zip(specs).collect();
    let version_tasks = versions
        .iter()
        .zip(fulls)
        .map(|(v, full)| probe_version(&ctx, *v, full, spec_by_version.remove(v)));
    let direct = async {
        let Some(a) = direct_attempt else {
            return if mode == Mode::Direct {
                Verdict::Accepted
            } else {
                Verdict::NotTested
            };
        };
        if accepted_hello(&a, top_version).is_some() {
            return Verdict::Accepted;
        }
        // The server may lack the top version: try again with one it accepts.
        let Some(&v) = accepted_now.iter().find(|v| **v != top_version) else {
            return Verdict::Refused;
        };
        if accepted_now.contains(&top_version) {
            return Verdict::Refused;
        }
        let a = ctx
            .attempt(
                &ctx.hello(v, wire::suites_for(v), Mode::Direct),
                Mode::Direct,
                false,
            )
            .await;
        if accepted_hello(&a, v).is_some() {
            Verdict::Accepted
        } else {
            Verdict::Refused
        }
    };
    let (results, direct) = tokio::join!(futures_join_all(version_tasks), direct);
    report.direct_tls = direct;

    let mut anomalies = Vec::new();
    let mut chain_flight: Option<(ProtocolVersion, Vec<Vec<u8>>)> = None;
    for r in &results {
        report.protocols.set(r.version, r.detail.verdict);
        report
            .protocol_details
            .insert(r.version.name().to_string(), r.detail.clone());
        anomalies.extend(r.anomalies.iter().cloned());
        if r.detail.verdict == Verdict::Accepted {
            let list = r
                .ciphers
                .iter()
                .map(|id| {
                    let s = wire::suite(*id);
                    CipherReport {
                        id: format!("0x{id:04X}"),
                        name: wire::suite_name(*id),
                        openssl_name: s.map(|s| s.openssl_name.to_string()).unwrap_or_default(),
                        weaknesses: s.map(wire::weaknesses).unwrap_or_default(),
                    }
                })
                .collect();
            report.ciphers.insert(r.version.name().to_string(), list);
            if let Some(f) = &r.flight
                && !f.certificates.is_empty()
                && chain_flight.as_ref().is_none_or(|(v, _)| r.version > *v)
            {
                chain_flight = Some((r.version, f.certificates.clone()));
            }
        }
    }
    protocol_findings(&results, &mut report.findings);
    if !anomalies.is_empty() {
        let all_abnormal = results.iter().all(|r| r.detail.verdict == Verdict::Refused)
            && results.iter().all(|r| !r.anomalies.is_empty());
        report.findings.push(Finding::new(
            ids::HANDSHAKE_ANOMALY,
            if all_abnormal {
                Severity::Fail
            } else {
                Severity::Info
            },
            format!(
                "handshakes that ended without a ServerHello or an alert: {}",
                anomalies.join("; ")
            ),
        ));
    }
    if direct == Verdict::Accepted && ctx.opts.mode == Mode::SslRequest {
        report.findings.push(Finding::new(
            ids::DIRECT_TLS,
            Severity::Info,
            "the server also accepts direct TLS with ALPN postgresql (PostgreSQL 17+ sslnegotiation=direct)",
        ));
    }

    // The chain: from the clear-text handshake when a version up to TLS 1.2 was accepted,
    // else from a TLS 1.3 handshake through rustls.
    let any_accepted = results
        .iter()
        .any(|r| r.detail.verdict == Verdict::Accepted);
    let chain = match chain_flight {
        Some((v, c)) => Some((c, format!("{v} handshake (clear text)"))),
        None if any_accepted => match chain_via_rustls(&ctx).await {
            Ok(c) => Some((c, "TLSv1.3 handshake (rustls)".to_string())),
            Err(e) => {
                report.findings.push(Finding::new(
                    ids::CHAIN_UNAVAILABLE,
                    Severity::Warn,
                    format!("could not read the certificate chain: {e}"),
                ));
                None
            }
        },
        None => None,
    };
    if let Some((chain, source)) = chain {
        certificate_findings(&ctx.opts, &chain, source, &mut report);
    }
    if let Some(login) = login {
        plaintext_findings(&login, &mut report.findings);
        report.plaintext_login = Some(login);
    }
    inspect::sort(&mut report.findings);
    report.connections = ctx.connections.load(std::sync::atomic::Ordering::Relaxed);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Why a server that answered no ClientHello with TLS cannot be probed (`None`: it is a
/// PostgreSQL server that closes TLS handshakes; that is reported as findings).
fn not_probeable(fulls: &[Attempt], mode: Mode, io_timeout: Duration) -> Option<String> {
    let find = |f: fn(&Attempt) -> bool| fulls.iter().find(|a| f(a));
    if let Some(Attempt::NotPostgres(b)) = find(|a| matches!(a, Attempt::NotPostgres(_))) {
        let hint = if b.first() == Some(&0x15) || b.first() == Some(&0x16) {
            " (it speaks TLS from the first byte: a plain TLS server; PostgreSQL 17 direct TLS needs --direct)"
        } else {
            ""
        };
        return Some(format!(
            "not a PostgreSQL server: it answered SSLRequest with {}{hint}",
            printable(b)
        ));
    }
    if let Some(Attempt::PgError(e)) = find(|a| matches!(a, Attempt::PgError(_))) {
        return Some(format!("the server refused SSLRequest: {e}"));
    }
    if find(|a| matches!(a, Attempt::Silent)).is_some() {
        return Some(format!(
            "no answer to SSLRequest within {io_timeout:?}: not a PostgreSQL server (or a very slow one)"
        ));
    }
    if find(|a| matches!(a, Attempt::ClosedEarly)).is_some() {
        return Some(
            "the server closed the connection without answering SSLRequest: not PostgreSQL, or it refuses this client".into(),
        );
    }
    if let Some(Attempt::Connect(e)) = find(|a| matches!(a, Attempt::Connect(_))) {
        return Some(e.clone());
    }
    if mode == Mode::Direct {
        let what = fulls.first().map(describe).unwrap_or_default();
        return Some(format!(
            "no TLS answer to a direct ClientHello ({what}): the server does not support direct TLS (PostgreSQL before 17, or ALPN refused)"
        ));
    }
    None
}

fn protocol_findings(results: &[VersionResult], out: &mut Vec<Finding>) {
    let accepted = |v: ProtocolVersion| {
        results
            .iter()
            .any(|r| r.version == v && r.detail.verdict == Verdict::Accepted)
    };
    let tested = |v: ProtocolVersion| results.iter().any(|r| r.version == v);
    for (v, id, why) in [
        (
            ProtocolVersion::Ssl3,
            ids::PROTOCOL_SSL3,
            "SSL 3.0 is broken (POODLE, RFC 7568)",
        ),
        (
            ProtocolVersion::Tls10,
            ids::PROTOCOL_TLS10,
            "TLS 1.0 is deprecated (RFC 8996; BEAST, SHA-1 PRF)",
        ),
        (
            ProtocolVersion::Tls11,
            ids::PROTOCOL_TLS11,
            "TLS 1.1 is deprecated (RFC 8996)",
        ),
    ] {
        if accepted(v) {
            out.push(Finding::new(
                id,
                Severity::Fail,
                format!("the server accepts {v}: {why}; set ssl_min_protocol_version = 'TLSv1.2'"),
            ));
        }
    }
    if tested(ProtocolVersion::Tls13)
        && !accepted(ProtocolVersion::Tls13)
        && results
            .iter()
            .any(|r| r.detail.verdict == Verdict::Accepted)
    {
        out.push(Finding::new(
            ids::PROTOCOL_NO_TLS13,
            Severity::Info,
            "the server does not accept TLS 1.3 (OpenSSL 1.1.1+ and ssl_max_protocol_version unset enable it)",
        ));
    }
    if !results
        .iter()
        .any(|r| r.detail.verdict == Verdict::Accepted)
    {
        out.push(Finding::new(
            ids::PROTOCOL_NONE,
            Severity::Fail,
            "the server accepted no protocol version: no TLS client can connect",
        ));
    }
    let mut by_weakness: BTreeMap<wire::Weakness, Vec<String>> = BTreeMap::new();
    for r in results
        .iter()
        .filter(|r| r.detail.verdict == Verdict::Accepted)
    {
        for id in &r.ciphers {
            if let Some(s) = wire::suite(*id) {
                for w in wire::weaknesses(s) {
                    let entry = by_weakness.entry(w).or_default();
                    let label = format!("{} ({})", s.name, r.version);
                    if !entry.contains(&label) {
                        entry.push(label);
                    }
                }
            }
        }
        if r.compression {
            out.push(Finding::new(
                ids::TLS_COMPRESSION,
                Severity::Fail,
                format!("{}: the server compresses records (CRIME)", r.version),
            ));
        }
        if let Some(bits) = r.dh_bits
            && bits < 2048
        {
            out.push(Finding::new(
                ids::DH_WEAK,
                Severity::Fail,
                format!(
                    "{}: DHE with a {bits}-bit prime (Logjam); use 2048 bits or more",
                    r.version
                ),
            ));
        }
    }
    for (w, suites) in by_weakness {
        let name = serde_plain_name(w);
        out.push(Finding::new(
            &format!("{}{}", ids::CIPHER_PREFIX, name),
            w.severity(),
            format!(
                "accepted suites with weakness {name}: {}",
                suites.join(", ")
            ),
        ));
    }
}

fn serde_plain_name(w: wire::Weakness) -> String {
    match w {
        wire::Weakness::Null => "null",
        wire::Weakness::Anonymous => "anonymous",
        wire::Weakness::Export => "export",
        wire::Weakness::Rc4 => "rc4",
        wire::Weakness::Des => "des",
        wire::Weakness::SmallBlock => "small-block",
        wire::Weakness::Md5 => "md5",
        wire::Weakness::NoForwardSecrecy => "no-forward-secrecy",
        wire::Weakness::Cbc => "cbc",
    }
    .to_string()
}

fn certificate_findings(
    opts: &ProbeOptions,
    chain: &[Vec<u8>],
    source: String,
    report: &mut ProbeReport,
) {
    let now = inspect::now();
    let name = opts.name().to_string();
    let Some(leaf_der) = chain.first() else {
        return;
    };
    let leaf = match inspect::facts(leaf_der, now) {
        Ok(f) => f,
        Err(e) => {
            report.findings.push(Finding::new(
                ids::CERT_UNREADABLE,
                Severity::Fail,
                format!("the server's certificate does not parse: {e}"),
            ));
            return;
        }
    };
    report.findings.extend(inspect::check_certificate(
        leaf_der,
        now,
        &opts.policy,
        std::slice::from_ref(&name),
    ));
    let (trusted, verify_error) = match &opts.ca {
        Some(ca) => match chain::verify_chain(chain, ca, &name) {
            Ok(()) => (Some(true), None),
            Err(e) => {
                report.findings.push(Finding::new(
                    ids::CHAIN_VERIFY_FAILED,
                    Severity::Fail,
                    format!("a verify-full client refuses the chain for {name}: {e}"),
                ));
                // Say precisely where the chain breaks, when it does.
                report.findings.extend(inspect::check_chain(chain, ca));
                (Some(false), Some(e))
            }
        },
        None => {
            report.findings.push(Finding::new(
                ids::CHAIN_NOT_VERIFIED,
                Severity::Info,
                "no CA given (--ca): the chain was not verified",
            ));
            (None, None)
        }
    };
    report.certificate = Some(CertificateReport {
        leaf,
        chain: chain[1..]
            .iter()
            .filter_map(|d| inspect::facts(d, now).ok())
            .collect(),
        chain_length: chain.len(),
        verified_name: name,
        trusted,
        verify_error,
        source,
    });
}

fn plaintext_findings(login: &PlaintextLogin, out: &mut Vec<Finding>) {
    match login.result.as_str() {
        "trusted" => out.push(Finding::new(
            ids::PLAINTEXT_LOGIN,
            Severity::Fail,
            format!(
                "{}@{} logged in without TLS and without a password: {}",
                login.user, login.database, login.detail
            ),
        )),
        "password-requested" => out.push(Finding::new(
            ids::PLAINTEXT_AUTH,
            Severity::Fail,
            format!(
                "{}@{} can log in without TLS: {} (use hostssl lines only in pg_hba.conf)",
                login.user, login.database, login.detail
            ),
        )),
        "error" => out.push(Finding::new(
            ids::HANDSHAKE_ANOMALY,
            Severity::Warn,
            format!("the plaintext login test failed: {}", login.detail),
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_serialise_with_report_names() {
        let mut p = Protocols::all(Verdict::Refused);
        p.set(ProtocolVersion::Tls13, Verdict::Accepted);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["TLSv1.3"], "accepted");
        assert_eq!(json["SSLv3"], "refused");
        assert_eq!(json.as_object().unwrap().len(), 5);
    }

    #[test]
    fn join_all_keeps_order() {
        let out = costplus_block_on(futures_join_all((0..5u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
            i
        })));
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
    }

    fn costplus_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }
}
