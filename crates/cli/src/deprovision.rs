//! `costplus-deprovision NAME --yes`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args as ClapArgs;

use crate::common::{ConfigArgs, runtime};
use crate::output::{Format, print_json};
use costplus_core::customer::{self, DeprovisionOptions, Session};

/// Arguments of `costplus-deprovision`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// The customer to remove.
    name: String,
    /// Show the steps, SQL and pg_hba.conf diff; change nothing.
    #[arg(long)]
    plan: bool,
    /// Do it without asking (required when not on a terminal).
    #[arg(long)]
    yes: bool,
    /// Keep a final dump (pg_dump custom format) of the database in DIR before dropping it.
    #[arg(long, value_name = "DIR")]
    final_dump: Option<PathBuf>,
}

/// Run `costplus-deprovision`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.plan && !args.yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "deprovisioning drops {}'s database and role: pass --yes (or --plan to see the steps)",
                args.name
            );
        }
        eprint!(
            "This drops {0}'s database and role. Type the customer name to confirm: ",
            args.name
        );
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != args.name {
            anyhow::bail!("not confirmed; nothing changed");
        }
    }
    let config = args.config.load()?;
    runtime()?.block_on(async {
        let mut session = Session::open(config, args.config.server.as_deref(), None).await?;
        let mut ctx = session.ctx();
        let r = customer::deprovision(&mut ctx, &args.name, DeprovisionOptions { plan: args.plan, final_dump: args.final_dump.clone() }).await?;
        match args.format {
            Format::Json => print_json(&r)?,
            Format::Human if r.plan => {
                println!("plan to deprovision {}: database {}, role {}", r.customer, r.database, r.role);
                for s in &r.steps {
                    println!("  [{}] {}", if s.already_done { "done" } else { "todo" }, s.step);
                    for sql in &s.sql {
                        println!("         {sql}");
                    }
                }
                if !r.hba_diff.is_empty() {
                    println!("\npg_hba.conf:\n{}", r.hba_diff);
                }
            }
            Format::Human => {
                println!("deprovisioned {}: database {} and role {} dropped, rules removed, credentials archived", r.customer, r.database, r.role);
                if r.sessions_terminated > 0 {
                    println!("  {} sessions terminated", r.sessions_terminated);
                }
                if let Some(d) = &r.final_dump {
                    println!("  final dump: {}", d.display());
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
