//! A pg_hba.conf engine that reads the file exactly as PostgreSQL does, edits it without
//! loss, and applies it to a live server safely.
//!
//! - [`Document`]: the file as bytes, lossless: printing an unedited document gives back the
//!   input byte for byte, whatever it holds (non-UTF-8, NUL, CRLF, no final newline).
//! - [`read_rules`]: the rules as the server derives them (tokenizer, quoting, keywords,
//!   `@file`, continuation lines, PostgreSQL 16+ `include*` and `/regex`, addresses, every
//!   method and option), one [`RuleRow`] per rule line holding what the server's
//!   `pg_hba_file_rules` view shows, plus [`Diagnostic`]s with file and line.
//! - [`lint`] and [`explain`]: findings with stable ids; which line decides a connection.
//! - [`Document::set_customer_rules`] and friends: edits inside a managed block placed before
//!   the operator's final `reject` rules.
//! - [`apply`]: lock, backup, atomic write, validation through `pg_hba_file_rules`, reload.
//!
//! The core (reader, tokenizer, rule derivation, matcher, linter, editor) does no IO: it
//! works on bytes plus an [`Environment`] for included files; [`SystemEnv`] and [`apply`] are
//! the IO edges.
//!
//! ```
//! use costplus_hba::{read_rules, Document, MemEnv, ReadOptions};
//!
//! let text = b"# TYPE DATABASE USER ADDRESS METHOD\nhostssl all all 0.0.0.0/0 scram-sha-256\n";
//! let doc = Document::parse(text);
//! assert_eq!(doc.to_bytes(), text);
//!
//! let set = read_rules(text, "/etc/postgresql/15/main/pg_hba.conf", &ReadOptions::default(), &MemEnv::new());
//! let row = &set.rows[0];
//! assert_eq!(row.line_number, 2);
//! assert_eq!(row.address().as_deref(), Some("0.0.0.0"));
//! assert_eq!(row.netmask().as_deref(), Some("0.0.0.0"));
//! assert_eq!(row.error, None);
//! ```

mod addr;
pub mod apply;
mod diff;
mod document;
mod edit;
mod env;
mod explain;
mod ldapurl;
mod lint;
mod paths;
mod reader;
mod rules;
mod tokenize;
mod version;

use std::path::{Path, PathBuf};

pub use apply::{ApplyOptions, ApplyReport, apply, plan};
pub use diff::unified_diff;
pub use document::{Document, Record};
pub use edit::{BEGIN_MARKER, END_MARKER, EditError, RuleSpec};
pub use env::{DirEntry, EnvError, Environment, MemEnv, SystemEnv};
pub use explain::{Connection, Explanation, LineVerdict, explain};
pub use lint::{Finding, lint};
pub use rules::{
    AddressSpec, AuthMethod, BuildFeatures, ClientCert, ConnType, HbaRule, ReadOptions, RuleRow,
    ViewRow,
};
/// The inline vector type used in [`Token`] and [`HbaRule`] (re-exported for matching on it).
pub use smallvec;
pub use tokenize::Token;
pub use version::PgVersion;

/// How bad a diagnostic or finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Risky or suspicious.
    Warning,
    /// The server refuses the file, or the configuration is unsafe.
    Error,
}

/// A problem found while reading, with the file and line it is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// File.
    pub file: PathBuf,
    /// Line (server numbering); `None` for the file as a whole.
    pub line: Option<u32>,
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Everything the server makes of a file: one row per rule line, and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// One row per rule line (and per line of included files, PostgreSQL 16+).
    pub rows: Vec<RuleRow>,
    /// Every error (one per refused line) and warning, with file and line.
    pub diagnostics: Vec<Diagnostic>,
}

impl RuleSet {
    /// Whether the server would load this file (no refused line, at least one rule).
    pub fn is_loadable(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
    /// The rules the server would use, in order (empty when the file is not loadable).
    pub fn rules(&self) -> impl Iterator<Item = (&RuleRow, &HbaRule)> {
        self.rows
            .iter()
            .filter_map(|r| r.rule.as_ref().map(|rule| (r, rule)))
    }
}

/// Read `bytes` (the contents of `file_name`, an absolute path) as the server would.
///
/// Never fails: problems are rows with an `error` and [`Diagnostic`]s.
pub fn read_rules(
    bytes: &[u8],
    file_name: impl AsRef<Path>,
    opts: &ReadOptions,
    env: &dyn Environment,
) -> RuleSet {
    use std::os::unix::ffi::OsStrExt;
    let file_name = file_name.as_ref();
    let mut tk = tokenize::Tokenizer::new(env, opts.version);
    // at most one row per line (more only through include files)
    let mut rows = Vec::with_capacity(memchr::memchr_iter(b'\n', bytes).count() + 1);
    let mut builder = rules::RowBuilder::new(opts, env);
    tk.tokenize_file(file_name.as_os_str().as_bytes(), bytes, 0, &mut |tl| {
        builder.push_row(tl, &mut rows)
    });
    let mut diagnostics = tk.diagnostics;
    for r in &rows {
        if let Some(e) = &r.error {
            let severity = if r.rule.is_some() {
                Severity::Warning
            } else {
                Severity::Error
            };
            diagnostics.push(Diagnostic {
                file: r.file.to_path_buf(),
                line: Some(r.line_number),
                severity,
                message: e.clone(),
            });
        }
    }
    if !diagnostics.iter().any(|d| d.severity == Severity::Error)
        && !rows.iter().any(|r| r.rule.is_some())
    {
        diagnostics.push(Diagnostic {
            file: file_name.to_path_buf(),
            line: None,
            severity: Severity::Error,
            message: format!(
                "configuration file \"{}\" contains no entries",
                file_name.display()
            ),
        });
    }
    diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    RuleSet { rows, diagnostics }
}

/// Read a file from disk (the IO adapter of [`read_rules`]).
pub fn read_rules_file(path: &Path, opts: &ReadOptions) -> Result<RuleSet, Error> {
    let path = std::path::absolute(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let bytes = SystemEnv.read_file(&path).map_err(|e| Error::Read {
        path: path.clone(),
        message: e.message,
    })?;
    Ok(read_rules(&bytes, &path, opts, &SystemEnv))
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("could not read {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// An edit was refused.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The new file would not load; nothing was written.
    #[error("{} would be refused by the server:\n{}", path.display(), errors.join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem (`file:line: message`).
        errors: Vec<String>,
    },
    /// The server found errors in the new file; the previous file was restored.
    #[error("the server refuses the new {} (previous file restored):\n{}", path.display(), errors.join("\n"))]
    RefusedByServer {
        /// The file.
        path: PathBuf,
        /// The error rows (`line N: message`).
        errors: Vec<String>,
    },
    /// The reload was not confirmed; the previous file was restored and reloaded.
    #[error("reload of {} not confirmed: {message} (previous file restored)", path.display())]
    ReloadNotConfirmed {
        /// The file.
        path: PathBuf,
        /// What was observed.
        message: String,
    },
    /// File system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Fs {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: costplus_fs::Error,
    },
    /// A query failed.
    #[error("{action}: {message}")]
    Server {
        /// What was being done.
        action: &'static str,
        /// The server's message.
        message: String,
    },
}
