//! `costplus-backup`: pgBackRest backups to repo1 (local) and repo2 (offsite), status,
//! schedules, restore drills and one-customer restores.
//!
//! JSON shapes (`--format json`):
//! - `run`: `{"backups": [BackupRecord...]}` (label, repo, type, seconds, size_bytes,
//!   delta_bytes, repo_delta_bytes, mb_per_second, fingerprint_file)
//! - `info`: pgBackRest's `info --output=json` stanza, typed and re-serialised
//! - `status`: `StatusReport` (ok, repos[], archiver, async_errors, problems, notes); exit 3
//!   when it is not ok
//! - `drill`: `DrillReport` (ok, reason, timings{restore_seconds, start_seconds, rto_seconds,
//!   checks_seconds, total_seconds}, checks[{name, ok, status, detail}], ...); exit 0 only
//!   when the drill passed, 3 when it ran and failed
//! - `restore-customer`: `CustomerRestoreReport`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};

use costplus_core::config::{Config, ServerConfig};
use costplus_pgbackrest::conf::{self, PgTarget};
use costplus_pgbackrest::secrets::FileSecrets;
use costplus_pgbackrest::{
    BackupConfig, BackupType, PgBackRest, archiving, backup, customer, drill, schedule, status,
};
use costplus_pgcluster::connect::ConnectOptions;

use crate::common::{ScheduleStyle, schedule_dir};
use crate::output::{Format, print_json};

/// Encrypted pgBackRest backups (repo1 local, repo2 offsite), status, schedules and restore drills.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    /// The costplus configuration file.
    #[arg(long, global = true, env = "COSTPLUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Which server of the configuration (needed when there are several).
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    command: Command,
}

/// `--type` of a backup.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Full,
    Diff,
    Incr,
}

impl From<Kind> for BackupType {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Full => BackupType::Full,
            Kind::Diff => BackupType::Diff,
            Kind::Incr => BackupType::Incr,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write pgbackrest.conf, set archiving (ALTER SYSTEM), create and check the stanza.
    Setup {
        /// Show what would change; change nothing.
        #[arg(long)]
        plan: bool,
        /// Restart the server when archive_mode needs it (clusters created by costplus only).
        #[arg(long)]
        restart: bool,
    },
    /// Take a backup (and record its fingerprint for drills).
    Run {
        /// full, diff or incr.
        #[arg(long = "type", value_enum, default_value = "full")]
        kind: Kind,
        /// Repository (1 local, 2 offsite); default: every configured repository.
        #[arg(long)]
        repo: Option<u32>,
        /// Show the commands; run nothing.
        #[arg(long)]
        plan: bool,
    },
    /// pgBackRest's view of the stanza (typed `info --output=json`).
    Info {
        /// One repository only.
        #[arg(long)]
        repo: Option<u32>,
    },
    /// Per repository: last good full/diff/incr, age against policy, WAL range and gaps, size.
    Status,
    /// `pgbackrest check`: the configuration works and WAL reaches every repository.
    Check,
    /// `pgbackrest verify`: checksums of every backup file and WAL segment.
    Verify {
        /// One repository only.
        #[arg(long)]
        repo: Option<u32>,
    },
    /// Apply the retention policy now (pgBackRest also does after each backup).
    Expire {
        /// One repository only.
        #[arg(long)]
        repo: Option<u32>,
        /// Show the command; run nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Restore into a scratch cluster, start it, check it against the backup, time it.
    Drill {
        /// Repository to restore from.
        #[arg(long, default_value_t = 1)]
        repo: u32,
        /// Backup set label (default: the latest).
        #[arg(long, conflicts_with = "target")]
        set: Option<String>,
        /// Recovery target time instead of the end of the backup (`2026-12-04 15:00:00+00`).
        #[arg(long)]
        target: Option<String>,
        /// Keep the (stopped) scratch cluster for inspection.
        #[arg(long)]
        keep_scratch: bool,
        /// Skip pg_amcheck.
        #[arg(long)]
        no_amcheck: bool,
    },
    /// Past drills (JSON records).
    History,
    /// Backup timers (systemd) or a cron.d file for the plan of [backup].
    Schedule {
        /// systemd units or a cron.d file.
        #[arg(long, value_enum, default_value = "systemd")]
        style: ScheduleStyle,
        /// Full backups (`daily 02:00`, `sun 02:00`); default from [backup].
        #[arg(long)]
        full: Option<String>,
        /// Differential backups (`mon-sat 02:00`).
        #[arg(long)]
        diff: Option<String>,
        /// Incremental backups (`daily 08:00,14:00,20:00`).
        #[arg(long)]
        incr: Option<String>,
        /// Install the files (and enable the timers with systemctl).
        #[arg(long)]
        install: bool,
        /// With --install: show what would be written; write nothing.
        #[arg(long)]
        plan: bool,
        /// Where to install (default /etc/systemd/system, or /etc/cron.d).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Bring one customer's database back as of TIME into a NEW database.
    RestoreCustomer {
        /// Customer name (database and role from the naming policy).
        name: String,
        /// Recovery target time (`2026-12-04 15:00:00+00`).
        #[arg(long)]
        target: String,
        /// Name of the new database (default `<db>_restored_<timestamp>`).
        #[arg(long)]
        into: Option<String>,
        /// Repository to restore from.
        #[arg(long, default_value_t = 1)]
        repo: u32,
        /// Then put the restored copy in place of the live database (kept as
        /// `<db>_replaced_<timestamp>`, refusing connections; its sessions are ended). Needs --yes.
        #[arg(long)]
        replace: bool,
        /// Confirm --replace.
        #[arg(long)]
        yes: bool,
        /// Show the steps; change nothing.
        #[arg(long)]
        plan: bool,
    },
}

/// Everything a command needs, from the configuration (also used by `costplus-maintain`).
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) server: ServerConfig,
    pub(crate) backup: BackupConfig,
    pub(crate) pgbr: PgBackRest,
    pub(crate) target: PgTarget,
}

