//! Which line decides a connection: the first rule that matches, as `check_hba` walks them.

use std::net::IpAddr;

use serde::Serialize;

use crate::rules::{AddressSpec, ConnType};
use crate::tokenize::Token;
use crate::{RuleSet, Severity};

/// A connection attempt to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// How it arrives: `local`, `host` (TCP without TLS), `hostssl` (TLS),
    /// `hostnossl` (= host), `hostgssenc` (GSSAPI encryption), `hostnogssenc` (= host).
    pub conn_type: ConnType,
    /// Database requested (`replication` for a physical replication connection).
    pub database: String,
    /// User name.
    pub user: String,
    /// Client address (TCP).
    pub addr: Option<IpAddr>,
    /// Client host name as reverse DNS would give it (for host-name rules).
    pub hostname: Option<String>,
    /// Roles the user is a member of, directly or not (for `+role`, `samerole`).
    pub member_of: Vec<String>,
    /// A physical replication connection (only `replication` database entries match).
    pub physical_replication: bool,
}

/// How one line relates to the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineVerdict {
    /// File.
    pub file_name: String,
    /// Line.
    pub line_number: u32,
    /// Whether it matches.
    pub matches: bool,
    /// Why (or why not).
    pub reason: String,
}

/// The answer of [`explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The deciding line, if any (else the server rejects: "no pg_hba.conf entry").
    pub decision: Option<LineVerdict>,
    /// Its method (`reject` means refused).
    pub auth_method: Option<String>,
    /// Its options.
    pub options: Vec<String>,
    /// Every rule before the decision and why it did not match.
    pub considered: Vec<LineVerdict>,
    /// The server refuses the file (it keeps its previous rules, or does not start).
    pub file_has_errors: bool,
    /// Notes on guesses (`samehost`, host names without `--hostname`).
    pub notes: Vec<String>,
}

