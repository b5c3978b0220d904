//! Edits through the document: customer rules in a managed block placed before the
//! operator's final `reject` rules, and plain insert/replace/remove of one rule. Every line
//! outside the edited ones keeps its bytes; the operator's lines are never reordered.

use crate::document::Document;
use crate::env::MemEnv;
use crate::rules::{AuthMethod, ConnType, ReadOptions};
use crate::tokenize::Token;

/// First line of the managed block (the rest of the line is free text).
pub const BEGIN_MARKER: &str = "# BEGIN costplus managed block";
/// Last line of the managed block.
pub const END_MARKER: &str = "# END costplus managed block";
/// Tag written after each customer rule: `# costplus customer=NAME`.
const TAG_PREFIX: &[u8] = b" costplus customer=";

/// Why an edit was refused (the document is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The customer name cannot be used as a tag.
    #[error(
        "invalid customer name {0:?}: use letters, digits, '_', '-' and '.' (1 to 63 characters)"
    )]
    InvalidCustomer(String),
    /// A value cannot be written in pg_hba.conf.
    #[error("cannot write {what} {value:?} in pg_hba.conf: {why}")]
    Unwritable {
        /// Which field.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// The managed block markers are damaged.
    #[error("managed block damaged at line {line}: {why}")]
    DamagedBlock {
        /// Line (1-based).
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// The document holds a NUL byte (PostgreSQL would misread the lines around it).
    #[error("line {line} holds a NUL byte; refusing to edit")]
    NulByte {
        /// Line (1-based).
        line: usize,
    },
    /// No rule at that line.
    #[error("no rule at line {0}")]
    NoSuchRule(u32),
}

/// A rule to write: the fields in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Connection type.
    pub conn_type: ConnType,
    /// Databases: [`Token::bare`] for keywords (`all`, `replication`, ...), [`RuleSpec::name`]
    /// for names (quoted when needed so they are never read as keywords).
    pub databases: Vec<Token>,
    /// Users, likewise (`+group` as a bare token).
    pub users: Vec<Token>,
    /// Address (CIDR, host name, `all`...); `None` for `local`.
    pub address: Option<String>,
    /// Separate netmask field, if any.
    pub netmask: Option<String>,
    /// Method.
    pub method: AuthMethod,
    /// Options as `name=value`.
    pub options: Vec<(String, String)>,
}

impl RuleSpec {
    /// A literal database or user name (never a keyword).
    pub fn name(n: &str) -> Token {
        Token {
            text: smallvec::SmallVec::from_slice(n.as_bytes()),
            quoted: true,
        }
    }

    /// The usual customer rule: `hostssl "db" "user" ADDRESS scram-sha-256`.
    pub fn hostssl_scram(database: &str, user: &str, address: &str) -> Self {
        RuleSpec {
            conn_type: ConnType::HostSsl,
            databases: vec![Self::name(database)],
            users: vec![Self::name(user)],
            address: Some(address.to_string()),
            netmask: None,
            method: AuthMethod::ScramSha256,
            options: Vec::new(),
        }
    }

    /// The rule as one line of pg_hba.conf (no newline).
    pub fn render(&self) -> Result<String, EditError> {
        let mut out = String::from(self.conn_type.as_str());
        out.push(' ');
        out.push_str(&render_list("database", &self.databases)?);
        out.push(' ');
        out.push_str(&render_list("user", &self.users)?);
        if self.conn_type != ConnType::Local {
            let Some(a) = &self.address else {
                return Err(EditError::Unwritable {
                    what: "address",
                    value: String::new(),
                    why: "host lines need an address",
                });
            };
            out.push(' ');
            out.push_str(&plain("address", a)?);
            if let Some(m) = &self.netmask {
                out.push(' ');
                out.push_str(&plain("netmask", m)?);
            }
        }
        out.push(' ');
        out.push_str(self.method.as_str());
        for (k, v) in &self.options {
            out.push(' ');
            let kv = format!("{k}={v}");
            if needs_quotes(kv.as_bytes()) {
                out.push_str(&quote("option", &kv)?);
            } else {
                out.push_str(&kv);
            }
        }
        Ok(out)
    }
}

fn needs_quotes(t: &[u8]) -> bool {
    t.is_empty()
        || t.iter()
            .any(|&c| matches!(c, b' ' | b'\t' | b'\r' | b',' | b'#' | b'"' | b'\\'))
}

