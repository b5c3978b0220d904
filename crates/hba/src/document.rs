//! The lossless document: the file as physical lines of bytes. Printing an unedited document
//! returns the input exactly; edits replace whole lines and leave every other byte alone.

use crate::tokenize::Token;

/// A pg_hba.conf file as bytes, split after each newline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// Physical lines, each with its terminator (the last one may have none).
    pub(crate) lines: Vec<Vec<u8>>,
}

/// A logical line (continuations joined) of the document, as the editor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Index of its first physical line (0-based).
    pub first: usize,
    /// Index of its last physical line (0-based, inclusive).
    pub last: usize,
    /// The server's line number (1-based, first physical line).
    pub line_number: u32,
    /// Fields of tokens, without `@file` expansion (empty for comments and blank lines).
    pub fields: Vec<Vec<Token>>,
    /// The comment after an unquoted `#`, without the `#`.
    pub comment: Option<Vec<u8>>,
}

impl Record {
    /// Whether the record holds a rule (any token).
    pub fn is_rule(&self) -> bool {
        !self.fields.is_empty()
    }
}

impl Document {
    /// Split bytes into lines. Never fails; `to_bytes` gives the input back.
    pub fn parse(bytes: &[u8]) -> Document {
        let mut lines = Vec::new();
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', bytes) {
            lines.push(bytes[start..=i].to_vec());
            start = i + 1;
        }
        if start < bytes.len() {
            lines.push(bytes[start..].to_vec());
        }
        Document { lines }
    }

    /// The document's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(Vec::len).sum());
        for l in &self.lines {
            out.extend_from_slice(l);
        }
        out
    }

    /// Number of physical lines.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// One physical line (with its terminator).
    pub fn line(&self, index: usize) -> Option<&[u8]> {
        self.lines.get(index).map(Vec::as_slice)
    }

    /// Whether any line holds a NUL byte (the editor refuses such files).
    pub fn has_nul(&self) -> Option<usize> {
        self.lines.iter().position(|l| l.contains(&0))
    }

    /// The newline this document uses (`\r\n` when its first line ends so).
    pub(crate) fn newline(&self) -> &'static [u8] {
        match self.lines.first() {
            Some(l) if l.ends_with(b"\r\n") => b"\r\n",
            _ => b"\n",
        }
    }

    /// Logical lines with their physical span, as PostgreSQL 14+ joins them.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.lines.len() {
            let first = i;
            let mut buf: Vec<u8> = Vec::new();
            let mut last_backslash = 0;
            loop {
                buf.extend_from_slice(&self.lines[i]);
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                if buf.len() > last_backslash
                    && buf.last() == Some(&b'\\')
                    && i + 1 < self.lines.len()
                {
                    buf.pop();
                    last_backslash = buf.len();
                    i += 1;
                    continue;
                }
                if buf.len() > last_backslash && buf.last() == Some(&b'\\') {
                    buf.pop();
                }
                break;
            }
            let (fields, comment) = tokenize_plain(&buf);
            out.push(Record {
                first,
                last: i,
                line_number: (first + 1) as u32,
                fields,
                comment,
            });
            i += 1;
        }
        out
    }
}

/// Tokenize one logical line without file inclusion; also return the comment text.
pub(crate) fn tokenize_plain(line: &[u8]) -> (Vec<Vec<Token>>, Option<Vec<u8>>) {
    let (code, comment) = split_comment(line);
    let mut fields: Vec<Vec<Token>> = Vec::new();
    let mut cur: Vec<Token> = Vec::new();
    let mut i = 0;
    let blank = |c: u8| c == b' ' || c == b'\t' || c == b'\r';
    loop {
        while i < code.len() && (blank(code[i]) || code[i] == b',') {
            i += 1;
        }
        if i >= code.len() {
            break;
        }
        let mut buf = Vec::new();
        let (mut in_q, mut was_q, mut initial) = (false, false, false);
        let mut comma = false;
        while i < code.len() && (!blank(code[i]) || in_q) {
            let c = code[i];
            if c == b',' && !in_q {
                comma = true;
                i += 1;
                break;
            }
            if c != b'"' || was_q {
                buf.push(c);
            }
            was_q = in_q && c == b'"' && !was_q;
            if c == b'"' {
                in_q = !in_q;
                if buf.is_empty() {
                    initial = true;
                }
            }
            i += 1;
        }
        cur.push(Token {
            text: smallvec::SmallVec::from_vec(buf),
            quoted: initial,
        });
        if !comma {
            fields.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        fields.push(cur);
    }
    (fields, comment)
}

/// Split at the first `#` outside quotes.
pub(crate) fn split_comment(line: &[u8]) -> (&[u8], Option<Vec<u8>>) {
    let mut in_q = false;
    for (i, &c) in line.iter().enumerate() {
        if c == b'"' {
            in_q = !in_q;
        } else if c == b'#' && !in_q {
            return (&line[..i], Some(line[i + 1..].to_vec()));
        }
    }
    (line, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        for input in [
            &b""[..],
            b"\n",
            b"no newline",
            b"a\r\nb\n\n\xff\x00x",
            b"local all all trust \\\n  # c\n",
        ] {
            assert_eq!(Document::parse(input).to_bytes(), input);
        }
    }

    #[test]
    fn records_join_continuations() {
        let d = Document::parse(b"# c\nhost a b \\\n 1.2.3.4/32 md5 # tag\nlocal all all peer");
        let r = d.records();
        assert_eq!(r.len(), 3);
        assert_eq!((r[1].first, r[1].last, r[1].line_number), (1, 2, 2));
        assert_eq!(r[1].fields.len(), 5);
        assert_eq!(r[1].comment.as_deref(), Some(&b" tag"[..]));
        assert!(!r[0].is_rule());
    }
}
