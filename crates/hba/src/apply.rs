//! Applying an edit to a live server's pg_hba.conf, safely:
//!
//! 1. take an exclusive lock (`<file>.costplus.lock`): concurrent editors serialise;
//! 2. read the current file and apply the edit through the [`Document`];
//! 3. check the new bytes offline ([`read_rules`]): a file the server would refuse is never
//!    written;
//! 4. keep a timestamped backup of the current file next to it;
//! 5. write atomically (temp, fsync, rename, fsync dir) with the old owner and mode;
//! 6. ask the server, through `pg_hba_file_rules`, whether it reads the new file without
//!    error; if not, put the old file back;
//! 7. `pg_reload_conf()` and wait until `pg_conf_load_time()` advances; if it does not, put
//!    the old file back and reload again.
//!
//! Before step 5 a marker (`<lock file>.reload-pending`) is made durable; it is removed once
//! the server runs the file on disk (a confirmed reload, or the old file put back unreloaded).
//! A writer that dies between steps 5 and 7, an offline write (no server) and a write with
//! `reload: false` leave it, and the next `apply` reloads even when its edit changes nothing.
//! An unchanged file edited by someone else since the last load is reloaded too, as far as
//! times tell: its modification time is compared with `pg_conf_load_time()` of this
//! connection, allowing for the kernel's coarse file clock (best effort: a connection that was
//! idle through someone else's reload reports a later time than the server's load).
//!
//! Plan mode ([`plan`]) computes the unified diff and touches nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Document, EditError, Error, ReadOptions, Severity, SystemEnv, read_rules};

/// Options of [`apply`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// The file (the server's `hba_file`).
    pub hba_path: PathBuf,
    /// How the server reads (version, ssl).
    pub read: ReadOptions,
    /// Where backups go (default: beside the file).
    pub backup_dir: Option<PathBuf>,
    /// Reload the server after a validated write (else only write and validate).
    pub reload: bool,
    /// How long to wait for the reload to be confirmed.
    pub reload_timeout: Duration,
    /// The lock file serialising editors (default: beside the file). Point it elsewhere when
    /// the file lives in the data directory, where backups would copy the lock.
    pub lock_file: Option<PathBuf>,
}

impl ApplyOptions {
    /// Defaults for a file: backups beside it, reload, 10 s timeout.
    pub fn new(hba_path: impl Into<PathBuf>, read: ReadOptions) -> Self {
        ApplyOptions {
            hba_path: hba_path.into(),
            read,
            backup_dir: None,
            reload: true,
            reload_timeout: Duration::from_secs(10),
            lock_file: None,
        }
    }

    /// The lock file: [`ApplyOptions::lock_file`], else `<file>.costplus.lock` beside the file.
    pub fn lock_file(&self) -> PathBuf {
        self.lock_file
            .clone()
            .unwrap_or_else(|| lock_path(&self.hba_path))
    }
}

/// What [`apply`] or [`plan`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The file.
    pub path: PathBuf,
    /// The bytes changed.
    pub changed: bool,
    /// Unified diff of the change (empty when unchanged).
    pub diff: String,
    /// Backup of the previous file (when written).
    pub backup: Option<PathBuf>,
    /// The new file was written.
    pub written: bool,
    /// The server confirmed the file through `pg_hba_file_rules`.
    pub validated_by_server: bool,
    /// The reload was confirmed.
    pub reloaded: bool,
    /// The server may not run the file on disk yet (written offline or without reload, or
    /// left so by an earlier writer): the next `apply` with a connection reloads it.
    pub reload_pending: bool,
}

fn lock_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".costplus.lock");
    PathBuf::from(s)
}

fn read_current(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        message: crate::EnvError::from_io(&e).message,
    })
}

fn offline_check(bytes: &[u8], opts: &ApplyOptions) -> Result<(), Error> {
    let set = read_rules(bytes, &opts.hba_path, &opts.read, &SystemEnv);
    let errors: Vec<String> = set
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            path: opts.hba_path.clone(),
            errors,
        })
    }
}

/// Compute the edit and its diff without touching anything.
pub fn plan(
    opts: &ApplyOptions,
    edit: impl FnOnce(&mut Document) -> Result<(), EditError>,
) -> Result<ApplyReport, Error> {
    let old = read_current(&opts.hba_path)?;
    let mut doc = Document::parse(&old);
    edit(&mut doc)?;
    let new = doc.to_bytes();
    offline_check(&new, opts)?;
    let name = opts.hba_path.display().to_string();
    Ok(ApplyReport {
        path: opts.hba_path.clone(),
        changed: new != old,
        diff: crate::unified_diff(&old, &new, &name, &format!("{name} (new)")),
        backup: None,
        written: false,
        validated_by_server: false,
        reloaded: false,
        reload_pending: pending_path(&opts.lock_file()).exists(),
    })
}

