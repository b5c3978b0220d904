//! PostgreSQL's tokenizer (`next_token`, `next_field_expand`, `tokenize_auth_file`) with
//! `@file` expansion and, from PostgreSQL 16, `include`, `include_if_exists`, `include_dir`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::env::{EnvError, Environment};
use crate::paths::absolute_location;
use crate::reader::read_lines;
use crate::rules::SourceFile;
use crate::version::PgVersion;
use crate::{Diagnostic, Severity};
use smallvec::SmallVec;

/// One token of a field: its text after quote removal, and whether it began with a quote
/// (then it is never a keyword, a `+role`, or an `@file`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// Dequoted bytes (inline up to 24 bytes: names rarely need a heap allocation).
    pub text: SmallVec<[u8; 24]>,
    /// The token started with a double quote.
    pub quoted: bool,
}

impl Token {
    /// An unquoted token.
    pub fn bare(text: impl AsRef<[u8]>) -> Self {
        Token {
            text: SmallVec::from_slice(text.as_ref()),
            quoted: false,
        }
    }
    /// Whether this is the unquoted keyword `k`.
    pub fn is_keyword(&self, k: &str) -> bool {
        !self.quoted && self.text.as_slice() == k.as_bytes()
    }
    /// The text, lossily as UTF-8.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// A token while reading: borrowed from the line when it needs no unquoting.
#[derive(Debug, Clone)]
pub(crate) struct Tok<'a> {
    pub text: Cow<'a, [u8]>,
    pub quoted: bool,
}

impl Tok<'_> {
    pub fn is_keyword(&self, k: &str) -> bool {
        !self.quoted && *self.text == *k.as_bytes()
    }
    pub fn to_token(&self) -> Token {
        Token {
            text: SmallVec::from_slice(&self.text),
            quoted: self.quoted,
        }
    }
}

/// A logical line after tokenizing: its tokens, where each field ends, or an error. Handed
/// to a sink line by line, so nothing but the rules is kept.
#[derive(Debug)]
pub(crate) struct TokLine<'a> {
    /// Borrowed: cloning the `Arc` for every line costs two atomic operations.
    pub file: &'a Arc<SourceFile>,
    pub line_number: u32,
    pub toks: Toks<'a>,
    /// End (exclusive) of each field in `toks`.
    pub ends: SmallVec<[u32; 12]>,
    pub err: Option<String>,
}

impl<'a> TokLine<'a> {
    /// The fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = &[Tok<'a>]> {
        let mut start = 0usize;
        self.ends.iter().map(move |&e| {
            let f = &self.toks[start..e as usize];
            start = e as usize;
            f
        })
    }
}

/// The tokens of one line (inline up to 8, the common case).
pub(crate) type Toks<'a> = SmallVec<[Tok<'a>; 8]>;

/// Receives each tokenized line.
pub(crate) type Sink<'s> = dyn for<'l> FnMut(&TokLine<'l>) + 's;

/// Include nesting limit of PostgreSQL 16+ (`CONF_FILE_MAX_DEPTH`).
const MAX_DEPTH: usize = 10;
/// Our own safety limits on what `@file`/`include` expansion may read (a file referencing
/// another file many times, recursively, grows exponentially): lines read from included
/// files, and tokens spliced from `@file`s.
const MAX_EXPANDED_LINES: usize = 1_000_000;
const MAX_EXPANDED_TOKENS: usize = 5_000_000;

pub(crate) struct Tokenizer<'a> {
    pub env: &'a dyn Environment,
    pub version: PgVersion,
    pub diagnostics: Vec<Diagnostic>,
    cache: HashMap<Vec<u8>, Result<std::rc::Rc<Vec<u8>>, EnvError>>,
    stack: Vec<Vec<u8>>,
    /// Current line of each file in `stack`.
    cur_line: Vec<u32>,
    expanded_lines: usize,
    expanded_tokens: usize,
    pub exhausted: bool,
    /// Something that carries over from one line to the next was read: a NUL byte (it glues
    /// the next line on), another file (`@file`, includes: expansion limits count across lines).
    pub carried: bool,
}

