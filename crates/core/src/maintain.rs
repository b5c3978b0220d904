//! Scheduled maintenance: `daily`, `weekly` and `monthly` runs of named steps, each run leaving
//! a JSON record in a state directory and sending a heartbeat (HTTP GET or POST to the URL an
//! uptime monitor gave) only when every step succeeded.
//!
//! A step is a name and an async function returning [`StepOutcome`]. A step that does not
//! apply (nothing configured for it) is `skipped` with the reason; it neither fails the run nor
//! counts as a check that passed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use costplus_fs::{WriteOptions, write_atomic};
use costplus_pgbackrest::schedule::UnitFile;

/// Which maintenance run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Backups, status, offsite check, disk.
    Daily,
    /// Log review (attackers), audit.
    Weekly,
    /// Restore drill, key and certificate expiry, full audit.
    Monthly,
}

impl Period {
    /// `daily`, `weekly` or `monthly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }
    /// The systemd `OnCalendar=` expression of the default schedule.
    pub fn on_calendar(self) -> &'static str {
        match self {
            Period::Daily => "*-*-* 02:30:00",
            Period::Weekly => "Sun *-*-* 04:00:00",
            Period::Monthly => "*-*-01 05:00:00",
        }
    }
    /// The crontab schedule fields of the default schedule.
    pub fn cron(self) -> &'static str {
        match self {
            Period::Daily => "30 2 * * *",
            Period::Weekly => "0 4 * * 0",
            Period::Monthly => "0 5 1 * *",
        }
    }
}

/// The `[maintenance]` section of costplus.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Where run records are kept.
    pub state_dir: PathBuf,
    /// Heartbeat URL per period (the uptime monitor's push URL); none: no heartbeat.
    pub heartbeat_daily: Option<String>,
    /// Heartbeat URL of the weekly run.
    pub heartbeat_weekly: Option<String>,
    /// Heartbeat URL of the monthly run.
    pub heartbeat_monthly: Option<String>,
    /// `get` (default) or `post` (the run record as the JSON body).
    pub heartbeat_method: HeartbeatMethod,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/costplus/maintenance"),
            heartbeat_daily: None,
            heartbeat_weekly: None,
            heartbeat_monthly: None,
            heartbeat_method: HeartbeatMethod::Get,
        }
    }
}

impl MaintenanceConfig {
    /// The heartbeat URL of `period`, if any.
    pub fn heartbeat(&self, period: Period) -> Option<&str> {
        match period {
            Period::Daily => self.heartbeat_daily.as_deref(),
            Period::Weekly => self.heartbeat_weekly.as_deref(),
            Period::Monthly => self.heartbeat_monthly.as_deref(),
        }
    }
}

/// How the heartbeat is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatMethod {
    /// `GET url`.
    #[default]
    Get,
    /// `POST url` with the run record as JSON.
    Post,
}

/// What a step reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum StepOutcome {
    /// It ran and succeeded.
    Ok {
        /// One line for the operator.
        message: String,
        /// Machine-readable details.
        details: serde_json::Value,
    },
    /// It ran and failed (or could not run although it applies).
    Failed {
        /// Why.
        message: String,
        /// Machine-readable details.
        details: serde_json::Value,
    },
    /// It does not apply here.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl StepOutcome {
    /// A success with no details.
    pub fn ok(message: impl Into<String>) -> Self {
        StepOutcome::Ok {
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }
    /// A failure with no details.
    pub fn failed(message: impl Into<String>) -> Self {
        StepOutcome::Failed {
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }
    fn is_failure(&self) -> bool {
        matches!(self, StepOutcome::Failed { .. })
    }
}

/// The future a step returns.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = StepOutcome> + Send + 'a>>;

/// One named step of a run.
pub struct Step<'a> {
    /// Stable name (`backup`, `status`, `offsite`, `disk`, `log-review`, `audit`, `drill`, ...).
    pub name: &'static str,
    /// The work.
    pub run: Box<dyn FnOnce() -> StepFuture<'a> + Send + 'a>,
}

impl std::fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A step's result in the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: StepOutcome,
    /// How long it took.
    pub seconds: f64,
}

