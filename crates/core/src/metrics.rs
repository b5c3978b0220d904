//! Prometheus metrics for the external monitor: what [`collect`] gathers and [`render`] writes
//! in the Prometheus text exposition format. The HTTP endpoint is [`crate::exporter`].

use std::fmt::Write;

use serde::Serialize;

use crate::config::{NamingPolicy, ServerConfig};

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Metric name (with the `costplus_` prefix).
    pub name: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: f64,
}

/// Help text and type of each metric, in output order.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "costplus_up",
        "gauge",
        "1 when an admin connection to the server succeeds.",
    ),
    (
        "costplus_customers",
        "gauge",
        "Customers on the server (databases named by the policy and owned by their role).",
    ),
    (
        "costplus_connections",
        "gauge",
        "Client sessions per database and role.",
    ),
    (
        "costplus_failed_logins",
        "gauge",
        "Failed logins in the server log over the last hour.",
    ),
    (
        "costplus_certificate_days_left",
        "gauge",
        "Days until the server certificate expires.",
    ),
    (
        "costplus_backup_age_seconds",
        "gauge",
        "Seconds since the last good backup, per repository.",
    ),
    (
        "costplus_drill_ok",
        "gauge",
        "1 when the last restore drill passed.",
    ),
    (
        "costplus_drill_duration_seconds",
        "gauge",
        "Duration of the last restore drill.",
    ),
    (
        "costplus_audit_failures",
        "gauge",
        "Failing audit checks by severity, from the last maintenance audit.",
    ),
    (
        "costplus_audit_score",
        "gauge",
        "Posture score (0..100) of the last maintenance audit.",
    ),
    (
        "costplus_maintenance_ok",
        "gauge",
        "1 when the last maintenance run of the period succeeded.",
    ),
    (
        "costplus_maintenance_age_seconds",
        "gauge",
        "Seconds since the last maintenance run of the period started.",
    ),
    (
        "costplus_scrape_duration_seconds",
        "gauge",
        "Time spent collecting these metrics.",
    ),
];

/// Render samples in the Prometheus text format, grouped by family with HELP and TYPE.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let family: Vec<&Sample> = samples.iter().filter(|s| s.name == *name).collect();
        if family.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in family {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let value = if s.value.is_finite() {
                s.value.to_string()
            } else {
                "NaN".into()
            };
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
            }
        }
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Collect the metrics of one server. `client` is an admin connection or the error of making one.
pub async fn collect(
    server: &ServerConfig,
    naming: &NamingPolicy,
    client: Result<&tokio_postgres::Client, String>,
) -> Vec<Sample> {
    let started = std::time::Instant::now();
    let srv = || ("server", server.name.clone());
    let mut out = Vec::new();
    let up = match client {
        Ok(client) => match query(client, naming, &server.name).await {
            Ok(mut samples) => {
                out.append(&mut samples);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "metrics query failed: {}",
                    costplus_pgcluster::pg_message(&e)
                );
                false
            }
        },
        Err(e) => {
            tracing::warn!("metrics: cannot connect to {}: {e}", server.name);
            false
        }
    };
    out.insert(
        0,
        Sample {
            name: "costplus_up",
            labels: vec![srv()],
            value: f64::from(u8::from(up)),
        },
    );
    if let Some(n) = server.log_file.as_deref().and_then(failed_logins_last_hour) {
        out.push(Sample {
            name: "costplus_failed_logins",
            labels: vec![srv(), ("window", "1h".into())],
            value: n as f64,
        });
    }
    out.push(Sample {
        name: "costplus_scrape_duration_seconds",
        labels: vec![srv()],
        value: started.elapsed().as_secs_f64(),
    });
    out
}

