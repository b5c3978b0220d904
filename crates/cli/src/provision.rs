//! `costplus-provision`: create customers (one, or a batch), finish or abort a half-done one,
//! rotate passwords, set connection limits, list customers with drift.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args as ClapArgs;

use crate::common::{ConfigArgs, runtime};
use crate::output::{Format, print_json};
use costplus_core::customer::{self, ProvisionOptions, Session};

/// Arguments of `costplus-provision`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// The customer name (lowercase letters, digits, _; starts with a letter).
    #[arg(required_unless_present_any = ["batch", "list"])]
    name: Option<String>,
    /// Show what would be done (SQL with the verifier redacted, the pg_hba.conf diff, the vault change); change nothing.
    #[arg(long)]
    plan: bool,
    /// Undo a half-done provisioning of NAME (after a crash).
    #[arg(long, conflicts_with_all = ["batch", "rotate", "connection_limit", "list"])]
    abort: bool,
    /// Provision every customer named in FILE (one per line, # comments) with one pg_hba.conf apply.
    #[arg(long, value_name = "FILE", conflicts_with = "name")]
    batch: Option<PathBuf>,
    /// Give NAME a new password (vault first, then the server).
    #[arg(long)]
    rotate: bool,
    /// Set NAME's connection limit (-1: none).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    connection_limit: Option<i32>,
    /// List every customer with drift detection.
    #[arg(long, conflicts_with = "name")]
    list: bool,
}

/// Run `costplus-provision`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    runtime()?.block_on(async {
        let mut session = Session::open(config, args.config.server.as_deref(), None).await?;
        let mut ctx = session.ctx();
        if args.list {
            let list = customer::list(&ctx).await?;
            match args.format {
                Format::Json => print_json(&serde_json::json!({ "customers": list }))?,
                Format::Human => {
                    println!("{:<24} {:<6} {:<9} {:<5} {:<9} {:>8}  drift", "customer", "role", "database", "hba", "vault", "sessions");
                    for c in &list {
                        println!(
                            "{:<24} {:<6} {:<9} {:<5} {:<9} {:>8}  {}",
                            c.customer,
                            yes(c.role),
                            yes(c.database),
                            yes(c.hba_rules),
                            c.vault.as_deref().unwrap_or("-"),
                            c.sessions,
                            if c.drift.is_empty() { "-".to_string() } else { c.drift.join("; ") }
                        );
                    }
                }
            }
            let drift = list.iter().any(|c| !c.drift.is_empty());
            return Ok(if drift { ExitCode::from(3) } else { ExitCode::SUCCESS });
        }
        if let Some(file) = &args.batch {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            let names: Vec<String> = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            let reports = customer::provision_batch(&mut ctx, &names, ProvisionOptions { plan: args.plan }).await?;
            match args.format {
                Format::Json => print_json(&serde_json::json!({ "plan": args.plan, "customers": reports }))?,
                Format::Human => {
                    let verb = if args.plan { "would provision" } else { "provisioned" };
                    println!("{verb} {} customers", reports.len());
                    for r in &reports {
                        println!("  {:<24} database {:<28} role {}", r.customer, r.database, r.role);
                    }
                    if let Some(diff) = reports.first().map(|r| &r.hba_diff).filter(|d| !d.is_empty()) {
                        println!("\npg_hba.conf:\n{diff}");
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        let name = args.name.as_deref().unwrap_or_default();
        if args.abort {
            let r = customer::abort_provision(&mut ctx, name, args.plan).await?;
            match args.format {
                Format::Json => print_json(&r)?,
                Format::Human => println!("{} {name}: {}", if args.plan { "would undo" } else { "undone" }, r.undone.join(", ")),
            }
            return Ok(ExitCode::SUCCESS);
        }
        if args.rotate {
            let r = customer::rotate(&mut ctx, name, args.plan).await?;
            match args.format {
                Format::Json => print_json(&r)?,
                Format::Human if args.plan => println!("would rotate {name}'s password (vault generation {})", r.generation.unwrap_or(0)),
                Format::Human => println!("rotated {name}'s password (vault generation {}); the customer needs the new one: costplus-vault export {name}", r.generation.unwrap_or(0)),
            }
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(limit) = args.connection_limit {
            let sql = customer::set_connection_limit(&ctx, name, limit, args.plan).await?;
            match args.format {
                Format::Json => print_json(&serde_json::json!({ "customer": name, "plan": args.plan, "sql": sql }))?,
                Format::Human => println!("{}{sql}", if args.plan { "would run: " } else { "" }),
            }
            return Ok(ExitCode::SUCCESS);
        }
        let r = customer::provision(&mut ctx, name, ProvisionOptions { plan: args.plan }).await?;
        match args.format {
            Format::Json => print_json(&r)?,
            Format::Human => {
                if r.already_provisioned {
                    println!("{name} is already provisioned: database {}, role {} (nothing to do)", r.database, r.role);
                } else if r.plan {
                    println!("plan for {name}: database {}, role {}{}", r.database, r.role, if r.resumed { " (finishing a half-done run)" } else { "" });
                    for s in &r.steps {
                        let mark = if s.already_done { "done" } else { "todo" };
                        println!("  [{mark}] {}", s.step);
                        for sql in &s.sql {
                            println!("         {sql}");
                        }
                    }
                    println!("  vault: {}", r.vault);
                    if !r.hba_diff.is_empty() {
                        println!("\npg_hba.conf:\n{}", r.hba_diff);
                    }
                } else {
                    println!("provisioned {name}: database {}, role {}{}", r.database, r.role, if r.resumed { " (finished a half-done run)" } else { "" });
                    println!("credentials are in the vault: costplus-vault get {name} --reveal, or costplus-vault export {name}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
