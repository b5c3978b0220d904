//! Incident evidence: one report of server state, recent FATAL/PANIC lines grouped by cause and
//! client, failed logins, bans, sessions per customer, long-running queries, the last
//! configuration reload, disk space and the last backup.
//!
//! [`group_fatals`] and [`normalise_message`] are pure; [`collect`] queries the server (every
//! query is bounded) and reads the log and the file systems.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::fail2ban::Bans;
use crate::pglog::{self, AttackerReport, LogEntry};

/// State of the server as seen over an admin connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerState {
    /// Whether an admin connection succeeded.
    pub accepting_connections: bool,
    /// Why not, when it failed.
    pub error: Option<String>,
    /// `version()`.
    pub version: Option<String>,
    /// Whether the server is a standby or in recovery.
    pub in_recovery: Option<bool>,
    /// When the postmaster started.
    pub started_at: Option<DateTime<Utc>>,
    /// Seconds since start.
    pub uptime_seconds: Option<i64>,
    /// When the configuration was last (re)loaded.
    pub last_reload: Option<DateTime<Utc>>,
    /// The data directory.
    pub data_directory: Option<PathBuf>,
}

/// FATAL/PANIC messages of one kind from one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FatalGroup {
    /// `FATAL` or `PANIC`.
    pub level: String,
    /// The message with names and numbers replaced by `…`.
    pub cause: String,
    /// Client host (`-` for background processes).
    pub host: String,
    /// How many.
    pub count: usize,
    /// First occurrence.
    pub first: DateTime<Utc>,
    /// Last occurrence.
    pub last: DateTime<Utc>,
    /// One full example message.
    pub example: String,
}

/// Sessions of one database/role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sessions {
    /// Database.
    pub database: String,
    /// Role.
    pub user: String,
    /// Total sessions.
    pub total: i64,
    /// Of which active.
    pub active: i64,
    /// Of which idle in transaction.
    pub idle_in_transaction: i64,
}

/// A query running longer than the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LongQuery {
    /// Backend PID.
    pub pid: i32,
    /// Role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Client address.
    pub client: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// How long the query (or transaction) has run.
    pub seconds: i64,
    /// The query text, shortened; redacted when it may hold a password.
    pub query: String,
}

/// Space on one file system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    /// What lives there (`data`, `wal`, `repository`).
    pub label: String,
    /// The path checked.
    pub path: PathBuf,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Free for unprivileged users.
    pub available_bytes: u64,
    /// Used, in percent.
    pub used_percent: f64,
    /// Or why it could not be checked.
    pub error: Option<String>,
}

/// The whole incident report.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentReport {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// Which server.
    pub server: String,
    /// Start of the window for log evidence.
    pub since: DateTime<Utc>,
    /// Server state.
    pub state: ServerState,
    /// The log read, and whether it could be.
    pub log_file: Option<PathBuf>,
    /// Why the log could not be read.
    pub log_error: Option<String>,
    /// FATAL/PANIC lines grouped by cause and client, most frequent first.
    pub fatal: Vec<FatalGroup>,
    /// Failed logins by address and role.
    pub failed_logins: AttackerReport,
    /// fail2ban bans.
    pub bans: Bans,
    /// Sessions per database and role.
    pub sessions: Vec<Sessions>,
    /// Queries/transactions running longer than the threshold.
    pub long_running: Vec<LongQuery>,
    /// Disk space on data, WAL and repository paths.
    pub disk: Vec<Disk>,
    /// Last backup, when known (filled by the caller from pgBackRest).
    pub last_backup: Option<serde_json::Value>,
}

/// Replace quoted names and numbers so messages of one kind group together.
pub fn normalise_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut chars = m.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            for d in chars.by_ref() {
                if d == '"' {
                    break;
                }
            }
            out.push_str("\"…\"");
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_digit() || *d == '.')
            {
                chars.next();
            }
            out.push('…');
        } else {
            out.push(c);
        }
    }
    out
}