enum Next<'a> {
    Token(Cow<'a, [u8]>, bool, bool),
    /// A token whose quote was still open at the end of the line (PostgreSQL takes the rest
    /// of the line, silently).
    Unterminated(Cow<'a, [u8]>, bool),
    End,
    TooLong,
}

/// Bytes that end an unquoted token or need the slow path: blanks, comma, `#`, quote.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\r' as usize] = true;
    t[b',' as usize] = true;
    t[b'#' as usize] = true;
    t[b'"' as usize] = true;
    t
};

/// `next_token`: read one token at `*pos` of `line` (which has no NUL bytes).
fn next_token<'a>(line: &'a [u8], pos: &mut usize, max: Option<usize>) -> Next<'a> {
    let get = |i: usize| -> u8 { line.get(i).copied().unwrap_or(0) };
    let blank = |c: u8| c == b' ' || c == b'\t' || c == b'\r';
    let mut c = get(*pos);
    *pos += 1;
    while c != 0 && (blank(c) || c == b',') {
        c = get(*pos);
        *pos += 1;
    }
    // Fast path: `"name"` with no quote inside, followed by a blank, comma, `#` or the end,
    // is the slice between the quotes.
    if c == b'"' {
        let start = *pos;
        if let Some(j) = memchr::memchr(b'"', &line[start..]) {
            let close = start + j;
            let next = line.get(close + 1).copied().unwrap_or(0);
            let fits = max.is_none_or(|m| j < m);
            if fits && (next == 0 || (STOP[next as usize] && next != b'"')) {
                let text = Cow::Borrowed(&line[start..close]);
                return match next {
                    b',' => {
                        *pos = close + 1;
                        Next::Token(text, true, true)
                    }
                    b'#' => {
                        *pos = line.len();
                        Next::Token(text, true, false)
                    }
                    _ => {
                        *pos = close + 1;
                        Next::Token(text, true, false)
                    }
                };
            }
        }
    }
    // Fast path: an unquoted token is a slice of the line.
    {
        let start = *pos - 1;
        let end = start
            + line[start..]
                .iter()
                .position(|&b| STOP[b as usize])
                .unwrap_or(line.len() - start);
        let stop = line.get(end).copied().unwrap_or(0);
        // at or over the limit the slow path decides (a terminating comma counts)
        let fits = max.is_none_or(|m| end - start < m);
        if stop != b'"' && end > start && fits {
            let text = Cow::Borrowed(&line[start..end]);
            return match stop {
                b',' => {
                    *pos = end;
                    Next::Token(text, false, true)
                }
                b'#' => {
                    *pos = line.len();
                    Next::Token(text, false, false)
                }
                _ => {
                    *pos = end;
                    Next::Token(text, false, false)
                }
            };
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    let (mut in_quote, mut was_quote, mut saw_quote) = (false, false, false);
    let mut initial_quote = false;
    let mut comma = false;
    while c != 0 && (!blank(c) || in_quote) {
        if c == b'#' && !in_quote {
            *pos = line.len() + 1;
            break;
        }
        if let Some(max) = max
            && buf.len() >= max
        {
            *pos = line.len();
            return Next::TooLong;
        }
        if c == b',' && !in_quote {
            comma = true;
            break;
        }
        if c != b'"' || was_quote {
            buf.push(c);
        }
        if in_quote && c == b'"' {
            was_quote = !was_quote;
        } else {
            was_quote = false;
        }
        if c == b'"' {
            in_quote = !in_quote;
            saw_quote = true;
            if buf.is_empty() {
                initial_quote = true;
            }
        }
        c = get(*pos);
        *pos += 1;
    }
    *pos -= 1;
    if in_quote {
        return Next::Unterminated(Cow::Owned(buf), initial_quote);
    }
    if saw_quote || !buf.is_empty() {
        Next::Token(Cow::Owned(buf), initial_quote, comma)
    } else {
        Next::End
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<'a> Tokenizer<'a> {
    pub fn new(env: &'a dyn Environment, version: PgVersion) -> Self {
        Tokenizer {
            env,
            version,
            diagnostics: Vec::new(),
            cache: HashMap::new(),
            stack: Vec::new(),
            cur_line: Vec::new(),
            expanded_lines: 0,
            expanded_tokens: 0,
            exhausted: false,
            carried: false,
        }
    }

    fn read(&mut self, path: &[u8]) -> Result<std::rc::Rc<Vec<u8>>, EnvError> {
        self.carried = true;
        if let Some(r) = self.cache.get(path) {
            return r.clone();
        }
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        let r = self.env.read_file(p).map(std::rc::Rc::new);
        self.cache.insert(path.to_vec(), r.clone());
        r
    }

    /// A file that opened but could not be read: PostgreSQL loses the error and reads
    /// nothing; we say so.
    fn read_failed(&mut self, outer: &[u8], full: &[u8], e: &EnvError) {
        self.diagnostics.push(Diagnostic {
            file: PathBuf::from(std::ffi::OsStr::from_bytes(outer)),
            line: self.cur_line.last().copied(),
            severity: Severity::Warning,
            message: format!(
                "could not read file \"{}\": {} (PostgreSQL reads it as empty)",
                lossy(full),
                e.message
            ),
        });
    }

    /// `tokenize_auth_file`: hand the lines of `file` (contents `bytes`) to `out`.
    pub fn tokenize_file(&mut self, file: &[u8], bytes: &[u8], depth: usize, out: &mut Sink<'_>) {
        let source = Arc::new(SourceFile::new(Path::new(std::ffi::OsStr::from_bytes(
            file,
        ))));
        self.tokenize_part(&source, bytes, 1, depth, out);
    }

    /// [`Tokenizer::tokenize_file`] on a part of a file (`source`) whose first line is
    /// `first_line`, cut where a logical line ends.
    pub fn tokenize_part(
        &mut self,
        source: &Arc<SourceFile>,
        bytes: &[u8],
        first_line: u32,
        depth: usize,
        out: &mut Sink<'_>,
    ) {
        let file = source.path.as_os_str().as_bytes();
        self.stack.push(file.to_vec());
        self.cur_line.push(0);
        for raw in read_lines(bytes, self.version).starting_at(first_line) {
            if let Some(l) = self.cur_line.last_mut() {
                *l = raw.line_number;
            }
            if self.exhausted {
                break;
            }
            if depth > 0 {
                self.expanded_lines += 1;
            }
            if self.expanded_lines > MAX_EXPANDED_LINES {
                self.exhausted = true;
                self.diagnostics.push(Diagnostic {
                    file: source.path.clone(),
                    line: Some(raw.line_number),
                    severity: Severity::Error,
                    message: format!(
                        "file inclusion expands to more than {MAX_EXPANDED_LINES} lines; giving up"
                    ),
                });
                out(&TokLine {
                    file: source,
                    line_number: raw.line_number,
                    toks: SmallVec::new(),
                    ends: SmallVec::new(),
                    err: Some("file inclusion expands too much".into()),
                });
                break;
            }
            if raw.had_nul {
                self.carried = true;
                self.diagnostics.push(Diagnostic {
                    file: source.path.clone(),
                    line: Some(raw.line_number),
                    severity: Severity::Error,
                    message: "NUL byte: PostgreSQL drops the rest of this line and joins the next line to it".into(),
                });
            }
            let mut err: Option<String> = None;
            if raw.too_long {
                err = Some("authentication file line too long".into());
            }
            let line: &[u8] = &raw.content;
            // built in place: the line's tokens are not moved again
            let mut tl = TokLine {
                file: source,
                line_number: raw.line_number,
                toks: SmallVec::new(),
                ends: SmallVec::new(),
                err,
            };
            let mut pos = 0usize;
            while pos < line.len() && tl.err.is_none() {
                let before = tl.toks.len();
                self.next_field(file, line, &mut pos, depth, &mut tl.toks, &mut tl.err);
                if tl.toks.len() > before {
                    tl.ends.push(tl.toks.len() as u32);
                }
            }
            if tl.ends.is_empty() && tl.err.is_none() {
                continue;
            }
            let mut err = tl.err.take();
            if err.is_none() && self.version.has_includes() && tl.ends.len() == 2 {
                let first = tl.toks[0].text.to_vec();
                let second = tl.toks[tl.ends[0] as usize].text.to_vec();
                let handled = match first.as_slice() {
                    b"include" => {
                        self.include_file(file, &second, depth + 1, false, out, &mut err);
                        true
                    }
                    b"include_if_exists" => {
                        self.include_file(file, &second, depth + 1, true, out, &mut err);
                        true
                    }
                    b"include_dir" => {
                        self.include_dir(file, &second, depth + 1, out, &mut err);
                        true
                    }
                    _ => false,
                };
                if handled && err.is_none() {
                    continue;
                }
            }
            tl.err = err;
            out(&tl);
        }
        self.stack.pop();
        self.cur_line.pop();
    }

    /// `next_field_expand`: append one field's tokens to `tokens`.
    fn next_field<'l>(
        &mut self,
        file: &[u8],
        line: &'l [u8],
        pos: &mut usize,
        depth: usize,
        tokens: &mut Toks<'l>,
        err: &mut Option<String>,
    ) {
        loop {
            match next_token(line, pos, self.version.max_token()) {
                Next::End => break,
                Next::TooLong => {
                    *err = Some("authentication file token too long".into());
                    break;
                }
                Next::Unterminated(text, initial_quote) => {
                    self.diagnostics.push(Diagnostic {
                        file: PathBuf::from(std::ffi::OsStr::from_bytes(file)),
                        line: self.cur_line.last().copied(),
                        severity: Severity::Warning,
                        message: format!(
                            "unterminated quote: PostgreSQL reads \"{}\" as one token",
                            lossy(&text)
                        ),
                    });
                    tokens.push(Tok {
                        text,
                        quoted: initial_quote,
                    });
                    break;
                }
                Next::Token(text, initial_quote, comma) => {
                    if !initial_quote && text.len() > 1 && text[0] == b'@' {
                        self.expand_file(file, &text[1..], depth + 1, tokens, err);
                    } else {
                        tokens.push(Tok {
                            text,
                            quoted: initial_quote,
                        });
                    }
                    if !(comma && err.is_none()) {
                        break;
                    }
                }
            }
        }
    }

    /// `tokenize_expand_file` / `tokenize_inc_file`: splice the tokens of an `@file`.
    fn expand_file<'l>(
        &mut self,
        outer: &[u8],
        inc: &[u8],
        depth: usize,
        tokens: &mut Toks<'l>,
        err: &mut Option<String>,
    ) {
        let new = self.version.has_includes();
        let full = absolute_location(inc, outer, new);
        if new && depth > MAX_DEPTH {
            *err = Some(format!(
                "could not open file \"{}\": maximum nesting depth exceeded",
                lossy(&full)
            ));
            return;
        }
        if !new && self.stack.contains(&full) {
            // PostgreSQL 13-15 recurse until they run out of file descriptors and fail the
            // whole read; name the loop instead.
            *err = Some(format!(
                "could not open secondary authentication file \"@{}\" as \"{}\": file includes itself (loop)",
                lossy(inc),
                lossy(&full)
            ));
            return;
        }
        let bytes = match self.read(&full) {
            Ok(b) => b,
            Err(e) if e.opened => {
                self.read_failed(outer, &full, &e);
                std::rc::Rc::new(Vec::new())
            }
            Err(e) => {
                *err = Some(if new {
                    format!("could not open file \"{}\": {}", lossy(&full), e.message)
                } else {
                    format!(
                        "could not open secondary authentication file \"@{}\" as \"{}\": {}",
                        lossy(inc),
                        lossy(&full),
                        e.message
                    )
                });
                return;
            }
        };
        let budget = MAX_EXPANDED_TOKENS.saturating_sub(self.expanded_tokens);
        let mut count = 0usize;
        let mut failed = false;
        let mut over = false;
        let mut sink = |tl: &TokLine<'_>| {
            if failed {
                return;
            }
            if let Some(e) = &tl.err {
                *err = Some(e.clone());
                failed = true;
                return;
            }
            count += tl.toks.len();
            if count > budget {
                *err = Some(format!(
                    "file inclusion expands to more than {MAX_EXPANDED_TOKENS} tokens; giving up"
                ));
                failed = true;
                over = true;
                return;
            }
            tokens.extend(tl.toks.iter().map(|t| Tok {
                text: Cow::Owned(t.text.to_vec()),
                quoted: t.quoted,
            }));
        };
        self.tokenize_file(&full, &bytes, depth, &mut sink);
        self.expanded_tokens += count;
        if over {
            self.exhausted = true;
        }
    }

    /// `tokenize_include_file`.
    fn include_file(
        &mut self,
        outer: &[u8],
        inc: &[u8],
        depth: usize,
        missing_ok: bool,
        out: &mut Sink<'_>,
        err: &mut Option<String>,
    ) {
        let full = absolute_location(inc, outer, true);
        if depth > MAX_DEPTH {
            *err = Some(format!(
                "could not open file \"{}\": maximum nesting depth exceeded",
                lossy(&full)
            ));
            return;
        }
        match self.read(&full) {
            Ok(bytes) => self.tokenize_file(&full, &bytes, depth, out),
            Err(e) if e.opened => self.read_failed(outer, &full, &e),
            Err(e) if e.not_found && missing_ok => {
                self.diagnostics.push(Diagnostic {
                    file: PathBuf::from(std::ffi::OsStr::from_bytes(outer)),
                    line: self.cur_line.last().copied(),
                    severity: Severity::Info,
                    message: format!("skipping missing authentication file \"{}\"", lossy(&full)),
                });
            }
            Err(e) => {
                *err = Some(format!(
                    "could not open file \"{}\": {}",
                    lossy(&full),
                    e.message
                ));
            }
        }
    }

    /// `include_dir` through `GetConfFilesInDir`.
    fn include_dir(
        &mut self,
        outer: &[u8],
        dir: &[u8],
        depth: usize,
        out: &mut Sink<'_>,
        err: &mut Option<String>,
    ) {
        self.carried = true;
        if dir
            .iter()
            .all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        {
            *err = Some("empty configuration directory name".into());
            return;
        }
        let directory = absolute_location(dir, outer, true);
        let entries = match self
            .env
            .read_dir(Path::new(std::ffi::OsStr::from_bytes(&directory)))
        {
            Ok(e) => e,
            Err(_) => {
                *err = Some(format!(
                    "could not open directory \"{}\"",
                    lossy(&directory)
                ));
                return;
            }
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in entries {
            if e.name.len() < 6 || e.name[0] == b'.' || !e.name.ends_with(b".conf") || e.is_dir {
                continue;
            }
            let mut full = directory.clone();
            full.push(b'/');
            full.extend_from_slice(&e.name);
            names.push(absolute_location(&full, outer, true));
        }
        names.sort();
        let mut errors: Vec<String> = Vec::new();
        for name in names {
            let mut e = None;
            self.include_file(outer, &name, depth, false, out, &mut e);
            if let Some(e) = e {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            *err = Some(errors.join("\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(line: &str) -> Vec<(String, bool, bool)> {
        let mut pos = 0;
        let mut out = Vec::new();
        let l = line.as_bytes();
        while pos < l.len() {
            match next_token(l, &mut pos, Some(10239)) {
                Next::Token(t, q, c) => out.push((String::from_utf8(t.to_vec()).unwrap(), q, c)),
                Next::Unterminated(t, q) => {
                    out.push((String::from_utf8(t.to_vec()).unwrap(), q, false))
                }
                Next::End => break,
                Next::TooLong => panic!("too long"),
            }
        }
        out
    }

    /// PostgreSQL's `next_token` without our fast paths, to check them against.
    fn reference_next_token(
        line: &[u8],
        pos: &mut usize,
        max: Option<usize>,
    ) -> Option<(Vec<u8>, bool, bool, bool)> {
        let get = |i: usize| -> u8 { line.get(i).copied().unwrap_or(0) };
        let blank = |c: u8| c == b' ' || c == b'\t' || c == b'\r';
        let mut c = get(*pos);
        *pos += 1;
        while c != 0 && (blank(c) || c == b',') {
            c = get(*pos);
            *pos += 1;
        }
        let mut buf = Vec::new();
        let (mut in_quote, mut was_quote, mut saw_quote, mut initial, mut comma) =
            (false, false, false, false, false);
        while c != 0 && (!blank(c) || in_quote) {
            if c == b'#' && !in_quote {
                *pos = line.len() + 1;
                break;
            }
            if max.is_some_and(|m| buf.len() >= m) {
                *pos = line.len();
                return Some((Vec::new(), false, false, true));
            }
            if c == b',' && !in_quote {
                comma = true;
                break;
            }
            if c != b'"' || was_quote {
                buf.push(c);
            }
            was_quote = in_quote && c == b'"' && !was_quote;
            if c == b'"' {
                in_quote = !in_quote;
                saw_quote = true;
                if buf.is_empty() {
                    initial = true;
                }
            }
            c = get(*pos);
            *pos += 1;
        }
        *pos -= 1;
        (saw_quote || !buf.is_empty()).then_some((buf, initial, comma, false))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn fast_paths_agree_with_the_reference(
            line in proptest::collection::vec(proptest::sample::select(vec![b'a', b'b', b' ', b'\t', b',', b'#', b'"', b'@', b'\r']), 0..24),
            max in proptest::option::of(1usize..6),
        ) {
            let (mut p1, mut p2) = (0usize, 0usize);
            loop {
                let ours = match next_token(&line, &mut p1, max) {
                    Next::Token(t, q, c) => Some((t.to_vec(), q, c, false)),
                    Next::Unterminated(t, q) => Some((t.to_vec(), q, false, false)),
                    Next::TooLong => Some((Vec::new(), false, false, true)),
                    Next::End => None,
                };
                let reference = reference_next_token(&line, &mut p2, max);
                proptest::prop_assert_eq!(&ours, &reference, "line {:?}", String::from_utf8_lossy(&line));
                proptest::prop_assert_eq!(p1, p2);
                if ours.is_none() || p1 >= line.len() || ours.as_ref().is_some_and(|o| o.3) {
                    break;
                }
            }
        }
    }

    #[test]
    fn quoting_rules_of_the_reference() {
        assert_eq!(toks(r#"a"b c"d"#), vec![("ab cd".into(), false, false)]);
        assert_eq!(toks(r#""x""y""#), vec![("x\"y".into(), true, false)]);
        assert_eq!(toks(r#"al"l""#), vec![("all".into(), false, false)]);
        assert_eq!(toks(r#""""#), vec![("".into(), true, false)]);
        assert_eq!(toks("md5#x"), vec![("md5".into(), false, false)]);
        assert_eq!(
            toks("a,,b"),
            vec![("a".into(), false, true), ("b".into(), false, false)]
        );
        assert_eq!(
            toks(r#""unterminated rest"#),
            vec![("unterminated rest".into(), true, false)]
        );
    }
}
