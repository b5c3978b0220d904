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
        "Failing audit checks by severity.",
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
    client: Result<tokio_postgres::Client, String>,
) -> Vec<Sample> {
    let started = std::time::Instant::now();
    let srv = || ("server", server.name.clone());
    let mut out = Vec::new();
    let up = match client {
        Ok(client) => match query(&client, naming, &server.name).await {
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
}
