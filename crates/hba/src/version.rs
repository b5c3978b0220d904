//! PostgreSQL major versions whose pg_hba.conf dialect this crate knows.

use std::fmt;

/// A PostgreSQL major version between 13 and 18 (the dialects this crate reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PgVersion(u32);

impl PgVersion {
    /// The oldest version understood.
    pub const MIN: PgVersion = PgVersion(13);
    /// The newest version understood.
    pub const MAX: PgVersion = PgVersion(18);
    /// PostgreSQL 15, the version our servers run and the default.
    pub const V15: PgVersion = PgVersion(15);

    /// A version from its major number, if it is between 13 and 18.
    pub fn new(major: u32) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&major)
            .then_some(PgVersion(major))
    }

    /// The major number.
    pub fn major(self) -> u32 {
        self.0
    }

    /// Backslash continuation lines (14+).
    pub(crate) fn has_continuations(self) -> bool {
        self.0 >= 14
    }

    /// `include`, `include_if_exists`, `include_dir`, `/regex`, nesting depth 10 (16+).
    pub(crate) fn has_includes(self) -> bool {
        self.0 >= 16
    }

    /// Longest token, in bytes, or `None` when unlimited.
    ///
    /// PostgreSQL 13 used a 256-byte buffer; 14 to 16 use a 10240-byte buffer (one byte is the
    /// terminator); 17 and later have no limit.
    pub(crate) fn max_token(self) -> Option<usize> {
        match self.0 {
            13 => Some(255),
            14..=16 => Some(10239),
            _ => None,
        }
    }
}

impl Default for PgVersion {
    fn default() -> Self {
        Self::V15
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for PgVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let major: u32 = s
            .trim()
            .split('.')
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| format!("not a PostgreSQL major version: {s:?}"))?;
        PgVersion::new(major)
            .ok_or_else(|| format!("PostgreSQL {major} is not supported (supported: 13 to 18)"))
    }
}
