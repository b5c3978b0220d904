//! Crash-safe file handling shared by every costplus crate.
//!
//! Everything that matters on an operator's server (pg_hba.conf, the vault, keys, generated
//! configuration) is written through [`write_atomic`]: a temporary file in the same directory,
//! `fsync`, `rename`, then `fsync` of the directory. A crash at any point leaves either the old or
//! the new file, never a mix. Files holding secrets are created with mode 0600 from the start, so
//! there is no window in which they are readable by others.
//!
//! ```
//! use costplus_fs::{write_atomic, WriteOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("secret.txt");
//! write_atomic(&path, b"s3cr3t", &WriteOptions::private()).unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"s3cr3t");
//! # use std::os::unix::fs::PermissionsExt;
//! assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};

/// Errors of this crate. Every variant names the path it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("write", "rename", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that must be private is readable or writable by others, or owned by someone else.
    #[error("{path} is not private: {problem}")]
    NotPrivate {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An OS user could not be found.
    #[error("unknown OS user {0:?}")]
    UnknownUser(String),
    /// The lock is held by another process and we were asked not to wait.
    #[error("{path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An OS account: the owner that files and processes should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

impl OsUser {
    /// The user running this process.
    pub fn current() -> Result<Self> {
        let uid = nix::unistd::geteuid();
        match User::from_uid(uid) {
            Ok(Some(u)) => Ok(Self::from_nix(u)),
            _ => Ok(Self {
                name: uid.to_string(),
                uid: uid.as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                home: PathBuf::from("/"),
            }),
        }
    }

    /// Look a user up by name.
    pub fn by_name(name: &str) -> Result<Self> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(Self::from_nix(u)),
            _ => Err(Error::UnknownUser(name.to_string())),
        }
    }

    fn from_nix(u: User) -> Self {
        Self {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }
    }

    /// Whether this process runs as root.
    pub fn running_as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Whether this is the user running this process.
    pub fn is_current(&self) -> bool {
        nix::unistd::geteuid().as_raw() == self.uid
    }
}

/// How [`write_atomic`] creates the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits of the new file.
    pub mode: u32,
    /// Owner (uid, gid) to give the new file; `None` keeps the creating user.
    pub owner: Option<(u32, u32)>,
}

impl WriteOptions {
    /// 0600, owned by the current user: for secrets.
    pub fn private() -> Self {
        Self {
            mode: 0o600,
            owner: None,
        }
    }
    /// 0644, owned by the current user: for public configuration.
    pub fn public() -> Self {
        Self {
            mode: 0o644,
            owner: None,
        }
    }
    /// Same mode and owner as an existing file (used when replacing a configuration file in place).
    pub fn like(path: &Path) -> Result<Self> {
        let md = std::fs::metadata(path).map_err(io("stat", path))?;
        Ok(Self {
            mode: md.mode() & 0o7777,
            owner: Some((md.uid(), md.gid())),
        })
    }
    /// The same options, with the file owned by `user`.
    pub fn owned_by(mut self, user: &OsUser) -> Self {
        self.owner = Some((user.uid, user.gid));
        self
    }
}

