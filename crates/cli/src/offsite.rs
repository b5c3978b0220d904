//! `costplus-offsite`: the Wasabi/S3 offsite: check, verify pgBackRest's repo2, ship
//! artefacts, put/get/ls, and the monthly cost.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};
use costplus_core::config::Config;
use costplus_s3::cost::{self, CostInput, Retention, Schedule};
use costplus_s3::pgbackrest_info::{self, Stanza};
use costplus_s3::verify::{VerifyOptions, VerifyReport};
use costplus_s3::{ClientOptions, Credentials, Offsite, OffsiteConfig, Progress, UploadOptions};

use crate::output::{Format, print_json};

/// The Wasabi/S3 offsite: verify pgBackRest's repo2, ship artefacts, the monthly cost.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    /// The costplus configuration (its `[offsite]` section names the bucket).
    #[arg(long, global = true, env = costplus_core::config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the bucket is reachable with the keys (TLS, signature, clock, bucket) and
    /// show its protection (versioning, object lock).
    Check,
    /// Verify pgBackRest's repo2 in the bucket: info files and copies, every backup's manifest
    /// and files, WAL without gaps, encryption. Exit 3 when problems are found.
    Verify(VerifyArgs),
    /// The monthly bill of the offsite (Wasabi: 1 TB minimum, 90-day minimum storage).
    Cost(CostArgs),
    /// Ship already-encrypted artefacts (vault archive, encrypted configuration) offsite.
    Ship(ShipArgs),
    /// Upload files or directory trees (parallel, resumable, verified).
    Put(PutArgs),
    /// Download one object (verified).
    Get {
        /// Object key.
        key: String,
        /// Destination file.
        dest: PathBuf,
    },
    /// List objects under a prefix.
    Ls {
        /// Key prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, ClapArgs)]
struct PgbrSource {
    /// Output of `pgbackrest info --output=json` (a file, or - for stdin). Default: run
    /// pgBackRest with the `[backup]` configuration when it is installed.
    #[arg(long, value_name = "FILE")]
    info: Option<PathBuf>,
    /// Do not run pgBackRest: use the bucket listing only.
    #[arg(long, conflicts_with = "info")]
    no_pgbackrest: bool,
}

#[derive(Debug, ClapArgs)]
struct VerifyArgs {
    #[command(flatten)]
    source: PgbrSource,
    /// Only this stanza.
    #[arg(long)]
    stanza: Option<String>,
    /// Data and WAL objects sampled for the encryption check (besides every info and
    /// manifest file); 0 = all.
    #[arg(long, default_value_t = 32)]
    sample: usize,
    /// The cluster's wal_segment_size in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    wal_segment_size: u64,
    /// Do not require encryption (a repository without repo2-cipher-type).
    #[arg(long)]
    allow_unencrypted: bool,
}

#[derive(Debug, ClapArgs)]
struct CostArgs {
    #[command(flatten)]
    source: PgbrSource,
    /// Do not list the bucket to measure sizes and the WAL rate.
    #[arg(long)]
    no_measure: bool,
    /// Days between full backups.
    #[arg(long, default_value_t = 7)]
    full_every_days: u32,
    /// Days between differential backups inside a cycle (0: none).
    #[arg(long, default_value_t = 0)]
    diff_every_days: u32,
    /// No incremental backups on the other days.
    #[arg(long)]
    no_incremental: bool,
    /// Time retention in days (repo2-retention-full-type=time). Default: [backup]
    /// repo2_retention_days, else 90.
    #[arg(long, conflicts_with = "retention_full")]
    retention_days: Option<u32>,
    /// Count retention: full backups kept (repo2-retention-full).
    #[arg(long)]
    retention_full: Option<u32>,
    /// Bytes of one full backup in the repository (overrides the measurement).
    #[arg(long)]
    full_bytes: Option<f64>,
    /// Bytes of one differential backup.
    #[arg(long)]
    diff_bytes: Option<f64>,
    /// Bytes of one incremental backup.
    #[arg(long)]
    incr_bytes: Option<f64>,
    /// WAL bytes archived per day.
    #[arg(long)]
    wal_bytes_per_day: Option<f64>,
    /// Price per TB-month in USD (default: [offsite] price_per_tb_month_usd).
    #[arg(long)]
    price: Option<f64>,
}

#[derive(Debug, ClapArgs)]
struct ShipArgs {
    /// Files to ship (each must look encrypted).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Key prefix (default `costplus/ship/<host>/<UTC time>/`).
    #[arg(long)]
    prefix: Option<String>,
    /// Show what would be shipped, ship nothing.
    #[arg(long)]
    plan: bool,
    /// Ship even files that do not look encrypted.
    #[arg(long)]
    danger_allow_plaintext: bool,
}

#[derive(Debug, ClapArgs)]
struct PutArgs {
    /// Files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Key prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Show what would be uploaded, upload nothing.
    #[arg(long)]
    plan: bool,
    /// Where interrupted multipart uploads remember their parts.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// Run `costplus-offsite ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args))
}

struct Ctx {
    config: Config,
    offsite: OffsiteConfig,
}

impl Ctx {
    fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let config = Config::discover(path)?;
        let offsite = config.offsite.clone().with_context(|| {
            format!(
                "{} has no [offsite] section (bucket, endpoint or region, credentials_file)",
                config.path.display()
            )
        })?;
        Ok(Self { config, offsite })
    }

    fn client(&self, opts: ClientOptions) -> anyhow::Result<Offsite> {
        let creds = Credentials::for_config(&self.offsite)?;
        Ok(Offsite::new(&self.offsite, &creds, opts)?)
    }

    /// pgBackRest's view: from `--info`, or by running `pgbackrest info` with the `[backup]`
    /// configuration; `Ok(None)` with a note when it is not available.
    fn pgbackrest_info(
        &self,
        src: &PgbrSource,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Option<Vec<Stanza>>> {
        if src.no_pgbackrest {
            return Ok(None);
        }
        if let Some(file) = &src.info {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            return Ok(Some(pgbackrest_info::parse(&text)?));
        }
        let Some(backup) = &self.config.backup else {
            notes.push("no [backup] section: compared with the bucket listing only".into());
            return Ok(None);
        };
        if !backup.config_file.exists() {
            notes.push(format!(
                "{} does not exist: compared with the bucket listing only",
                backup.config_file.display()
            ));
            return Ok(None);
        }
        // No secrets on this command line: pgBackRest reads them from its config file.
        let out = std::process::Command::new("pgbackrest")
            .arg(format!("--config={}", backup.config_file.display()))
            .arg(format!("--stanza={}", backup.stanza))
            .arg("--log-level-file=off")
            .arg("--log-level-console=error")
            .args(["info", "--output=json"])
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Some(pgbackrest_info::parse(
                &String::from_utf8_lossy(&o.stdout),
            )?)),
            Ok(o) => {
                notes.push(format!(
                    "pgbackrest info failed ({}): {}; compared with the bucket listing only",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                Ok(None)
            }
            Err(e) => {
                notes.push(format!(
                    "pgbackrest could not run ({e}); compared with the bucket listing only"
                ));
                Ok(None)
            }
        }
    }
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let format = args.format;
    match args.command {
        Command::Check => {
            let ctx = Ctx::load(args.config.as_deref())?;
            let c = ctx.client(ClientOptions::default())?;
            c.check().await?;
            let p = c.protection().await?;
            let report = serde_json::json!({
                "ok": true,
                "endpoint": c.endpoint(),
                "bucket": c.bucket(),
                "versioning": p.versioning,
                "object_lock": p.object_lock,
                "default_retention": p.default_retention,
                "notes": p.notes,
            });
            match format {
                Format::Json => print_json(&report)?,
                Format::Human => {
                    println!(
                        "ok: {} bucket {} answers with these keys",
                        c.endpoint(),
                        c.bucket()
                    );
                    println!("  versioning   {}", p.versioning.as_str());
                    println!(
                        "  object lock  {}{}",
                        p.object_lock.as_str(),
                        p.default_retention
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                    for n in p.notes {
                        println!("  note: {n}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(v) => verify(args.config.as_deref(), format, v).await,
        Command::Cost(c) => cost_cmd(args.config.as_deref(), format, c).await,
        Command::Ship(s) => ship(args.config.as_deref(), format, s).await,
        Command::Put(p) => put(args.config.as_deref(), format, p).await,
        Command::Get { key, dest } => {
            let ctx = Ctx::load(args.config.as_deref())?;
            let c = ctx.client(ClientOptions::default())?;
            let bar = progress_bar(format, 0);
            let cb = bar.as_ref().map(progress_callback);
            let d = c.download_file(&key, &dest, cb.as_ref()).await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match format {
                Format::Json => print_json(&d)?,
                Format::Human => println!(
                    "{} -> {} ({} bytes, {})",
                    d.key,
                    d.path.display(),
                    d.size,
                    if d.checksum_verified {
                        "checksum verified"
                    } else {
                        "size verified"
                    }
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { prefix } => {
            let ctx = Ctx::load(args.config.as_deref())?;
            let c = ctx.client(ClientOptions::default())?;
            let list = c.list(&prefix).await?;
            match format {
                Format::Json => print_json(&list)?,
                Format::Human => {
                    for o in &list {
                        println!("{:>14}  {}", o.size, o.key);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn verify(config: Option<&Path>, format: Format, v: VerifyArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(config)?;
    let mut notes = Vec::new();
    let info = ctx.pgbackrest_info(&v.source, &mut notes)?;
    let c = ctx.client(ClientOptions::default())?;
    let opts = VerifyOptions {
        stanza: v
            .stanza
            .or_else(|| ctx.config.backup.as_ref().map(|b| b.stanza.clone())),
        wal_segment_size: v.wal_segment_size,
        expect_encrypted: !v.allow_unencrypted,
        sample: if v.sample == 0 { usize::MAX } else { v.sample },
        ..VerifyOptions::default()
    };
    let mut report = c
        .verify_repo(&ctx.offsite.repo_path, info.as_deref(), &opts)
        .await?;
    report.warnings.extend(notes);
    match format {
        Format::Json => print_json(&report)?,
        Format::Human => print_verify(&report),
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `costplus-offsite verify` with its defaults (pgBackRest's view from `[backup]`, 32 sampled
/// objects, encryption required): the daily maintenance's offsite check.
pub(crate) async fn verify_with_defaults(config: &Path) -> anyhow::Result<VerifyReport> {
    let ctx = Ctx::load(Some(config))?;
    let mut notes = Vec::new();
    let src = PgbrSource {
        info: None,
        no_pgbackrest: false,
    };
    let info = ctx.pgbackrest_info(&src, &mut notes)?;
    let opts = VerifyOptions {
        stanza: ctx.config.backup.as_ref().map(|b| b.stanza.clone()),
        sample: 32,
        ..VerifyOptions::default()
    };
    let mut report = ctx
        .client(ClientOptions::default())?
        .verify_repo(&ctx.offsite.repo_path, info.as_deref(), &opts)
        .await?;
    report.warnings.extend(notes);
    Ok(report)
}

fn print_verify(r: &VerifyReport) {
    println!(
        "{} {}/{}{}: {} objects, {} bytes, {} sampled{}",
        if r.ok { "OK" } else { "PROBLEMS" },
        r.endpoint,
        r.bucket,
        if r.repo_prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", r.repo_prefix.trim_end_matches('/'))
        },
        r.objects,
        r.bytes,
        r.sampled,
        if r.compared_with_pgbackrest {
            ", compared with pgBackRest's info"
        } else {
            ""
        }
    );
    for s in &r.stanzas {
        println!(
            "  stanza {}: {} backups, {} objects",
            s.name,
            s.backups.len(),
            s.objects
        );
        for b in &s.backups {
            println!(
                "    {} {:<4} {} files, {} bytes",
                b.label, b.kind, b.objects, b.bytes
            );
        }
        for w in &s.wal {
            println!(
                "    WAL {} timeline {}: {}..{} ({} segments)",
                w.archive_id, w.timeline, w.first, w.last, w.segments
            );
        }
    }
    println!(
        "  versioning {}, object lock {}",
        r.versioning.as_str(),
        r.object_lock.as_str()
    );
    for p in &r.problems {
        println!("  PROBLEM {}: {}", p.key, p.problem);
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

#[derive(serde::Serialize)]
struct CostReport {
    #[serde(flatten)]
    estimate: cost::CostEstimate,
    measured: Vec<cost::Measured>,
    notes: Vec<String>,
}

async fn cost_cmd(config: Option<&Path>, format: Format, a: CostArgs) -> anyhow::Result<ExitCode> {
    // The configuration is optional when every size is given.
    let ctx = match Ctx::load(config) {
        Ok(c) => Some(c),
        Err(e) if a.no_measure || a.source.info.is_some() => {
            tracing::info!("no configuration: {e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    let mut notes = Vec::new();
    let mut measured = Vec::new();
    if let Some(ctx) = &ctx {
        if let Some(info) = ctx.pgbackrest_info(&a.source, &mut notes)? {
            measured.push(cost::measure_info(&info, 2));
        }
        if !a.no_measure {
            let c = ctx.client(ClientOptions::default())?;
            let prefix = ctx.offsite.repo_prefix();
            let listing = c.list(&prefix).await?;
            measured.push(cost::measure_listing(&prefix, &listing));
        }
    } else if let Some(file) = &a.source.info {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        measured.push(cost::measure_info(&pgbackrest_info::parse(&text)?, 2));
    }
    // First source that has a number wins: pgBackRest's records, then the bucket.
    let pick = |f: fn(&cost::Measured) -> Option<f64>| measured.iter().find_map(f);
    let mut input = CostInput::example();
    input.full_bytes = a.full_bytes.or(pick(|m| m.full_bytes)).unwrap_or(0.0);
    input.incr_bytes = a.incr_bytes.or(pick(|m| m.incr_bytes)).unwrap_or(0.0);
    input.diff_bytes = a
        .diff_bytes
        .or(pick(|m| m.diff_bytes))
        .unwrap_or(input.incr_bytes);
    input.wal_bytes_per_day = a
        .wal_bytes_per_day
        .or(pick(|m| m.wal_bytes_per_day))
        .unwrap_or(0.0);
    if input.full_bytes == 0.0 {
        notes.push("no full backup measured: give --full-bytes for a real estimate".into());
    }
    input.price_per_tb_month_usd = a
        .price
        .or(ctx.as_ref().map(|c| c.offsite.price_per_tb_month_usd))
        .unwrap_or(costplus_s3::config::WASABI_PRICE_PER_TB_MONTH_USD);
    if a.full_every_days == 0 {
        bail!("--full-every-days must be at least 1");
    }
    input.schedule = Schedule {
        full_every_days: a.full_every_days,
        diff_every_days: a.diff_every_days,
        incremental_daily: !a.no_incremental,
    };
    input.retention = match (a.retention_full, a.retention_days) {
        (Some(n), _) => Retention::Count { full: n },
        (None, Some(d)) => Retention::Time { days: d },
        (None, None) => Retention::Time {
            days: ctx
                .as_ref()
                .and_then(|c| c.config.backup.as_ref())
                .map(|b| b.repo2_retention_days)
                .unwrap_or(90),
        },
    };
    let report = CostReport {
        estimate: cost::estimate(&input),
        measured,
        notes,
    };
    match format {
        Format::Json => print_json(&report)?,
        Format::Human => {
            let e = &report.estimate;
            println!("monthly bill: {:.2} USD", e.monthly_usd);
            println!(
                "  active storage   {:.3} TB -> {:.2} USD (of which the 1 TB minimum: {:.2})",
                e.active_tb, e.active_usd, e.minimum_charge_usd
            );
            println!(
                "  early deletion   {:.3} TB-months -> {:.2} USD (objects deleted before 90 days)",
                e.deleted_tb, e.early_deletion_usd
            );
            println!(
                "  shortest object life {:.0} days",
                e.shortest_lifetime_days
            );
            if let Some(adv) = &e.avoid_early_deletion {
                let r = match adv.retention {
                    Retention::Count { full } => format!("repo2-retention-full={full}"),
                    Retention::Time { days } => {
                        format!("repo2-retention-full-type=time, repo2-retention-full={days}")
                    }
                };
                println!(
                    "  to avoid early deletion: {r} (bill {:.2} USD/month)",
                    adv.monthly_usd
                );
            }
            for n in &report.notes {
                eprintln!("note: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn ship(config: Option<&Path>, format: Format, s: ShipArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(config)?;
    let prefix = s.prefix.clone().unwrap_or_else(|| {
        format!(
            "costplus/ship/{}/{}/",
            hostname(),
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        )
    });
    let files = costplus_s3::transfer::collect_files(&s.files, &prefix)?;
    // Refuse plaintext before anything leaves the host.
    let mut refused = Vec::new();
    for (path, _) in &files {
        let mut head = vec![0u8; 64 * 1024];
        let mut f =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let n = std::io::Read::read(&mut f, &mut head)?;
        if let Some(why) = costplus_s3::verify::plaintext_reason(&head[..n]) {
            refused.push(format!(
                "{}: does not look encrypted: {why}",
                path.display()
            ));
        }
    }
    if !refused.is_empty() && !s.danger_allow_plaintext {
        bail!(
            "refusing to ship plaintext offsite (encrypt it first, or --danger-allow-plaintext):\n  {}",
            refused.join("\n  ")
        );
    }
    transfer(&ctx, format, files, s.plan, None, 16).await
}

async fn put(config: Option<&Path>, format: Format, p: PutArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(config)?;
    let files = costplus_s3::transfer::collect_files(&p.paths, &p.prefix)?;
    let state = p.state_dir.unwrap_or_else(default_state_dir);
    transfer(&ctx, format, files, p.plan, Some(state), p.concurrency).await
}

fn default_state_dir() -> PathBuf {
    if costplus_fs::OsUser::running_as_root() {
        return PathBuf::from("/var/lib/costplus/s3-uploads");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("costplus/s3-uploads")
}

#[derive(serde::Serialize)]
struct PlannedFile {
    path: PathBuf,
    key: String,
    size: u64,
}

async fn transfer(
    ctx: &Ctx,
    format: Format,
    files: Vec<(PathBuf, String)>,
    plan: bool,
    state_dir: Option<PathBuf>,
    concurrency: usize,
) -> anyhow::Result<ExitCode> {
    let mut planned = Vec::new();
    for (path, key) in &files {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        planned.push(PlannedFile {
            path: path.clone(),
            key: key.clone(),
            size,
        });
    }
    let total: u64 = planned.iter().map(|f| f.size).sum();
    if plan {
        match format {
            Format::Json => print_json(&serde_json::json!({
                "plan": true,
                "bucket": ctx.offsite.bucket,
                "files": planned,
                "bytes": total,
            }))?,
            Format::Human => {
                for f in &planned {
                    println!(
                        "would upload {} -> {} ({} bytes)",
                        f.path.display(),
                        f.key,
                        f.size
                    );
                }
                println!(
                    "{} files, {} bytes to bucket {} (nothing sent)",
                    planned.len(),
                    total,
                    ctx.offsite.bucket
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let c = ctx.client(ClientOptions {
        concurrency: concurrency.max(1),
        ..ClientOptions::default()
    })?;
    c.check().await?;
    let bar = progress_bar(format, total);
    let opts = UploadOptions {
        state_dir,
        progress: bar.as_ref().map(progress_callback),
    };
    let started = std::time::Instant::now();
    let results = c.upload_many(&files, &opts).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut failed = 0;
    let mut out = Vec::new();
    for (key, r) in results {
        match r {
            Ok(u) => out.push(serde_json::json!({"key": key, "ok": true, "size": u.size, "etag": u.etag, "parts": u.parts, "resumed_parts": u.resumed_parts, "checksum_verified": u.checksum_verified})),
            Err(e) => {
                failed += 1;
                out.push(serde_json::json!({"key": key, "ok": false, "error": format!("{e}")}));
            }
        }
    }
    match format {
        Format::Json => print_json(&serde_json::json!({
            "ok": failed == 0,
            "bucket": ctx.offsite.bucket,
            "files": out,
            "bytes": total,
            "seconds": secs,
        }))?,
        Format::Human => {
            for o in &out {
                if o["ok"] == false {
                    println!(
                        "FAILED {}: {}",
                        o["key"].as_str().unwrap_or(""),
                        o["error"].as_str().unwrap_or("")
                    );
                }
            }
            println!(
                "{} of {} files, {} bytes uploaded and verified in {:.1} s ({:.1} MB/s)",
                out.len() - failed,
                out.len(),
                total,
                secs,
                total as f64 / 1e6 / secs.max(1e-9)
            );
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} uploads failed (run again to resume)",
            out.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(format: Format, total: u64) -> Option<indicatif::ProgressBar> {
    if format != Format::Human || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

fn progress_callback(bar: &indicatif::ProgressBar) -> costplus_s3::ProgressFn {
    let bar = bar.clone();
    Arc::new(move |p: &Progress| match p {
        Progress::Started { bytes, .. } if bar.length() == Some(0) => bar.set_length(*bytes),
        Progress::Transferred { bytes, .. } | Progress::Resumed { bytes, .. } => bar.inc(*bytes),
        _ => {}
    })
}
