//! Arguments shared by the commands that work on a configured server.

use std::path::{Path, PathBuf};

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
        ScheduleStyle::Systemd => SYSTEMD_DIR,
        ScheduleStyle::Cron => "/etc/cron.d",
    }
}

const SYSTEMD_DIR: &str = "/etc/systemd/system";

/// `systemctl daemon-reload`, then `enable --now` every timer among `files`, when `dir` is where
/// systemd looks and systemd runs; otherwise nothing (the files are written for the operator
/// to enable). Returns the timers enabled.
pub(crate) fn enable_timers(
    dir: &Path,
    files: &[costplus_pgbackrest::schedule::UnitFile],
) -> anyhow::Result<Vec<String>> {
    if dir != Path::new(SYSTEMD_DIR) || !Path::new("/run/systemd/system").is_dir() {
        return Ok(Vec::new());
    }
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let st = std::process::Command::new("systemctl")
            .args(args)
            .status()
            .with_context(|| format!("systemctl {}", args.join(" ")))?;
        anyhow::ensure!(st.success(), "systemctl {} failed ({st})", args.join(" "));
        Ok(())
    };
    run(&["daemon-reload"])?;
    let mut enabled = Vec::new();
    for f in files.iter().filter(|f| f.name.ends_with(".timer")) {
        run(&["enable", "--now", &f.name])?;
        enabled.push(f.name.clone());
    }
    Ok(enabled)
}
