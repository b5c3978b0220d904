//! `costplus-fail2ban render|install|check|attackers`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};

use crate::common::{ConfigArgs, runtime};
use crate::output::{Format, print_json};
use costplus_core::config::Config;
use costplus_core::{fail2ban, pglog};

/// Arguments of `costplus-fail2ban`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write filter.d/costplus-postgresql.conf and jail.d/costplus-postgresql.conf under DIR.
    Render {
        /// Target directory (a fail2ban configuration directory or a staging one).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        jail: JailArgs,
    },
    /// Install the filter and jail into /etc/fail2ban, set the PostgreSQL logging settings the
    /// filter needs (ALTER SYSTEM + reload) and reload fail2ban.
    Install {
        /// fail2ban configuration directory.
        #[arg(long, default_value = "/etc/fail2ban")]
        fail2ban_dir: PathBuf,
        /// Show what would change; change nothing.
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        jail: JailArgs,
    },
    /// Run the real fail2ban-regex with our filter over a log and list the matched addresses.
    Check {
        /// The PostgreSQL log [default: the configured server's log file].
        log: Option<PathBuf>,
    },
    /// Failed logins per client address and per role, and current bans.
    Attackers {
        /// The PostgreSQL log [default: the configured server's log file].
        log: Option<PathBuf>,
        /// Only failures in this window (e.g. 30m, 1h, 7d).
        #[arg(long, default_value = "24h")]
        since: String,
    },
}

/// Jail settings that override the configuration.
#[derive(Debug, Clone, ClapArgs)]
struct JailArgs {
    /// PostgreSQL port(s) to protect [default: the configured server's].
    #[arg(long = "port", value_delimiter = ',')]
    ports: Vec<u16>,
    /// Log file fail2ban reads [default: the configured server's].
    #[arg(long)]
    logpath: Option<PathBuf>,
    /// Failures before a ban [default: 5].
    #[arg(long)]
    maxretry: Option<u32>,
    /// Counting window [default: 10m].
    #[arg(long)]
    findtime: Option<String>,
    /// Ban duration [default: 1h].
    #[arg(long)]
    bantime: Option<String>,
    /// Firewall action.
    #[arg(long, value_parser = ["ufw", "nftables"])]
    banaction: Option<String>,
}

fn config_if_any(args: &ConfigArgs) -> anyhow::Result<Option<Config>> {
    let explicit =
        args.config.is_some() || std::env::var_os(costplus_core::config::CONFIG_ENV).is_some();
    if explicit {
        args.load().map(Some)
    } else {
        Ok(Config::discover(None).ok())
    }
}

fn jail_options(
    cfg: Option<&Config>,
    server: Option<&str>,
    a: &JailArgs,
) -> anyhow::Result<fail2ban::JailOptions> {
    let mut o = cfg.and_then(|c| c.fail2ban.clone()).unwrap_or_default();
    if let Some(s) = cfg.map(|c| c.server(server)).transpose()? {
        if cfg.and_then(|c| c.fail2ban.as_ref()).is_none() {
            o.ports = vec![s.port];
        }
        if let Some(log) = &s.log_file {
            o.logpath = log.clone();
        }
    }
    if !a.ports.is_empty() {
        o.ports = a.ports.clone();
    }
    if let Some(v) = &a.logpath {
        o.logpath = v.clone();
    }
    if let Some(v) = a.maxretry {
        o.maxretry = v;
    }
    if let Some(v) = &a.findtime {
        o.findtime = v.clone();
    }
    if let Some(v) = &a.bantime {
        o.bantime = v.clone();
    }
    if let Some(v) = &a.banaction {
        o.banaction = if v == "ufw" {
            fail2ban::BanAction::Ufw
        } else {
            fail2ban::BanAction::Nftables
        };
    }
    Ok(o)
}

fn log_path(cfg: &ConfigArgs, explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let (_, server) = cfg.server()?;
    server
        .log_file
        .context("no log file given and the configured server has no log_file")
}

/// Parse `30m`, `1h`, `7d`, `45s` into a duration.
pub(crate) fn parse_window(s: &str) -> anyhow::Result<chrono::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("--since {s:?}: expected a number and a unit (s, m, h, d)"))?;
    Ok(match unit {
        "s" => chrono::Duration::seconds(n),
        "m" | "" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => anyhow::bail!("--since {s:?}: unknown unit {unit:?} (use s, m, h or d)"),
    })
}