fn names(toks: &[Token]) -> String {
    toks.iter()
        .map(|t| {
            if t.quoted {
                format!("\"{}\"", t.text_lossy())
            } else {
                t.text_lossy()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn regex_match(t: &Token, value: &str) -> bool {
    let pat = String::from_utf8_lossy(&t.text[1..]).into_owned();
    regex::Regex::new(&pat)
        .map(|re| re.is_match(value))
        .unwrap_or(false)
}

fn member(c: &Connection, role: &str) -> bool {
    c.user == role || c.member_of.iter().any(|m| m == role)
}

fn db_matches(toks: &[Token], c: &Connection, regex_on: bool) -> bool {
    for t in toks {
        if c.physical_replication {
            if t.is_keyword("replication") {
                return true;
            }
            continue;
        }
        if t.is_keyword("all") {
            return true;
        } else if t.is_keyword("sameuser") {
            if c.database == c.user {
                return true;
            }
        } else if t.is_keyword("samegroup") || t.is_keyword("samerole") {
            if c.member_of.contains(&c.database) {
                return true;
            }
        } else if t.is_keyword("replication") {
            continue;
        } else if regex_on && t.text.first() == Some(&b'/') {
            if regex_match(t, &c.database) {
                return true;
            }
        } else if t.text.as_slice() == c.database.as_bytes() {
            return true;
        }
    }
    false
}

fn user_matches(toks: &[Token], c: &Connection, regex_on: bool) -> bool {
    for t in toks {
        if !t.quoted && t.text.first() == Some(&b'+') {
            if member(c, &String::from_utf8_lossy(&t.text[1..])) {
                return true;
            }
        } else if t.is_keyword("all") {
            return true;
        } else if regex_on && t.text.first() == Some(&b'/') {
            if regex_match(t, &c.user) {
                return true;
            }
        } else if t.text.as_slice() == c.user.as_bytes() {
            return true;
        }
    }
    false
}

fn masked_eq(a: &IpAddr, b: &IpAddr, m: &IpAddr) -> Option<bool> {
    match (a, b, m) {
        (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(m)) => {
            let m = u32::from(*m);
            Some(u32::from(*a) & m == u32::from(*b) & m)
        }
        (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(m)) => {
            let m = u128::from(*m);
            Some(u128::from(*a) & m == u128::from(*b) & m)
        }
        _ => None,
    }
}

fn hostname_match(pattern: &str, actual: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), actual.to_ascii_lowercase());
    if p.starts_with('.') {
        a.ends_with(&p)
    } else {
        p == a
    }
}

/// Walk the rules in order and find the first that matches `conn`, as the server does.
pub fn explain(set: &RuleSet, conn: &Connection, regex_on: bool) -> Explanation {
    let mut considered = Vec::new();
    let mut notes = Vec::new();
    let file_has_errors = set
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    let ssl = conn.conn_type == ConnType::HostSsl;
    let gss = conn.conn_type == ConnType::HostGssEnc;
    for (row, rule) in set.rules() {
        let verdict = |matches: bool, reason: String| LineVerdict {
            file_name: row.file_name().to_string(),
            line_number: row.line_number,
            matches,
            reason,
        };
        let rt = rule.conn_type;
        let type_ok = match rt {
            ConnType::Local => conn.conn_type == ConnType::Local,
            _ if conn.conn_type == ConnType::Local => false,
            ConnType::Host => true,
            ConnType::HostSsl => ssl,
            ConnType::HostNoSsl => !ssl,
            ConnType::HostGssEnc => gss,
            ConnType::HostNoGssEnc => !gss,
        };
        if !type_ok {
            considered.push(verdict(
                false,
                format!(
                    "type {} does not apply to a {} connection",
                    rt.as_str(),
                    conn.conn_type.as_str()
                ),
            ));
            continue;
        }
        if rt != ConnType::Local {
            let addr_ok = match &rule.address {
                None | Some(AddressSpec::All) => true,
                Some(AddressSpec::Ip { addr, mask }) => match &conn.addr {
                    Some(client) => masked_eq(client, addr, mask).unwrap_or(false),
                    None => false,
                },
                Some(AddressSpec::SameHost) | Some(AddressSpec::SameNet) => {
                    let local = conn.addr.is_some_and(|a| a.is_loopback());
                    notes.push(format!(
                        "line {}: samehost/samenet depend on the server's interfaces; only loopback is assumed local",
                        row.line_number
                    ));
                    local
                }
                Some(AddressSpec::Hostname(h)) => {
                    let h = String::from_utf8_lossy(h).into_owned();
                    match &conn.hostname {
                        Some(actual) => hostname_match(&h, actual),
                        None => {
                            notes.push(format!(
                                "line {}: host name rule {h:?} not evaluated (give --hostname)",
                                row.line_number
                            ));
                            false
                        }
                    }
                }
            };
            if !addr_ok {
                considered.push(verdict(
                    false,
                    format!(
                        "address {} does not match {}",
                        row.address().unwrap_or_else(|| "?".into()),
                        conn.addr.map(|a| a.to_string()).unwrap_or("(none)".into())
                    ),
                ));
                continue;
            }
        }
        if !db_matches(&rule.databases, conn, regex_on) {
            considered.push(verdict(
                false,
                format!(
                    "database {:?} not in {}",
                    conn.database,
                    names(&rule.databases)
                ),
            ));
            continue;
        }
        if !user_matches(&rule.users, conn, regex_on) {
            considered.push(verdict(
                false,
                format!("user {:?} not in {}", conn.user, names(&rule.users)),
            ));
            continue;
        }
        let decision = verdict(
            true,
            format!(
                "first match: {} {} {}{} -> {}",
                rt.as_str(),
                names(&rule.databases),
                names(&rule.users),
                row.address()
                    .map(|a| format!(
                        " {a}{}",
                        row.netmask().map(|m| format!("/{m}")).unwrap_or_default()
                    ))
                    .unwrap_or_default(),
                rule.method.as_str()
            ),
        );
        return Explanation {
            decision: Some(decision),
            auth_method: Some(rule.method.as_str().to_string()),
            options: rule.options.iter().map(|o| o.to_string()).collect(),
            considered,
            file_has_errors,
            notes,
        };
    }
    Explanation {
        decision: None,
        auth_method: None,
        options: Vec::new(),
        considered,
        file_has_errors,
        notes,
    }
}