/// Group FATAL and PANIC entries at or after `since` by (level, cause, host).
pub fn group_fatals(entries: &[LogEntry], since: DateTime<Utc>) -> Vec<FatalGroup> {
    let mut groups: BTreeMap<(String, String, String), FatalGroup> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| (e.level == "FATAL" || e.level == "PANIC") && e.time >= since)
    {
        let cause = normalise_message(&e.message);
        let host = e.host.clone().unwrap_or_else(|| "-".into());
        let g = groups
            .entry((e.level.clone(), cause.clone(), host.clone()))
            .or_insert_with(|| FatalGroup {
                level: e.level.clone(),
                cause,
                host,
                count: 0,
                first: e.time,
                last: e.time,
                example: e.message.clone(),
            });
        g.count += 1;
        g.first = g.first.min(e.time);
        g.last = g.last.max(e.time);
    }
    let mut v: Vec<FatalGroup> = groups.into_values().collect();
    v.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(b.count.cmp(&a.count))
            .then(a.cause.cmp(&b.cause))
    });
    v
}

/// Shorten a query for the report and hide it when it may carry a password.
pub fn redact_query(q: &str) -> String {
    let lower = q.to_ascii_lowercase();
    if lower.contains("password") || lower.contains("secret") || lower.contains("pgp_sym") {
        return "<redacted: the query may contain a secret>".into();
    }
    let one_line: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

/// Space on the file system holding `path`.
pub fn disk(label: &str, path: &std::path::Path) -> Disk {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            let total = s.blocks() * frag;
            let avail = s.blocks_available() * frag;
            let free = s.blocks_free() * frag;
            let used = total.saturating_sub(free);
            let pct = if used + avail == 0 {
                0.0
            } else {
                (used as f64 * 100.0 / (used + avail) as f64 * 10.0).round() / 10.0
            };
            Disk {
                label: label.into(),
                path: path.into(),
                total_bytes: total,
                available_bytes: avail,
                used_percent: pct,
                error: None,
            }
        }
        Err(e) => Disk {
            label: label.into(),
            path: path.into(),
            total_bytes: 0,
            available_bytes: 0,
            used_percent: 0.0,
            error: Some(e.to_string()),
        },
    }
}

/// What [`collect`] needs besides the connection.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Server name (for the report).
    pub server: String,
    /// Window start for log evidence.
    pub since: DateTime<Utc>,
    /// The server log, when known.
    pub log_file: Option<PathBuf>,
    /// Extra paths to check for space (label, path), e.g. the backup repository.
    pub extra_paths: Vec<(String, PathBuf)>,
    /// Queries running longer than this are listed.
    pub long_running_seconds: i64,
    /// fail2ban bans (from [`crate::fail2ban::bans`]).
    pub bans: Bans,
}

/// Collect the report. `client` is an admin connection, or the error of trying to make one.
pub async fn collect(
    client: Result<tokio_postgres::Client, String>,
    inputs: Inputs,
) -> IncidentReport {
    let mut state = ServerState::default();
    let mut sessions = Vec::new();
    let mut long_running = Vec::new();
    let mut disks = Vec::new();
    match client {
        Ok(client) => {
            state.accepting_connections = true;
            if let Err(e) = query_state(
                &client,
                &mut state,
                &mut sessions,
                &mut long_running,
                inputs.long_running_seconds,
            )
            .await
            {
                state.error = Some(costplus_pgcluster::pg_message(&e));
            }
        }
        Err(e) => state.error = Some(e),
    }
    if let Some(data) = &state.data_directory {
        disks.push(disk("data", data));
        disks.push(disk("wal", &data.join("pg_wal")));
    }
    for (label, path) in &inputs.extra_paths {
        disks.push(disk(label, path));
    }
    let (entries, log_error) = match &inputs.log_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => (pglog::parse(&String::from_utf8_lossy(&bytes)), None),
            Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
        },
        None => (
            Vec::new(),
            Some("no log file configured for this server".into()),
        ),
    };
    let failures = pglog::login_failures(&entries);
    IncidentReport {
        generated_at: Utc::now(),
        server: inputs.server,
        since: inputs.since,
        state,
        log_file: inputs.log_file,
        log_error,
        fatal: group_fatals(&entries, inputs.since),
        failed_logins: pglog::attackers(&failures, Some(inputs.since)),
        bans: inputs.bans,
        sessions,
        long_running,
        disk: disks,
        last_backup: None,
    }
}

