//! The command-line layer of costplus: argument definitions (clap), output (human or JSON),
//! logging setup and exit codes, shared by the per-task binaries and the umbrella `costplus`.
//!
//! Binaries are one call into this crate; this crate is one call per command into the
//! libraries. Data goes to stdout, logs and hints to stderr.
//!
//! Exit codes (every binary):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command failed (the error is printed on stderr) |
//! | 2 | invalid arguments |
//! | 3 | the command ran, and what it checks failed (findings over threshold, drill failed, violations) |

#![allow(clippy::print_stdout, clippy::print_stderr)] // the CLI layer is where printing happens

pub mod audit;
pub mod backup;
pub mod checklist;
pub mod common;
pub mod deprovision;
pub mod docs;
pub mod exporter;
pub mod fail2ban;
pub mod hba;
pub mod incident;
pub mod isolation;
pub mod maintain;
pub mod offsite;
pub mod output;
pub mod provision;
pub mod sandbox;
pub mod status;
pub mod tls;
pub mod vault;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Options every command accepts. Every task's `Args` flattens this.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// `costplus`: every costplus task under one binary, with the same arguments as the per-task
/// binaries (`costplus hba ...` = `costplus-hba ...`).
#[derive(Debug, Parser)]
#[command(
    name = "costplus",
    version,
    about = "Run a small managed-PostgreSQL business safely from one seat."
)]
pub struct Umbrella {
    #[command(subcommand)]
    command: Task,
}

/// The tasks of the umbrella binary.
#[derive(Debug, Subcommand)]
pub enum Task {
    /// The whole system on this machine, on loopback: up, status, env, down, demo.
    Sandbox(sandbox::SandboxArgs),
    /// Create customers (one or a batch), finish or abort a half-done one, rotate, limit, list.
    Provision(Box<provision::Args>),
    /// Remove a customer: NOLOGIN, terminate, final dump, drop, pg_hba, archive the credentials.
    Deprovision(deprovision::Args),
    /// Prove that no customer can reach another's database.
    Isolation(isolation::Args),
    /// fail2ban for the PostgreSQL port: render, install, check, attackers.
    Fail2ban(fail2ban::Args),
    /// Incident evidence in one report.
    Incident(incident::Args),
    /// Prometheus metrics and a health endpoint for the external monitor.
    Exporter(exporter::Args),
    /// Scheduled maintenance: daily, weekly and monthly runs with heartbeats; install timers.
    Maintain(maintain::Args),
    /// The whole security posture in one report (text, JSON, SARIF).
    Audit(audit::Args),
    /// The pre-launch checklist, each item checked live, with the command that fixes it.
    Checklist(checklist::Args),
    /// The one-screen morning summary: server, TLS, backups, offsite, customers, bans.
    Status(status::Args),
    /// The encrypted credential vault: init, put, get, list, archive, rotate-key, export, ...
    Vault(Box<vault::Args>),
    /// The Wasabi/S3 offsite: verify repo2, ship artefacts, the monthly cost.
    Offsite(offsite::Args),
    /// Server certificates: probe a live server's TLS, inspect files, issue, renew.
    Tls(tls::Args),
    /// pg_hba.conf: rules as the server reads them, lint, explain, edit, apply.
    Hba(Box<hba::Args>),
    /// Encrypted pgBackRest backups, status, schedules and restore drills.
    Backup(backup::Args),
    /// Print a shell completion script for costplus.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (costplus.1 and costplus-<task>.1) into a directory.
    Man {
        /// Target directory.
        #[arg(long, default_value = "man")]
        out: std::path::PathBuf,
    },
}

/// Set up logging to stderr: warnings by default, more with -v, `RUST_LOG` wins.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::color_enabled_stderr())
        .try_init();
}

/// Turn a command's result into the process exit code, printing the error chain on stderr.
pub fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(1)
    })
}

/// `main` of a per-task binary: parse `A` as the whole command line of `name`, set up logging,
/// run, map the result to an exit code. The umbrella embeds the same `A` as a subcommand.
pub fn task_main<A: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    about: &'static str,
    run: fn(A) -> anyhow::Result<ExitCode>,
) -> ExitCode {
    // The about goes on after the derive, which would put the Args struct's doc there.
    let cmd =
        A::augment_args(clap::Command::new(name).version(env!("CARGO_PKG_VERSION"))).about(about);
    let matches = cmd.get_matches();
    let args = A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(
        matches
            .try_get_one::<u8>("verbose")
            .ok()
            .flatten()
            .copied()
            .unwrap_or(0),
    );
    finish(run(args))
}

/// Entry point of the umbrella binary `costplus`.
pub fn main_umbrella() -> ExitCode {
    let cli = Umbrella::parse();
    match cli.command {
        Task::Completions { shell } => finish(docs::completions(shell)),
        Task::Man { out } => finish(docs::man(&out)),
        Task::Sandbox(args) => {
            init_logging(args.global.verbose);
            finish(sandbox::run(args))
        }
        Task::Provision(args) => {
            init_logging(args.global.verbose);
            finish(provision::run(*args))
        }
        Task::Deprovision(args) => {
            init_logging(args.global.verbose);
            finish(deprovision::run(args))
        }
        Task::Isolation(args) => {
            init_logging(args.global.verbose);
            finish(isolation::run(args))
        }
        Task::Fail2ban(args) => {
            init_logging(args.global.verbose);
            finish(fail2ban::run(args))
        }
        Task::Incident(args) => {
            init_logging(args.global.verbose);
            finish(incident::run(args))
        }
        Task::Exporter(args) => {
            init_logging(args.global.verbose);
            finish(exporter::run(args))
        }
        Task::Maintain(args) => {
            init_logging(args.global.verbose);
            finish(maintain::run(args))
        }
        Task::Audit(args) => {
            init_logging(args.global.verbose);
            finish(audit::run(args))
        }
        Task::Checklist(args) => {
            init_logging(args.global.verbose);
            finish(checklist::run(args))
        }
        Task::Status(args) => {
            init_logging(args.global.verbose);
            finish(status::run(args))
        }
        Task::Vault(args) => {
            init_logging(args.global.verbose);
            finish(vault::run(*args))
        }
        Task::Offsite(args) => {
            init_logging(args.global.verbose);
            finish(offsite::run(args))
        }
        Task::Tls(args) => {
            init_logging(args.global.verbose);
            finish(tls::run(args))
        }
        Task::Hba(args) => {
            init_logging(args.global.verbose);
            finish(hba::run(*args))
        }
        Task::Backup(args) => {
            init_logging(args.global.verbose);
            finish(backup::run(args))
        }
    }
}