/// Replace `path` with `contents` atomically and durably.
///
/// The new file is written to a temporary file in the same directory with `opts.mode` from the
/// moment it exists, synced, renamed over `path`, and the directory is synced. On error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, contents: &[u8], opts: &WriteOptions) -> Result<()> {
    let tmp = write_temp(path, contents, opts)?;
    let result = std::fs::rename(&tmp, path)
        .map_err(io("rename into", path))
        .and_then(|()| sync_dir(&parent_dir(path)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] for many files at once, each replaced atomically and durably.
///
/// The temporary files are written and synced several at a time (the file system then
/// shares one journal commit between many syncs: 200 small files take tens of milliseconds
/// instead of a second and more), then renamed in order, then each directory is synced once.
/// If writing any temporary file fails, every temporary file is removed and no `path` is
/// touched; a rename failure leaves the files renamed before it replaced (each one whole).
pub fn write_atomic_many(files: &[(PathBuf, Vec<u8>)], opts: &WriteOptions) -> Result<()> {
    /// Syncs in flight at once: enough for the file system to batch them, few threads.
    const PARALLEL: usize = 16;
    if files.is_empty() {
        return Ok(());
    }
    let chunk = files.len().div_ceil(PARALLEL);
    let written: Vec<Result<Vec<PathBuf>>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut tmps = Vec::with_capacity(part.len());
                    for (path, contents) in part {
                        match write_temp(path, contents, opts) {
                            Ok(t) => tmps.push(t),
                            Err(e) => {
                                remove_all(&tmps);
                                return Err(e);
                            }
                        }
                    }
                    Ok(tmps)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Io {
                        action: "write",
                        path: PathBuf::new(),
                        source: std::io::Error::other("a writer thread panicked"),
                    })
                })
            })
            .collect()
    });
    let mut tmps = Vec::with_capacity(files.len());
    let mut first_err = None;
    for w in written {
        match w {
            Ok(t) => tmps.extend(t),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        remove_all(&tmps);
        return Err(e);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, ((path, _), tmp)) in files.iter().zip(&tmps).enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            remove_all(&tmps[i..]);
            return Err(io("rename into", path)(e));
        }
        let dir = parent_dir(path);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.iter().try_for_each(|d| sync_dir(d))
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Write `contents` to a new, synced temporary file beside `path` (mode and owner from `opts`
/// from the start) and return its name. On error nothing is left behind.
fn write_temp(path: &Path, contents: &[u8], opts: &WriteOptions) -> Result<PathBuf> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(opts.mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        // The umask may have removed bits we asked for; set them exactly.
        f.set_permissions(std::fs::Permissions::from_mode(opts.mode))
            .map_err(io("chmod", &tmp))?;
        if let Some((uid, gid)) = opts.owner {
            chown(&tmp, uid, gid)?;
        }
        f.write_all(contents).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn unique_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos ^ u128::from(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A system program (`fail2ban-client`, `df`, ...) from the system directories, packaged ones
/// first. Not looked up on `$PATH`: these run as root, from timers with a minimal environment.
pub fn system_tool(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.is_file())
}

/// `fsync` a directory so that a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Change the owner of a path.
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| {
        Error::Io {
            action: "chown",
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Change the owner of a directory tree (no symlinks followed).
pub fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::Io {
        action: "chown",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let md = std::fs::symlink_metadata(path).map_err(io("stat", path))?;
    if md.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io("read directory", path))? {
            let entry = entry.map_err(io("read directory", path))?;
            chown_recursive(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Create a directory (and its parents) and set its mode exactly.
pub fn create_dir_with_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Refuse a file that holds secrets when others could read it or someone else owns it.
///
/// Accepts owner-only permissions (no group/other bits) and an owner that is the current user
/// (or root, when we run as root).
pub fn check_private(path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).map_err(io("stat", path))?;
    let mode = md.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: path.to_path_buf(),
            problem: format!(
                "mode {mode:04o} lets group or others in; chmod 600 (700 for a directory)"
            ),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me {
        return Err(Error::NotPrivate {
            path: path.to_path_buf(),
            problem: format!(
                "owned by uid {}, not by uid {me} running this command",
                md.uid()
            ),
        });
    }
    Ok(())
}

/// An exclusive advisory lock (`flock`) held until dropped.
///
/// The kernel releases it when the process dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct LockFile {
    _lock: Flock<File>,
    path: PathBuf,
}

impl LockFile {
    /// Take the lock, waiting for other holders.
    pub fn acquire(path: &Path) -> Result<Self> {
        Self::take(path, FlockArg::LockExclusive)
    }

    /// Take the lock or fail at once with [`Error::Locked`].
    pub fn try_acquire(path: &Path) -> Result<Self> {
        Self::take(path, FlockArg::LockExclusiveNonblock)
    }

    fn take(path: &Path, arg: FlockArg) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open lock file", path))?;
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Self {
                _lock: lock,
                path: path.to_path_buf(),
            }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Locked {
                path: path.to_path_buf(),
            }),
            Err((_, e)) => Err(Error::Io {
                action: "lock",
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", &WriteOptions::public()).unwrap();
        write_atomic(&p, b"two", &WriteOptions::private()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn atomic_write_failure_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-dir").join("f");
        let err = write_atomic(&p, b"x", &WriteOptions::private()).unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
        assert!(!p.exists());
    }

    #[test]
    fn atomic_write_many_writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        write_atomic(&dir.path().join("f4"), b"old", &WriteOptions::public()).unwrap();
        let files: Vec<(PathBuf, Vec<u8>)> = (0..40)
            .map(|i| {
                let d = if i % 2 == 0 {
                    dir.path()
                } else {
                    sub.as_path()
                };
                (d.join(format!("f{i}")), format!("content {i}").into_bytes())
            })
            .collect();
        write_atomic_many(&files, &WriteOptions::private()).unwrap();
        for (p, c) in &files {
            assert_eq!(&std::fs::read(p).unwrap(), c);
            assert_eq!(std::fs::metadata(p).unwrap().mode() & 0o777, 0o600);
        }
        // No temporary files are left behind.
        let count = |d: &Path| std::fs::read_dir(d).unwrap().count();
        assert_eq!((count(dir.path()), count(&sub)), (21, 20));
        write_atomic_many(&[], &WriteOptions::private()).unwrap();
    }

    #[test]
    fn atomic_write_many_failure_touches_no_target() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("f0"), b"old", &WriteOptions::public()).unwrap();
        let mut files: Vec<(PathBuf, Vec<u8>)> = (0..30)
            .map(|i| (dir.path().join(format!("f{i}")), b"new".to_vec()))
            .collect();
        files.push((dir.path().join("missing-dir").join("x"), b"x".to_vec()));
        let err = write_atomic_many(&files, &WriteOptions::private()).unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("f0")).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f0")]);
    }

    #[test]
    fn like_copies_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(
            &p,
            b"x",
            &WriteOptions {
                mode: 0o640,
                owner: None,
            },
        )
        .unwrap();
        let opts = WriteOptions::like(&p).unwrap();
        assert_eq!(opts.mode, 0o640);
    }

    #[test]
    fn private_check_refuses_group_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_atomic(
            &p,
            b"x",
            &WriteOptions {
                mode: 0o640,
                owner: None,
            },
        )
        .unwrap();
        let err = check_private(&p).unwrap_err();
        assert!(matches!(err, Error::NotPrivate { .. }), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&p).unwrap();
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = LockFile::acquire(&p).unwrap();
        assert!(matches!(
            LockFile::try_acquire(&p),
            Err(Error::Locked { .. })
        ));
        drop(held);
        LockFile::try_acquire(&p).unwrap();
    }
}
