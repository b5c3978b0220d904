//! Locating the PostgreSQL server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The directory holding `initdb`, `pg_ctl`, `postgres`, `psql`, ... and its major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBin {
    dir: PathBuf,
    major: u32,
}

impl PgBin {
    /// Find the server binaries: `$COSTPLUS_PG_BINDIR`, then `pg_config --bindir`, then the
    /// newest `/usr/lib/postgresql/<major>/bin` (Debian layout).
    pub fn locate() -> Result<Self> {
        let mut tried = Vec::new();
        if let Some(dir) = std::env::var_os("COSTPLUS_PG_BINDIR") {
            return Self::at(Path::new(&dir));
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                match Self::at(&dir) {
                    Ok(bin) => return Ok(bin),
                    Err(_) => tried.push(format!("pg_config --bindir gave {}", dir.display())),
                }
            }
        } else {
            tried.push("no pg_config on PATH".into());
        }
        let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        candidates.sort();
        if let Some((_, dir)) = candidates.pop() {
            return Self::at(&dir);
        }
        tried.push("nothing under /usr/lib/postgresql".into());
        Err(Error::BinariesNotFound(tried.join("; ")))
    }

    /// Use the binaries in `dir` (must hold `initdb`, `pg_ctl` and `postgres`).
    pub fn at(dir: &Path) -> Result<Self> {
        for tool in ["initdb", "pg_ctl", "postgres"] {
            if !dir.join(tool).is_file() {
                return Err(Error::BinariesNotFound(format!(
                    "no {tool} in {}",
                    dir.display()
                )));
            }
        }
        let out = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(|e| {
                Error::BinariesNotFound(format!("cannot run {}/postgres: {e}", dir.display()))
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = parse_major(&text).ok_or_else(|| {
            Error::BinariesNotFound(format!("unexpected `postgres --version` output {text:?}"))
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            major,
        })
    }

    /// The binary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's major version (15 for 15.8).
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The path of one tool in this directory (`pg_ctl`, `psql`, `pg_amcheck`, ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Parse "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)" into 15.
fn parse_major(version_output: &str) -> Option<u32> {
    let word = version_output
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_major;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }
}