fn write_like(path: &Path, bytes: &[u8], like: &costplus_fs::WriteOptions) -> Result<(), Error> {
    costplus_fs::write_atomic(path, bytes, like).map_err(|source| Error::Fs {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Write a new backup file (never overwriting one): one fsync; its directory entry is made
/// durable by the directory fsync of the atomic write that follows (same directory) or by
/// the caller. A crash midway leaves at worst a partial copy beside an untouched original.
fn write_backup(path: &Path, bytes: &[u8], like: &costplus_fs::WriteOptions) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source: std::io::Error| Error::Fs {
        action: "writing the backup",
        path: path.to_path_buf(),
        source: costplus_fs::Error::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        },
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(like.mode)
        .open(path)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(like.mode))
        .map_err(io)?;
    if let Some((uid, gid)) = like.owner {
        costplus_fs::chown(path, uid, gid).map_err(|source| Error::Fs {
            action: "setting the owner of the backup",
            path: path.to_path_buf(),
            source,
        })?;
    }
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// A failed query, as the error of `action`.
fn query_failed(action: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::Server {
        action,
        message: e.to_string(),
    }
}

/// Rows of `pg_hba_file_rules` the server refuses: an error, or a row of NULLs (a line only
/// logged as invalid, e.g. `clientcert=1`).
async fn server_errors(client: &tokio_postgres::Client) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT line_number, coalesce(error, 'invalid line (see the server log)') \
             FROM pg_hba_file_rules WHERE error IS NOT NULL OR type IS NULL ORDER BY line_number",
            &[],
        )
        .await
        .map_err(query_failed("reading pg_hba_file_rules"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let line: Option<i32> = r.get(0);
            let msg: String = r.get(1);
            format!("line {}: {msg}", line.unwrap_or(0))
        })
        .collect())
}

/// This connection's `pg_conf_load_time()`, in seconds since the epoch (microseconds kept).
async fn load_time(client: &tokio_postgres::Client) -> Result<f64, Error> {
    Ok(client
        .query_one(
            "SELECT extract(epoch FROM pg_conf_load_time())::float8",
            &[],
        )
        .await
        .map_err(query_failed("reading pg_conf_load_time()"))?
        .get(0))
}

/// How far a file's modification time can lag the moment it was written. Linux stamps files
/// from the coarse clock, which is up to one scheduler tick (10 ms at `HZ=100`) behind the
/// clock `pg_conf_load_time()` reads, so a file written just after a load can carry an
/// earlier time. Erring this way costs at most one needless reload.
const MTIME_SLACK: Duration = Duration::from_millis(20);

/// The marker of a written file the server may not run yet (beside the lock file).
fn pending_path(lock_file: &Path) -> PathBuf {
    let mut s = lock_file.as_os_str().to_owned();
    s.push(".reload-pending");
    PathBuf::from(s)
}

/// Make the marker durable (it names the file), with the lock file's owner and mode.
fn mark_pending(marker: &Path, lock_file: &Path, hba: &Path) -> Result<(), Error> {
    if marker.exists() {
        return Ok(());
    }
    let fs_err = |action, source| Error::Fs {
        action,
        path: marker.to_path_buf(),
        source,
    };
    let like = costplus_fs::WriteOptions::like(lock_file)
        .map_err(|e| fs_err("reading owner and mode of the lock file for", e))?;
    let mut text = hba.as_os_str().as_encoded_bytes().to_vec();
    text.push(b'\n');
    costplus_fs::write_atomic(marker, &text, &like).map_err(|e| fs_err("writing", e))
}

/// The server runs the file on disk: drop the marker (a marker that survives a crash costs one
/// needless reload).
fn clear_pending(marker: &Path) {
    let _ = std::fs::remove_file(marker);
}

/// Whether `path` may have been modified after the server's last configuration load.
async fn newer_than_last_load(client: &tokio_postgres::Client, path: &Path) -> Result<bool, Error> {
    let loaded = load_time(client).await?;
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::Read {
            path: path.to_path_buf(),
            message: format!("modification time: {e}"),
        })?;
    let modified = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Ok(modified + MTIME_SLACK.as_secs_f64() >= loaded)
}

