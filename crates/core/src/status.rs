//! The morning summary (`costplus-status`): is the server up, is TLS healthy, are the backups
//! fresh (locally and offsite), how many customers and who is connected, who is banned.
//!
//! It reuses what exists: the incident report's server state and sessions
//! ([`crate::incident::collect`]), the audit's catalog facts (customers, settings) and extra
//! facts ([`crate::audit::extras`]: certificate, backups), and fail2ban's bans.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::audit::{extras, facts};
use crate::config::{Config, ServerConfig};
use crate::fail2ban::Bans;

/// The server.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerLine {
    /// Accepting connections.
    pub up: bool,
    /// Why not, or what failed.
    pub error: Option<String>,
    /// `version()`.
    pub version: Option<String>,
    /// A standby (in recovery).
    pub in_recovery: Option<bool>,
    /// Seconds since the postmaster started.
    pub uptime_seconds: Option<i64>,
}

/// TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TlsLine {
    /// `ssl` is on.
    pub ssl: Option<bool>,
    /// `ssl_min_protocol_version`.
    pub min_protocol: Option<String>,
    /// Days left on the server certificate.
    pub cert_days_left: Option<i64>,
    /// When it expires.
    pub cert_not_after: Option<String>,
    /// Why the certificate could not be read.
    pub cert_error: Option<String>,
}

/// One backup repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoLine {
    /// Repository number (2 is the offsite).
    pub repo: u64,
    /// Newest good backup.
    pub last_good: Option<String>,
    /// When it finished.
    pub stopped_at: Option<String>,
    /// Hours since.
    pub age_hours: Option<f64>,
    /// Older than the policy, or none.
    pub stale: bool,
    /// Encrypted (None: pgBackRest does not list the repository).
    pub encrypted: Option<bool>,
}

/// Backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackupLine {
    /// Per repository.
    pub repos: Vec<RepoLine>,
    /// An offsite repository (repo2) is configured.
    pub offsite_configured: bool,
    /// The last restore drill (`ok`, `age_days`, ...), if any.
    pub last_drill: Option<Value>,
    /// Why backups could not be read.
    pub error: Option<String>,
}

/// One customer's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerConnections {
    /// Customer.
    pub customer: String,
    /// Database.
    pub database: String,
    /// Client backends connected to it.
    pub total: i64,
    /// Of which running a query.
    pub active: i64,
}

/// The summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// Server name.
    pub server: String,
    /// When.
    pub generated_at: DateTime<Utc>,
    /// Nothing needs attention.
    pub ok: bool,
    /// What needs attention, in words.
    pub attention: Vec<String>,
    /// The server.
    #[serde(rename = "server_state")]
    pub state: ServerLine,
    /// TLS.
    pub tls: TlsLine,
    /// Backups and offsite.
    pub backups: BackupLine,
    /// Customers on this server.
    pub customers: usize,
    /// Connections per customer (every customer, busiest first).
    pub connections: Vec<CustomerConnections>,
    /// fail2ban's current bans.
    pub bans: Bans,
}

/// Collect the summary of `server`. `on_host` reads the certificate and backups from local
/// files; `bans` comes from [`crate::fail2ban::bans`]. Never fails: what cannot be read says why.
pub async fn collect(
    config: &Config,
    server: &ServerConfig,
    on_host: bool,
    bans: Bans,
) -> StatusReport {
    use costplus_pgcluster::connect::connect;
    let opts = server.admin_connect_options();
    let (incident_client, catalog_client) = match &opts {
        Ok(o) => (
            connect(o).await.map_err(|e| e.to_string()),
            connect(o).await.ok(),
        ),
        Err(e) => (Err(e.to_string()), None),
    };
    let backups = {
        let (config, server) = (config.clone(), server.clone());
        tokio::task::spawn_blocking(move || extras::backup(&config, &server, on_host))
    };
    let incident = crate::incident::collect(
        incident_client,
        crate::incident::Inputs {
            server: server.name.clone(),
            since: Utc::now(),
            log_file: None,
            extra_paths: vec![],
            long_running_seconds: 3600,
            bans: bans.clone(),
        },
    );
    let catalog = async {
        match &catalog_client {
            Some(c) => facts::gather_catalog(c, &server.name, &config.naming)
                .await
                .ok(),
            None => None,
        }
    };
    let (incident, facts, backups) = tokio::join!(incident, catalog, backups);
    let backups = backups.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));

    let state = ServerLine {
        up: incident.state.accepting_connections,
        error: incident.state.error.clone(),
        version: incident.state.version.clone(),
        in_recovery: incident.state.in_recovery,
        uptime_seconds: incident.state.uptime_seconds,
    };
    let mut tls = TlsLine::default();
    let mut connections = Vec::new();
    let mut customers = 0;
    if let Some(f) = &facts {
        let s = |n: &str| f.settings.get(n).map(|s| s.value.clone());
        tls.ssl = s("ssl").map(|v| v == "on");
        tls.min_protocol = s("ssl_min_protocol_version");
        let cert = extras::tls_certificate(
            server,
            f,
            &extras::ExtraOptions {
                on_host,
                ..Default::default()
            },
            None,
        );
        tls.cert_days_left = cert["days_left"].as_i64();
        tls.cert_not_after = cert["not_after"].as_str().map(String::from);
        tls.cert_error = cert["error"].as_str().map(String::from);
        customers = f.customers.len();
        connections = f
            .customers
            .iter()
            .map(|c| {
                let mine = incident
                    .sessions
                    .iter()
                    .filter(|s| s.database == c.database);
                CustomerConnections {
                    customer: c.customer.clone(),
                    database: c.database.clone(),
                    total: mine.clone().map(|s| s.total).sum(),
                    active: mine.map(|s| s.active).sum(),
                }
            })
            .collect();
        connections.sort_by(|a, b| b.total.cmp(&a.total).then(a.customer.cmp(&b.customer)));
    } else {
        tls.cert_error = Some("the server could not be read".into());
    }
    let backup_line = BackupLine {
        repos: backups["repos"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let age = r["age_hours"].as_f64();
                RepoLine {
                    repo: r["repo"].as_u64().unwrap_or(0),
                    last_good: r["last_good"].as_str().map(String::from),
                    stopped_at: r["stopped_at"].as_str().map(String::from),
                    age_hours: age,
                    stale: match (age, r["stale_after_hours"].as_f64()) {
                        (Some(a), Some(limit)) => a > limit,
                        _ => true,
                    },
                    encrypted: r["encrypted"].as_bool(),
                }
            })
            .collect(),
        offsite_configured: config.offsite.is_some(),
        last_drill: Some(backups["drill"].clone()).filter(|d| !d.is_null()),
        error: backups["error"].as_str().map(String::from),
    };
    let mut attention = Vec::new();
    if !state.up {
        attention.push(format!(
            "server down: {}",
            state
                .error
                .as_deref()
                .unwrap_or("not accepting connections")
        ));
    }
    if tls.ssl == Some(false) {
        attention.push("ssl is off".into());
    }
    if let Some(d) = tls.cert_days_left
        && d < 30
    {
        attention.push(format!("the server certificate expires in {d} days"));
    }
    if let Some(e) = &backup_line.error {
        attention.push(format!("backups not checked: {e}"));
    }
    for r in backup_line.repos.iter().filter(|r| r.stale) {
        attention.push(match r.age_hours {
            Some(a) => format!("repo{}: newest good backup is {a:.1} h old", r.repo),
            None => format!("repo{}: no good backup", r.repo),
        });
    }
    if !backup_line.offsite_configured {
        attention.push("no offsite repository".into());
    }
    StatusReport {
        server: server.name.clone(),
        generated_at: Utc::now(),
        ok: attention.is_empty(),
        attention,
        state,
        tls,
        backups: backup_line,
        customers,
        connections,
        bans,
    }
}

