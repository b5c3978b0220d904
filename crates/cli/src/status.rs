//! `costplus-status`: the one-screen morning summary.

use std::process::ExitCode;

use clap::Args as ClapArgs;

use crate::common::{ConfigArgs, runtime};
use crate::output::{Format, print_json};
use costplus_core::{fail2ban, status};

/// Arguments of `costplus-status`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format (`text` or `json`).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Do not read local files (certificate, backups): when not running on the database host.
    #[arg(long)]
    no_host: bool,
}

/// Run `costplus-status`. Exit 0 even when something needs attention (it is listed).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (cfg, server) = args.config.server()?;
    let client_tool = costplus_fs::system_tool("fail2ban-client");
    let bans = fail2ban::bans(client_tool.as_deref());
    let report = runtime()?.block_on(status::collect(&cfg, &server, !args.no_host, bans));
    match args.format {
        Format::Human => print!("{}", report.render_text()),
        Format::Json => print_json(&report)?,
    }
    Ok(ExitCode::SUCCESS)
}
