//! What the parser needs from the machine the server runs on: included files, directory
//! listings, interface names and host name resolution. The pure core only sees this trait;
//! [`SystemEnv`] is the thin IO adapter, [`MemEnv`] serves tests and dry runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A failed file or directory access, with the `strerror` text PostgreSQL would print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// The file does not exist (`ENOENT`): `include_if_exists` skips it.
    pub not_found: bool,
    /// The file opened but reading it failed (a directory): PostgreSQL then reads nothing
    /// from it, silently.
    pub opened: bool,
    /// `strerror(errno)`, e.g. "No such file or directory".
    pub message: String,
}

impl EnvError {
    /// The error for a missing file.
    pub fn not_found() -> Self {
        EnvError {
            not_found: true,
            opened: false,
            message: "No such file or directory".into(),
        }
    }
    /// From an IO error (its errno's `strerror` text).
    pub fn from_io(e: &std::io::Error) -> Self {
        let message = match e.raw_os_error() {
            Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
            None => e.to_string(),
        };
        EnvError {
            not_found: e.kind() == std::io::ErrorKind::NotFound,
            opened: false,
            message,
        }
    }
}

/// One directory entry (for `include_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name (bytes: names need not be UTF-8).
    pub name: Vec<u8>,
    /// It is a directory (symlinks followed), so `include_dir` skips it.
    pub is_dir: bool,
}

/// The machine as the server sees it (`Sync`: a large file is read on two threads).
pub trait Environment: Sync {
    /// Read a whole file (`@file`, `include`).
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, EnvError>;
    /// List a directory (`include_dir`).
    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>, EnvError>;
    /// `if_nametoindex`: 0 when there is no such interface (IPv6 `%zone` suffixes).
    fn interface_index(&self, name: &[u8]) -> u32 {
        u32::from(name == b"lo")
    }
    /// Whether a RADIUS server name resolves (`getaddrinfo`).
    fn resolves(&self, host: &[u8]) -> bool {
        host == b"localhost"
            || crate::addr::parse_numeric_host(host, &|n| self.interface_index(n)).is_some()
    }
}

/// An in-memory file system: a map from absolute path to contents.
#[derive(Debug, Clone, Default)]
pub struct MemEnv {
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemEnv {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add (or replace) a file.
    pub fn with_file(mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }
    /// Add (or replace) a file in place.
    pub fn insert(&mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), contents.into());
    }
}

impl Environment for MemEnv {
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, EnvError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(EnvError::not_found)
    }
    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>, EnvError> {
        use std::os::unix::ffi::OsStrExt;
        let mut out: Vec<DirEntry> = Vec::new();
        for p in self.files.keys() {
            if let Ok(rest) = p.strip_prefix(path) {
                let mut comps = rest.components();
                if let Some(first) = comps.next() {
                    let name = first.as_os_str().as_bytes().to_vec();
                    let is_dir = comps.next().is_some();
                    if !out.iter().any(|e| e.name == name) {
                        out.push(DirEntry { name, is_dir });
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(EnvError::not_found());
        }
        Ok(out)
    }
}

/// The real machine: files through `std::fs`, interfaces from `/sys/class/net`, names
/// through the system resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

/// Files larger than this are refused (PostgreSQL would try to hold them in memory).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

impl Environment for SystemEnv {
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, EnvError> {
        let meta = std::fs::metadata(path).map_err(|e| EnvError::from_io(&e))?;
        if meta.is_dir() {
            // fopen(3) opens a directory; the first read fails with EISDIR.
            std::fs::File::open(path).map_err(|e| EnvError::from_io(&e))?;
            return Err(EnvError {
                not_found: false,
                opened: true,
                message: "Is a directory".into(),
            });
        }
        if !meta.is_file() {
            // A FIFO or device would block PostgreSQL (and us) forever.
            return Err(EnvError {
                not_found: false,
                opened: false,
                message: "Not a regular file".into(),
            });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(EnvError {
                not_found: false,
                opened: false,
                message: "File too large".into(),
            });
        }
        std::fs::read(path).map_err(|e| EnvError::from_io(&e))
    }
    fn read_dir(&self, path: &Path) -> Result<Vec<DirEntry>, EnvError> {
        use std::os::unix::ffi::OsStrExt;
        let rd = std::fs::read_dir(path).map_err(|e| EnvError::from_io(&e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| EnvError::from_io(&e))?;
            let is_dir = std::fs::metadata(entry.path())
                .map(|m| m.is_dir())
                .unwrap_or(false);
            out.push(DirEntry {
                name: entry.file_name().as_bytes().to_vec(),
                is_dir,
            });
        }
        Ok(out)
    }
    fn interface_index(&self, name: &[u8]) -> u32 {
        let Ok(name) = std::str::from_utf8(name) else {
            return 0;
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return 0;
        }
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
    fn resolves(&self, host: &[u8]) -> bool {
        use std::net::ToSocketAddrs;
        let Ok(h) = std::str::from_utf8(host) else {
            return false;
        };
        (h, 0u16)
            .to_socket_addrs()
            .map(|mut a| a.next().is_some())
            .unwrap_or(false)
    }
}
