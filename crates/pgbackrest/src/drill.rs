//! The restore drill: restore a backup into a scratch cluster, start it, check what came back,
//! time it, record it, remove the scratch cluster.
//!
//! Steps and what each proves:
//! 1. **backup set**: the repository answers and holds the set (latest, `--set`, or the one
//!    pgBackRest picks for `--target`).
//! 2. **restore**: `pgbackrest restore --pg1-path=<scratch>/data --archive-mode=off
//!    --type=immediate|time --target-action=promote` decrypts and decompresses every file.
//! 3. **start**: the scratch cluster ([`costplus_pgcluster::Cluster::adopt`], own port and
//!    socket, archiving off, `hot_standby = off` so "started" means "recovered and promoted")
//!    replays the WAL from the archive and accepts connections.
//! 4. **databases**: every database of the backup set is there and accepts a connection.
//! 5. **fingerprint**: tables and row counts (or sizes, for big tables) match what
//!    `costplus-backup run` recorded (see [`crate::fingerprint`]).
//! 6. **amcheck**: `pg_amcheck --all --install-missing` finds no corruption in heap or
//!    B-tree pages.
//!
//! Timings: `restore_seconds`, `start_seconds` (recovery until connections are accepted),
//! `rto_seconds` (their sum: the recovery time objective this drill demonstrates),
//! `checks_seconds` and `total_seconds`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::exec::{PgBackRest, RestoreOptions};
use crate::failure::classify;
use crate::fingerprint::{self, BackupFingerprint};
use crate::{Error, Result};
use costplus_pgcluster::{AdoptOptions, Cluster, PgBin};

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Repository to restore from (default 1).
    pub repo: u32,
    /// Backup set; default the latest in the repository.
    pub set: Option<String>,
    /// Recovery target time instead of the end of the backup.
    pub target: Option<String>,
    /// Directory under which the scratch cluster is created (and removed).
    pub scratch_dir: PathBuf,
    /// Where fingerprints were recorded.
    pub fingerprint_dir: PathBuf,
    /// Where to write the history record (`None`: no record).
    pub history_dir: Option<PathBuf>,
    /// Run `pg_amcheck`.
    pub amcheck: bool,
    /// Keep the scratch cluster (stopped) for inspection.
    pub keep_scratch: bool,
    /// Parallel restore processes.
    pub process_max: Option<u32>,
    /// The database superuser of the backed-up cluster.
    pub superuser: String,
    /// PostgreSQL binaries (default: located).
    pub bin: Option<PgBin>,
}

impl DrillOptions {
    /// Defaults from the `[backup]` section, for repository `repo`.
    pub fn from_config(cfg: &crate::BackupConfig, repo: u32) -> Self {
        Self {
            repo,
            set: None,
            target: None,
            scratch_dir: cfg.scratch_dir(),
            fingerprint_dir: cfg.fingerprint_dir(),
            history_dir: Some(cfg.drill_history_dir()),
            amcheck: true,
            keep_scratch: false,
            process_max: Some(cfg.process_max),
            superuser: "postgres".into(),
            bin: None,
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// It passed.
    Pass,
    /// It failed: the drill fails.
    Fail,
    /// It could not apply (no fingerprint for a set taken outside costplus, ...).
    Skip,
}

/// One check of the drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `backup_set`, `restore`, `start`, `databases`, `fingerprint`, `amcheck`, `cleanup`.
    pub name: String,
    /// Pass or skip.
    pub ok: bool,
    /// Pass, fail or skip.
    pub status: CheckStatus,
    /// What was found (the reason, for a failure).
    pub detail: String,
}

/// Durations in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Choosing the backup set (`info`).
    pub select_seconds: f64,
    /// `pgbackrest restore`.
    pub restore_seconds: f64,
    /// Start of the scratch cluster until it accepts connections (recovery included).
    pub start_seconds: f64,
    /// restore + start: the demonstrated recovery time objective.
    pub rto_seconds: f64,
    /// Databases, fingerprint and amcheck.
    pub checks_seconds: f64,
    /// Stopping and removing the scratch cluster.
    pub cleanup_seconds: f64,
    /// Everything, cleanup included.
    pub total_seconds: f64,
}