/// What the heartbeat did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HeartbeatResult {
    /// No URL configured.
    NotConfigured,
    /// Not sent because the run failed.
    WithheldRunFailed,
    /// Sent; the monitor answered with this HTTP status.
    Sent {
        /// HTTP status.
        status: u16,
    },
    /// Sending failed.
    Error {
        /// Why (the URL is not repeated: it often carries a token).
        message: String,
    },
}

/// The machine-readable record of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Which run.
    pub period: Period,
    /// Which server.
    pub server: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// True when no step failed.
    pub ok: bool,
    /// Every step.
    pub steps: Vec<StepRecord>,
    /// The heartbeat.
    pub heartbeat: HeartbeatResult,
    /// Where this record was written.
    pub record_file: Option<PathBuf>,
}

/// Run the steps in order, write the record, send the heartbeat when everything succeeded.
pub async fn run(
    period: Period,
    server: &str,
    steps: Vec<Step<'_>>,
    cfg: &MaintenanceConfig,
) -> Result<RunRecord> {
    let started_at = Utc::now();
    let mut records = Vec::new();
    for step in steps {
        let t = Instant::now();
        tracing::info!("maintenance {}: {}", period.as_str(), step.name);
        let outcome = (step.run)().await;
        records.push(StepRecord {
            name: step.name.into(),
            outcome,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    let ok = !records.iter().any(|r| r.outcome.is_failure());
    let mut record = RunRecord {
        period,
        server: server.into(),
        started_at,
        finished_at: Utc::now(),
        ok,
        steps: records,
        heartbeat: HeartbeatResult::NotConfigured,
        record_file: None,
    };
    record.heartbeat = match (cfg.heartbeat(period), ok) {
        (None, _) => HeartbeatResult::NotConfigured,
        (Some(_), false) => HeartbeatResult::WithheldRunFailed,
        (Some(url), true) => send_heartbeat(url, cfg.heartbeat_method, &record).await,
    };
    record.record_file = Some(write_record(&cfg.state_dir, &record)?);
    Ok(record)
}

fn write_record(dir: &Path, record: &RunRecord) -> Result<PathBuf> {
    costplus_fs::create_dir_with_mode(dir, 0o750)?;
    let name = format!(
        "{}-{}.json",
        record.period.as_str(),
        record.started_at.format("%Y%m%dT%H%M%SZ")
    );
    let path = dir.join(name);
    let mut with_path = record.clone();
    with_path.record_file = Some(path.clone());
    let text = serde_json::to_vec_pretty(&with_path).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(
        &path,
        &text,
        &WriteOptions {
            mode: 0o640,
            owner: None,
        },
    )?;
    write_atomic(
        &dir.join(format!("last-{}.json", record.period.as_str())),
        &text,
        &WriteOptions {
            mode: 0o640,
            owner: None,
        },
    )?;
    Ok(path)
}

/// The last record of `period` in `dir`, if any.
pub fn last_record(dir: &Path, period: Period) -> Option<serde_json::Value> {
    let text = std::fs::read(dir.join(format!("last-{}.json", period.as_str()))).ok()?;
    serde_json::from_slice(&text).ok()
}

async fn send_heartbeat(url: &str, method: HeartbeatMethod, record: &RunRecord) -> HeartbeatResult {
    let url = url.to_string();
    let body = serde_json::to_vec(record).unwrap_or_default();
    let result = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        match method {
            HeartbeatMethod::Get => agent.get(&url).call(),
            HeartbeatMethod::Post => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&body[..]),
        }
        .map(|r| r.status().as_u16())
    })
    .await;
    match result {
        Ok(Ok(status)) if (200..300).contains(&status) => HeartbeatResult::Sent { status },
        Ok(Ok(status)) => HeartbeatResult::Error {
            message: format!("the monitor answered HTTP {status}"),
        },
        Ok(Err(e)) => HeartbeatResult::Error {
            message: strip_url(&e.to_string()),
        },
        Err(e) => HeartbeatResult::Error {
            message: e.to_string(),
        },
    }
}

