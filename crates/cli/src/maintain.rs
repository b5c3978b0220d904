//! `costplus-maintain daily|weekly|monthly|install`: the runbook's maintenance calendar.
//!
//! - daily: `backup` (the backup the schedule wants today, unless the backup timers already
//!   took it), `status` (backup status), `offsite` (repo2 verified in the bucket), `disk`
//! - weekly: `log-review` (failed logins by client over the week), `audit`
//! - monthly: `drill` (a restore drill per repository), `expiry` (certificate days left),
//!   `audit`
//!
//! Each run writes a JSON record under the maintenance state directory and sends the heartbeat
//! only when no step failed (see [`costplus_core::maintain`]). Exit 0 when the run succeeded,
//! 3 when a step failed. `--plan` lists the steps and what each would do, and runs nothing.
//!
//! JSON (`--format json`): the run record (`period`, `server`, `ok`, `steps[{name, status,
//! message|reason, details, seconds}]`, `heartbeat{result, ...}`, `record_file`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::json;

use costplus_core::audit;
use costplus_core::config::{Config, ServerConfig};
use costplus_core::maintain::{self, Period, Step, StepOutcome};
use costplus_pgbackrest::info::BackupKind;
use costplus_pgbackrest::{BackupType, backup, drill, schedule, status};

use crate::backup::Ctx as BackupCtx;
use crate::common::{ConfigArgs, ScheduleStyle, runtime, schedule_dir};
use crate::output::{Format, print_json};

/// Disk use (percent) at which the daily `disk` step fails.
pub const DISK_FAIL_PERCENT: f64 = 90.0;
/// Certificate days left under which the monthly `expiry` step fails.
pub const CERT_FAIL_DAYS: i64 = 30;