fn quote(what: &'static str, v: &str) -> Result<String, EditError> {
    if v.bytes().any(|c| c == b'\n' || c == 0) {
        return Err(EditError::Unwritable {
            what,
            value: v.into(),
            why: "newline and NUL cannot be written",
        });
    }
    if v.ends_with('\\') {
        return Err(EditError::Unwritable {
            what,
            value: v.into(),
            why: "a trailing backslash would continue the line",
        });
    }
    Ok(format!("\"{}\"", v.replace('"', "\"\"")))
}

fn plain(what: &'static str, v: &str) -> Result<String, EditError> {
    if needs_quotes(v.as_bytes()) || v.bytes().any(|c| c == b'\n' || c == 0) {
        return Err(EditError::Unwritable {
            what,
            value: v.into(),
            why: "blanks, commas, quotes and '#' are not allowed here",
        });
    }
    Ok(v.to_string())
}

fn render_list(what: &'static str, toks: &[Token]) -> Result<String, EditError> {
    if toks.is_empty() {
        return Err(EditError::Unwritable {
            what,
            value: String::new(),
            why: "at least one entry is needed",
        });
    }
    let mut parts = Vec::new();
    for t in toks {
        let text = String::from_utf8(t.text.to_vec()).map_err(|_| EditError::Unwritable {
            what,
            value: t.text_lossy(),
            why: "not UTF-8",
        })?;
        if text.bytes().any(|c| c == b'\n' || c == 0) {
            return Err(EditError::Unwritable {
                what,
                value: text,
                why: "newline and NUL cannot be written",
            });
        }
        if t.quoted {
            let special = matches!(
                text.as_str(),
                "all" | "sameuser" | "samerole" | "samegroup" | "replication"
            ) || text.starts_with('+')
                || text.starts_with('@')
                || text.starts_with('/')
                || needs_quotes(text.as_bytes());
            parts.push(if special { quote(what, &text)? } else { text });
        } else {
            parts.push(plain(what, &text)?);
        }
    }
    Ok(parts.join(","))
}

/// Validate a customer name for use in tags.
pub(crate) fn check_customer(c: &str) -> Result<(), EditError> {
    let ok = !c.is_empty()
        && c.len() <= 63
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(EditError::InvalidCustomer(c.into()))
    }
}

fn strip_eol(l: &[u8]) -> &[u8] {
    let mut e = l.len();
    while e > 0 && matches!(l[e - 1], b'\n' | b'\r') {
        e -= 1;
    }
    &l[..e]
}

fn tag_of(line: &[u8]) -> Option<String> {
    let (_, comment) = crate::document::split_comment(strip_eol(line));
    let c = comment?;
    let rest = c.strip_prefix(TAG_PREFIX)?;
    let name: Vec<u8> = rest
        .iter()
        .take_while(|b| !b.is_ascii_whitespace())
        .copied()
        .collect();
    String::from_utf8(name).ok()
}

/// Where the managed block is: (begin index, end index), physical lines.
fn find_block(doc: &Document) -> Result<Option<(usize, usize)>, EditError> {
    let mut begin = None;
    let mut end = None;
    for (i, l) in doc.lines.iter().enumerate() {
        let t = strip_eol(l);
        if t.starts_with(BEGIN_MARKER.as_bytes()) {
            if begin.is_some() {
                return Err(EditError::DamagedBlock {
                    line: i + 1,
                    why: "a second BEGIN marker",
                });
            }
            begin = Some(i);
        } else if t.starts_with(END_MARKER.as_bytes()) {
            if begin.is_none() {
                return Err(EditError::DamagedBlock {
                    line: i + 1,
                    why: "END marker before BEGIN",
                });
            }
            if end.is_some() {
                return Err(EditError::DamagedBlock {
                    line: i + 1,
                    why: "a second END marker",
                });
            }
            end = Some(i);
        }
    }
    match (begin, end) {
        (None, None) => Ok(None),
        (Some(b), Some(e)) => Ok(Some((b, e))),
        (Some(b), None) => Err(EditError::DamagedBlock {
            line: b + 1,
            why: "BEGIN marker without END marker",
        }),
        (None, Some(e)) => Err(EditError::DamagedBlock {
            line: e + 1,
            why: "END marker without BEGIN marker",
        }),
    }
}