/// Error texts may quote the URL; heartbeat URLs carry tokens, so cut anything URL-like.
fn strip_url(s: &str) -> String {
    s.split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// systemd service and timer units for the three runs.
pub fn systemd_units(binary: &Path, config: &Path) -> Vec<UnitFile> {
    let mut units = Vec::new();
    for p in [Period::Daily, Period::Weekly, Period::Monthly] {
        let name = format!("costplus-maintain-{}", p.as_str());
        units.push(UnitFile {
            name: format!("{name}.service"),
            contents: format!(
                "[Unit]\nDescription=costplus {p} maintenance\nAfter=postgresql.service network-online.target\nWants=network-online.target\n\n\
                 [Service]\nType=oneshot\nExecStart={bin} --config {cfg} {p}\nNice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n",
                p = p.as_str(),
                bin = binary.display(),
                cfg = config.display()
            ),
        });
        units.push(UnitFile {
            name: format!("{name}.timer"),
            contents: format!(
                "[Unit]\nDescription=costplus {p} maintenance\n\n[Timer]\nOnCalendar={cal}\nPersistent=true\nRandomizedDelaySec=300\n\n[Install]\nWantedBy=timers.target\n",
                p = p.as_str(),
                cal = p.on_calendar()
            ),
        });
    }
    units
}

/// The crontab alternative to [`systemd_units`]: `/etc/cron.d/costplus-maintain`.
pub fn crontab(binary: &Path, config: &Path) -> UnitFile {
    let mut s = String::from("# costplus maintenance (alternative to the systemd timers)\n");
    for p in [Period::Daily, Period::Weekly, Period::Monthly] {
        s.push_str(&format!(
            "{} root {} --config {} {}\n",
            p.cron(),
            binary.display(),
            config.display(),
            p.as_str()
        ));
    }
    UnitFile {
        name: "costplus-maintain".into(),
        contents: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &'static str, outcome: StepOutcome) -> Step<'static> {
        Step {
            name,
            run: Box::new(move || Box::pin(async move { outcome })),
        }
    }

    #[tokio::test]
    async fn failed_step_fails_the_run_and_withholds_the_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MaintenanceConfig {
            state_dir: dir.path().join("state"),
            heartbeat_daily: Some("http://127.0.0.1:9/never-called".into()),
            ..Default::default()
        };
        let steps = vec![
            step("status", StepOutcome::ok("up")),
            step("backup", StepOutcome::failed("exit 82")),
            step(
                "offsite",
                StepOutcome::Skipped {
                    reason: "no [offsite]".into(),
                },
            ),
        ];
        let r = run(Period::Daily, "s", steps, &cfg).await.unwrap();
        assert!(!r.ok);
        assert_eq!(r.heartbeat, HeartbeatResult::WithheldRunFailed);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(r.record_file.unwrap()).unwrap()).unwrap();
        assert_eq!(written["ok"], false);
        assert_eq!(written["steps"][1]["status"], "failed");
        assert_eq!(written["steps"][2]["status"], "skipped");
        assert_eq!(
            last_record(&cfg.state_dir, Period::Daily).unwrap()["ok"],
            false
        );
    }

    #[test]
    fn units_and_crontab_name_the_binary_and_config() {
        let units = systemd_units(
            Path::new("/usr/local/bin/costplus-maintain"),
            Path::new("/etc/costplus/costplus.toml"),
        );
        assert_eq!(units.len(), 6);
        let UnitFile {
            name,
            contents: daily,
        } = &units[0];
        assert_eq!(name, "costplus-maintain-daily.service");
        assert!(daily.contains(
            "ExecStart=/usr/local/bin/costplus-maintain --config /etc/costplus/costplus.toml daily"
        ));
        assert!(units[1].contents.contains("OnCalendar=*-*-* 02:30:00"));
        assert!(
            crontab(Path::new("/b"), Path::new("/c"))
                .contents
                .contains("0 5 1 * * root /b --config /c monthly")
        );
    }

    #[test]
    fn url_tokens_are_not_repeated() {
        assert_eq!(
            strip_url("connection refused: https://hc-ping.com/SECRET-UUID"),
            "connection refused: <url>"
        );
    }
}
