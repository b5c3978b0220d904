//! Reading PostgreSQL's server log written with costplus's `log_line_prefix`
//! (`'%m [%p] %q%u@%d %h '`, `lc_messages = 'C'`).
//!
//! Every session line carries the time, the backend PID, `user@database` and the client host;
//! background processes (`%q`) stop after the PID. Continuation lines (`DETAIL:`, `HINT:`, ...)
//! carry the same prefix. Lines in other formats are skipped, never guessed at.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

/// The `log_line_prefix` costplus configures and this parser reads.
pub const LOG_LINE_PREFIX: &str = "%m [%p] %q%u@%d %h ";

/// Message severities PostgreSQL writes, with the continuation labels.
const LEVELS: &[&str] = &[
    "DEBUG1",
    "DEBUG2",
    "DEBUG3",
    "DEBUG4",
    "DEBUG5",
    "LOG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "FATAL",
    "PANIC",
    "DETAIL",
    "HINT",
    "QUERY",
    "CONTEXT",
    "LOCATION",
    "STATEMENT",
];

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// 1-based line number in the input.
    pub line: usize,
    /// When, in UTC (the log's zone must be UTC or a numeric offset; other zone names are read
    /// as UTC).
    pub time: DateTime<Utc>,
    /// Backend PID.
    pub pid: u32,
    /// Role name, when the line belongs to a session (`[unknown]` before authentication).
    pub user: Option<String>,
    /// Database, when the line belongs to a session.
    pub database: Option<String>,
    /// Client host (`127.0.0.1`, `::1`, `[local]`), when the line belongs to a session.
    pub host: Option<String>,
    /// `LOG`, `FATAL`, `DETAIL`, ...
    pub level: String,
    /// The message text.
    pub message: String,
}

/// Parse one line; `None` when it is not in costplus's format.
pub fn parse_line(line_no: usize, line: &str) -> Option<LogEntry> {
    // "2026-12-04 15:41:38.123 UTC [1234] rest"
    let mut parts = line.splitn(4, ' ');
    let (date, time, zone, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let naive =
        NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let offset_secs = parse_zone(zone);
    let time = DateTime::<Utc>::from_naive_utc_and_offset(naive, Utc)
        - chrono::Duration::seconds(offset_secs);
    let rest = rest.strip_prefix('[')?;
    let (pid, rest) = rest.split_once("] ")?;
    let pid = pid.parse().ok()?;
    // Find "LEVEL:  " at a word boundary.
    let (session, level, message) = find_level(rest)?;
    let (user, database, host) = match session.trim() {
        "" => (None, None, None),
        s => {
            let (ud, host) = s.rsplit_once(' ')?;
            let (u, d) = ud.split_once('@')?;
            (
                Some(u.to_string()),
                Some(d.to_string()),
                Some(host.to_string()),
            )
        }
    };
    Some(LogEntry {
        line: line_no,
        time,
        pid,
        user,
        database,
        host,
        level: level.to_string(),
        message: message.to_string(),
    })
}

fn parse_zone(zone: &str) -> i64 {
    // "+01" / "-0530" / "UTC" / "GMT"
    let sign = match zone.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return 0,
    };
    let digits: String = zone[1..].chars().filter(char::is_ascii_digit).collect();
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i64>().unwrap_or(0), 0),
        3 | 4 => (
            digits[..digits.len() - 2].parse::<i64>().unwrap_or(0),
            digits[digits.len() - 2..].parse::<i64>().unwrap_or(0),
        ),
        _ => (0, 0),
    };
    sign * (h * 3600 + m * 60)
}

fn find_level(rest: &str) -> Option<(&str, &str, &str)> {
    let mut search = 0;
    while let Some(pos) = rest[search..].find(":  ") {
        let end = search + pos;
        let start = rest[..end].rfind(' ').map(|p| p + 1).unwrap_or(0);
        let word = &rest[start..end];
        if LEVELS.contains(&word) {
            return Some((&rest[..start], word, &rest[end + 3..]));
        }
        search = end + 3;
    }
    None
}

