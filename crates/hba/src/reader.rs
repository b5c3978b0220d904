//! Logical lines exactly as PostgreSQL's `tokenize_auth_file` reads them.
//!
//! PostgreSQL 14+ reads with `pg_get_line_append` (repeated `fgets` into a growing
//! `StringInfo`), strips trailing `\r`/`\n`, and joins lines ending in a backslash. A NUL byte
//! makes `strlen` stop early: the rest of that `fgets` chunk is lost and the next physical line
//! is glued on. PostgreSQL 13 used one `fgets` into an 8192-byte buffer per line. This module
//! reproduces both byte for byte, including the line numbers.

use std::borrow::Cow;

use crate::version::PgVersion;

/// One logical line as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLine<'a> {
    /// The bytes handed to the tokenizer (never contains NUL).
    pub content: Cow<'a, [u8]>,
    /// The server's line number (first physical line).
    pub line_number: u32,
    /// A NUL byte was read while collecting this line.
    pub had_nul: bool,
    /// PostgreSQL 13 only: the line filled the 8192-byte buffer.
    pub too_long: bool,
}

/// The logical lines the server reads from `input`, one at a time.
pub(crate) fn read_lines(input: &[u8], version: PgVersion) -> LineReader<'_> {
    LineReader {
        s: Stream {
            input,
            pos: 0,
            eof: false,
        },
        maxlen: 1024,
        line_number: 1,
        v13: !version.has_continuations(),
        // one pass over the whole input instead of a search per line
        nul_free: memchr::memchr(0, input).is_none(),
    }
}

/// Iterator over logical lines (see [`read_lines`]).
pub(crate) struct LineReader<'a> {
    s: Stream<'a>,
    maxlen: usize,
    line_number: u32,
    v13: bool,
    /// The input has no NUL byte.
    nul_free: bool,
}

impl<'a> Iterator for LineReader<'a> {
    type Item = RawLine<'a>;
    fn next(&mut self) -> Option<RawLine<'a>> {
        if self.v13 {
            self.next_v13()
        } else {
            self.next_v14()
        }
    }
}

struct Stream<'a> {
    input: &'a [u8],
    pos: usize,
    eof: bool,
}

impl Stream<'_> {
    /// `fgets(buf, n)`: appends up to `n - 1` bytes through the first newline to `out`, as
    /// `strlen` would see them (stopping at a NUL). Returns `None` when nothing could be read
    /// (end of file), else whether a NUL was seen.
    fn fgets(&mut self, n: usize, out: &mut Vec<u8>) -> Option<bool> {
        let limit = n.saturating_sub(1);
        if limit == 0 {
            return Some(false);
        }
        if self.pos >= self.input.len() {
            self.eof = true;
            return None;
        }
        let avail = &self.input[self.pos..];
        let window = &avail[..limit.min(avail.len())];
        let k = match memchr::memchr(b'\n', window) {
            Some(i) => i + 1,
            None => {
                if window.len() < limit {
                    self.eof = true;
                }
                window.len()
            }
        };
        let chunk = &avail[..k];
        self.pos += k;
        match memchr::memchr(0, chunk) {
            Some(i) => {
                out.extend_from_slice(&chunk[..i]);
                Some(true)
            }
            None => {
                out.extend_from_slice(chunk);
                Some(false)
            }
        }
    }
}

/// `pg_get_line_append`.
fn get_line_append(
    s: &mut Stream<'_>,
    buf: &mut Vec<u8>,
    maxlen: &mut usize,
    had_nul: &mut bool,
) -> bool {
    let orig = buf.len();
    loop {
        let n = maxlen.saturating_sub(buf.len());
        match s.fgets(n, buf) {
            None => break,
            Some(nul) => *had_nul |= nul,
        }
        if buf.len() > orig && buf.last() == Some(&b'\n') {
            return true;
        }
        // enlargeStringInfo(buf, 128)
        let needed = buf.len() + 128 + 1;
        if needed > *maxlen {
            let mut newlen = 2 * *maxlen;
            while needed > newlen {
                newlen *= 2;
            }
            *maxlen = newlen;
        }
    }
    if buf.len() == orig {
        return false;
    }
    true
}

fn strip_crlf(buf: &mut Vec<u8>) {
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
}

impl<'a> LineReader<'a> {
    /// Number the lines from `line` (a part of a file cut where a logical line ends).
    pub fn starting_at(mut self, line: u32) -> Self {
        self.line_number = line;
        self
    }