async fn query(
    client: &tokio_postgres::Client,
    naming: &NamingPolicy,
    server: &str,
) -> Result<Vec<Sample>, tokio_postgres::Error> {
    client.batch_execute("SET statement_timeout = '5s'").await?;
    let mut out = Vec::new();
    let dbs = client
        .query(
            "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
             WHERE NOT d.datistemplate LIMIT 100000",
            &[],
        )
        .await?;
    let customers = dbs
        .iter()
        .filter(|r| {
            let (db, owner): (String, String) = (r.get(0), r.get(1));
            naming
                .customer_of_database(&db)
                .is_some_and(|c| naming.role_for(&c) == owner)
        })
        .count();
    out.push(Sample {
        name: "costplus_customers",
        labels: vec![("server", server.into())],
        value: customers as f64,
    });
    for r in client
        .query(
            "SELECT coalesce(datname, ''), coalesce(usename, ''), count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 5000",
            &[],
        )
        .await?
    {
        out.push(Sample {
            name: "costplus_connections",
            labels: vec![("server", server.into()), ("database", r.get(0)), ("user", r.get(1))],
            value: r.get::<_, i64>(2) as f64,
        });
    }
    Ok(out)
}

/// The certificate's days left, when the server's certificate file is readable here.
pub async fn certificate(server: &str, client: &tokio_postgres::Client) -> Vec<Sample> {
    match crate::servercert::read(client).await {
        Ok(c) => vec![Sample {
            name: "costplus_certificate_days_left",
            labels: vec![
                ("server", server.into()),
                ("file", c.path.to_string_lossy().into_owned()),
            ],
            value: c.days_left as f64,
        }],
        Err(e) => {
            tracing::debug!("metrics: server certificate not read: {e}");
            Vec::new()
        }
    }
}

/// Seconds since the newest good backup per repository, from pgBackRest's `info`.
pub fn backups(server: &str, info: &costplus_pgbackrest::info::Stanza, now: i64) -> Vec<Sample> {
    let mut repos: Vec<u32> = info.repo.iter().map(|r| r.key).collect();
    repos.sort_unstable();
    repos
        .into_iter()
        .filter_map(|repo| {
            let newest = info
                .backups_in(repo)
                .filter(|b| b.error != Some(true))
                .map(|b| b.timestamp.stop)
                .max()?;
            Some(Sample {
                name: "costplus_backup_age_seconds",
                labels: vec![("server", server.into()), ("repo", repo.to_string())],
                value: (now - newest).max(0) as f64,
            })
        })
        .collect()
}

/// The last restore drill per repository (from the drill history records): result and duration.
pub fn drills(server: &str, history: &[serde_json::Value]) -> Vec<Sample> {
    let mut last: std::collections::BTreeMap<u64, &serde_json::Value> = Default::default();
    for r in history {
        if let Some(repo) = r["repo"].as_u64() {
            last.insert(repo, r);
        }
    }
    let mut out = Vec::new();
    for (repo, r) in last {
        let labels = vec![("server", server.to_string()), ("repo", repo.to_string())];
        out.push(Sample {
            name: "costplus_drill_ok",
            labels: labels.clone(),
            value: if r["ok"] == true { 1.0 } else { 0.0 },
        });
        if let Some(t) = r["timings"]["total_seconds"].as_f64() {
            out.push(Sample {
                name: "costplus_drill_duration_seconds",
                labels,
                value: t,
            });
        }
    }
    out
}

