//! The HTTP endpoint for monitoring: `/metrics` (Prometheus text) and `/healthz`.
//!
//! Scrapes are cheap: metrics are collected at most once per `ttl` (concurrent scrapes share
//! one collection) and every query is bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::config::Config;
use crate::metrics;

/// The exporter's shared state.
pub struct Exporter {
    config: Config,
    ttl: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, String, bool)>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter for every server in `config`, caching for `ttl`.
    pub fn new(config: Config, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            config,
            ttl,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The current metrics text and whether every server is up (cached for the TTL).
    pub async fn scrape(&self) -> (String, bool) {
        let mut cache = self.cache.lock().await;
        if let Some((at, text, up)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return (text.clone(), *up);
        }
        let mut samples = Vec::new();
        for server in &self.config.servers {
            let client = match server.admin_connect_options() {
                Ok(o) => costplus_pgcluster::connect::connect(&o)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            samples.extend(metrics::collect(server, &self.config.naming, client).await);
        }
        let up = samples
            .iter()
            .filter(|s| s.name == "costplus_up")
            .all(|s| s.value == 1.0);
        let text = metrics::render(&samples);
        *cache = Some((Instant::now(), text.clone(), up));
        (text, up)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&hyper::Method::GET, "/metrics") => {
                let (text, _) = self.scrape().await;
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                )
            }
            (&hyper::Method::GET, "/healthz") => {
                let (_, up) = self.scrape().await;
                if up {
                    (StatusCode::OK, "text/plain", "ok\n".to_string())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "a PostgreSQL server is down\n".to_string(),
                    )
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics or /healthz\n".to_string(),
            ),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(resp)
    }

    /// Serve on `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
                r = listener.accept() => r?,
                () = shutdown.as_mut() => return Ok(()),
            };
            let this = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| this.clone().handle(req));
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!("exporter connection: {e}");
                }
            });
        }
    }
}