/// Arguments of `costplus-maintain`.
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
    /// Backup per schedule, backup status, offsite check, disk space.
    Daily {
        /// List the steps and what each would do; run nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Log review (attackers over the week), audit.
    Weekly {
        /// List the steps and what each would do; run nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Restore drill per repository, certificate expiry, full audit.
    Monthly {
        /// List the steps and what each would do; run nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Install systemd units and timers for the three runs (or print a crontab).
    Install {
        /// systemd units and timers, or a crontab for /etc/cron.d.
        #[arg(long, value_enum, default_value = "systemd")]
        style: ScheduleStyle,
        /// Where to write the files (default /etc/systemd/system, or /etc/cron.d).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The costplus-maintain binary the units run (default: this binary's path).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Show the files; write nothing.
        #[arg(long)]
        plan: bool,
        /// Do not run systemctl daemon-reload / enable --now (systemd style only).
        #[arg(long)]
        no_enable: bool,
    },
}

/// Run `costplus-maintain`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (period, plan) = match args.command {
        Command::Daily { plan } => (Period::Daily, plan),
        Command::Weekly { plan } => (Period::Weekly, plan),
        Command::Monthly { plan } => (Period::Monthly, plan),
        Command::Install {
            style,
            dir,
            binary,
            plan,
            no_enable,
        } => {
            return install(
                &args.config,
                args.format,
                style,
                dir,
                binary,
                plan,
                no_enable,
            );
        }
    };
    let (cfg, server) = args.config.server()?;
    let mcfg = cfg.maintenance_config();
    if plan {
        let steps = plan_steps(period, &cfg);
        match args.format {
            Format::Json => print_json(&json!({
                "period": period,
                "server": server.name,
                "state_dir": mcfg.state_dir,
                "heartbeat": mcfg.heartbeat(period).is_some(),
                "steps": steps.iter().map(|(n, w)| json!({"name": n, "would": w})).collect::<Vec<_>>(),
            }))?,
            Format::Human => {
                println!(
                    "costplus {} maintenance of {} (plan: nothing runs)",
                    period.as_str(),
                    server.name
                );
                for (n, w) in &steps {
                    println!("  {n:<11} {w}");
                }
                println!(
                    "  record in {}; heartbeat {}",
                    mcfg.state_dir.display(),
                    if mcfg.heartbeat(period).is_some() {
                        "sent when every step succeeds"
                    } else {
                        "not configured"
                    }
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    let record = rt.block_on(async {
        let ctx = Steps::new(&cfg, &server);
        let steps = ctx.steps(period);
        maintain::run(period, &server.name, steps, &mcfg).await
    })?;
    match args.format {
        Format::Json => print_json(&record)?,
        Format::Human => {
            println!(
                "costplus {} maintenance of {}: {}",
                period.as_str(),
                record.server,
                if record.ok { "ok" } else { "FAILED" }
            );
            for s in &record.steps {
                let (mark, text) = match &s.outcome {
                    StepOutcome::Ok { message, .. } => ("ok  ", message.as_str()),
                    StepOutcome::Failed { message, .. } => ("FAIL", message.as_str()),
                    StepOutcome::Skipped { reason } => ("skip", reason.as_str()),
                };
                println!("  {mark} {:<11} {text} ({:.1}s)", s.name, s.seconds);
            }
            println!("  heartbeat: {}", heartbeat_text(&record.heartbeat));
            if let Some(f) = &record.record_file {
                println!("  record: {}", f.display());
            }
        }
    }
    Ok(if record.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn heartbeat_text(h: &maintain::HeartbeatResult) -> String {
    match h {
        maintain::HeartbeatResult::NotConfigured => "not configured".into(),
        maintain::HeartbeatResult::WithheldRunFailed => "withheld (the run failed)".into(),
        maintain::HeartbeatResult::Sent { status } => format!("sent (HTTP {status})"),
        maintain::HeartbeatResult::Error { message } => format!("could not be sent: {message}"),
    }
}

/// The steps of `period` and what each would do, for `--plan`.
fn plan_steps(period: Period, cfg: &Config) -> Vec<(&'static str, String)> {
    let backup = cfg.backup.is_some();
    let offsite = cfg.offsite.is_some();
    let cond = |on: bool, yes: &str, no: &str| {
        if on {
            yes.to_string()
        } else {
            format!("skipped: {no}")
        }
    };
    match period {
        Period::Daily => vec![
            (
                "backup",
                cond(
                    backup,
                    &format!(
                        "take today's scheduled {} backup in every repository unless the backup timers already did",
                        cfg.backup
                            .as_ref()
                            .and_then(|b| due_today(b).ok())
                            .map_or("?", |k| k.as_str())
                    ),
                    "no [backup] section",
                ),
            ),
            (
                "status",
                cond(
                    backup,
                    "check backup age, WAL archive and gaps per repository",
                    "no [backup] section",
                ),
            ),
            (
                "offsite",
                cond(
                    offsite,
                    "verify repo2 in the bucket (info files, manifests, encryption)",
                    "no [offsite] section",
                ),
            ),
            (
                "disk",
                format!("fail when data, WAL or repository disks are {DISK_FAIL_PERCENT}% full"),
            ),
        ],
        Period::Weekly => vec![
            (
                "log-review",
                "failed logins per client address and role over the last 7 days".into(),
            ),
            (
                "audit",
                "the full audit; fail on a high or critical finding".into(),
            ),
        ],
        Period::Monthly => vec![
            (
                "drill",
                cond(
                    backup,
                    "restore drill from every repository into a scratch cluster",
                    "no [backup] section",
                ),
            ),
            (
                "expiry",
                format!(
                    "fail when the server certificate has fewer than {CERT_FAIL_DAYS} days left"
                ),
            ),
            (
                "audit",
                "the full audit; fail on a high or critical finding".into(),
            ),
        ],
    }
}

/// The backup kind the schedule wants today (local time): full if a full is scheduled today,
/// else diff, else incr; a full when nothing is scheduled today at all.
pub fn due_today(b: &costplus_pgbackrest::BackupConfig) -> anyhow::Result<BackupType> {
    use chrono::Datelike;
    let plan = schedule::Plan::from_config(b)?;
    let today = chrono::Local::now().weekday().num_days_from_sunday() as u8;
    Ok(plan
        .entries
        .iter()
        .find(|(_, slot)| slot.days.contains(&today))
        .map_or(BackupType::Full, |(k, _)| *k))
}

/// Whether a backup of `kind` covers `wanted` (a full covers everything, a diff covers an incr).
fn covers(kind: BackupKind, wanted: BackupType) -> bool {
    match wanted {
        BackupType::Full => kind == BackupKind::Full,
        BackupType::Diff => matches!(kind, BackupKind::Full | BackupKind::Diff),
        _ => true,
    }
}

/// What the steps share.
struct Steps<'a> {
    cfg: &'a Config,
    server: &'a ServerConfig,
}

impl<'a> Steps<'a> {
    fn new(cfg: &'a Config, server: &'a ServerConfig) -> Self {
        Self { cfg, server }
    }

    fn backup_ctx(&self) -> Result<Option<BackupCtx>, StepOutcome> {
        if self.cfg.backup.is_none() {
            return Ok(None);
        }
        BackupCtx::from_config(self.cfg.clone(), Some(&self.server.name))
            .map(Some)
            .map_err(|e| StepOutcome::failed(format!("{e:#}")))
    }

    fn steps(&'a self, period: Period) -> Vec<Step<'a>> {
        fn step<'a, F>(name: &'static str, f: F) -> Step<'a>
        where
            F: std::future::Future<Output = StepOutcome> + Send + 'a,
        {
            Step {
                name,
                run: Box::new(move || Box::pin(f)),
            }
        }
        match period {
            Period::Daily => vec![
                step("backup", self.backup()),
                step("status", self.status()),
                step("offsite", self.offsite()),
                step("disk", self.disk()),
            ],
            Period::Weekly => vec![
                step("log-review", self.log_review()),
                step("audit", self.audit()),
            ],
            Period::Monthly => vec![
                step("drill", self.drill()),
                step("expiry", self.expiry()),
                step("audit", self.audit()),
            ],
        }
    }

    async fn backup(&self) -> StepOutcome {
        let ctx = match self.backup_ctx() {
            Ok(Some(c)) => c,
            Ok(None) => return skipped("no [backup] section"),
            Err(o) => return o,
        };
        let wanted = match due_today(&ctx.backup) {
            Ok(k) => k,
            Err(e) => return StepOutcome::failed(format!("[backup] schedule: {e:#}")),
        };
        let live = match ctx.live() {
            Ok(l) => l,
            Err(e) => return StepOutcome::failed(format!("{e:#}")),
        };
        if let Err(e) = ctx.configure() {
            return StepOutcome::failed(format!("pgbackrest.conf: {e:#}"));
        }
        // A backup of the wanted kind (or stronger) that finished since local midnight means the
        // backup timers did today's work already.
        let midnight = chrono::Local::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
            .map_or(0, |t| t.timestamp());
        let info = ctx.pgbr.info(None).ok();
        let mut taken = Vec::new();
        let mut existing = Vec::new();
        for repo in ctx.repos() {
            let done = info.as_ref().and_then(|i| {
                i.backups_in(repo)
                    .filter(|b| {
                        b.timestamp.stop >= midnight
                            && covers(b.kind, wanted)
                            && b.error != Some(true)
                    })
                    .map(|b| b.label.clone())
                    .last()
            });
            if let Some(label) = done {
                existing.push(json!({"repo": repo, "label": label}));
                continue;
            }
            match backup::run(&ctx.pgbr, &ctx.backup, Some(&live), wanted, repo).await {
                Ok(r) => taken.push(json!({
                    "repo": repo, "label": r.label, "type": r.kind.as_str(), "seconds": r.seconds,
                    "mb_per_second": r.mb_per_second,
                })),
                Err(e) => {
                    return StepOutcome::Failed {
                        message: format!("{} backup to repo{repo} failed: {e}", wanted.as_str()),
                        details: json!({"taken": taken, "already_taken": existing}),
                    };
                }
            }
        }
        StepOutcome::Ok {
            message: format!(
                "{} backup: {} taken, {} already taken today by the schedule",
                wanted.as_str(),
                taken.len(),
                existing.len()
            ),
            details: json!({"type": wanted.as_str(), "taken": taken, "already_taken": existing}),
        }
    }

    async fn status(&self) -> StepOutcome {
        let ctx = match self.backup_ctx() {
            Ok(Some(c)) => c,
            Ok(None) => return skipped("no [backup] section"),
            Err(o) => return o,
        };
        let client = match ctx.live() {
            Ok(o) => costplus_pgcluster::connect::connect(&o).await.ok(),
            Err(_) => None,
        };
        match status::gather(&ctx.pgbr, &ctx.backup, &ctx.repos(), client.as_ref()).await {
            Ok(r) => {
                let details = serde_json::to_value(&r).unwrap_or_default();
                if r.ok {
                    let ages: Vec<String> = r
                        .repos
                        .iter()
                        .map(|x| match x.newest_age_hours {
                            Some(h) => format!("repo{} {h:.1} h", x.repo),
                            None => format!("repo{} none", x.repo),
                        })
                        .collect();
                    StepOutcome::Ok {
                        message: format!("backups fresh: {}", ages.join(", ")),
                        details,
                    }
                } else {
                    StepOutcome::Failed {
                        message: r.problems.join("; "),
                        details,
                    }
                }
            }
            Err(e) => StepOutcome::failed(format!("backup status: {e}")),
        }
    }

    async fn offsite(&self) -> StepOutcome {
        if self.cfg.offsite.is_none() {
            return skipped("no [offsite] section");
        }
        match crate::offsite::verify_with_defaults(&self.cfg.path).await {
            Ok(r) => {
                let details = serde_json::to_value(&r).unwrap_or_default();
                if r.ok {
                    StepOutcome::Ok {
                        message: "repo2 verified in the bucket".into(),
                        details,
                    }
                } else {
                    StepOutcome::Failed {
                        message: "repo2 in the bucket has problems (see details)".into(),
                        details,
                    }
                }
            }
            Err(e) => StepOutcome::failed(format!("offsite verify: {e:#}")),
        }
    }

    async fn disk(&self) -> StepOutcome {
        let mut paths: Vec<(String, PathBuf)> = Vec::new();
        if let Ok(o) = self.server.admin_connect_options()
            && let Ok(c) = costplus_pgcluster::connect::connect(&o).await
            && let Ok(row) = c
                .query_one("SELECT current_setting('data_directory')", &[])
                .await
        {
            let data = PathBuf::from(row.get::<_, String>(0));
            paths.push(("wal".into(), data.join("pg_wal")));
            paths.push(("data".into(), data));
        }
        if let Some(b) = &self.cfg.backup {
            paths.push(("repository".into(), b.repo1_path.clone()));
        }
        if paths.is_empty() {
            return StepOutcome::failed(
                "no path to check: the server is not reachable and there is no [backup]",
            );
        }
        let disks: Vec<_> = paths
            .iter()
            .map(|(l, p)| costplus_core::incident::disk(l, p))
            .collect();
        let details = serde_json::to_value(&disks).unwrap_or_default();
        let bad: Vec<String> = disks
            .iter()
            .filter_map(|d| match &d.error {
                Some(e) => Some(format!("{}: {e}", d.label)),
                None if d.used_percent >= DISK_FAIL_PERCENT => {
                    Some(format!("{} {:.0}% full", d.label, d.used_percent))
                }
                None => None,
            })
            .collect();
        let summary: Vec<String> = disks
            .iter()
            .filter(|d| d.error.is_none())
            .map(|d| format!("{} {:.0}%", d.label, d.used_percent))
            .collect();
        if bad.is_empty() {
            StepOutcome::Ok {
                message: summary.join(", "),
                details,
            }
        } else {
            StepOutcome::Failed {
                message: bad.join("; "),
                details,
            }
        }
    }

    async fn log_review(&self) -> StepOutcome {
        let Some(log) = &self.server.log_file else {
            return skipped("the server has no log_file in the configuration");
        };
        let text = match std::fs::read(log) {
            Ok(t) => t,
            Err(e) => return StepOutcome::failed(format!("{}: {e}", log.display())),
        };
        let entries = costplus_core::pglog::parse(&String::from_utf8_lossy(&text));
        let since = chrono::Utc::now() - chrono::Duration::days(7);
        let report = costplus_core::pglog::attackers(
            &costplus_core::pglog::login_failures(&entries),
            Some(since),
        );
        let top: Vec<String> = report
            .by_host
            .iter()
            .take(5)
            .map(|h| format!("{} ×{}", h.host, h.failures))
            .collect();
        StepOutcome::Ok {
            message: format!(
                "{} failed logins in 7 days from {} addresses{}",
                report.total_failures,
                report.by_host.len(),
                if top.is_empty() {
                    String::new()
                } else {
                    format!(" (top: {})", top.join(", "))
                }
            ),
            details: serde_json::to_value(&report).unwrap_or_default(),
        }
    }

    async fn audit(&self) -> StepOutcome {
        match audit::gather(self.cfg, self.server, true).await {
            Ok(facts) => audit_outcome(&audit::evaluate(&facts)),
            Err(e) => StepOutcome::failed(format!("audit: {e}")),
        }
    }

    async fn drill(&self) -> StepOutcome {
        let ctx = match self.backup_ctx() {
            Ok(Some(c)) => c,
            Ok(None) => return skipped("no [backup] section"),
            Err(o) => return o,
        };
        if let Err(e) = ctx.configure() {
            return StepOutcome::failed(format!("pgbackrest.conf: {e:#}"));
        }
        let mut results = Vec::new();
        let mut failed = Vec::new();
        for repo in ctx.repos() {
            let mut opts = drill::DrillOptions::from_config(&ctx.backup, repo);
            opts.superuser = ctx.target.superuser.clone();
            match drill::run(&ctx.pgbr, &opts).await {
                Ok(r) => {
                    if !r.ok {
                        failed.push(format!(
                            "repo{repo}: {}",
                            r.reason.as_deref().unwrap_or("failed")
                        ));
                    }
                    results.push(json!({
                        "repo": repo, "ok": r.ok, "reason": r.reason, "set": r.set,
                        "rto_seconds": r.timings.rto_seconds, "total_seconds": r.timings.total_seconds,
                    }));
                }
                Err(e) => {
                    failed.push(format!("repo{repo}: {e}"));
                    results.push(json!({"repo": repo, "ok": false, "reason": e.to_string()}));
                }
            }
        }
        let details = json!({ "drills": results });
        if failed.is_empty() {
            StepOutcome::Ok {
                message: format!("{} restore drills passed", results.len()),
                details,
            }
        } else {
            StepOutcome::Failed {
                message: failed.join("; "),
                details,
            }
        }
    }

    async fn expiry(&self) -> StepOutcome {
        match certificate_days_left(self.server).await {
            Ok((file, days)) => {
                let details = json!({"certificate": file, "days_left": days});
                if days >= CERT_FAIL_DAYS {
                    StepOutcome::Ok {
                        message: format!("certificate valid {days} more days"),
                        details,
                    }
                } else {
                    StepOutcome::Failed {
                        message: format!(
                            "certificate {} expires in {days} days: costplus-tls renew",
                            file.display()
                        ),
                        details,
                    }
                }
            }
            Err(e) => StepOutcome::failed(format!("certificate expiry: {e:#}")),
        }
    }
}

fn skipped(reason: &str) -> StepOutcome {
    StepOutcome::Skipped {
        reason: reason.into(),
    }
}

/// An audit report as a maintenance outcome: failed when a high or critical check fails; the
/// details carry the score and the failures by severity (the exporter reads them).
pub fn audit_outcome(report: &audit::AuditReport) -> StepOutcome {
    let mut by_sev = serde_json::Map::new();
    for c in report
        .checks
        .iter()
        .filter(|c| c.status == audit::Status::Fail)
    {
        let sev = serde_json::to_value(c.severity)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let n = by_sev
            .get(&sev)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        by_sev.insert(sev, json!(n + 1));
    }
    let details = json!({
        "score": report.score,
        "rating": report.rating,
        "failures_by_severity": by_sev,
        "failing": report.failing_ids(),
        "unknown": report.summary.unknown,
    });
    let message = format!(
        "{}/100 ({}), {} failing, {} unknown",
        report.score, report.rating, report.summary.fail, report.summary.unknown
    );
    if report.fails_at(audit::Severity::High) {
        StepOutcome::Failed { message, details }
    } else {
        StepOutcome::Ok { message, details }
    }
}

/// The server certificate (from `ssl_cert_file`) and the days it has left. Needs to run where
/// the file is readable (the database host).
pub async fn certificate_days_left(server: &ServerConfig) -> anyhow::Result<(PathBuf, i64)> {
    let client = costplus_pgcluster::connect::connect(&server.admin_connect_options()?).await?;
    let c = costplus_core::servercert::read(&client).await?;
    Ok((c.path, c.days_left))
}

fn install(
    config: &ConfigArgs,
    format: Format,
    style: ScheduleStyle,
    dir: Option<PathBuf>,
    binary: Option<PathBuf>,
    plan: bool,
    no_enable: bool,
) -> anyhow::Result<ExitCode> {
    // The units name the configuration file explicitly: timers do not see $COSTPLUS_CONFIG.
    let cfg = config.load()?;
    let cfg_path = std::path::absolute(&cfg.path).unwrap_or_else(|_| cfg.path.clone());
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe()
            .context("locating this binary (pass --binary)")?
            .with_file_name("costplus-maintain"),
    };
    let crontab = maintain::crontab(&binary, &cfg_path);
    let files = match style {
        ScheduleStyle::Systemd => maintain::systemd_units(&binary, &cfg_path),
        ScheduleStyle::Cron => vec![crontab.clone()],
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(schedule_dir(style)));
    let written = if plan {
        Vec::new()
    } else {
        schedule::install(&files, &dir)?
    };
    let mut enabled = Vec::new();
    if !plan && !no_enable && style == ScheduleStyle::Systemd {
        enabled = schedule::enable_timers(&dir, &files)?;
    }
    match format {
        Format::Json => print_json(&json!({
            "plan": plan,
            "dir": dir,
            "files": files,
            "written": written,
            "enabled": enabled,
            "crontab": crontab.contents,
        }))?,
        Format::Human => {
            for f in &files {
                println!("# {}\n{}", dir.join(&f.name).display(), f.contents);
            }
            if plan {
                println!("(plan: nothing written)");
            } else {
                println!("wrote {} files in {}", written.len(), dir.display());
                for t in &enabled {
                    println!("enabled {t}");
                }
            }
            if style == ScheduleStyle::Systemd {
                println!(
                    "\n# the crontab alternative (/etc/cron.d/costplus-maintain):\n{}",
                    crontab.contents
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
