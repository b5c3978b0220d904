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
    /// pgBackRest's `info` is slow (it reads the repositories, one of them remote): kept for
    /// [`BACKUP_INFO_TTL`].
    backup_info: tokio::sync::Mutex<Option<(Instant, Option<costplus_pgbackrest::info::Stanza>)>>,
}

/// How long pgBackRest's `info` is reused between scrapes.
pub const BACKUP_INFO_TTL: Duration = Duration::from_secs(300);

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
            backup_info: tokio::sync::Mutex::new(None),
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
            samples.extend(
                metrics::collect(
                    server,
                    &self.config.naming,
                    client.as_ref().map_err(String::clone),
                )
                .await,
            );
            if let Ok(c) = &client {
                samples.extend(metrics::certificate(&server.name, c).await);
            }
            // [backup] and the maintenance records belong to the one server of the file.
            if self.config.servers.len() == 1 {
                samples.extend(self.operations(server).await);
            }
        }
        let up = samples
            .iter()
            .filter(|s| s.name == "costplus_up")
            .all(|s| s.value == 1.0);
        let text = metrics::render(&samples);
        *cache = Some((Instant::now(), text.clone(), up));
        (text, up)
    }

    /// Backups, drills and maintenance runs: from files and pgBackRest, not from SQL.
    async fn operations(&self, server: &crate::config::ServerConfig) -> Vec<metrics::Sample> {
        let mut out = Vec::new();
        if let Some(backup) = &self.config.backup {
            let mut cached = self.backup_info.lock().await;
            let fresh = cached
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < BACKUP_INFO_TTL);
            if !fresh {
                let info = match self.config.pgbackrest(server) {
                    Ok(Some(pgbr)) => tokio::task::spawn_blocking(move || pgbr.info(None))
                        .await
                        .ok()
                        .and_then(|r| {
                            r.map_err(|e| tracing::warn!("metrics: pgbackrest info: {e}"))
                                .ok()
                        }),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!("metrics: pgbackrest: {e}");
                        None
                    }
                };
                *cached = Some((Instant::now(), info));
            }
            if let Some((_, Some(info))) = cached.as_ref() {
                out.extend(metrics::backups(
                    &server.name,
                    info,
                    chrono::Utc::now().timestamp(),
                ));
            }
            match costplus_pgbackrest::drill::history(&backup.drill_history_dir()) {
                Ok(h) => out.extend(metrics::drills(&server.name, &h)),
                Err(e) => tracing::warn!("metrics: drill history: {e}"),
            }
        }
        let dir = self.config.maintenance_config().state_dir;
        let records: Vec<_> = [
            crate::maintain::Period::Daily,
            crate::maintain::Period::Weekly,
            crate::maintain::Period::Monthly,
        ]
        .into_iter()
        .filter_map(|p| crate::maintain::last_record(&dir, p).map(|r| (p, r)))
        .collect();
        out.extend(metrics::maintenance(
            &server.name,
            &records,
            chrono::Utc::now(),
        ));
        out
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