/// Reload the server's configuration and wait until `pg_conf_load_time()` advances. First wait
/// until the file's modification time is more than [`MTIME_SLACK`] in the past, so the load
/// this triggers is told apart from the write by [`newer_than_last_load`] (at most 1.5 times
/// the slack, also for a file stamped in the future).
async fn reload(
    client: &tokio_postgres::Client,
    path: &Path,
    timeout: Duration,
) -> Result<bool, Error> {
    if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
        let wait = MTIME_SLACK * 3 / 2;
        if let Ok(left) = (modified + wait).duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(left.min(wait)).await;
        }
    }
    let before = load_time(client).await?;
    let ok: bool = client
        .query_one("SELECT pg_reload_conf()", &[])
        .await
        .map_err(query_failed("pg_reload_conf()"))?
        .get(0);
    if !ok {
        return Ok(false);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if load_time(client).await? != before {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Apply `edit` to the file under an exclusive lock; see the module docs for the steps.
/// `client` is a superuser connection to the server that reads the file (`None`: write and
/// check offline only, no server validation and no reload).
pub async fn apply(
    client: Option<&tokio_postgres::Client>,
    opts: &ApplyOptions,
    edit: impl FnOnce(&mut Document) -> Result<(), EditError>,
) -> Result<ApplyReport, Error> {
    let path = &opts.hba_path;
    let lock_file = opts.lock_file();
    let _lock = costplus_fs::LockFile::acquire(&lock_file).map_err(|source| Error::Fs {
        action: "locking",
        path: lock_file.clone(),
        source,
    })?;
    let marker = pending_path(&lock_file);
    let was_pending = marker.exists();
    let old = read_current(path)?;
    let mut doc = Document::parse(&old);
    edit(&mut doc)?;
    let new = doc.to_bytes();
    let name = path.display().to_string();
    let mut report = ApplyReport {
        path: path.clone(),
        changed: new != old,
        diff: crate::unified_diff(&old, &new, &name, &format!("{name} (new)")),
        backup: None,
        written: false,
        validated_by_server: false,
        reloaded: false,
        reload_pending: false,
    };
    if !report.changed {
        // Nothing to write, but the server may not run the file yet: a writer died between
        // writing and reloading, wrote offline, or did not reload; or someone else edited it.
        if let Some(client) = client
            && opts.reload
            && (was_pending || newer_than_last_load(client, path).await?)
        {
            let errors = server_errors(client).await?;
            if !errors.is_empty() {
                return Err(Error::Server {
                    action: "reloading the unchanged file (the server refuses it, not reloaded)",
                    message: errors.join("; "),
                });
            }
            report.validated_by_server = true;
            if !reload(client, path, opts.reload_timeout).await? {
                return Err(Error::Server {
                    action: "reloading the unchanged file",
                    message: "pg_conf_load_time() did not advance".into(),
                });
            }
            clear_pending(&marker);
            report.reloaded = true;
        }
        report.reload_pending = !report.reloaded && marker.exists();
        return Ok(report);
    }
    offline_check(&new, opts)?;
    let like = costplus_fs::WriteOptions::like(path).map_err(|source| Error::Fs {
        action: "reading owner and mode of",
        path: path.clone(),
        source,
    })?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pg_hba.conf".into());
    let backup_dir = opts
        .backup_dir
        .clone()
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let backup = backup_dir.join(format!("{file_name}.costplus-backup.{stamp}"));
    mark_pending(&marker, &lock_file, path)?;
    // Until the new file is in place, a failure leaves the marker as it was; a write that
    // fails after its rename (the directory fsync) leaves the new file, and the marker.
    let unmark_unless_written = || {
        if !was_pending && read_current(path).is_ok_and(|now| now == old) {
            clear_pending(&marker);
        }
    };
    let written = write_backup(&backup, &old, &like)
        .and_then(|()| {
            if path.parent() == Some(backup_dir.as_path()) {
                return Ok(());
            }
            costplus_fs::sync_dir(&backup_dir).map_err(|source| Error::Fs {
                action: "syncing the backup directory",
                path: backup_dir.clone(),
                source,
            })
        })
        .and_then(|()| {
            report.backup = Some(backup.clone());
            write_like(path, &new, &like)
        });
    if let Err(e) = written {
        unmark_unless_written();
        return Err(e);
    }
    report.written = true;
    let Some(client) = client else {
        report.reload_pending = marker.exists();
        return Ok(report);
    };
    // Put the old file back; unless the marker was there before, the server runs it again.
    let restore = || {
        write_like(path, &old, &like)?;
        if !was_pending {
            clear_pending(&marker);
        }
        Ok::<(), Error>(())
    };
    match server_errors(client).await {
        Ok(errors) if errors.is_empty() => {}
        Ok(errors) => {
            restore()?;
            return Err(Error::RefusedByServer {
                path: path.clone(),
                errors,
            });
        }
        Err(e) => {
            restore()?;
            return Err(e);
        }
    }
    report.validated_by_server = true;
    if !opts.reload {
        report.reload_pending = marker.exists();
        return Ok(report);
    }
    let reloaded = reload(client, path, opts.reload_timeout).await;
    if let Ok(true) = reloaded {
        clear_pending(&marker);
        report.reloaded = true;
        return Ok(report);
    }
    // The old file goes back and is reloaded: the server may have loaded the new one anyway.
    write_like(path, &old, &like)?;
    if let Ok(true) = reload(client, path, opts.reload_timeout).await {
        clear_pending(&marker);
    }
    match reloaded {
        Err(e) => Err(e),
        _ => Err(Error::ReloadNotConfirmed {
            path: path.clone(),
            message: "pg_conf_load_time() did not advance".into(),
        }),
    }
}