/// The drill's report (also its history record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillReport {
    /// Every check passed (or was skipped).
    pub ok: bool,
    /// The first failed check's reason.
    pub reason: Option<String>,
    /// Stanza.
    pub stanza: String,
    /// Repository restored from.
    pub repo: u32,
    /// Backup set restored (when known).
    pub set: Option<String>,
    /// Recovery target time, when one was given.
    pub target: Option<String>,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Durations.
    pub timings: Timings,
    /// Every check in order.
    pub checks: Vec<Check>,
    /// Databases found in the restored cluster.
    pub databases: Vec<String>,
    /// The scratch directory (removed unless kept).
    pub scratch: PathBuf,
    /// The history record written.
    pub history_file: Option<PathBuf>,
}

struct Run {
    checks: Vec<Check>,
}

impl Run {
    fn pass(&mut self, name: &str, detail: String) {
        self.push(name, CheckStatus::Pass, detail);
    }
    fn fail(&mut self, name: &str, detail: String) {
        self.push(name, CheckStatus::Fail, detail);
    }
    fn skip(&mut self, name: &str, detail: String) {
        self.push(name, CheckStatus::Skip, detail);
    }
    fn push(&mut self, name: &str, status: CheckStatus, detail: String) {
        self.checks.push(Check {
            name: name.into(),
            ok: status != CheckStatus::Fail,
            status,
            detail,
        });
    }
    fn failed(&self) -> bool {
        self.checks.iter().any(|c| !c.ok)
    }
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// Run a drill. Never touches the live cluster; errors of the drill's own machinery (cannot
/// create the scratch directory, cannot write the record) are `Err`, everything the drill
/// checks is in the report.
pub async fn run(pgbr: &PgBackRest, opts: &DrillOptions) -> Result<DrillReport> {
    let t0 = Instant::now();
    let started = chrono::Utc::now();
    let mut run = Run { checks: Vec::new() };
    let mut timings = Timings::default();
    let mut set = opts.set.clone();
    let mut databases_found = Vec::new();
    // Short: the socket path under it is limited to 107 bytes.
    let scratch = opts.scratch_dir.join(format!(
        "r{}-{}",
        opts.repo,
        base36(started.timestamp_millis())
    ));

    // 1. The backup set, and the databases it must hold: from the fingerprint recorded at
    // backup time, else from the set's manifest (`info --set`).
    let t = Instant::now();
    let mut expected: Option<Vec<String>> = None;
    let mut fp = None;
    match choose_set(pgbr, opts) {
        Ok(Some(label)) => {
            fp = fingerprint::load(&opts.fingerprint_dir, &label)?;
            let dbs = match &fp {
                Some(fp) => Ok(fingerprint::expected_databases(fp)),
                None => databases_of_set(pgbr, opts.repo, &label),
            };
            match dbs {
                Ok(dbs) => {
                    run.pass(
                        "backup_set",
                        format!("repo{} set {label}, {} databases", opts.repo, dbs.len()),
                    );
                    expected = Some(dbs);
                }
                Err(reason) => run.fail("backup_set", reason),
            }
            set = Some(label);
        }
        Ok(None) => run.pass(
            "backup_set",
            format!(
                "repo{}: pgBackRest picks the set for target {}",
                opts.repo,
                opts.target.as_deref().unwrap_or("-")
            ),
        ),
        Err(reason) => run.fail("backup_set", reason),
    }
    if opts.target.is_some() {
        // The data is as of the target, not as of the backup.
        fp = None;
    }
    timings.select_seconds = secs(t);

    let mut cluster: Option<Cluster> = None;
    if !run.failed() {
        // 2. Restore.
        prepare_scratch(&scratch, pgbr)?;
        let ropts = RestoreOptions {
            repo: Some(opts.repo),
            set: set.clone(),
            target: opts.target.clone(),
            process_max: opts.process_max,
            ..RestoreOptions::into_scratch(&scratch)
        };
        let t = Instant::now();
        let restored = pgbr.restore(&ropts);
        timings.restore_seconds = secs(t);
        match restored {
            Ok(()) => run.pass(
                "restore",
                format!("restored in {:.1}s", timings.restore_seconds),
            ),
            Err(e) => run.fail("restore", format!("restore failed: {e}")),
        }
    }
    if !run.failed() {
        // 3. Start.
        let t = Instant::now();
        match start_scratch(&scratch, pgbr, &opts.superuser, opts.bin.clone()) {
            Ok(c) => {
                timings.start_seconds = secs(t);
                run.pass(
                    "start",
                    format!(
                        "recovered and accepting connections on port {} after {:.1}s",
                        c.port(),
                        timings.start_seconds
                    ),
                );
                cluster = Some(c);
            }
            Err(e) => {
                timings.start_seconds = secs(t);
                run.fail("start", start_failure(&e));
            }
        }
        timings.rto_seconds =
            ((timings.restore_seconds + timings.start_seconds) * 1000.0).round() / 1000.0;
    }
    if let Some(c) = &cluster {
        let t = Instant::now();
        // pg_amcheck runs beside the in-process checks (it is the long one).
        let amcheck = opts.amcheck.then(|| spawn_amcheck(c));
        databases_found = check_databases(c, expected.as_deref(), &mut run).await;
        check_fingerprint(c, fp.as_ref(), &opts.target, &databases_found, &mut run).await;
        match amcheck {
            Some(child) => finish_amcheck(child, &mut run),
            None => run.skip("amcheck", "not requested".into()),
        }
        timings.checks_seconds = secs(t);
    }
    // Cleanup: the scratch cluster never outlives the drill unless asked. It is thrown away,
    // so it stops without a shutdown checkpoint unless it is kept.
    let t = Instant::now();
    if scratch.exists() {
        let mode = if opts.keep_scratch {
            "fast"
        } else {
            "immediate"
        };
        let result = match &cluster {
            Some(c) => c.stop_mode(mode).map_err(Error::from),
            None => stop_if_running(&scratch),
        };
        let removed = if opts.keep_scratch {
            Ok(())
        } else {
            std::fs::remove_dir_all(&scratch).map_err(crate::io_err(&scratch))
        };
        match (result, removed) {
            (Ok(()), Ok(())) if opts.keep_scratch => run.pass(
                "cleanup",
                format!("scratch cluster stopped and kept in {}", scratch.display()),
            ),
            (Ok(()), Ok(())) => run.pass("cleanup", "scratch cluster stopped and removed".into()),
            (Err(e), _) | (_, Err(e)) => run.fail("cleanup", format!("cleanup failed: {e}")),
        }
    }
    timings.cleanup_seconds = secs(t);
    timings.total_seconds = secs(t0);
    let ok = !run.failed();
    let reason = run
        .checks
        .iter()
        .find(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail));
    let mut report = DrillReport {
        ok,
        reason,
        stanza: pgbr.stanza().to_string(),
        repo: opts.repo,
        set,
        target: opts.target.clone(),
        started_at: started.to_rfc3339(),
        timings,
        checks: run.checks,
        databases: databases_found,
        scratch,
        history_file: None,
    };
    if let Some(dir) = &opts.history_dir {
        report.history_file = Some(write_history(dir, &report)?);
    }
    Ok(report)
}