/// Maintenance runs (ok, age per period) and the audit failures of the newest run that audited.
pub fn maintenance(
    server: &str,
    records: &[(crate::maintain::Period, serde_json::Value)],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut newest_audit: Option<(chrono::DateTime<chrono::Utc>, &serde_json::Value)> = None;
    for (period, r) in records {
        let labels = vec![
            ("server", server.to_string()),
            ("period", period.as_str().to_string()),
        ];
        out.push(Sample {
            name: "costplus_maintenance_ok",
            labels: labels.clone(),
            value: if r["ok"] == true { 1.0 } else { 0.0 },
        });
        let started = r["started_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        if let Some(t) = started {
            out.push(Sample {
                name: "costplus_maintenance_age_seconds",
                labels,
                value: (now - t).num_seconds().max(0) as f64,
            });
            let audit =
                r["steps"].as_array().into_iter().flatten().find(|s| {
                    s["name"] == "audit" && s["details"]["failures_by_severity"].is_object()
                });
            if let Some(a) = audit
                && newest_audit.is_none_or(|(n, _)| t > n)
            {
                newest_audit = Some((t, a));
            }
        }
    }
    if let Some((_, a)) = newest_audit {
        for sev in ["critical", "high", "medium", "low", "info"] {
            out.push(Sample {
                name: "costplus_audit_failures",
                labels: vec![
                    ("server", server.to_string()),
                    ("severity", sev.to_string()),
                ],
                value: a["details"]["failures_by_severity"][sev]
                    .as_f64()
                    .unwrap_or(0.0),
            });
        }
        if let Some(score) = a["details"]["score"].as_f64() {
            out.push(Sample {
                name: "costplus_audit_score",
                labels: vec![("server", server.to_string())],
                value: score,
            });
        }
    }
    out
}

/// Failed logins in the last hour, reading at most the last 16 MiB of the log.
fn failed_logins_last_hour(path: &std::path::Path) -> Option<usize> {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 16 << 20;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let failures =
        crate::pglog::login_failures(&crate::pglog::parse(&String::from_utf8_lossy(&buf)));
    Some(failures.iter().filter(|f| f.time >= since).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_in_order_with_escaped_labels() {
        let text = render(&[
            Sample {
                name: "costplus_connections",
                labels: vec![("database", "a\"b".into())],
                value: 2.0,
            },
            Sample {
                name: "costplus_up",
                labels: vec![],
                value: 1.0,
            },
        ]);
        assert_eq!(
            text,
            "# HELP costplus_up 1 when an admin connection to the server succeeds.\n# TYPE costplus_up gauge\ncostplus_up 1\n\
             # HELP costplus_connections Client sessions per database and role.\n# TYPE costplus_connections gauge\n\
             costplus_connections{database=\"a\\\"b\"} 2\n"
        );
    }

    #[test]
    fn drills_keep_the_last_record_per_repository() {
        let h = vec![
            serde_json::json!({"repo": 1, "ok": false, "timings": {"total_seconds": 9.0}}),
            serde_json::json!({"repo": 2, "ok": true, "timings": {"total_seconds": 4.0}}),
            serde_json::json!({"repo": 1, "ok": true, "timings": {"total_seconds": 7.5}}),
        ];
        let text = render(&drills("s", &h));
        assert!(
            text.contains("costplus_drill_ok{server=\"s\",repo=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("costplus_drill_duration_seconds{server=\"s\",repo=\"1\"} 7.5\n"),
            "{text}"
        );
        assert!(
            text.contains("costplus_drill_ok{server=\"s\",repo=\"2\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn audit_failures_come_from_the_newest_run_that_audited() {
        use crate::maintain::Period;
        let now = chrono::Utc::now();
        let run = |ago_h: i64, ok: bool, high: u64, score: u64| {
            serde_json::json!({
                "ok": ok,
                "started_at": (now - chrono::Duration::hours(ago_h)).to_rfc3339(),
                "steps": [{"name": "audit", "details": {"score": score, "failures_by_severity": {"high": high}}}],
            })
        };
        let records = vec![
            (
                Period::Daily,
                serde_json::json!({"ok": true, "started_at": now.to_rfc3339(), "steps": []}),
            ),
            (Period::Weekly, run(2, false, 3, 60)),
            (Period::Monthly, run(200, true, 0, 95)),
        ];
        let text = render(&maintenance("s", &records, now));
        assert!(
            text.contains("costplus_audit_failures{server=\"s\",severity=\"high\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("costplus_audit_failures{server=\"s\",severity=\"critical\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("costplus_audit_score{server=\"s\"} 60\n"),
            "{text}"
        );
        assert!(
            text.contains("costplus_maintenance_ok{server=\"s\",period=\"weekly\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "costplus_maintenance_age_seconds{server=\"s\",period=\"monthly\"} 720000\n"
            ),
            "{text}"
        );
    }
}
