//! `costplus-exporter --listen ADDR`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;

use crate::common::{ConfigArgs, runtime};

/// Arguments of `costplus-exporter`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = "127.0.0.1:9187")]
    listen: SocketAddr,
    /// Collect at most once per this many seconds (scrapes in between get the cached result).
    #[arg(long, default_value_t = 15)]
    cache_seconds: u64,
}

/// Run `costplus-exporter` until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.config.load()?;
    let exporter =
        costplus_core::exporter::Exporter::new(cfg, Duration::from_secs(args.cache_seconds));
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "serving http://{}/metrics and /healthz",
            listener.local_addr()?
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        exporter
            .serve(listener, shutdown)
            .await
            .context("serving metrics")
    })?;
    Ok(ExitCode::SUCCESS)
}
