//! `costplus-incident report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};

use crate::common::{ConfigArgs, runtime};
use crate::output::Format;
use costplus_core::{fail2ban, incident};

/// Arguments of `costplus-incident`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Collect the evidence into one report, print it and write it to a file.
    Report {
        /// Log evidence from this window (e.g. 30m, 1h, 1d).
        #[arg(long, default_value = "1h")]
        since: String,
        /// Output format (`text` or `json`).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// File to write the report to [default: ./costplus-incident-<time>.<txt|json>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// List queries running longer than this many seconds.
        #[arg(long, default_value_t = 300)]
        long_running_seconds: i64,
    },
}

/// Run `costplus-incident`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Report {
        since,
        format,
        out,
        long_running_seconds,
    } = args.command;
    let (cfg, server) = args.config.server()?;
    let window = crate::fail2ban::parse_window(&since)?;
    let mut extra = Vec::new();
    if let Some(b) = &cfg.backup {
        extra.push(("repository".to_string(), b.repo1_path.clone()));
    }
    let client_tool = costplus_fs::system_tool("fail2ban-client");
    let inputs = incident::Inputs {
        server: server.name.clone(),
        since: chrono::Utc::now() - window,
        log_file: server.log_file.clone(),
        extra_paths: extra,
        long_running_seconds,
        bans: fail2ban::bans(client_tool.as_deref()),
    };
    let report = runtime()?.block_on(async {
        let client = match server.admin_connect_options() {
            Ok(o) => costplus_pgcluster::connect::connect(&o)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        incident::collect(client, inputs).await
    });
    let (text, ext) = match format {
        Format::Json => (serde_json::to_string_pretty(&report)? + "\n", "json"),
        Format::Human => (incident::render_text(&report), "txt"),
    };
    let path = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "costplus-incident-{}.{ext}",
            report.generated_at.format("%Y%m%dT%H%M%SZ")
        ))
    });
    // The report names clients and roles: keep it private to the operator.
    costplus_fs::write_atomic(
        &path,
        text.as_bytes(),
        &costplus_fs::WriteOptions::private(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    print!("{text}");
    eprintln!("report written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
