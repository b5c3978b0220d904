//! `costplus sandbox up|status|env|down`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::output::{Format, print_json};

/// Arguments of `costplus sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    /// Sandbox directory.
    #[arg(long, global = true, default_value = costplus_sandbox::DEFAULT_DIR, env = "COSTPLUS_SANDBOX_DIR")]
    pub dir: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Create the sandbox, or start what is not running (idempotent).
    Up,
    /// Show what runs.
    Status,
    /// Print `export` lines for psql, pgBackRest and costplus: eval "$(costplus sandbox env)".
    Env,
    /// Stop everything and remove the sandbox directory.
    Down,
    /// The whole product in one go: up, three customers, a TLS login writing data, isolation,
    /// audit, backups to both repositories, offsite verification, a restore drill.
    Demo,
    /// Run the sandbox's S3 server in the foreground (started by `up` in the background).
    #[command(hide = true)]
    ServeS3,
}

/// Run `costplus sandbox ...`.
pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SandboxCommand::Up => {
            let exe = std::env::current_exe().context("locating the costplus binary")?;
            let dir = std::path::absolute(&args.dir)?;
            let opts = costplus_sandbox::UpOptions {
                dir: dir.clone(),
                s3_server_command: vec![
                    exe.into(),
                    "sandbox".into(),
                    "serve-s3".into(),
                    "--dir".into(),
                    dir.into(),
                ],
            };
            let report = costplus_sandbox::up(&opts)?;
            match args.format {
                Format::Json => print_json(&report)?,
                Format::Human => {
                    let verb = if report.created {
                        "created"
                    } else {
                        "already there; started what was stopped"
                    };
                    println!("sandbox {verb}: {}", report.dir.display());
                    print_status(&report);
                    println!(
                        "\nnext: eval \"$(costplus sandbox env --dir {})\" && psql",
                        report.dir.display()
                    );
                }
            }
        }
        SandboxCommand::Status => {
            let report = costplus_sandbox::status(&args.dir)?;
            match args.format {
                Format::Json => print_json(&report)?,
                Format::Human => print_status(&report),
            }
        }
        SandboxCommand::Env => {
            let vars = costplus_sandbox::env(&args.dir)?;
            match args.format {
                Format::Json => {
                    let map: serde_json::Map<String, serde_json::Value> =
                        vars.into_iter().map(|(k, v)| (k, v.into())).collect();
                    print_json(&map)?;
                }
                Format::Human => print!("{}", costplus_sandbox::env_script(&vars)),
            }
        }
        SandboxCommand::Down => {
            let removed = costplus_sandbox::down(&args.dir)?;
            match args.format {
                Format::Json => {
                    print_json(&serde_json::json!({ "removed": removed, "dir": args.dir }))?
                }
                Format::Human if removed => {
                    println!("sandbox stopped and removed: {}", args.dir.display())
                }
                Format::Human => println!("no sandbox in {}", args.dir.display()),
            }
        }
        SandboxCommand::Demo => {
            let exe = std::env::current_exe().context("locating the costplus binary")?;
            let dir = std::path::absolute(&args.dir)?;
            let human = args.format == Format::Human;
            if human {
                println!("costplus sandbox demo in {}\n", dir.display());
            }
            let mut n = 0;
            let mut progress = |s: &costplus_sandbox::demo::DemoStep| {
                n += 1;
                if human {
                    let mark = if s.ok { "ok  " } else { "FAIL" };
                    println!(
                        "[{mark}] {n}. {} ({:.1}s)\n       $ {}\n       {}",
                        s.title, s.seconds, s.command, s.result
                    );
                } else {
                    eprintln!(
                        "{n}. {}: {} ({:.1}s)",
                        s.title,
                        if s.ok { "ok" } else { "FAILED" },
                        s.seconds
                    );
                }
            };
            let report = costplus_sandbox::demo::run(
                &costplus_sandbox::demo::DemoOptions { dir, exe },
                &mut progress,
            )?;
            match args.format {
                Format::Json => print_json(&report)?,
                Format::Human => {
                    println!(
                        "\n== summary: {} in {:.1}s",
                        if report.ok {
                            "every step passed"
                        } else {
                            "SOME STEPS FAILED"
                        },
                        report.total_seconds
                    );
                    for s in &report.steps {
                        println!(
                            "  {:>6.1}s  {}  {}",
                            s.seconds,
                            if s.ok { "ok  " } else { "FAIL" },
                            s.title
                        );
                    }
                    println!("\n== where everything is");
                    for (k, v) in &report.places {
                        println!("  {k:<15} {v}");
                    }
                }
            }
            return Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        SandboxCommand::ServeS3 => costplus_sandbox::serve_s3_foreground(&args.dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(r: &costplus_sandbox::Report) {
    let state = |b: bool| if b { "running" } else { "STOPPED" };
    println!(
        "  postgres   {} on localhost:{} (TLS, scram-sha-256)",
        state(r.postgres_running),
        r.state.pg_port
    );
    println!(
        "  s3         {} on https://localhost:{} bucket {}",
        state(r.s3_running),
        r.state.s3_port,
        r.state.bucket
    );
    println!("  config     {}", r.config.display());
    println!("  server log {}", r.server_log.display());
}
