//! `costplus-isolation check`.

use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand};

use crate::common::{ConfigArgs, runtime};
use crate::output::{Format, print_json};
use costplus_core::customer::Session;

/// Arguments of `costplus-isolation`.
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
    /// Prove that no customer can reach another's database (catalog, pg_hba.conf, live logins).
    Check {
        /// Output format (JSON: a top-level `violations` array, empty when isolated).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Ordered pairs of customers to try with real logins (0: none).
        #[arg(long, default_value_t = 10)]
        live_pairs: usize,
    },
}

/// Run `costplus-isolation`. Exit code 3 when there is a violation.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Check { format, live_pairs } = args.command;
    let config = args.config.load()?;
    let report = runtime()?.block_on(async {
        let session = Session::open(config, args.config.server.as_deref(), None).await?;
        anyhow::Ok(session.isolation(live_pairs).await?)
    })?;
    match format {
        Format::Json => print_json(&report)?,
        Format::Human => {
            println!(
                "{} customers, {} ordered pairs: {}",
                report.customers,
                report.pairs,
                if report.violations.is_empty() {
                    "isolated".to_string()
                } else {
                    format!("{} VIOLATIONS", report.violations.len())
                }
            );
            println!(
                "live: {}/{} pairs refused, {}/{} plaintext logins refused{}",
                report.live.pairs_refused,
                report.live.pairs_tried,
                report.live.plaintext_refused,
                report.live.plaintext_tried,
                report
                    .live
                    .note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            for v in &report.violations {
                println!(
                    "  {} -> {}  [{} {}]  {}",
                    v.from, v.to, v.source, v.kind, v.evidence
                );
            }
        }
    }
    Ok(if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