/// Parse a whole log; lines in other formats are skipped.
pub fn parse(text: &str) -> Vec<LogEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| parse_line(i + 1, l))
        .collect()
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// Wrong password for an existing role.
    WrongPassword,
    /// The role does not exist.
    UnknownRole,
    /// No pg_hba.conf line matches (wrong database/user/address, or no TLS where hostssl is required).
    NoHbaEntry,
    /// A `reject` line matched.
    Rejected,
    /// Another authentication method failed (cert, ident, ldap, ...).
    OtherAuth,
}

/// A failed login attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginFailure {
    /// Line of the FATAL message.
    pub line: usize,
    /// When.
    pub time: DateTime<Utc>,
    /// Client address.
    pub host: String,
    /// Role tried.
    pub user: String,
    /// Database tried.
    pub database: String,
    /// Why it failed.
    pub kind: FailureKind,
    /// Whether the attempt was made without TLS (from the pg_hba message).
    pub without_tls: bool,
}

/// The failed logins among `entries`, in order.
pub fn login_failures(entries: &[LogEntry]) -> Vec<LoginFailure> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.level != "FATAL" {
            continue;
        }
        let m = e.message.as_str();
        let kind = if m.starts_with("password authentication failed for user") {
            // With SCRAM, an unknown role fails like a wrong password; the DETAIL line says which.
            let detail = entries[i + 1..]
                .iter()
                .take(3)
                .find(|d| d.pid == e.pid && d.level == "DETAIL");
            match detail {
                Some(d)
                    if d.message.starts_with("Role ") && d.message.contains("does not exist") =>
                {
                    FailureKind::UnknownRole
                }
                _ => FailureKind::WrongPassword,
            }
        } else if m.starts_with("role ") && m.ends_with("does not exist") {
            FailureKind::UnknownRole
        } else if m.starts_with("no pg_hba.conf entry for host") {
            FailureKind::NoHbaEntry
        } else if m.starts_with("pg_hba.conf rejects connection for host") {
            FailureKind::Rejected
        } else if m.contains("authentication failed for user") {
            FailureKind::OtherAuth
        } else {
            continue;
        };
        let without_tls = m.ends_with("no encryption") || m.ends_with("SSL off");
        out.push(LoginFailure {
            line: e.line,
            time: e.time,
            host: e.host.clone().unwrap_or_default(),
            user: e.user.clone().unwrap_or_default(),
            database: e.database.clone().unwrap_or_default(),
            kind,
            without_tls,
        });
    }
    out
}

/// Failed logins per client address and per role over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttackerReport {
    /// Start of the window.
    pub since: Option<DateTime<Utc>>,
    /// Failures counted.
    pub total_failures: usize,
    /// Per client address: count and the roles tried, most active first.
    pub by_host: Vec<HostFailures>,
    /// Per role: count, most tried first.
    pub by_role: Vec<(String, usize)>,
}

/// Failures from one client address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFailures {
    /// Client address.
    pub host: String,
    /// Number of failures.
    pub failures: usize,
    /// Roles tried, with counts.
    pub roles: BTreeMap<String, usize>,
    /// Failures by kind.
    pub kinds: BTreeMap<String, usize>,
    /// Last failure.
    pub last: DateTime<Utc>,
}