/// Run `costplus-fail2ban`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Render { out, jail } => {
            let cfg = config_if_any(&args.config)?;
            let opts = jail_options(cfg.as_ref(), args.config.server.as_deref(), &jail)?;
            let written = fail2ban::render_to(&out, &opts)?;
            match args.format {
                Format::Json => print_json(&written)?,
                Format::Human => {
                    println!("wrote {}", written.filter.display());
                    println!("wrote {}", written.jail.display());
                }
            }
        }
        Command::Install {
            fail2ban_dir,
            plan,
            jail,
        } => {
            let (cfg, server) = args.config.server()?;
            let opts = jail_options(Some(&cfg), args.config.server.as_deref(), &jail)?;
            let paths = fail2ban::Rendered::paths(&fail2ban_dir);
            let settings = fail2ban::required_settings();
            if plan {
                let plan = serde_json::json!({
                    "plan": true,
                    "files": { paths.filter.display().to_string(): fail2ban::render_filter(), paths.jail.display().to_string(): fail2ban::render_jail(&opts) },
                    "alter_system": settings.iter().map(|(k, v)| format!("ALTER SYSTEM SET {k} = '{v}'")).collect::<Vec<_>>(),
                    "then": ["SELECT pg_reload_conf()", "fail2ban-client reload"],
                });
                match args.format {
                    Format::Json => print_json(&plan)?,
                    Format::Human => {
                        println!(
                            "would write {} and {}",
                            paths.filter.display(),
                            paths.jail.display()
                        );
                        for (k, v) in &settings {
                            println!("would run: ALTER SYSTEM SET {k} = '{v}'");
                        }
                        println!("would reload PostgreSQL and fail2ban");
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            runtime()?.block_on(async {
                let client =
                    costplus_pgcluster::connect::connect(&server.admin_connect_options()?).await?;
                for (k, v) in &settings {
                    // Names are constants; values are constants too, quoted as literals.
                    client
                        .batch_execute(&format!(
                            "ALTER SYSTEM SET {k} = '{}'",
                            v.replace('\'', "''")
                        ))
                        .await?;
                }
                client.batch_execute("SELECT pg_reload_conf()").await?;
                anyhow::Ok(())
            })?;
            let written = fail2ban::render_to(&fail2ban_dir, &opts)?;
            let reloaded = match costplus_fs::system_tool("fail2ban-client") {
                Some(c) => std::process::Command::new(c)
                    .arg("reload")
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false),
                None => false,
            };
            match args.format {
                Format::Json => print_json(
                    &serde_json::json!({ "files": written, "fail2ban_reloaded": reloaded }),
                )?,
                Format::Human => {
                    println!(
                        "installed {} and {}",
                        written.filter.display(),
                        written.jail.display()
                    );
                    println!("PostgreSQL logging settings applied and reloaded");
                    if !reloaded {
                        eprintln!(
                            "note: fail2ban is not running; start it with: systemctl enable --now fail2ban"
                        );
                    }
                }
            }
        }
        Command::Check { log } => {
            let log = log_path(&args.config, log)?;
            let regex = costplus_fs::system_tool("fail2ban-regex")
                .context("fail2ban-regex not found; install it: apt-get install -y fail2ban")?;
            let dir = tempfile::tempdir()?;
            let rendered = fail2ban::render_to(dir.path(), &fail2ban::JailOptions::default())?;
            let check = fail2ban::check_with_fail2ban_regex(&regex, &log, &rendered.filter)?;
            match args.format {
                Format::Json => print_json(&check)?,
                Format::Human => {
                    println!(
                        "{} failed logins matched in {}",
                        check.matched.len(),
                        log.display()
                    );
                    for ip in &check.matched {
                        println!("  {ip}");
                    }
                }
            }
        }
        Command::Attackers { log, since } => {
            let log = log_path(&args.config, log)?;
            let text = std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
            let entries = pglog::parse(&String::from_utf8_lossy(&text));
            let since = chrono::Utc::now() - parse_window(&since)?;
            let report = pglog::attackers(&pglog::login_failures(&entries), Some(since));
            let bans = fail2ban::bans(costplus_fs::system_tool("fail2ban-client").as_deref());
            match args.format {
                Format::Json => print_json(&serde_json::json!({ "report": report, "bans": bans }))?,
                Format::Human => {
                    println!(
                        "{} failed logins since {}",
                        report.total_failures,
                        since.format("%Y-%m-%d %H:%M UTC")
                    );
                    for h in &report.by_host {
                        let roles: Vec<String> =
                            h.roles.iter().map(|(r, n)| format!("{r}×{n}")).collect();
                        println!("  {:<40} {:>5}  {}", h.host, h.failures, roles.join(" "));
                    }
                    match bans {
                        fail2ban::Bans::Active { banned, .. } => println!(
                            "banned now: {}",
                            if banned.is_empty() {
                                "none".into()
                            } else {
                                banned.join(" ")
                            }
                        ),
                        fail2ban::Bans::Unknown { reason } => println!("bans: unknown ({reason})"),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn windows() {
        assert_eq!(parse_window("90s").unwrap().num_seconds(), 90);
        assert_eq!(parse_window("1h").unwrap().num_minutes(), 60);
        assert_eq!(parse_window("7d").unwrap().num_hours(), 168);
        assert!(parse_window("soon").is_err());
        assert!(parse_window("5y").is_err());
    }
}