impl Ctx {
    fn load(args: &Args) -> anyhow::Result<Self> {
        let config = Config::discover(args.config.as_deref())?;
        Self::from_config(config, args.server.as_deref())
    }

    /// The context of `server` (or the only server) of a loaded configuration.
    pub(crate) fn from_config(config: Config, server: Option<&str>) -> anyhow::Result<Self> {
        let server = config.server(server)?.clone();
        let target = config.pg_target(&server)?;
        let backup = config.backup_section()?.clone();
        backup
            .validate()
            .with_context(|| format!("{}", config.path.display()))?;
        let pgbr = PgBackRest::new(&backup, target.os_user.clone());
        Ok(Self {
            config,
            server,
            backup,
            pgbr,
            target,
        })
    }

    pub(crate) fn repos(&self) -> Vec<u32> {
        conf::repos(self.config.offsite.as_ref())
    }

    fn check_repo(&self, repo: u32) -> anyhow::Result<()> {
        if !self.repos().contains(&repo) {
            bail!(
                "repo{repo} is not configured (configured: {}); repo2 needs an [offsite] section",
                self.repos()
                    .iter()
                    .map(|r| format!("repo{r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }

    pub(crate) fn live(&self) -> anyhow::Result<ConnectOptions> {
        Ok(self.server.admin_connect_options()?)
    }

    /// Keep pgbackrest.conf in line with the configuration (it is rewritten only on change).
    pub(crate) fn configure(&self) -> anyhow::Result<bool> {
        Ok(conf::configure(
            &self.backup,
            self.config.offsite.as_ref(),
            &self.target,
            &FileSecrets,
        )?)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Run `costplus-backup ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(&args)?;
    let fmt = args.format;
    let rt = runtime()?;
    match args.command {
        Command::Setup { plan, restart } => setup(&ctx, &rt, fmt, plan, restart),
        Command::Run { kind, repo, plan } => {
            let repos = match repo {
                Some(r) => {
                    ctx.check_repo(r)?;
                    vec![r]
                }
                None => ctx.repos(),
            };
            let kind: BackupType = kind.into();
            if plan {
                let cmds: Vec<String> = repos
                    .iter()
                    .map(|r| {
                        ctx.pgbr.command_line(
                            "backup",
                            &[format!("--type={}", kind.as_str()), format!("--repo={r}")],
                        )
                    })
                    .collect();
                return emit_plan(fmt, &cmds);
            }
            ctx.configure()?;
            let live = ctx.live()?;
            let mut records = Vec::new();
            for r in repos {
                records.push(rt.block_on(backup::run(
                    &ctx.pgbr,
                    &ctx.backup,
                    Some(&live),
                    kind,
                    r,
                ))?);
            }
            match fmt {
                Format::Json => print_json(&serde_json::json!({ "backups": records }))?,
                Format::Human => {
                    for b in &records {
                        println!(
                            "repo{} {} backup {}: {:.1}s, {} database bytes, {} bytes copied ({:.1} MB/s), {} bytes stored",
                            b.repo,
                            b.kind.as_str(),
                            b.label,
                            b.seconds,
                            b.size_bytes,
                            b.delta_bytes,
                            b.mb_per_second,
                            b.repo_delta_bytes
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { repo } => {
            if let Some(r) = repo {
                ctx.check_repo(r)?;
            }
            let info = ctx.pgbr.info(repo)?;
            match fmt {
                Format::Json => print_json(&info)?,
                Format::Human => {
                    println!(
                        "stanza {}: {} ({}), cipher {}",
                        info.name, info.status.message, info.status.code, info.cipher
                    );
                    for r in &info.repo {
                        println!(
                            "  repo{}: {} ({})",
                            r.key,
                            costplus_pgbackrest::failure::printable(&r.status.message, 300),
                            r.status.code
                        );
                        if let Some(a) = info.archive_in(r.key) {
                            println!(
                                "    wal archive {} .. {}",
                                a.min.as_deref().unwrap_or("-"),
                                a.max.as_deref().unwrap_or("-")
                            );
                        }
                        for b in info.backups_in(r.key) {
                            let when = chrono::DateTime::from_timestamp(b.timestamp.stop, 0)
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                .unwrap_or_default();
                            println!(
                                "    {:4} {}  {}  {} bytes, {} stored",
                                b.kind.as_str(),
                                b.label,
                                when,
                                b.info.size,
                                b.info.repository.delta
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            // Without the server, status still reports the repositories.
            let live = ctx.live()?;
            let client = rt
                .block_on(costplus_pgcluster::connect::connect(&live))
                .map_err(|e| tracing::warn!("server not reachable, archiver not checked: {e}"))
                .ok();
            let report = rt.block_on(status::gather(
                &ctx.pgbr,
                &ctx.backup,
                &ctx.repos(),
                client.as_ref(),
            ))?;
            match fmt {
                Format::Json => print_json(&report)?,
                Format::Human => print_status(&report),
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Check => {
            ctx.configure()?;
            ctx.pgbr.check()?;
            match fmt {
                Format::Json => print_json(&serde_json::json!({ "ok": true }))?,
                Format::Human => println!("check passed: WAL reaches every repository"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { repo } => {
            if let Some(r) = repo {
                ctx.check_repo(r)?;
            }
            let text = ctx.pgbr.verify(repo)?;
            match fmt {
                Format::Json => print_json(&serde_json::json!({ "ok": true, "report": text }))?,
                Format::Human => println!("verify passed\n{}", text.trim_end()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Expire { repo, plan } => {
            let a: Vec<String> = repo.map(|r| format!("--repo={r}")).into_iter().collect();
            if plan {
                return emit_plan(fmt, &[ctx.pgbr.command_line("expire", &a)]);
            }
            ctx.pgbr.expire(repo)?;
            match fmt {
                Format::Json => print_json(&serde_json::json!({ "ok": true }))?,
                Format::Human => println!("expire done"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Drill {
            repo,
            set,
            target,
            keep_scratch,
            no_amcheck,
        } => {
            ctx.check_repo(repo)?;
            let mut opts = drill::DrillOptions::from_config(&ctx.backup, repo);
            opts.set = set;
            opts.target = target;
            opts.keep_scratch = keep_scratch;
            opts.amcheck = !no_amcheck;
            opts.superuser = ctx.target.superuser.clone();
            let report = rt.block_on(drill::run(&ctx.pgbr, &opts))?;
            match fmt {
                Format::Json => print_json(&report)?,
                Format::Human => print_drill(&report),
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::History => {
            let records = drill::history(&ctx.backup.drill_history_dir())?;
            match fmt {
                Format::Json => print_json(&records)?,
                Format::Human => {
                    for r in &records {
                        println!(
                            "{}  repo{}  {}  {}  rto {}s",
                            r["started_at"].as_str().unwrap_or("?"),
                            r["repo"],
                            r["set"].as_str().unwrap_or("-"),
                            if r["ok"] == true { "passed" } else { "FAILED" },
                            r["timings"]["rto_seconds"]
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            style,
            full,
            diff,
            incr,
            install,
            plan,
            dir,
        } => {
            let p = schedule::Plan::new(
                full.as_deref().unwrap_or(&ctx.backup.schedule_full),
                diff.as_deref().or(ctx.backup.schedule_diff.as_deref()),
                incr.as_deref().or(ctx.backup.schedule_incr.as_deref()),
            )?;
            let how = schedule::Invocation {
                exe: std::env::current_exe()
                    .context("locating costplus-backup")?
                    .with_file_name("costplus-backup"),
                config: std::path::absolute(&ctx.config.path)?,
                server: args.server.clone(),
            };
            let files = match style {
                ScheduleStyle::Systemd => schedule::systemd_units(&p, &how),
                ScheduleStyle::Cron => vec![schedule::crontab(&p, &how)],
            };
            let dir = dir.unwrap_or_else(|| schedule_dir(style).into());
            let mut written = Vec::new();
            let mut enabled = Vec::new();
            if install && !plan {
                written = schedule::install(&files, &dir)?;
                if style == ScheduleStyle::Systemd {
                    enabled = schedule::enable_timers(&dir, &files)?;
                }
            }
            match fmt {
                Format::Json => print_json(&serde_json::json!({
                    "plan": p,
                    "dir": dir,
                    "files": files,
                    "installed": written,
                    "enabled": enabled,
                }))?,
                Format::Human => {
                    for f in &files {
                        println!("# {}\n{}", dir.join(&f.name).display(), f.contents);
                    }
                    if install && plan {
                        println!("(plan: nothing written; run without --plan to install)");
                    } else if !written.is_empty() {
                        println!("installed {} files in {}", written.len(), dir.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::RestoreCustomer {
            name,
            target,
            into,
            repo,
            replace,
            yes,
            plan,
        } => {
            ctx.check_repo(repo)?;
            if replace && !yes && !plan {
                bail!(
                    "--replace takes the live database of {name} out of service and puts the restored copy in its place: add --yes to confirm (or --plan to see the steps)"
                );
            }
            let database = ctx.config.naming.database_for(&name);
            let opts = customer::CustomerRestoreOptions {
                into: into.unwrap_or_else(|| customer::default_into(&database, chrono::Utc::now())),
                role: ctx.config.naming.role_for(&name),
                target,
                repo,
                scratch_dir: ctx.backup.scratch_dir(),
                process_max: Some(ctx.backup.process_max),
                superuser: ctx.target.superuser.clone(),
                bin: None,
                replace: replace.then(|| customer::default_keep_as(&database, chrono::Utc::now())),
                database,
            };
            let report = if plan {
                customer::plan(&ctx.pgbr, &opts)
            } else {
                rt.block_on(customer::run(&ctx.pgbr, &ctx.live()?, &opts))?
            };
            match fmt {
                Format::Json => print_json(&report)?,
                Format::Human => {
                    let head = if report.done { "restored" } else { "plan" };
                    println!(
                        "{head}: {} as of {} -> {} (owner {})",
                        report.database, report.target, report.into, report.owner
                    );
                    for s in &report.steps {
                        println!("  - {s}");
                    }
                    if let Some(n) = report.tables {
                        println!("{n} tables in {}", report.into);
                    }
                    if let Some(r) = &report.replaced {
                        println!(
                            "replaced: {} now holds the restored copy; the old one is kept as {} (connections refused); {} sessions ended",
                            r.database, r.kept_as, r.terminated_sessions
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn emit_plan(fmt: Format, commands: &[String]) -> anyhow::Result<ExitCode> {
    match fmt {
        Format::Json => print_json(&serde_json::json!({ "plan": commands }))?,
        Format::Human => {
            for c in commands {
                println!("would run: {c}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn setup(
    ctx: &Ctx,
    rt: &tokio::runtime::Runtime,
    fmt: Format,
    plan: bool,
    restart: bool,
) -> anyhow::Result<ExitCode> {
    let live = ctx.live()?;
    if plan {
        let report = rt.block_on(async {
            let c = costplus_pgcluster::connect::connect(&live).await?;
            Ok::<_, anyhow::Error>(archiving::plan(&c, &ctx.backup).await?)
        })?;
        let steps = vec![
            format!(
                "write {} (0640 root:{} or 0600; holds the cipher passphrases and S3 keys)",
                ctx.backup.config_file.display(),
                ctx.target.os_user.name
            ),
            format!(
                "create {} {} {} {}",
                ctx.backup.repo1_path.display(),
                ctx.backup.spool_path.display(),
                ctx.backup.log_path.display(),
                ctx.backup.lock_path.display()
            ),
            ctx.pgbr.command_line("stanza-create", &[]),
            ctx.pgbr.command_line("check", &[]),
        ];
        match fmt {
            Format::Json => {
                print_json(&serde_json::json!({ "archiving": report, "steps": steps }))?
            }
            Format::Human => {
                for c in &report.changes {
                    println!(
                        "would ALTER SYSTEM SET {} = '{}' (now '{}')",
                        c.name, c.to, c.from
                    );
                }
                if report.restart_needed {
                    println!("a restart of PostgreSQL would be needed");
                }
                for s in &steps {
                    println!("would {s}");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let written = ctx.configure()?;
    let report = rt.block_on(async {
        let c = costplus_pgcluster::connect::connect(&live).await?;
        Ok::<_, anyhow::Error>(archiving::apply(&c, &ctx.backup).await?)
    })?;
    let mut restarted = false;
    if report.restart_needed && restart {
        let root = ctx.server.cluster_root.as_ref().ok_or_else(|| {
            anyhow!(
                "--restart works for clusters created by costplus only; restart the server yourself (systemctl restart postgresql)"
            )
        })?;
        let c = costplus_pgcluster::Cluster::open(root)?;
        c.stop()?;
        c.start()?;
        restarted = true;
    }
    ctx.pgbr.stanza_create()?;
    let restart_pending = report.restart_needed && !restarted;
    if !restart_pending {
        ctx.pgbr.check()?;
    }
    match fmt {
        Format::Json => print_json(&serde_json::json!({
            "config_written": written,
            "archiving": report,
            "restarted": restarted,
            "restart_needed": restart_pending,
            "stanza": ctx.backup.stanza,
            "checked": !restart_pending,
        }))?,
        Format::Human => {
            println!(
                "pgbackrest.conf {}",
                if written { "written" } else { "unchanged" }
            );
            for c in &report.changes {
                println!("set {} = '{}'", c.name, c.to);
            }
            println!("stanza {} created", ctx.backup.stanza);
            if restart_pending {
                println!(
                    "RESTART NEEDED: archive_mode takes effect after a restart of PostgreSQL; then run `costplus-backup check`"
                );
            } else {
                println!("check passed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(r: &status::StatusReport) {
    println!(
        "stanza {}: {} (stale after {} h)",
        r.stanza,
        if r.ok { "ok" } else { "NEEDS ATTENTION" },
        r.stale_after_hours
    );
    for repo in &r.repos {
        let age = |b: &Option<status::BackupSummary>| {
            b.as_ref()
                .map(|b| format!("{} ({:.1} h ago)", b.label, b.age_hours))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "  repo{}: {}{}",
            repo.repo,
            repo.status_message,
            if repo.stale { ", STALE" } else { "" }
        );
        println!("    full {}", age(&repo.last_full));
        println!("    diff {}", age(&repo.last_diff));
        println!("    incr {}", age(&repo.last_incr));
        println!(
            "    wal  {} .. {}{}",
            repo.archive_min.as_deref().unwrap_or("-"),
            repo.archive_max.as_deref().unwrap_or("-"),
            repo.wal_behind_segments
                .map(|n| format!(" ({n} behind)"))
                .unwrap_or_default()
        );
        if let Some(s) = repo.size_bytes {
            println!("    size {s} bytes");
        }
    }
    for p in &r.problems {
        println!("  problem: {p}");
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
}

fn print_drill(r: &drill::DrillReport) {
    println!(
        "drill of repo{} set {}: {}",
        r.repo,
        r.set.as_deref().unwrap_or("-"),
        if r.ok { "PASSED" } else { "FAILED" }
    );
    for c in &r.checks {
        let mark = match c.status {
            drill::CheckStatus::Pass => "ok  ",
            drill::CheckStatus::Fail => "FAIL",
            drill::CheckStatus::Skip => "skip",
        };
        println!("  [{mark}] {:12} {}", c.name, c.detail);
    }
    let t = &r.timings;
    println!(
        "  restore {:.1}s + start {:.1}s = RTO {:.1}s; checks {:.1}s; total {:.1}s",
        t.restore_seconds, t.start_seconds, t.rto_seconds, t.checks_seconds, t.total_seconds
    );
    if let Some(f) = &r.history_file {
        println!("  record: {}", f.display());
    }
}