async fn query_state(
    client: &tokio_postgres::Client,
    state: &mut ServerState,
    sessions: &mut Vec<Sessions>,
    long_running: &mut Vec<LongQuery>,
    threshold: i64,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SET statement_timeout = '5s'").await?;
    let row = client
        .query_one(
            "SELECT version(), pg_is_in_recovery(), pg_postmaster_start_time(), \
             extract(epoch FROM now() - pg_postmaster_start_time())::bigint, pg_conf_load_time(), \
             current_setting('data_directory')",
            &[],
        )
        .await?;
    state.version = Some(row.get(0));
    state.in_recovery = Some(row.get(1));
    state.started_at = Some(row.get(2));
    state.uptime_seconds = Some(row.get(3));
    state.last_reload = Some(row.get(4));
    state.data_directory = Some(PathBuf::from(row.get::<_, String>(5)));
    for r in client
        .query(
            "SELECT coalesce(datname, ''), coalesce(usename, ''), count(*), \
             count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE state LIKE 'idle in transaction%') \
             FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 1000",
            &[],
        )
        .await?
    {
        sessions.push(Sessions { database: r.get(0), user: r.get(1), total: r.get(2), active: r.get(3), idle_in_transaction: r.get(4) });
    }
    for r in client
        .query(
            "SELECT pid, coalesce(usename, ''), coalesce(datname, ''), client_addr::text, coalesce(state, ''), \
             extract(epoch FROM now() - coalesce(xact_start, query_start))::bigint AS secs, coalesce(query, '') \
             FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle' \
               AND now() - coalesce(xact_start, query_start) > make_interval(secs => $1) \
             ORDER BY secs DESC LIMIT 50",
            &[&(threshold as f64)],
        )
        .await?
    {
        long_running.push(LongQuery {
            pid: r.get(0),
            user: r.get(1),
            database: r.get(2),
            client: r.get(3),
            state: r.get(4),
            seconds: r.get(5),
            query: redact_query(r.get(6)),
        });
    }
    Ok(())
}

