//! `costplus-audit`: the whole security posture in one report.

use std::process::ExitCode;

use clap::{Args as ClapArgs, ValueEnum};

use crate::common::{ConfigArgs, runtime};
use crate::output::{color_enabled_stdout, print_json};
use costplus_core::audit;

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// Text grouped by area (`human` is accepted too).
    #[value(alias = "human")]
    Text,
    /// JSON (documented schema: `schema`, `score`, `rating`, `summary`, `checks`, `raise_score`).
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

/// Arguments of `costplus-audit`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = AuditFormat::Text)]
    format: AuditFormat,
    /// Exit with code 3 when a check fails at or above this severity.
    #[arg(long, value_parser = ["low", "medium", "high", "critical"])]
    fail_on: Option<String>,
    /// Skip the host checks (firewall, SSH, fail2ban, disks): when not running on the database host.
    #[arg(long)]
    no_host: bool,
}

/// Run `costplus-audit`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (cfg, server) = args.config.server()?;
    let report = runtime()?.block_on(async {
        let facts = audit::gather(&cfg, &server, !args.no_host).await?;
        anyhow::Ok(audit::evaluate(&facts))
    })?;
    match args.format {
        AuditFormat::Text => print!("{}", report.render_text(color_enabled_stdout())),
        AuditFormat::Json => print_json(&report)?,
        AuditFormat::Sarif => print_json(&audit::to_sarif(&report))?,
    }
    let threshold = args.fail_on.as_deref().and_then(audit::Severity::parse);
    Ok(match threshold {
        Some(t) if report.fails_at(t) => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}