    fn next_v14(&mut self) -> Option<RawLine<'a>> {
        let s = &mut self.s;
        if s.eof {
            return None;
        }
        let input = s.input;
        let line_number = self.line_number;
        // Fast path: a line that one fgets call reads whole, without NUL or continuation,
        // is the slice itself.
        if s.pos < input.len() {
            let rest = &input[s.pos..];
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let raw = &rest[..end];
            if raw.len() < self.maxlen && (self.nul_free || memchr::memchr(0, raw).is_none()) {
                let mut e = raw.len();
                while e > 0 && matches!(raw[e - 1], b'\n' | b'\r') {
                    e -= 1;
                }
                if e == 0 || raw[e - 1] != b'\\' {
                    s.pos += end;
                    if end == rest.len() && raw.last() != Some(&b'\n') {
                        s.eof = true;
                    }
                    self.line_number = line_number.saturating_add(1);
                    return Some(RawLine {
                        content: Cow::Borrowed(&raw[..e]),
                        line_number,
                        had_nul: false,
                        too_long: false,
                    });
                }
            }
        }
        let mut buf = Vec::new();
        let mut last_backslash = 0usize;
        let mut continuations = 0u32;
        let mut had_nul = false;
        while get_line_append(s, &mut buf, &mut self.maxlen, &mut had_nul) {
            strip_crlf(&mut buf);
            if buf.len() > last_backslash && buf.last() == Some(&b'\\') {
                buf.pop();
                last_backslash = buf.len();
                continuations += 1;
                continue;
            }
            break;
        }
        self.line_number = line_number.saturating_add(continuations + 1);
        Some(RawLine {
            content: Cow::Owned(buf),
            line_number,
            had_nul,
            too_long: false,
        })
    }

    fn next_v13(&mut self) -> Option<RawLine<'a>> {
        const MAX_LINE: usize = 8192;
        let s = &mut self.s;
        if s.eof {
            return None;
        }
        let mut buf = Vec::new();
        let had_nul = s.fgets(MAX_LINE, &mut buf)?;
        let too_long = buf.len() == MAX_LINE - 1;
        strip_crlf(&mut buf);
        let line_number = self.line_number;
        self.line_number = line_number.saturating_add(1);
        Some(RawLine {
            content: Cow::Owned(buf),
            line_number,
            had_nul,
            too_long,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], v: u32, expect: &[(u32, &str)]) {
        let lines: Vec<RawLine<'_>> = read_lines(input, PgVersion::new(v).unwrap()).collect();
        let got: Vec<(u32, String)> = lines
            .iter()
            .filter(|l| !l.content.is_empty())
            .map(|l| {
                (
                    l.line_number,
                    String::from_utf8_lossy(&l.content).into_owned(),
                )
            })
            .collect();
        let expect: Vec<(u32, String)> = expect.iter().map(|(n, s)| (*n, s.to_string())).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn plain_lines_and_crlf() {
        check(b"a\nb\r\n\nc", 15, &[(1, "a"), (2, "b"), (4, "c")]);
        check(b"a\r\r\n", 15, &[(1, "a")]);
    }

    #[test]
    fn continuations() {
        check(b"a \\\nb\nc\n", 15, &[(1, "a b"), (3, "c")]);
        check(b"a \\\nb\nc\n", 13, &[(1, "a \\"), (2, "b"), (3, "c")]);
        check(b"a\\\\\n\\\nx\n", 15, &[(1, "a\\x")]);
        check(b"x \\", 15, &[(1, "x ")]);
    }

    #[test]
    fn nul_glues_the_next_line_and_loses_a_number() {
        // Verified against PostgreSQL 15: "host a\0bc ..." + next line = "host ahost d ...".
        check(
            b"l1\nhost a\0bc x\nhost d\nlast\n",
            15,
            &[(1, "l1"), (2, "host ahost d"), (3, "last")],
        );
    }

    #[test]
    fn v13_long_line_splits() {
        let mut input = vec![b'a'; 8200];
        input.push(b'\n');
        let lines: Vec<RawLine<'_>> = read_lines(&input, PgVersion::new(13).unwrap()).collect();
        assert!(lines[0].too_long);
        assert_eq!(lines[1].content.len(), 9);
        assert_eq!(lines[1].line_number, 2);
    }
}
