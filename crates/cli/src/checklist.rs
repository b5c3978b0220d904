//! `costplus-checklist`: the pre-launch checklist, each item checked live.

use std::process::ExitCode;

use clap::Args as ClapArgs;

use crate::common::{ConfigArgs, runtime};
use crate::output::{Format, print_json};
use costplus_core::{audit, checklist};

/// Arguments of `costplus-checklist`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format (`text` ticks [x]/[ ]; JSON: `{"items": [{"id", "ok", "title", "evidence", "fix", ...}]}`).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Exit with code 3 when an item is not ticked.
    #[arg(long)]
    strict: bool,
    /// Skip the host checks (fail2ban, files): when not running on the database host.
    #[arg(long)]
    no_host: bool,
}

/// Run `costplus-checklist`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (cfg, server) = args.config.server()?;
    let report = runtime()?.block_on(async {
        let facts = audit::gather(&cfg, &server, !args.no_host).await?;
        anyhow::Ok(audit::evaluate(&facts))
    })?;
    let list = checklist::evaluate(&report, &cfg);
    match args.format {
        Format::Human => print!("{}", list.render_text()),
        Format::Json => print_json(&list)?,
    }
    Ok(if args.strict && !list.complete() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
