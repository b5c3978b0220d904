//! SARIF 2.1.0 output: one rule per check (stable ids), one result per check.

use serde_json::{Value, json};

use super::{AuditReport, CHECKS, Severity, Status};

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

fn file_uri(path: &str) -> String {
    if path.starts_with('/') {
        format!("file://{path}")
    } else {
        path.to_string()
    }
}

/// The report as a SARIF 2.1.0 log.
pub fn to_sarif(report: &AuditReport) -> Value {
    let rules: Vec<Value> = CHECKS
        .iter()
        .map(|c| {
            let mut props = json!({ "area": c.area, "severity": c.severity });
            if let Some(cis) = c.cis {
                props["cis"] = json!(cis);
            }
            json!({
                "id": c.id,
                "shortDescription": { "text": c.title },
                "fullDescription": { "text": c.title },
                "help": { "text": c.remediation },
                "defaultConfiguration": { "level": level(c.severity) },
                "properties": props,
            })
        })
        .collect();
    let results: Vec<Value> = report
        .checks
        .iter()
        .map(|r| {
            let index = CHECKS.iter().position(|c| c.id == r.id).unwrap_or(0);
            let (kind, lvl) = match r.status {
                Status::Pass => ("pass", "none"),
                Status::Fail => ("fail", level(r.severity)),
                Status::Unknown => ("review", "none"),
            };
            let mut v = json!({
                "ruleId": r.id,
                "ruleIndex": index,
                "kind": kind,
                "level": lvl,
                "message": { "text": format!("{}: {}", r.title, r.evidence) },
            });
            if !r.locations.is_empty() {
                v["locations"] = Value::Array(
                    r.locations
                        .iter()
                        .map(|l| {
                            let mut phys =
                                json!({ "artifactLocation": { "uri": file_uri(&l.file) } });
                            if let Some(line) = l.line.filter(|n| *n > 0) {
                                phys["region"] = json!({ "startLine": line });
                            }
                            json!({ "physicalLocation": phys })
                        })
                        .collect(),
                );
            }
            v
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "costplus-audit",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/costplus",
                "rules": rules,
            }},
            "properties": { "server": report.server, "score": report.score, "rating": report.rating },
            "results": results,
        }]
    })
}
