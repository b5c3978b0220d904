//! The security audit: every check of the posture (TLS, authentication, roles and isolation,
//! logging, backups, host) with a stable id, a severity, the evidence it saw and the fix.
//!
//! Checks are pure functions of [`Facts`]; gathering is separate ([`facts::gather_catalog`],
//! [`facts::gather_host`], and [`extras::gather_extras`] for `Facts::extra`: the certificate,
//! the TLS probe, the pg_hba lint, the isolation proof and the backups). [`gather`] does all. A check that cannot see its evidence
//! reports `unknown` with the reason, never `pass`.
//!
//! # Score
//!
//! Each check weighs by its severity: critical 10, high 6, medium 3, low 1, info 0. The score is
//! `100 × (weight of passing checks) / (weight of all checks)`, rounded; an `unknown` earns
//! nothing, so missing evidence lowers the score. Ratings: 90+ Excellent, 75+ Good, 60+ Fair,
//! 40+ Poor, below Critical. "Raise it most" lists the failing and unknown checks by the points
//! each would add.

pub mod checks;
pub mod extras;
pub mod facts;
mod sarif;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use checks::{Area, CHECKS, Location, Severity, Status};
pub use facts::Facts;
pub use sarif::to_sarif;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// Stable id.
    pub id: &'static str,
    /// Area.
    pub area: Area,
    /// Severity when failing.
    pub severity: Severity,
    /// Pass, fail or unknown.
    pub status: Status,
    /// What should be true.
    pub title: &'static str,
    /// What the check saw.
    pub evidence: String,
    /// How to fix it.
    pub remediation: &'static str,
    /// CIS PostgreSQL benchmark item.
    pub cis: Option<&'static str>,
    /// Files and lines concerned.
    pub locations: Vec<Location>,
}

/// A check that would raise the score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Improvement {
    /// Check id.
    pub id: &'static str,
    /// Points it would add.
    pub points: f64,
    /// The fix.
    pub remediation: &'static str,
}

/// The audit report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    /// Schema version of this JSON.
    pub schema: u32,
    /// Server audited.
    pub server: String,
    /// When.
    pub generated_at: DateTime<Utc>,
    /// 0..100.
    pub score: u32,
    /// Excellent, Good, Fair, Poor or Critical.
    pub rating: &'static str,
    /// Counts of pass / fail / unknown.
    pub summary: Summary,
    /// Every check, in catalog order.
    pub checks: Vec<CheckResult>,
    /// What would raise the score most, best first (at most 10).
    pub raise_score: Vec<Improvement>,
}

/// Counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Passing checks.
    pub pass: usize,
    /// Failing checks.
    pub fail: usize,
    /// Checks that could not run.
    pub unknown: usize,
}

/// Run every check over `facts`.
pub fn evaluate(facts: &Facts) -> AuditReport {
    let results: Vec<CheckResult> = CHECKS
        .iter()
        .map(|c| {
            let o = (c.run)(facts);
            CheckResult {
                id: c.id,
                area: c.area,
                severity: c.severity,
                status: o.status,
                title: c.title,
                evidence: o.evidence,
                remediation: c.remediation,
                cis: c.cis,
                locations: o.locations,
            }
        })
        .collect();
    let total: u32 = results.iter().map(|r| r.severity.weight()).sum();
    let earned: u32 = results
        .iter()
        .filter(|r| r.status == Status::Pass)
        .map(|r| r.severity.weight())
        .sum();
    let score = if total == 0 {
        100
    } else {
        ((f64::from(earned) * 100.0) / f64::from(total)).round() as u32
    };
    let mut raise: Vec<Improvement> = results
        .iter()
        .filter(|r| r.status != Status::Pass && r.severity.weight() > 0)
        .map(|r| Improvement {
            id: r.id,
            points: (f64::from(r.severity.weight()) * 1000.0 / f64::from(total.max(1))).round()
                / 10.0,
            remediation: r.remediation,
        })
        .collect();
    raise.sort_by(|a, b| b.points.total_cmp(&a.points).then(a.id.cmp(b.id)));
    raise.truncate(10);
    let summary = Summary {
        pass: results.iter().filter(|r| r.status == Status::Pass).count(),
        fail: results.iter().filter(|r| r.status == Status::Fail).count(),
        unknown: results
            .iter()
            .filter(|r| r.status == Status::Unknown)
            .count(),
    };
    AuditReport {
        schema: 1,
        server: facts.server.clone(),
        generated_at: Utc::now(),
        score,
        rating: rating(score),
        summary,
        checks: results,
        raise_score: raise,
    }
}