/// The report as text for a person (what the operator sends on).
pub fn render_text(r: &IncidentReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "costplus incident report: server {}  generated {}",
        r.server,
        r.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(
        s,
        "evidence window: since {}\n",
        r.since.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(s, "== server");
    if r.state.accepting_connections {
        let _ = writeln!(s, "accepting connections: yes");
    } else {
        let _ = writeln!(
            s,
            "accepting connections: NO ({})",
            r.state.error.as_deref().unwrap_or("unknown")
        );
    }
    if let Some(v) = &r.state.version {
        let _ = writeln!(s, "version: {v}");
    }
    if let (Some(rec), Some(up)) = (r.state.in_recovery, r.state.uptime_seconds) {
        let _ = writeln!(
            s,
            "in recovery: {}  uptime: {}h{:02}m",
            if rec { "yes" } else { "no" },
            up / 3600,
            (up % 3600) / 60
        );
    }
    if let Some(t) = r.state.last_reload {
        let _ = writeln!(
            s,
            "last configuration reload: {}",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let _ = writeln!(
        s,
        "\n== FATAL/PANIC by cause and client ({} groups)",
        r.fatal.len()
    );
    if let Some(e) = &r.log_error {
        let _ = writeln!(s, "log not read: {e}");
    }
    for g in &r.fatal {
        let _ = writeln!(
            s,
            "{:>5}x {} {} from {}  (last {})",
            g.count,
            g.level,
            g.cause,
            g.host,
            g.last.format("%H:%M:%S")
        );
    }
    let _ = writeln!(s, "\n== failed logins: {}", r.failed_logins.total_failures);
    for h in &r.failed_logins.by_host {
        let roles: Vec<String> = h.roles.iter().map(|(k, v)| format!("{k}x{v}")).collect();
        let _ = writeln!(s, "{:>5}  {:<39} {}", h.failures, h.host, roles.join(" "));
    }
    let _ = writeln!(s, "\n== bans");
    match &r.bans {
        Bans::Active {
            banned,
            currently_failed,
        } => {
            let _ = writeln!(
                s,
                "banned: {}  (currently failing: {currently_failed})",
                if banned.is_empty() {
                    "none".into()
                } else {
                    banned.join(" ")
                }
            );
        }
        Bans::Unknown { reason } => {
            let _ = writeln!(s, "unknown: {reason}");
        }
    }
    let _ = writeln!(s, "\n== sessions");
    for x in &r.sessions {
        let _ = writeln!(
            s,
            "{:>5}  {}@{}  (active {}, idle in transaction {})",
            x.total, x.user, x.database, x.active, x.idle_in_transaction
        );
    }
    let _ = writeln!(s, "\n== long-running ({} found)", r.long_running.len());
    for q in &r.long_running {
        let _ = writeln!(
            s,
            "pid {} {}@{} {}s {}: {}",
            q.pid, q.user, q.database, q.seconds, q.state, q.query
        );
    }
    let _ = writeln!(s, "\n== disk");
    for d in &r.disk {
        match &d.error {
            None => {
                let _ = writeln!(
                    s,
                    "{:<11} {:>5.1}% used, {:.1} GiB free  {}",
                    d.label,
                    d.used_percent,
                    d.available_bytes as f64 / 1073741824.0,
                    d.path.display()
                );
            }
            Some(e) => {
                let _ = writeln!(s, "{:<11} unknown ({e})  {}", d.label, d.path.display());
            }
        }
    }
    let _ = writeln!(s, "\n== last backup");
    let _ = writeln!(
        s,
        "{}",
        r.last_backup
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_else(|| "unknown (no backup information available)".into())
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names_and_numbers() {
        assert_eq!(
            normalise_message(r#"password authentication failed for user "alice""#),
            r#"password authentication failed for user "…""#
        );
        assert_eq!(
            normalise_message("terminating connection 1234 after 5.5 s"),
            "terminating connection … after … s"
        );
    }

    #[test]
    fn groups_by_cause_and_client() {
        let log = "\
2026-12-04 10:00:00.000 UTC [1] a@d 10.0.0.1 FATAL:  password authentication failed for user \"a\"
2026-12-04 10:00:01.000 UTC [2] b@d 10.0.0.1 FATAL:  password authentication failed for user \"b\"
2026-12-04 10:00:02.000 UTC [3] b@d 10.0.0.2 FATAL:  password authentication failed for user \"b\"
2026-12-04 10:00:03.000 UTC [4] PANIC:  could not write to file \"pg_wal/xlogtemp.4\": No space left on device
2026-12-04 09:00:00.000 UTC [5] a@d 10.0.0.1 FATAL:  too old to count
";
        let since = "2026-12-04T09:30:00Z".parse().unwrap();
        let g = group_fatals(&pglog::parse(log), since);
        let got: Vec<(&str, usize, &str)> = g
            .iter()
            .map(|g| (g.level.as_str(), g.count, g.host.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("PANIC", 1, "-"),
                ("FATAL", 2, "10.0.0.1"),
                ("FATAL", 1, "10.0.0.2")
            ]
        );
    }

    #[test]
    fn redacts_passwords() {
        assert!(redact_query("ALTER ROLE x PASSWORD 'secret'").starts_with("<redacted"));
        assert_eq!(redact_query("SELECT  1\n FROM t"), "SELECT 1 FROM t");
        assert_eq!(redact_query(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn disk_space_of_a_real_path() {
        let d = disk("tmp", std::path::Path::new("/tmp"));
        assert!(
            d.error.is_none() && d.total_bytes > 0 && d.used_percent <= 100.0,
            "{d:?}"
        );
        let missing = disk("missing", std::path::Path::new("/no/such/path"));
        assert!(missing.error.is_some());
    }
}