fn duration(secs: i64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    }
}

impl StatusReport {
    /// One screen of text.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "costplus status of {}  {}  {}",
            self.server,
            self.generated_at.format("%Y-%m-%d %H:%M UTC"),
            if self.ok { "OK" } else { "NEEDS ATTENTION" }
        );
        let st = &self.state;
        let _ = writeln!(
            o,
            "server     {}",
            if st.up {
                format!(
                    "up {}{}",
                    st.uptime_seconds.map(duration).unwrap_or_default(),
                    match st.in_recovery {
                        Some(true) => ", in recovery (standby)",
                        Some(false) => ", primary",
                        None => "",
                    }
                )
            } else {
                format!("DOWN ({})", st.error.as_deref().unwrap_or("?"))
            }
        );
        let t = &self.tls;
        let _ = writeln!(
            o,
            "tls        ssl {}, min {}, certificate {}",
            match t.ssl {
                Some(true) => "on",
                Some(false) => "OFF",
                None => "?",
            },
            t.min_protocol.as_deref().unwrap_or("?"),
            match (t.cert_days_left, &t.cert_error) {
                (Some(d), _) => format!("{d} days left"),
                (None, Some(e)) => format!("unknown ({e})"),
                _ => "unknown".into(),
            }
        );
        let b = &self.backups;
        if let Some(e) = &b.error {
            let _ = writeln!(o, "backups    unknown ({e})");
        }
        for r in &b.repos {
            let _ = writeln!(
                o,
                "backup     repo{}{}: {}{}",
                r.repo,
                if r.repo == 2 { " (offsite)" } else { "" },
                match (&r.last_good, r.age_hours) {
                    (Some(l), Some(a)) => format!("{l}, {a:.1} h ago"),
                    _ => "no good backup".into(),
                },
                if r.stale { "  STALE" } else { "" }
            );
        }
        let _ = writeln!(
            o,
            "offsite    {}",
            if b.offsite_configured {
                "configured (repo2)"
            } else {
                "NOT configured"
            }
        );
        if let Some(d) = &b.last_drill {
            let _ = writeln!(
                o,
                "drill      {} {} days ago",
                if d["ok"] == true { "passed" } else { "FAILED" },
                d["age_days"]
                    .as_f64()
                    .map_or("?".into(), |a| format!("{a:.0}"))
            );
        }
        let busy: Vec<String> = self
            .connections
            .iter()
            .filter(|c| c.total > 0)
            .take(8)
            .map(|c| format!("{} {} ({} active)", c.customer, c.total, c.active))
            .collect();
        let _ = writeln!(
            o,
            "customers  {}, connected: {}",
            self.customers,
            if busy.is_empty() {
                "none".into()
            } else {
                busy.join(", ")
            }
        );
        let _ = writeln!(
            o,
            "bans       {}",
            match &self.bans {
                Bans::Active { banned, .. } if banned.is_empty() => "none".to_string(),
                Bans::Active { banned, .. } => format!("{} ({})", banned.len(), banned.join(" ")),
                Bans::Unknown { reason } => format!("unknown ({reason})"),
            }
        );
        for a in &self.attention {
            let _ = writeln!(o, "!          {a}");
        }
        o
    }
}
