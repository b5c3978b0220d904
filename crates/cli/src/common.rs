//! Arguments shared by the commands that work on a configured server.

use std::path::PathBuf;

use anyhow::Context;
use costplus_core::config::{Config, ServerConfig};

/// `--config` and `--server`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file [default: $COSTPLUS_CONFIG, else /etc/costplus/costplus.toml].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Which server of the configuration (needed when it lists several).
    #[arg(long, global = true)]
    pub server: Option<String>,
}

impl ConfigArgs {
    /// Load the configuration.
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::discover(self.config.as_deref()).context("loading the costplus configuration")
    }

    /// Load the configuration and pick the server.
    pub fn server(&self) -> anyhow::Result<(Config, ServerConfig)> {
        let cfg = self.load()?;
        let server = cfg.server(self.server.as_deref())?.clone();
        Ok((cfg, server))
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// How scheduled runs are installed (`costplus-backup schedule`, `costplus-maintain install`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScheduleStyle {
    Systemd,
    Cron,
}

/// Where `style`'s files go unless `--dir` says otherwise.
pub(crate) fn schedule_dir(style: ScheduleStyle) -> &'static str {
    match style {
        ScheduleStyle::Systemd => costplus_pgbackrest::schedule::SYSTEMD_DIR,
        ScheduleStyle::Cron => costplus_pgbackrest::schedule::CRON_DIR,
    }
}