/// Summarise failures at or after `since`.
pub fn attackers(failures: &[LoginFailure], since: Option<DateTime<Utc>>) -> AttackerReport {
    let mut hosts: BTreeMap<&str, HostFailures> = BTreeMap::new();
    let mut roles: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    for f in failures
        .iter()
        .filter(|f| since.is_none_or(|s| f.time >= s))
    {
        total += 1;
        let h = hosts.entry(&f.host).or_insert_with(|| HostFailures {
            host: f.host.clone(),
            failures: 0,
            roles: BTreeMap::new(),
            kinds: BTreeMap::new(),
            last: f.time,
        });
        h.failures += 1;
        *h.roles.entry(f.user.clone()).or_default() += 1;
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        *h.kinds.entry(kind).or_default() += 1;
        h.last = h.last.max(f.time);
        *roles.entry(&f.user).or_default() += 1;
    }
    let mut by_host: Vec<HostFailures> = hosts.into_values().collect();
    by_host.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.host.cmp(&b.host)));
    let mut by_role: Vec<(String, usize)> =
        roles.into_iter().map(|(r, n)| (r.to_string(), n)).collect();
    by_role.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    AttackerReport {
        since,
        total_failures: total,
        by_host,
        by_role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"2026-12-04 15:41:38.123 UTC [1234] alice@app 127.0.0.2 FATAL:  password authentication failed for user "alice"
2026-12-04 15:41:38.123 UTC [1234] alice@app 127.0.0.2 DETAIL:  Connection matched pg_hba.conf line 3: "hostssl all all 127.0.0.1/32 scram-sha-256"
2026-12-04 15:41:38.200 UTC [1240] mallory@app 127.0.0.3 FATAL:  password authentication failed for user "mallory"
2026-12-04 15:41:38.200 UTC [1240] mallory@app 127.0.0.3 DETAIL:  Role "mallory" does not exist.
	Connection matched pg_hba.conf line 3: "hostssl all all 127.0.0.1/32 scram-sha-256"
2026-12-04 15:41:39.123 UTC [1235] bob@app ::1 FATAL:  no pg_hba.conf entry for host "::1", user "bob", database "app", no encryption
2026-12-04 15:41:39.500 UTC [1236] [unknown]@[unknown] 127.0.0.5 LOG:  connection received: host=127.0.0.5 port=4444
2026-12-04 15:41:39.600 UTC [1236] carol@app 127.0.0.5 LOG:  connection authorized: user=carol database=app SSL enabled
2026-12-04 16:41:40.123 +01 [1237] LOG:  checkpoint starting: time
not a log line at all
"#;

    #[test]
    fn parses_session_and_background_lines() {
        let e = parse(LOG);
        assert_eq!(e.len(), 8, "{e:#?}");
        assert_eq!(e[0].user.as_deref(), Some("alice"));
        assert_eq!(e[0].host.as_deref(), Some("127.0.0.2"));
        assert_eq!(e[0].level, "FATAL");
        assert_eq!(e[4].host.as_deref(), Some("::1"));
        assert_eq!(e[5].user.as_deref(), Some("[unknown]"));
        let bg = e.last().unwrap();
        assert_eq!((bg.user.as_deref(), bg.level.as_str()), (None, "LOG"));
        // "+01" is converted to UTC.
        assert_eq!(bg.time.format("%H:%M:%S").to_string(), "15:41:40");
    }

    #[test]
    fn classifies_failures() {
        let f = login_failures(&parse(LOG));
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.host.as_str(), f.user.as_str(), f.kind, f.without_tls))
            .collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.2", "alice", FailureKind::WrongPassword, false),
                ("127.0.0.3", "mallory", FailureKind::UnknownRole, false),
                ("::1", "bob", FailureKind::NoHbaEntry, true),
            ]
        );
    }

    #[test]
    fn attacker_report_counts_within_window() {
        let f = login_failures(&parse(LOG));
        let all = attackers(&f, None);
        assert_eq!(all.total_failures, 3);
        assert_eq!(all.by_host.len(), 3);
        let since = "2026-12-04T15:41:38.150Z".parse().unwrap();
        let recent = attackers(&f, Some(since));
        assert_eq!(recent.total_failures, 2);
        assert_eq!(
            recent.by_role,
            vec![("bob".to_string(), 1), ("mallory".to_string(), 1)]
        );
    }

    #[test]
    fn message_containing_a_colon_pair_keeps_the_level() {
        let e = parse_line(
            1,
            "2026-12-04 15:41:38.123 UTC [9] u@d 10.0.0.1 ERROR:  syntax error at \"x:  y\"",
        )
        .unwrap();
        assert_eq!(e.level, "ERROR");
        assert_eq!(e.message, "syntax error at \"x:  y\"");
    }
}
