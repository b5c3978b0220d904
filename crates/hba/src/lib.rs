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
use std::sync::Arc;

pub use apply::{ApplyOptions, ApplyReport, apply, plan};
pub use diff::unified_diff;
pub use document::{Document, Record};
pub use edit::{BEGIN_MARKER, END_MARKER, EditError, RuleSpec};
pub use env::{DirEntry, EnvError, Environment, MemEnv, SystemEnv};
pub use explain::{Connection, Explanation, LineVerdict, explain};
pub use lint::{Finding, lint};
pub use rules::{
    AddressSpec, AuthMethod, BuildFeatures, ClientCert, ConnType, HbaRule, ReadOptions, RuleRow,
    SourceFile, ViewRow,
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
/// Never fails: problems are rows with an `error` and [`Diagnostic`]s. A large file is read in
/// two parts on two threads when nothing carries over from one line to the next
/// ([`ReadOptions::parallel`]); the result is the same as reading it in one.
pub fn read_rules(
    bytes: &[u8],
    file_name: impl AsRef<Path>,
    opts: &ReadOptions,
    env: &dyn Environment,
) -> RuleSet {
    let file_name = file_name.as_ref();
    let part = |range: std::ops::Range<usize>, first_line: usize, rows: Vec<RuleRow>| {
        // one `Arc` per part: two threads sharing one reference count fight over its cache line
        let source = Arc::new(SourceFile::new(file_name));
        read_part(&bytes[range], &source, first_line, opts, env, rows)
    };
    // at most one row per line (more only through include files)
    let lines = |b: &[u8]| memchr::memchr_iter(b'\n', b).count() + 1;
    let whole = match split_point(bytes, opts.version).filter(|_| opts.parallel) {
        Some(cut) => {
            let (first_lines, second_lines) = (lines(&bytes[..cut]), lines(&bytes[cut..]));
            // Both vectors come from this thread's heap (the other thread's would be a fresh
            // arena, paid for in page faults), the first big enough for all the rows.
            let second_rows = Vec::with_capacity(second_lines);
            let first_rows = Vec::with_capacity(first_lines + second_lines);
            let joined = std::thread::scope(|scope| {
                let second = std::thread::Builder::new()
                    .name("hba-read".into())
                    .spawn_scoped(scope, || part(cut..bytes.len(), first_lines, second_rows))
                    // no thread to be had: read in one part
                    .ok()?;
                let mut first = part(0..cut, 1, first_rows);
                // joined here, so that a panic in a part that is thrown away is too
                let second = second.join();
                if first.carried {
                    // the second part was read without what the first carries over
                    return None;
                }
                match second {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(second) if second.carried => None,
                    Ok(second) => {
                        first.append(second);
                        Some(first)
                    }
                }
            });
            // a NUL byte, an `@file` or an include: read it again in one part (the parts are
            // dropped by now)
            joined.unwrap_or_else(|| {
                part(
                    0..bytes.len(),
                    1,
                    Vec::with_capacity(first_lines + second_lines),
                )
            })
        }
        None => part(0..bytes.len(), 1, Vec::with_capacity(lines(bytes))),
    };
    let Part {
        rows,
        mut diagnostics,
        mut row_diagnostics,
        any_rule,
        ..
    } = whole;
    diagnostics.append(&mut row_diagnostics);
    if !any_rule && !diagnostics.iter().any(|d| d.severity == Severity::Error) {
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

/// What reading a part of a file gives.
struct Part {
    rows: Vec<RuleRow>,
    /// The tokenizer's diagnostics.
    diagnostics: Vec<Diagnostic>,
    /// One per row with an error.
    row_diagnostics: Vec<Diagnostic>,
    any_rule: bool,
    /// Rows given a `rule_number`.
    numbered: u32,
    /// Something that carries over from one line to the next was read (a NUL byte, an
    /// `@file`, an include): the part cannot be read apart from what comes before it.
    carried: bool,
}

impl Part {
    /// Append the part that follows this one.
    fn append(&mut self, mut next: Part) {
        for row in &mut next.rows {
            if let Some(n) = &mut row.rule_number {
                *n += self.numbered;
            }
        }
        self.rows.append(&mut next.rows);
        self.diagnostics.append(&mut next.diagnostics);
        self.row_diagnostics.append(&mut next.row_diagnostics);
        self.any_rule |= next.any_rule;
        self.numbered += next.numbered;
        self.carried |= next.carried;
    }
}

fn read_part(
    bytes: &[u8],
    source: &Arc<SourceFile>,
    first_line: usize,
    opts: &ReadOptions,
    env: &dyn Environment,
    mut rows: Vec<RuleRow>,
) -> Part {
    let mut tk = tokenize::Tokenizer::new(env, opts.version);
    let mut builder = rules::RowBuilder::new(opts, env);
    let first_line = u32::try_from(first_line).unwrap_or(u32::MAX);
    tk.tokenize_part(source, bytes, first_line, 0, &mut |tl| {
        builder.push_row(tl, &mut rows)
    });
    Part {
        rows,
        carried: tk.carried,
        diagnostics: tk.diagnostics,
        row_diagnostics: builder.diagnostics,
        any_rule: builder.any_rule,
        numbered: builder.rule_number,
    }
}

/// Files at least this large are worth a second thread (a thread costs tens of microseconds;
/// reading 1 MiB takes about 3 ms).
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Where `bytes` can be cut in two to be read in parallel: after the newline that ends a
/// logical line near the middle. Only on PostgreSQL 14+ (13 numbers the pieces of over-long
/// lines) and with two CPUs. What else carries over from one line to the next (a NUL byte,
/// `@file`, includes) is noticed while reading, and the file is then read again in one part.
fn split_point(bytes: &[u8], version: PgVersion) -> Option<usize> {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if bytes.len() < PARALLEL_MIN_BYTES
        || !version.has_continuations()
        || *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) < 2
    {
        return None;
    }
    let mut from = bytes.len() / 2;
    loop {
        let newline = from + memchr::memchr(b'\n', &bytes[from..])?;
        let mut end = newline;
        while end > 0 && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        // a line ending in a backslash continues on the next one
        if end == 0 || bytes[end - 1] != b'\\' {
            let cut = newline + 1;
            return (cut < bytes.len()).then_some(cut);
        }
        from = newline + 1;
    }
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

#[cfg(test)]
mod parallel_tests {
    use super::*;

    /// The file read in one part, and in two.
    fn both(bytes: &[u8], opts: &ReadOptions, env: &MemEnv) -> (RuleSet, RuleSet) {
        let file = "/x/pg_hba.conf";
        let one = ReadOptions {
            parallel: false,
            ..*opts
        };
        let two = ReadOptions {
            parallel: true,
            ..*opts
        };
        (
            read_rules(bytes, file, &one, env),
            read_rules(bytes, file, &two, env),
        )
    }

    /// Lines of every kind (errors, warnings, continuations, CRLF, comments) from `i` on,
    /// until `out` holds at least `len` bytes.
    fn lines(out: &mut Vec<u8>, len: usize) {
        let mut i = out.len();
        while out.len() < len {
            let line = match i % 9 {
                0 => format!(
                    "hostssl cust{i} cust{i} 10.0.{}.0/24 scram-sha-256\n",
                    i % 256
                ),
                1 => format!("host db{i} +role{i} ::1/128 md5 # comment {i}\n"),
                2 => format!("host all u{i} 1.2.3.4 bogus-method\n"),
                3 => format!("hostssl \"q{i}\",x u 0.0.0.0/0 cert clientcert=verify-ca\r\n"),
                4 => format!("host a{i} b{i} \\\n  192.168.0.0/16 \\\n  trust\n"),
                5 => "\n# a comment\n".to_string(),
                6 => format!("local all u{i} peer map=m{i}\n"),
                7 => format!("hostnossl all all samenet reject\nhost x y z{i}\n"),
                _ => format!(
                    "host all all 10.{}.0.0 255.255.0.0 ldap ldapserver=l{i}\n",
                    i % 256
                ),
            };
            out.extend_from_slice(line.as_bytes());
            i += 1;
        }
    }

    /// A file over the parallel threshold whose middle byte falls inside `middle`.
    fn file(middle: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
        let mut out = Vec::new();
        lines(&mut out, PARALLEL_MIN_BYTES / 2 + 4096);
        let start = out.len();
        out.extend_from_slice(middle);
        let end = out.len();
        let mut tail = Vec::new();
        lines(&mut tail, start - middle.len() / 2);
        out.extend_from_slice(&tail);
        (out, start..end)
    }

    #[test]
    fn two_parts_read_as_one() {
        let env = MemEnv::new();
        let mut opts = ReadOptions::for_version(PgVersion::new(16).unwrap());
        opts.ssl_enabled = false;
        let cont = b"host a b \\\n".repeat(30);
        let cont_crlf = b"host a b \\\r\n".repeat(30);
        let mut cont_end = cont.clone();
        cont_end.extend_from_slice(b" 10.0.0.0/8 trust\n");
        for middle in [&cont[..], &cont_crlf, &cont_end, &b"\n".repeat(300)] {
            let (bytes, at) = file(middle);
            assert!(at.contains(&(bytes.len() / 2)));
            let cut = split_point(&bytes, opts.version).unwrap();
            if middle[0] != b'\n' {
                // never inside the continued line
                assert!(cut >= at.end, "{cut} {at:?}");
            }
            let (one, two) = both(&bytes, &opts, &env);
            assert!(one.rows.len() > 10_000);
            assert!(
                one.rows
                    .iter()
                    .any(|r| r.error.is_some() && r.rule.is_some())
            );
            assert!(one.rows.iter().any(|r| r.rule.is_none()));
            assert!(!one.diagnostics.is_empty());
            assert_eq!(one, two);
        }
    }

    #[test]
    fn what_carries_over_is_read_in_one_part() {
        let v = PgVersion::new(16).unwrap();
        let opts = ReadOptions::for_version(v);
        let env = MemEnv::new()
            .with_file("/x/dbs", "a, b\nc\n")
            .with_file("/x/more.conf", "host all all 10.0.0.0/8 md5\nbad line\n");
        let (bytes, _) = file(b"");
        assert!(split_point(&bytes[..1000], v).is_none(), "small file");
        assert!(
            split_point(&bytes, PgVersion::new(13).unwrap()).is_none(),
            "v13"
        );
        let cut = split_point(&bytes, v).unwrap();
        // near the end of the first part, and in the second
        for at in [cut - 3, bytes.len() - 100] {
            for extra in [
                &b"\nhost @dbs u 0.0.0.0/0 md5\n"[..],
                b"\ninclude more.conf\n",
                b"\nhost a\0b\nhost c d 1.2.3.4/32 md5\n",
                b"\0",
            ] {
                let mut b = bytes[..at].to_vec();
                b.extend_from_slice(extra);
                b.extend_from_slice(&bytes[at..]);
                let (one, two) = both(&b, &opts, &env);
                assert_eq!(one, two, "{:?} at {at}", String::from_utf8_lossy(extra));
            }
        }
        // every line continues the next: no place to cut
        let bytes = b"host a b \\\n".repeat(PARALLEL_MIN_BYTES / 8);
        assert!(split_point(&bytes, v).is_none());
    }
}
