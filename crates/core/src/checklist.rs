//! The pre-launch checklist: seven items an operator ticks before the first paying customer,
//! each decided live from the audit report (and, for monitoring, the configuration), with the
//! command that fixes it.
//!
//! | item | ticked when |
//! |---|---|
//! | `tls-enforced` | TLS-001, TLS-002, TLS-009 and AUTH-007 pass (TLS on, 1.2+ only on the wire, network logins only over hostssl) |
//! | `fail2ban-configured` | HOST-001 passes (the jail runs) |
//! | `isolation-tested` | ROLE-012 passes (the isolation proof found no violation) |
//! | `backup-encryption` | BAK-003 passes (every repository aes-256-cbc) |
//! | `offsite-configured` | BAK-004 and BAK-002 pass (repo2 configured and holding a fresh backup) |
//! | `restore-tested` | BAK-005 passes (a drill passed within 35 days) |
//! | `monitoring-set-up` | `[maintenance]` has a `heartbeat_*` URL (the uptime monitor hears from the runs) |
//!
//! An item whose checks could not run (`unknown`) is not ticked: the evidence says why.

use serde::Serialize;

use crate::audit::{AuditReport, Status};
use crate::config::Config;

/// One checklist item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Stable id (`tls-enforced`).
    pub id: &'static str,
    /// What should be true.
    pub title: &'static str,
    /// Ticked.
    pub ok: bool,
    /// `ticked`, `not-ticked` (the evidence shows it is not done) or `unknown` (could not be
    /// checked; not ticked either).
    pub state: &'static str,
    /// What was seen.
    pub evidence: String,
    /// The command(s) that fix it (empty when ticked).
    pub fix: String,
    /// The audit checks the item is decided by.
    pub checks: Vec<&'static str>,
}

/// The checklist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checklist {
    /// Server.
    pub server: String,
    /// Items ticked.
    pub ticked: usize,
    /// Every item, in order.
    pub items: Vec<Item>,
}

impl Checklist {
    /// Whether every item is ticked.
    pub fn complete(&self) -> bool {
        self.ticked == self.items.len()
    }

    /// The checklist as text: `[x]` / `[ ]` per item, the evidence and the fix under an
    /// unticked one.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pre-launch checklist of {}: {}/{} ticked",
            self.server,
            self.ticked,
            self.items.len()
        );
        for i in &self.items {
            let mark = if i.ok { "[x]" } else { "[ ]" };
            let _ = writeln!(out, "{mark} {:<20} {}", i.id, i.title);
            let _ = writeln!(out, "      saw: {}", i.evidence);
            if !i.ok {
                let _ = writeln!(out, "      fix: {}", i.fix);
            }
        }
        out
    }
}

struct Spec {
    id: &'static str,
    title: &'static str,
    checks: &'static [&'static str],
    fix: &'static str,
}

const FROM_AUDIT: &[Spec] = &[
    Spec {
        id: "tls-enforced",
        title: "TLS is on and enforced (TLS 1.2+ only, network logins only over hostssl)",
        checks: &["TLS-001", "TLS-002", "TLS-009", "AUTH-007"],
        fix: "costplus-tls issue (certificate), ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'; SELECT pg_reload_conf(); then costplus-hba lint and replace host lines by hostssl",
    },
    Spec {
        id: "fail2ban-configured",
        title: "a fail2ban jail bans PostgreSQL password guessers",
        checks: &["HOST-001"],
        fix: "costplus-fail2ban install",
    },
    Spec {
        id: "isolation-tested",
        title: "customer isolation is proven (no customer reaches another's database)",
        checks: &["ROLE-012"],
        fix: "costplus-isolation check, then fix every violation it lists",
    },
    Spec {
        id: "backup-encryption",
        title: "every backup repository is encrypted (aes-256-cbc)",
        checks: &["BAK-003"],
        fix: "costplus-backup setup (creates encrypted repositories; encryption cannot be added to an existing one)",
    },
    Spec {
        id: "offsite-configured",
        title: "an offsite repository (repo2) is configured and holds a fresh backup",
        checks: &["BAK-004", "BAK-002"],
        fix: "add an [offsite] section, costplus-backup setup, then costplus-backup run --type full --repo 2",
    },
    Spec {
        id: "restore-tested",
        title: "a restore drill passed within the last 35 days",
        checks: &["BAK-005"],
        fix: "costplus-backup drill",
    },
];

/// Build the checklist from an audit report of the server and the configuration.
pub fn evaluate(report: &AuditReport, config: &Config) -> Checklist {
    let mut items: Vec<Item> = FROM_AUDIT
        .iter()
        .map(|spec| {
            let results: Vec<_> = spec
                .checks
                .iter()
                .filter_map(|id| report.checks.iter().find(|c| c.id == *id))
                .collect();
            let all_pass = results.len() == spec.checks.len()
                && results.iter().all(|c| c.status == Status::Pass);
            let any_fail = results.iter().any(|c| c.status == Status::Fail);
            let evidence = results
                .iter()
                .map(|c| {
                    let st = match c.status {
                        Status::Pass => "pass",
                        Status::Fail => "FAIL",
                        Status::Unknown => "unknown",
                    };
                    format!("{} {st}: {}", c.id, c.evidence)
                })
                .collect::<Vec<_>>()
                .join("; ");
            Item {
                id: spec.id,
                title: spec.title,
                ok: all_pass,
                state: state(all_pass, any_fail),
                evidence,
                fix: if all_pass {
                    String::new()
                } else {
                    spec.fix.into()
                },
                checks: spec.checks.to_vec(),
            }
        })
        .collect();
    items.push(monitoring(config));
    Checklist {
        server: report.server.clone(),
        ticked: items.iter().filter(|i| i.ok).count(),
        items,
    }
}

fn state(ok: bool, failed: bool) -> &'static str {
    match (ok, failed) {
        (true, _) => "ticked",
        (false, true) => "not-ticked",
        (false, false) => "unknown",
    }
}

fn monitoring(config: &Config) -> Item {
    let urls: Vec<&str> = config
        .maintenance
        .as_ref()
        .map(|m| {
            [
                ("daily", &m.heartbeat_daily),
                ("weekly", &m.heartbeat_weekly),
                ("monthly", &m.heartbeat_monthly),
            ]
            .into_iter()
            .filter(|(_, u)| u.as_deref().is_some_and(|u| !u.trim().is_empty()))
            .map(|(p, _)| p)
            .collect()
        })
        .unwrap_or_default();
    let ok = !urls.is_empty();
    Item {
        id: "monitoring-set-up",
        title: "an uptime monitor hears from the maintenance runs (heartbeat URLs)",
        ok,
        state: state(ok, !ok),
        evidence: match (&config.maintenance, ok) {
            (None, _) => format!("{}: no [maintenance] section", config.path.display()),
            (Some(_), false) => "[maintenance] has no heartbeat_* URL".into(),
            // The URLs are the monitor's secrets: name the runs, not the URLs.
            (Some(_), true) => format!("heartbeat configured for the {} run(s)", urls.join(", ")),
        },
        fix: if ok {
            String::new()
        } else {
            "set [maintenance] heartbeat_daily = \"<your uptime monitor's push URL>\" in costplus.toml (and scrape costplus-exporter --listen 127.0.0.1:9187)".into()
        },
        checks: vec![],
    }
}