/// Where a new block goes: before the trailing run of `reject` rules (and the comment lines
/// directly above them), else at the end.
fn block_insert_point(doc: &Document) -> usize {
    let bytes = doc.to_bytes();
    let set = crate::read_rules(
        &bytes,
        "/pg_hba.conf",
        &ReadOptions::default(),
        &MemEnv::new(),
    );
    let records = doc.records();
    let mut insert = doc.lines.len();
    // walk rule records from the end while they are reject rules
    for rec in records.iter().rev().filter(|r| r.is_rule()) {
        let row = set.rows.iter().find(|r| r.line_number == rec.line_number);
        let is_reject = row.is_some_and(|r| r.auth_method() == Some("reject"));
        if !is_reject {
            break;
        }
        insert = rec.first;
    }
    if insert == doc.lines.len() {
        return insert;
    }
    // keep the comment lines right above the final rejects attached to them
    while insert > 0 {
        let prev = strip_eol(&doc.lines[insert - 1]);
        let trimmed: Vec<u8> = prev
            .iter()
            .skip_while(|c| matches!(c, b' ' | b'\t'))
            .copied()
            .collect();
        if trimmed.starts_with(b"#")
            && !prev.starts_with(END_MARKER.as_bytes())
            && !prev.starts_with(BEGIN_MARKER.as_bytes())
        {
            insert -= 1;
        } else {
            break;
        }
    }
    insert
}

impl Document {
    fn check_editable(&self) -> Result<(), EditError> {
        match self.has_nul() {
            Some(i) => Err(EditError::NulByte { line: i + 1 }),
            None => Ok(()),
        }
    }

    fn ensure_final_newline(&mut self) {
        let nl = self.newline().to_vec();
        if let Some(last) = self.lines.last_mut()
            && !last.ends_with(b"\n")
        {
            last.extend_from_slice(&nl);
        }
    }