/// The rating word of a score.
pub fn rating(score: u32) -> &'static str {
    match score {
        90.. => "Excellent",
        75..=89 => "Good",
        60..=74 => "Fair",
        40..=59 => "Poor",
        _ => "Critical",
    }
}

impl AuditReport {
    /// Whether any check fails at or above `threshold`.
    pub fn fails_at(&self, threshold: Severity) -> bool {
        self.checks
            .iter()
            .any(|c| c.status == Status::Fail && c.severity >= threshold)
    }

    /// The ids of failing checks.
    pub fn failing_ids(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect()
    }

    /// The report as text, grouped by area; `color` adds ANSI colours.
    pub fn render_text(&self, color: bool) -> String {
        use std::fmt::Write;
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "costplus audit of {}: {}/100 ({})",
            self.server, self.score, self.rating
        );
        let _ = writeln!(
            out,
            "{} pass, {} fail, {} unknown",
            self.summary.pass, self.summary.fail, self.summary.unknown
        );
        let mut area = None;
        for c in &self.checks {
            if area != Some(c.area) {
                area = Some(c.area);
                let _ = writeln!(
                    out,
                    "\n== {}",
                    serde_json::to_value(c.area)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_uppercase))
                        .unwrap_or_default()
                );
            }
            let mark = match c.status {
                Status::Pass => paint("32", "PASS"),
                Status::Fail => paint("31", "FAIL"),
                Status::Unknown => paint("33", "????"),
            };
            let sev = serde_json::to_value(c.severity)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let _ = writeln!(out, "{mark} {:<9} {:<8} {}", c.id, sev, c.title);
            if c.status != Status::Pass {
                let _ = writeln!(out, "     saw: {}", c.evidence);
                if c.status == Status::Fail {
                    let _ = writeln!(out, "     fix: {}", c.remediation);
                }
            }
        }
        if !self.raise_score.is_empty() {
            let _ = writeln!(out, "\n== what would raise the score most");
            for i in &self.raise_score {
                let _ = writeln!(out, "+{:>4.1}  {:<9} {}", i.points, i.id, i.remediation);
            }
        }
        out
    }
}

/// Gather every fact for `server`: the catalog over an admin connection, inside each customer
/// database (over the Unix socket when the cluster is local, else the admin TCP connection),
/// the host (when `on_host`), and the extra facts ([`extras::gather_extras`]: certificate, TLS
/// probe, pg_hba lint, isolation proof, backups; files are read only when `on_host`).
pub async fn gather(
    config: &crate::config::Config,
    server: &crate::config::ServerConfig,
    on_host: bool,
) -> crate::Result<Facts> {
    use costplus_pgcluster::connect::{ConnectOptions, SslMode, connect};
    let admin_opts = server.admin_connect_options()?;
    let admin = connect(&admin_opts).await?;
    let mut facts = facts::gather_catalog(&admin, &server.name, &config.naming)
        .await
        .map_err(costplus_pgcluster::Error::from)?;
    let socket = server
        .cluster_root
        .as_ref()
        .map(|r| r.join("run"))
        .filter(|p| p.is_dir());
    facts::gather_customer_dbs(
        &mut facts,
        |db| {
            let mut o = admin_opts.clone();
            o.dbname = db;
            if let Some(dir) = &socket {
                o = ConnectOptions {
                    host: dir.to_string_lossy().into_owned(),
                    ssl: SslMode::Disable,
                    password: None,
                    ..o
                };
            }
            async move { connect(&o).await.ok() }
        },
        8,
    )
    .await;
    if on_host {
        let data = facts
            .settings
            .get("data_directory")
            .map(|s| std::path::PathBuf::from(&s.value));
        let mut paths = Vec::new();
        if let Some(d) = &data {
            paths.push(("data".to_string(), d.clone()));
        }
        if let Some(b) = &config.backup {
            paths.push(("repository".to_string(), b.repo1_path.clone()));
        }
        facts.host = facts::gather_host(data.as_deref(), &paths);
    }
    let opts = extras::ExtraOptions {
        on_host,
        ..Default::default()
    };
    extras::gather_extras(config, server, &admin, &mut facts, &opts).await;
    Ok(facts)
}