/// A short, time-ordered name part.
pub(crate) fn base36(n: i64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = n.unsigned_abs();
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The set to restore, or `None` when pgBackRest chooses (target time). `Err` is the reason
/// the drill cannot start.
fn choose_set(
    pgbr: &PgBackRest,
    opts: &DrillOptions,
) -> std::result::Result<Option<String>, String> {
    let info = pgbr.info(Some(opts.repo)).map_err(|e| format!("{e}"))?;
    if let Some(st) = info.repo_status(opts.repo)
        && st.code != 0
        && st.code != 2
    {
        let kind = classify(None, &st.message);
        return Err(format!(
            "repo{} status {}: {}\nnext step: {}",
            opts.repo,
            st.code,
            crate::failure::printable(&st.message, 2000),
            kind.next_step()
        ));
    }
    let no_backup = || {
        format!(
            "repo{} holds no backup\nnext step: {}",
            opts.repo,
            crate::FailureKind::NoBackup.next_step()
        )
    };
    match (&opts.set, &opts.target) {
        (Some(s), _) => {
            if !info.backups_in(opts.repo).any(|b| &b.label == s) {
                return Err(format!("repo{} has no backup set {s}", opts.repo));
            }
            Ok(Some(s.clone()))
        }
        (None, Some(_)) => {
            if info.backups_in(opts.repo).next().is_none() {
                return Err(no_backup());
            }
            Ok(None)
        }
        (None, None) => match info.latest(opts.repo, None) {
            Some(b) => Ok(Some(b.label.clone())),
            None => Err(no_backup()),
        },
    }
}

/// The databases in a backup set's manifest.
fn databases_of_set(
    pgbr: &PgBackRest,
    repo: u32,
    label: &str,
) -> std::result::Result<Vec<String>, String> {
    let detail = pgbr.info_set(repo, label).map_err(|e| format!("{e}"))?;
    Ok(detail
        .backup
        .iter()
        .find(|b| b.label == label)
        .and_then(|b| b.database_ref.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.name)
        .collect())
}

/// The scratch directory, its `data` and its own pgBackRest `spool` (a restore clears the spool's
/// archive-get queue: it must never be the live cluster's), owned by the server's OS user.
pub(crate) fn prepare_scratch(scratch: &Path, pgbr: &PgBackRest) -> Result<()> {
    let user = pgbr.os_user();
    if let Some(parent) = scratch.parent()
        && !parent.exists()
    {
        costplus_fs::create_dir_with_mode(parent, 0o755)?;
    }
    for dir in [
        scratch.to_path_buf(),
        scratch.join("data"),
        scratch.join("spool"),
    ] {
        costplus_fs::create_dir_with_mode(&dir, 0o700)?;
        if !user.is_current() {
            costplus_fs::chown(&dir, user.uid, user.gid)?;
        }
    }
    Ok(())
}

/// Start a cluster restored into `scratch` (its own port, archiving off) and wait until
/// recovery is done.
pub(crate) fn start_scratch(
    scratch: &Path,
    pgbr: &PgBackRest,
    superuser: &str,
    bin: Option<PgBin>,
) -> Result<Cluster> {
    let mut a = AdoptOptions::new(scratch);
    a.os_user = Some(pgbr.os_user().clone());
    a.superuser = superuser.to_string();
    a.bin = bin;
    a.settings = vec![
        ("archive_mode".into(), "off".into()),
        ("archive_command".into(), "''".into()),
        // "Started" must mean recovered and promoted, not a hot standby mid-recovery.
        ("hot_standby".into(), "off".into()),
        ("max_connections".into(), "40".into()),
    ];
    // A free port can be taken between choosing and binding it: try a few.
    let mut last = None;
    for _ in 0..3 {
        let c = Cluster::adopt(a.clone())?;
        match c.start() {
            Ok(()) => {
                wait_accepting(&c, std::time::Duration::from_secs(3600))?;
                return Ok(c);
            }
            Err(costplus_pgcluster::Error::PortInUse { .. }) => {
                last = Some(costplus_pgcluster::Error::PortInUse { port: c.port() })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .map(Error::from)
        .unwrap_or_else(|| Error::Config("no free port".into())))
}

/// `pg_ctl start -w` returns once the postmaster is up; with `hot_standby = off` recovery
/// may still run. Wait until a connection succeeds (recovery done, promoted), the server
/// dies, or `timeout` passes.
pub(crate) fn wait_accepting(c: &Cluster, timeout: std::time::Duration) -> Result<()> {
    // On a thread of its own: the caller may be inside an async runtime.
    std::thread::scope(|s| {
        s.spawn(|| wait_accepting_blocking(c, timeout))
            .join()
            .unwrap_or_else(|_| Err(Error::Config("waiting for the server panicked".into())))
    })
}

fn wait_accepting_blocking(c: &Cluster, timeout: std::time::Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::io_err(Path::new("tokio runtime")))?;
    loop {
        match rt.block_on(c.connect_socket("postgres")) {
            Ok(_) => return Ok(()),
            Err(e) => {
                if !matches!(c.status()?, costplus_pgcluster::Status::Running { .. }) {
                    let log =
                        std::fs::read_to_string(c.root().join("server.log")).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                    return Err(Error::Config(format!(
                        "the server stopped during recovery: {e}\n{tail}"
                    )));
                }
                if Instant::now() > deadline {
                    return Err(Error::Config(format!(
                        "still not accepting connections after {}s: {e}",
                        timeout.as_secs()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn start_failure(e: &Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("WAL ends before consistent recovery point")
        || text.contains("could not locate required checkpoint record")
        || text.contains("could not find redo location")
        || text.contains("unable to find")
        || text.contains("recovery ended before")
    {
        "\nnext step: recovery needs WAL that the archive does not have (a segment is missing or unreadable): run `costplus-backup verify`, check archiving (`costplus-backup status`), then take a new full backup"
    } else {
        ""
    };
    format!("the restored cluster did not start: {text}{hint}")
}

fn stop_if_running(scratch: &Path) -> Result<()> {
    if scratch.join("cluster.json").exists() {
        Cluster::open(scratch)?.stop_mode("immediate")?;
    }
    Ok(())
}

async fn check_databases(c: &Cluster, expected: Option<&[String]>, run: &mut Run) -> Vec<String> {
    let found: Vec<String> = match c.connect_socket("postgres").await {
        Ok(client) => match client
            .query("SELECT datname FROM pg_database ORDER BY 1", &[])
            .await
        {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(e) => {
                run.fail(
                    "databases",
                    format!("listing databases: {}", costplus_pgcluster::pg_message(&e)),
                );
                return Vec::new();
            }
        },
        Err(e) => {
            run.fail("databases", format!("cannot connect: {e}"));
            return Vec::new();
        }
    };
    let have: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    let want: Vec<String> = match expected {
        Some(list) if !list.is_empty() => list.to_vec(),
        _ => found.clone(),
    };
    let mut problems = Vec::new();
    let mut connected = 0;
    for db in want.iter().filter(|d| d.as_str() != "template0") {
        if !have.contains(db.as_str()) {
            problems.push(format!("{db}: missing"));
            continue;
        }
        match c.connect_socket(db).await {
            Ok(client) => match client.query_one("SELECT 1", &[]).await {
                Ok(_) => connected += 1,
                Err(e) => problems.push(format!("{db}: {}", costplus_pgcluster::pg_message(&e))),
            },
            Err(e) => problems.push(format!("{db}: cannot connect: {e}")),
        }
    }
    if problems.is_empty() {
        run.pass(
            "databases",
            format!("{connected} databases of the backup set present and connectable"),
        );
    } else {
        run.fail("databases", problems.join("; "));
    }
    found
}

async fn check_fingerprint(
    c: &Cluster,
    fp: Option<&BackupFingerprint>,
    target: &Option<String>,
    found: &[String],
    run: &mut Run,
) {
    let Some(fp) = fp else {
        let why = if target.is_some() {
            "a target time was given: the data is as of that time, not as of a backup".into()
        } else {
            "no fingerprint recorded for this set (not taken by `costplus-backup run`)".into()
        };
        run.skip("fingerprint", why);
        return;
    };
    let mut problems = Vec::new();
    let mut tables = 0;
    for db in fingerprint::expected_databases(fp) {
        if !found.contains(&db) {
            problems.push(format!("{db}: database missing"));
            continue;
        }
        let methods = fingerprint::methods_of(fp, &db);
        let mark = match c.connect_socket(&db).await {
            Ok(client) => fingerprint::restored_mark(&client, &methods).await,
            Err(e) => Err(e.into()),
        };
        match mark {
            Ok(m) => {
                tables += m.len();
                for x in fingerprint::compare_database(fp, &db, &m) {
                    problems.push(format!(
                        "{}.{}: {}",
                        x.database,
                        x.table.unwrap_or_default(),
                        x.problem
                    ));
                }
            }
            Err(e) => problems.push(format!("{db}: {e}")),
        }
    }
    if problems.is_empty() {
        run.pass(
            "fingerprint",
            format!("{tables} tables match the fingerprint of {}", fp.label),
        );
    } else {
        run.fail("fingerprint", problems.join("; "));
    }
}

fn spawn_amcheck(c: &Cluster) -> std::io::Result<std::process::Child> {
    let mut cmd = c.command("pg_amcheck");
    cmd.arg("--all")
        .arg("--install-missing")
        .arg("--jobs=2")
        .arg("-h")
        .arg(c.socket_dir())
        .arg("-p")
        .arg(c.port().to_string())
        .arg("-U")
        .arg(c.superuser())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn()
}

fn finish_amcheck(child: std::io::Result<std::process::Child>, run: &mut Run) {
    match child.and_then(|c| c.wait_with_output()) {
        Ok(out) if out.status.success() => run.pass(
            "amcheck",
            "pg_amcheck --all: no corruption in heap or B-tree pages".into(),
        ),
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().take(20).collect();
            run.fail(
                "amcheck",
                format!("pg_amcheck exited {}: {}", out.status, lines.join("\n")),
            );
        }
        Err(e) => run.fail("amcheck", format!("cannot run pg_amcheck: {e}")),
    }
}

fn write_history(dir: &Path, report: &DrillReport) -> Result<PathBuf> {
    costplus_fs::create_dir_with_mode(dir, 0o750)
        .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })?;
    let stamp = report
        .started_at
        .replace([':', '-'], "")
        .chars()
        .take(15)
        .collect::<String>();
    let path = dir.join(format!(
        "{stamp}-{}-repo{}.json",
        report.stanza, report.repo
    ));
    let mut with_path = report.clone();
    with_path.history_file = Some(path.clone());
    let text = serde_json::to_vec_pretty(&with_path).map_err(|e| Error::Record {
        path: path.clone(),
        message: e.to_string(),
    })?;
    costplus_fs::write_atomic(&path, &text, &costplus_fs::WriteOptions::public())?;
    Ok(path)
}

/// Drill history records in `dir`, oldest first.
pub fn history(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: dir.into(),
                source: e,
            });
        }
    };
    files.sort();
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(crate::io_err(p))?;
            serde_json::from_slice(&bytes).map_err(|e| Error::Record {
                path: p.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36 * 36 + 35), "10z");
        assert_eq!(base36(1_796_402_770_529).len(), 8);
    }

    #[test]
    fn start_failures_point_at_missing_wal() {
        let e = Error::Config("FATAL:  WAL ends before consistent recovery point".into());
        assert!(start_failure(&e).contains("a segment is missing"));
        let e = Error::Config("FATAL: something else".into());
        assert!(!start_failure(&e).contains("next step"));
    }

    #[test]
    fn a_failed_check_fails_the_run_and_a_skip_does_not() {
        let mut r = Run { checks: Vec::new() };
        r.pass("a", String::new());
        r.skip("b", String::new());
        assert!(!r.failed());
        r.fail("c", "why".into());
        assert!(r.failed());
    }
}