    /// Customers that have rules in the managed block, in file order.
    pub fn customers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Ok(Some((b, e))) = find_block(self) {
            for l in &self.lines[b + 1..e] {
                if let Some(c) = tag_of(l)
                    && !out.contains(&c)
                {
                    out.push(c);
                }
            }
        }
        out
    }

    /// The physical line indexes (0-based) of a customer's rules in the managed block.
    pub fn customer_lines(&self, customer: &str) -> Vec<usize> {
        match find_block(self) {
            Ok(Some((b, e))) => (b + 1..e)
                .filter(|&i| tag_of(&self.lines[i]).as_deref() == Some(customer))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The line numbers (1-based, ascending) of every customer rule in the managed block: one
    /// pass, for [`crate::lint`].
    pub fn customer_line_numbers(&self) -> Vec<u32> {
        match find_block(self) {
            Ok(Some((b, e))) => (b + 1..e)
                .filter(|&i| tag_of(&self.lines[i]).is_some())
                .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Replace the customer's rules in the managed block with `rules` (creating the block
    /// before the operator's final `reject` rules if needed). Returns whether bytes changed.
    pub fn set_customer_rules(
        &mut self,
        customer: &str,
        rules: &[RuleSpec],
    ) -> Result<bool, EditError> {
        check_customer(customer)?;
        self.check_editable()?;
        let nl = self.newline().to_vec();
        let mut new_lines = Vec::new();
        for r in rules {
            let mut l = r.render()?.into_bytes();
            l.extend_from_slice(b" #");
            l.extend_from_slice(TAG_PREFIX);
            l.extend_from_slice(customer.as_bytes());
            l.extend_from_slice(&nl);
            new_lines.push(l);
        }
        let before = self.lines.clone();
        let (b, e) = match find_block(self)? {
            Some(be) => be,
            None => {
                if new_lines.is_empty() {
                    return Ok(false);
                }
                let mut at = block_insert_point(self);
                if at == self.lines.len() {
                    // appending: the last line needs its newline (the only operator byte
                    // an edit may add)
                    self.ensure_final_newline();
                    at = self.lines.len();
                }
                let mut begin = BEGIN_MARKER.as_bytes().to_vec();
                begin.extend_from_slice(
                    b" (customer rules; edited by costplus, do not edit by hand)",
                );
                begin.extend_from_slice(&nl);
                let mut end = END_MARKER.as_bytes().to_vec();
                end.extend_from_slice(&nl);
                self.lines.splice(at..at, [begin, end]);
                (at, at + 1)
            }
        };
        let existing: Vec<usize> = (b + 1..e)
            .filter(|&i| tag_of(&self.lines[i]).as_deref() == Some(customer))
            .collect();
        let at = existing.first().copied().unwrap_or(e);
        for &i in existing.iter().rev() {
            self.lines.remove(i);
        }
        self.lines.splice(at..at, new_lines);
        Ok(self.lines != before)
    }

    /// Remove the customer's rules from the managed block (and the block when it becomes
    /// empty); returns how many rule lines went.
    pub fn remove_customer_rules(&mut self, customer: &str) -> Result<usize, EditError> {
        check_customer(customer)?;
        self.check_editable()?;
        let Some((b, e)) = find_block(self)? else {
            return Ok(0);
        };
        let existing: Vec<usize> = (b + 1..e)
            .filter(|&i| tag_of(&self.lines[i]).as_deref() == Some(customer))
            .collect();
        for &i in existing.iter().rev() {
            self.lines.remove(i);
        }
        // An empty block goes too, so adding then removing a customer restores the file.
        let e = e - existing.len();
        if e == b + 1 {
            self.lines.drain(b..=e);
        }
        Ok(existing.len())
    }

    /// Insert one rule as a new line before physical line `index` (0-based; the line count
    /// appends).
    pub fn insert_rule(&mut self, index: usize, rule: &RuleSpec) -> Result<(), EditError> {
        self.check_editable()?;
        let nl = self.newline().to_vec();
        let mut l = rule.render()?.into_bytes();
        l.extend_from_slice(&nl);
        if index >= self.lines.len() {
            self.ensure_final_newline();
            self.lines.push(l);
        } else {
            self.lines.insert(index, l);
        }
        Ok(())
    }

    /// Remove the rule whose (first) line number is `line_number` (all its continuation
    /// lines).
    pub fn remove_rule(&mut self, line_number: u32) -> Result<(), EditError> {
        self.check_editable()?;
        let rec = self
            .records()
            .into_iter()
            .find(|r| r.line_number == line_number && r.is_rule())
            .ok_or(EditError::NoSuchRule(line_number))?;
        self.lines.drain(rec.first..=rec.last);
        Ok(())
    }

    /// Replace the rule at `line_number` with `rule` (one line).
    pub fn replace_rule(&mut self, line_number: u32, rule: &RuleSpec) -> Result<(), EditError> {
        self.check_editable()?;
        let rec = self
            .records()
            .into_iter()
            .find(|r| r.line_number == line_number && r.is_rule())
            .ok_or(EditError::NoSuchRule(line_number))?;
        let nl = self.newline().to_vec();
        let mut l = rule.render()?.into_bytes();
        if self.lines[rec.last].ends_with(b"\n") {
            l.extend_from_slice(&nl);
        }
        self.lines.splice(rec.first..=rec.last, [l]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# operator rules\nlocal all postgres peer\nhostssl all all 10.0.0.0/8 scram-sha-256\n\n# the end\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n";

    #[test]
    fn block_goes_before_final_rejects_and_their_comment() {
        let mut d = Document::parse(BASE.as_bytes());
        let changed = d
            .set_customer_rules(
                "alice",
                &[RuleSpec::hostssl_scram("alice", "alice", "0.0.0.0/0")],
            )
            .unwrap();
        assert!(changed);
        let text = String::from_utf8(d.to_bytes()).unwrap();
        let expected = "# operator rules\nlocal all postgres peer\nhostssl all all 10.0.0.0/8 scram-sha-256\n\n# BEGIN costplus managed block (customer rules; edited by costplus, do not edit by hand)\nhostssl alice alice 0.0.0.0/0 scram-sha-256 # costplus customer=alice\n# END costplus managed block\n# the end\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n";
        assert_eq!(text, expected);
        assert_eq!(d.customers(), vec!["alice".to_string()]);
        assert_eq!(d.remove_customer_rules("alice").unwrap(), 1);
        assert!(d.customers().is_empty());
    }

    #[test]
    fn keywords_are_quoted_for_names() {
        let r = RuleSpec::hostssl_scram("all", "+x", "::/0");
        assert_eq!(
            r.render().unwrap(),
            "hostssl \"all\" \"+x\" ::/0 scram-sha-256"
        );
        let r = RuleSpec::hostssl_scram("a b", "q\"", "::/0");
        assert_eq!(
            r.render().unwrap(),
            "hostssl \"a b\" \"q\"\"\" ::/0 scram-sha-256"
        );
    }

    #[test]
    fn newline_and_nul_in_names_are_refused() {
        // found by the `edit` fuzz target: a bare-safe name with NUL was written as is
        for bad in ["a\0b", "a\nb"] {
            let r = RuleSpec::hostssl_scram(bad, "u", "::/0");
            assert!(
                matches!(r.render(), Err(EditError::Unwritable { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn damaged_block_is_refused() {
        let mut d =
            Document::parse(format!("{BEGIN_MARKER}\nhost all all all reject\n").as_bytes());
        assert!(matches!(
            d.set_customer_rules("a", &[]),
            Err(EditError::DamagedBlock { .. })
        ));
    }
}
