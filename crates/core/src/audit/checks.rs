//! The checks: stable ids, severity, what each looks at, how to fix it.

use serde::Serialize;
use serde_json::Value;

use super::facts::{DANGEROUS_ROLES, Facts};

/// How bad a failing check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical: fix now.
    Critical,
}

impl Severity {
    /// Weight in the posture score (documented in the crate docs).
    pub fn weight(self) -> u32 {
        match self {
            Severity::Info => 0,
            Severity::Low => 1,
            Severity::Medium => 3,
            Severity::High => 6,
            Severity::Critical => 10,
        }
    }
    /// Parse `low|medium|high|critical|info`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// Result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The evidence shows it is right.
    Pass,
    /// The evidence shows it is wrong.
    Fail,
    /// The check could not run (no permission, tool missing, not collected): never a pass.
    Unknown,
}

/// Area of the posture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// TLS and certificates.
    Tls,
    /// Authentication and pg_hba.conf.
    Authentication,
    /// Roles, privileges and customer isolation.
    Roles,
    /// Server logging.
    Logging,
    /// Backups, offsite, restore drills.
    Backups,
    /// The host: firewall, SSH, fail2ban, disks, updates.
    Host,
}

/// Where the evidence lives (for SARIF and for the operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// File.
    pub file: String,
    /// Line, when known.
    pub line: Option<u32>,
}

/// What a check function returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Pass, fail or unknown.
    pub status: Status,
    /// What it saw.
    pub evidence: String,
    /// Where.
    pub locations: Vec<Location>,
}

fn pass(e: impl Into<String>) -> Outcome {
    Outcome {
        status: Status::Pass,
        evidence: e.into(),
        locations: vec![],
    }
}
fn fail(e: impl Into<String>) -> Outcome {
    Outcome {
        status: Status::Fail,
        evidence: e.into(),
        locations: vec![],
    }
}
fn unknown(e: impl Into<String>) -> Outcome {
    Outcome {
        status: Status::Unknown,
        evidence: e.into(),
        locations: vec![],
    }
}
fn verdict(ok: bool, good: impl Into<String>, bad: impl Into<String>) -> Outcome {
    if ok { pass(good) } else { fail(bad) }
}

/// A check's fixed description.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Stable id (`TLS-001`).
    pub id: &'static str,
    /// Area.
    pub area: Area,
    /// Severity when it fails.
    pub severity: Severity,
    /// What it checks, as a statement that should be true.
    pub title: &'static str,
    /// How to fix a failure.
    pub remediation: &'static str,
    /// The CIS PostgreSQL benchmark item it maps to, when one does.
    pub cis: Option<&'static str>,
    /// The check.
    pub run: fn(&Facts) -> Outcome,
}

fn setting<'a>(f: &'a Facts, name: &str) -> Option<&'a str> {
    f.settings.get(name).map(|s| s.value.as_str())
}

fn setting_check(f: &Facts, name: &str, ok: impl Fn(&str) -> bool) -> Outcome {
    match f.settings.get(name) {
        None => unknown(format!("{name} could not be read")),
        Some(s) => {
            let mut o = verdict(
                ok(&s.value),
                format!("{name} = {}", s.value),
                format!("{name} = {}", s.value),
            );
            if let Some(file) = &s.file {
                o.locations.push(Location {
                    file: file.clone(),
                    line: s.line.map(|l| l as u32),
                });
            }
            o
        }
    }
}

fn is_network(kind: &Option<String>) -> bool {
    matches!(
        kind.as_deref(),
        Some("host" | "hostssl" | "hostnossl" | "hostgssenc" | "hostnogssenc")
    )
}

fn hba_lines(f: &Facts, pred: impl Fn(&super::facts::HbaRule) -> bool) -> Outcome {
    if f.hba.is_empty() {
        return unknown("pg_hba_file_rules could not be read (superuser needed)");
    }
    let bad: Vec<_> = f.hba.iter().filter(|r| pred(r)).collect();
    let file = f.hba_file.clone().unwrap_or_else(|| "pg_hba.conf".into());
    let mut o = verdict(
        bad.is_empty(),
        "no such line",
        format!(
            "lines {}",
            bad.iter()
                .map(|r| format!(
                    "{} ({} {} {})",
                    r.line,
                    r.kind.as_deref().unwrap_or("?"),
                    r.address.as_deref().unwrap_or(""),
                    r.method.as_deref().unwrap_or("?")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    o.locations = bad
        .iter()
        .map(|r| Location {
            file: file.clone(),
            line: Some(r.line as u32),
        })
        .collect();
    o
}

/// Pass when no customer database matches `bad`; the failing evidence names those that do.
fn no_customer_db(f: &Facts, bad: impl Fn(&super::facts::CustomerDb) -> bool) -> Outcome {
    let b: Vec<&str> = f
        .customers
        .iter()
        .filter(|c| bad(c))
        .map(|c| c.database.as_str())
        .collect();
    verdict(
        b.is_empty(),
        format!("{} customer databases checked", f.customers.len()),
        b.join(", "),
    )
}

fn customer_roles(f: &Facts) -> Vec<&super::facts::Role> {
    f.customers
        .iter()
        .filter_map(|c| f.roles.get(&c.owner))
        .collect()
}

fn extra<'a>(f: &'a Facts, key: &str) -> Result<&'a Value, Outcome> {
    match f.extra.get(key) {
        Some(Value::Object(m)) if m.get("error").is_some_and(|e| !e.is_null()) => Err(unknown(
            m["error"].as_str().unwrap_or("not available").to_string(),
        )),
        Some(v) => Ok(v),
        None => Err(unknown(format!("{key} information not collected"))),
    }
}

fn sshd<'a>(f: &'a Facts, key: &str) -> Result<&'a str, Outcome> {
    match &f.host.sshd {
        Ok(map) => map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| unknown(format!("sshd -T did not report {key}"))),
        Err(e) => Err(unknown(e.clone())),
    }
}

fn backup_repo(f: &Facts, repo: u64) -> Result<Value, Outcome> {
    let b = extra(f, "backup")?;
    b["repos"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["repo"].as_u64() == Some(repo)))
        .cloned()
        .ok_or_else(|| fail(format!("repository {repo} is not configured")))
}

macro_rules! check {
    ($id:literal, $area:ident, $sev:ident, $title:literal, $fix:literal, $cis:expr, $f:expr) => {
        Check {
            id: $id,
            area: Area::$area,
            severity: Severity::$sev,
            title: $title,
            remediation: $fix,
            cis: $cis,
            run: $f,
        }
    };
}

/// Every check, in report order.
pub const CHECKS: &[Check] = &[
    // ---------------------------------------------------------------- TLS
    check!(
        "TLS-001",
        Tls,
        Critical,
        "TLS is enabled (ssl = on)",
        "Set ssl = on with a certificate and key (costplus-tls issue), then reload.",
        Some("6.7"),
        |f| setting_check(f, "ssl", |v| v == "on")
    ),
    check!(
        "TLS-002",
        Tls,
        High,
        "ssl_min_protocol_version is TLSv1.2 or newer",
        "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'; SELECT pg_reload_conf();",
        Some("6.7"),
        |f| setting_check(f, "ssl_min_protocol_version", |v| v == "TLSv1.2"
            || v == "TLSv1.3")
    ),
    check!(
        "TLS-003",
        Tls,
        Low,
        "ssl_ciphers excludes anonymous and NULL ciphers",
        "Keep the default ssl_ciphers ('HIGH:MEDIUM:+3DES:!aNULL') or stricter.",
        None,
        |f| setting_check(f, "ssl_ciphers", |v| v.contains("!aNULL")
            || (!v.contains("aNULL") && !v.contains("NULL")))
    ),
    check!(
        "TLS-004",
        Tls,
        Critical,
        "the server certificate is valid for at least 7 more days",
        "Renew: costplus-tls renew.",
        None,
        |f| match extra(f, "tls_certificate") {
            Err(o) => o,
            Ok(c) => match c["days_left"].as_i64() {
                Some(d) => verdict(d >= 7, format!("{d} days left"), format!("{d} days left")),
                None => unknown("certificate expiry unknown"),
            },
        }
    ),
    check!(
        "TLS-005",
        Tls,
        Medium,
        "the server certificate is valid for at least 30 more days",
        "Renew soon: costplus-tls renew --plan, then costplus-tls renew.",
        None,
        |f| match extra(f, "tls_certificate") {
            Err(o) => o,
            Ok(c) => match c["days_left"].as_i64() {
                Some(d) => verdict(d >= 30, format!("{d} days left"), format!("{d} days left")),
                None => unknown("certificate expiry unknown"),
            },
        }
    ),
    check!(
        "TLS-006",
        Tls,
        High,
        "the certificate key is strong (RSA >= 2048 or EC)",
        "Issue a new certificate: costplus-tls issue (ECDSA P-256 by default).",
        None,
        |f| match extra(f, "tls_certificate") {
            Err(o) => o,
            Ok(c) => match (c["key_type"].as_str(), c["key_bits"].as_u64()) {
                (Some("RSA"), Some(bits)) =>
                    verdict(bits >= 2048, format!("RSA {bits}"), format!("RSA {bits}")),
                (Some(t), bits) => pass(format!(
                    "{t} {}",
                    bits.map(|b| b.to_string()).unwrap_or_default()
                )),
                _ => unknown("key type unknown"),
            },
        }
    ),
    check!(
        "TLS-007",
        Tls,
        Medium,
        "the certificate names the server (SAN matches the host name)",
        "Issue a certificate whose subjectAltName lists the host name clients use.",
        None,
        |f| match extra(f, "tls_certificate") {
            Err(o) => o,
            Ok(c) => match c["san_matches"].as_bool() {
                Some(ok) => verdict(
                    ok,
                    "SAN matches",
                    format!(
                        "SAN does not match {}",
                        c["host"].as_str().unwrap_or("the host")
                    )
                ),
                None => unknown("SAN not checked"),
            },
        }
    ),
    check!(
        "TLS-008",
        Tls,
        High,
        "the server key file is private (0600 owned by the server user, or 0640 root:group)",
        "chown postgres:postgres server.key && chmod 600 server.key",
        Some("6.7"),
        |f| match extra(f, "tls_certificate") {
            Err(o) => o,
            Ok(c) => match c["key_file_private"].as_bool() {
                Some(ok) => verdict(
                    ok,
                    "key file is private",
                    c["key_file_problem"]
                        .as_str()
                        .unwrap_or("key file readable by others")
                        .to_string()
                ),
                None =>
                    unknown("key file not checked (run the audit on the database host as root)"),
            },
        }
    ),
    check!(
        "TLS-009",
        Tls,
        High,
        "on the wire, the server refuses SSLv3, TLS 1.0 and TLS 1.1",
        "Set ssl_min_protocol_version = 'TLSv1.2' and reload; check with costplus-tls probe.",
        None,
        |f| match extra(f, "tls_probe") {
            Err(o) => o,
            Ok(p) => {
                let weak: Vec<&str> = ["SSLv3", "TLSv1.0", "TLSv1.1"]
                    .into_iter()
                    .filter(|v| p["protocols"][*v] == "accepted")
                    .collect();
                verdict(
                    weak.is_empty(),
                    "only TLSv1.2+ accepted",
                    format!("accepted: {}", weak.join(", ")),
                )
            }
        }
    ),
    // ---------------------------------------------------------------- Authentication
    check!(
        "AUTH-001",
        Authentication,
        High,
        "password_encryption is scram-sha-256",
        "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; then reset each md5 password.",
        Some("4.8"),
        |f| setting_check(f, "password_encryption", |v| v == "scram-sha-256")
    ),
    check!(
        "AUTH-002",
        Authentication,
        Medium,
        "no role or database overrides password_encryption",
        "ALTER ROLE ... RESET password_encryption (and ALTER DATABASE ... RESET).",
        None,
        |f| verdict(
            f.password_encryption_overrides.is_empty(),
            "no overrides",
            f.password_encryption_overrides
                .iter()
                .map(|(w, v)| format!("{w}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    ),
    check!(
        "AUTH-003",
        Authentication,
        High,
        "no role has an md5 password verifier",
        "Reset those passwords with scram-sha-256 (costplus-provision rotate NAME for customers).",
        Some("4.8"),
        |f| if f.roles.is_empty() {
            unknown("pg_authid could not be read (superuser needed)")
        } else {
            let md5: Vec<&str> = f
                .roles
                .values()
                .filter(|r| r.password_kind == "md5")
                .map(|r| r.name.as_str())
                .collect();
            verdict(
                md5.is_empty(),
                "all verifiers are SCRAM",
                format!("md5 verifiers: {}", md5.join(", ")),
            )
        }
    ),
    check!(
        "AUTH-004",
        Authentication,
        Critical,
        "no role has a plaintext password stored",
        "Reset those passwords; keep password_encryption = scram-sha-256.",
        None,
        |f| if f.roles.is_empty() {
            unknown("pg_authid could not be read (superuser needed)")
        } else {
            let plain: Vec<&str> = f
                .roles
                .values()
                .filter(|r| r.password_kind == "plain")
                .map(|r| r.name.as_str())
                .collect();
            verdict(
                plain.is_empty(),
                "no plaintext passwords",
                format!("plaintext passwords: {}", plain.join(", ")),
            )
        }
    ),
    check!(
        "AUTH-005",
        Authentication,
        Critical,
        "no network pg_hba.conf line uses trust",
        "Replace trust with scram-sha-256 on every host line (costplus-hba lint shows them).",
        Some("4.3"),
        |f| hba_lines(f, |r| is_network(&r.kind)
            && r.method.as_deref() == Some("trust"))
    ),
    check!(
        "AUTH-006",
        Authentication,
        High,
        "no network pg_hba.conf line uses password or md5",
        "Use scram-sha-256 instead of password/md5.",
        Some("4.3"),
        |f| hba_lines(f, |r| is_network(&r.kind)
            && matches!(r.method.as_deref(), Some("password" | "md5")))
    ),
    check!(
        "AUTH-007",
        Authentication,
        High,
        "network logins are only accepted over TLS (hostssl; host/hostnossl only reject)",
        "Change host lines to hostssl, or make them reject.",
        Some("6.7"),
        |f| hba_lines(f, |r| matches!(
            r.kind.as_deref(),
            Some("host" | "hostnossl")
        ) && r.method.as_deref() != Some("reject"))
    ),
    check!(
        "AUTH-008",
        Authentication,
        Medium,
        "pg_hba.conf ends with a reject rule for all networks",
        "Append: host all all 0.0.0.0/0 reject and host all all ::/0 reject",
        None,
        |f| if f.hba.is_empty() {
            unknown("pg_hba_file_rules could not be read")
        } else {
            let last_net: Vec<_> = f.hba.iter().filter(|r| is_network(&r.kind)).collect();
            let ok = last_net.last().is_some_and(|r| {
                r.method.as_deref() == Some("reject")
                    && r.user.iter().any(|u| u == "all")
                    && r.database.iter().any(|d| d == "all")
            });
            verdict(
                ok,
                "final network rule rejects",
                "the last network rule does not reject everything",
            )
        }
    ),
    check!(
        "AUTH-009",
        Authentication,
        High,
        "the server reads pg_hba.conf without errors",
        "Fix the lines listed (costplus-hba lint FILE); a reload keeps old rules while errors remain.",
        None,
        |f| hba_lines(f, |r| r.error.is_some())
    ),
    check!(
        "AUTH-010",
        Authentication,
        High,
        "local (socket) connections do not use trust",
        "Use peer for the postgres OS user and scram-sha-256 for everyone else.",
        Some("4.3"),
        |f| hba_lines(f, |r| r.kind.as_deref() == Some("local")
            && r.method.as_deref() == Some("trust"))
    ),
    check!(
        "AUTH-011",
        Authentication,
        Medium,
        "no network line opens 0.0.0.0/0 or ::/0 to a superuser or all users with a password method weaker than scram",
        "Restrict network ranges or use scram-sha-256 over hostssl.",
        None,
        |f| hba_lines(f, |r| is_network(&r.kind)
            && matches!(r.address.as_deref(), Some("0.0.0.0" | "::"))
            && matches!(r.netmask.as_deref(), Some("0.0.0.0" | "::"))
            && !matches!(
                r.method.as_deref(),
                Some("scram-sha-256" | "reject" | "cert")
            ))
    ),
    check!(
        "AUTH-012",
        Authentication,
        Medium,
        "pg_hba.conf lint finds no high-severity problems",
        "Run costplus-hba lint on the file and fix what it reports.",
        None,
        |f| match extra(f, "hba_lint") {
            Err(o) => o,
            Ok(l) => {
                let high: Vec<&Value> = l["findings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| {
                        matches!(x["severity"].as_str(), Some("high" | "critical" | "error"))
                    })
                    .collect();
                let bad: Vec<String> = high
                    .iter()
                    .map(|x| format!("{} line {}", x["id"].as_str().unwrap_or("?"), x["line"]))
                    .collect();
                let mut o = verdict(bad.is_empty(), "no high findings", bad.join(", "));
                let default_file = f.hba_file.clone().unwrap_or_else(|| "pg_hba.conf".into());
                o.locations = high
                    .iter()
                    .map(|x| Location {
                        file: x["file"]
                            .as_str()
                            .map_or(default_file.clone(), String::from),
                        line: x["line"].as_u64().map(|l| l as u32),
                    })
                    .collect();
                o
            }
        }
    ),
    // ---------------------------------------------------------------- Roles and isolation
    check!(
        "ROLE-001",
        Roles,
        Medium,
        "at most one superuser role exists",
        "ALTER ROLE ... NOSUPERUSER for every superuser but the administrator.",
        Some("4.2"),
        |f| if f.roles.is_empty() {
            unknown("roles could not be read")
        } else {
            let su: Vec<&str> = f
                .roles
                .values()
                .filter(|r| r.superuser)
                .map(|r| r.name.as_str())
                .collect();
            verdict(
                su.len() <= 1,
                format!("superusers: {}", su.join(", ")),
                format!("{} superusers: {}", su.len(), su.join(", ")),
            )
        }
    ),
    check!(
        "ROLE-002",
        Roles,
        Critical,
        "no customer role is superuser",
        "ALTER ROLE <customer> NOSUPERUSER",
        Some("4.2"),
        |f| {
            let b: Vec<&str> = customer_roles(f)
                .into_iter()
                .filter(|r| r.superuser)
                .map(|r| r.name.as_str())
                .collect();
            verdict(b.is_empty(), "none", b.join(", "))
        }
    ),
    check!(
        "ROLE-003",
        Roles,
        High,
        "no customer role has CREATEDB",
        "ALTER ROLE <customer> NOCREATEDB",
        Some("4.2"),
        |f| {
            let b: Vec<&str> = customer_roles(f)
                .into_iter()
                .filter(|r| r.createdb)
                .map(|r| r.name.as_str())
                .collect();
            verdict(b.is_empty(), "none", b.join(", "))
        }
    ),
    check!(
        "ROLE-004",
        Roles,
        High,
        "no customer role has CREATEROLE",
        "ALTER ROLE <customer> NOCREATEROLE",
        Some("4.2"),
        |f| {
            let b: Vec<&str> = customer_roles(f)
                .into_iter()
                .filter(|r| r.createrole)
                .map(|r| r.name.as_str())
                .collect();
            verdict(b.is_empty(), "none", b.join(", "))
        }
    ),
    check!(
        "ROLE-005",
        Roles,
        High,
        "no customer role has REPLICATION or BYPASSRLS",
        "ALTER ROLE <customer> NOREPLICATION NOBYPASSRLS",
        Some("4.2"),
        |f| {
            let b: Vec<&str> = customer_roles(f)
                .into_iter()
                .filter(|r| r.replication || r.bypassrls)
                .map(|r| r.name.as_str())
                .collect();
            verdict(b.is_empty(), "none", b.join(", "))
        }
    ),
    check!(
        "ROLE-006",
        Roles,
        High,
        "no customer role is a member of a dangerous predefined role",
        "REVOKE pg_read_server_files, pg_write_server_files, ... FROM <customer>",
        Some("4.5"),
        |f| {
            let b: Vec<String> = customer_roles(f)
                .into_iter()
                .flat_map(|r| {
                    r.member_of
                        .iter()
                        .filter(|m| DANGEROUS_ROLES.contains(&m.as_str()))
                        .map(move |m| format!("{} in {m}", r.name))
                })
                .collect();
            verdict(b.is_empty(), "none", b.join(", "))
        }
    ),
    check!(
        "ROLE-007",
        Roles,
        High,
        "PUBLIC cannot CONNECT to customer databases",
        "REVOKE CONNECT ON DATABASE <db> FROM PUBLIC; GRANT CONNECT ... TO <customer>",
        None,
        |f| { no_customer_db(f, |c| c.public_connect) }
    ),
    check!(
        "ROLE-008",
        Roles,
        Medium,
        "PUBLIC cannot create TEMP tables in customer databases",
        "REVOKE TEMP ON DATABASE <db> FROM PUBLIC",
        None,
        |f| { no_customer_db(f, |c| c.public_temp) }
    ),
    check!(
        "ROLE-009",
        Roles,
        High,
        "PUBLIC cannot CREATE in the public schema of customer databases",
        "In each database: REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        Some("4.7"),
        |f| {
            if f.customers.iter().any(|c| c.public_schema_create.is_none()) {
                return unknown("some customer databases could not be opened");
            }
            no_customer_db(f, |c| c.public_schema_create == Some(true))
        }
    ),
    check!(
        "ROLE-010",
        Roles,
        Medium,
        "customer databases have no cross-database extensions or untrusted languages",
        "DROP EXTENSION dblink/postgres_fdw; DROP LANGUAGE plpython3u/plperlu where not needed.",
        None,
        |f| {
            if f.customers.iter().any(|c| c.risky_objects.is_none()) {
                return unknown("some customer databases could not be opened");
            }
            let b: Vec<String> = f
                .customers
                .iter()
                .flat_map(|c| {
                    c.risky_objects
                        .iter()
                        .flatten()
                        .map(move |o| format!("{}: {o}", c.database))
                })
                .collect();
            verdict(b.is_empty(), "none found", b.join(", "))
        }
    ),
    check!(
        "ROLE-011",
        Roles,
        Low,
        "every customer role has a connection limit",
        "ALTER ROLE <customer> CONNECTION LIMIT 20",
        None,
        |f| {
            let b: Vec<&str> = customer_roles(f)
                .into_iter()
                .filter(|r| r.connlimit < 0)
                .map(|r| r.name.as_str())
                .collect();
            verdict(
                b.is_empty(),
                "all limited",
                format!("unlimited: {}", b.join(", ")),
            )
        }
    ),
    check!(
        "ROLE-012",
        Roles,
        Critical,
        "customer isolation is proven (no customer can reach another's database)",
        "Run costplus-isolation check and fix every violation it lists.",
        None,
        |f| match extra(f, "isolation") {
            Err(o) => o,
            Ok(i) => {
                let n = i["violations"].as_array().map_or(0, Vec::len);
                verdict(
                    n == 0,
                    format!("{} customers, no violation", f.customers.len()),
                    format!("{n} violations"),
                )
            }
        }
    ),
    // ---------------------------------------------------------------- Logging
    check!(
        "LOG-001",
        Logging,
        Medium,
        "log_connections is on",
        "ALTER SYSTEM SET log_connections = on; SELECT pg_reload_conf();",
        Some("3.1.20"),
        |f| setting_check(f, "log_connections", |v| v == "on")
    ),
    check!(
        "LOG-002",
        Logging,
        Low,
        "log_disconnections is on",
        "ALTER SYSTEM SET log_disconnections = on; SELECT pg_reload_conf();",
        Some("3.1.21"),
        |f| setting_check(f, "log_disconnections", |v| v == "on")
    ),
    check!(
        "LOG-003",
        Logging,
        Medium,
        "log_line_prefix carries a timestamp and the client host",
        "ALTER SYSTEM SET log_line_prefix = '%m [%p] %q%u@%d %h '; (fail2ban needs %h)",
        Some("3.1.23"),
        |f| setting_check(f, "log_line_prefix", |v| (v.contains("%m")
            || v.contains("%t")
            || v.contains("%n"))
            && (v.contains("%h") || v.contains("%r")))
    ),
    check!(
        "LOG-004",
        Logging,
        Low,
        "lc_messages is C (log messages fail2ban can match)",
        "ALTER SYSTEM SET lc_messages = 'C';",
        None,
        |f| setting_check(f, "lc_messages", |v| v == "C"
            || v == "POSIX"
            || v.starts_with("en_US")
            || v.is_empty())
    ),
    check!(
        "LOG-005",
        Logging,
        Medium,
        "log_statement is not 'all' (statements and their data stay out of the log)",
        "ALTER SYSTEM SET log_statement = 'ddl';",
        Some("3.1.24"),
        |f| setting_check(f, "log_statement", |v| v != "all")
    ),
    check!(
        "LOG-006",
        Logging,
        Medium,
        "the logging collector (or syslog) captures the server log",
        "ALTER SYSTEM SET logging_collector = on; (restart)",
        Some("3.1.2"),
        |f| match (
            setting(f, "logging_collector"),
            setting(f, "log_destination")
        ) {
            (Some(c), Some(d)) => verdict(
                c == "on" || d.contains("syslog") || d.contains("eventlog"),
                format!("logging_collector = {c}, log_destination = {d}"),
                format!("logging_collector = {c}, log_destination = {d}")
            ),
            _ => unknown("logging settings could not be read"),
        }
    ),
    check!(
        "LOG-007",
        Logging,
        Low,
        "log files are not world-readable (log_file_mode <= 0640)",
        "ALTER SYSTEM SET log_file_mode = '0640';",
        Some("3.1.5"),
        |f| setting_check(f, "log_file_mode", |v| u32::from_str_radix(
            v.trim_start_matches('0'),
            8
        )
        .map(|m| m & 0o007 == 0)
        .unwrap_or(v.chars().all(|c| c == '0')))
    ),
    check!(
        "LOG-008",
        Logging,
        Low,
        "log_timezone is UTC (log times fail2ban and reports can compare)",
        "ALTER SYSTEM SET log_timezone = 'UTC';",
        None,
        |f| setting_check(f, "log_timezone", |v| matches!(
            v,
            "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT"
        ))
    ),
    // ---------------------------------------------------------------- Backups
    check!(
        "BAK-001",
        Backups,
        High,
        "the local repository (repo1) has a good backup younger than the policy",
        "costplus-backup run --type full --repo 1; check the timer: systemctl list-timers 'costplus*'",
        None,
        |f| match backup_repo(f, 1) {
            Err(o) => o,
            Ok(r) => match (r["age_hours"].as_f64(), r["stale_after_hours"].as_f64()) {
                (Some(a), Some(limit)) => verdict(
                    a <= limit,
                    format!("last good backup {a:.1} h ago"),
                    format!("last good backup {a:.1} h ago (policy {limit} h)")
                ),
                _ => fail("no good backup in repo1"),
            },
        }
    ),
    check!(
        "BAK-002",
        Backups,
        High,
        "the offsite repository (repo2) has a good backup younger than the policy",
        "costplus-backup run --type full --repo 2; check the offsite endpoint",
        None,
        |f| match backup_repo(f, 2) {
            Err(o) => o,
            Ok(r) => match (r["age_hours"].as_f64(), r["stale_after_hours"].as_f64()) {
                (Some(a), Some(limit)) => verdict(
                    a <= limit,
                    format!("last good backup {a:.1} h ago"),
                    format!("last good backup {a:.1} h ago (policy {limit} h)")
                ),
                _ => fail("no good backup in repo2"),
            },
        }
    ),
    check!(
        "BAK-003",
        Backups,
        High,
        "both repositories are encrypted (aes-256-cbc)",
        "Create new encrypted repositories (encryption cannot be added to an existing one).",
        None,
        |f| match extra(f, "backup") {
            Err(o) => o,
            Ok(b) => {
                let repos = b["repos"].as_array().cloned().unwrap_or_default();
                if repos.is_empty() {
                    return fail("no repository configured");
                }
                let unseen: Vec<String> = repos
                    .iter()
                    .filter(|r| r["encrypted"].is_null())
                    .map(|r| format!("repo{}", r["repo"]))
                    .collect();
                if !unseen.is_empty() {
                    return unknown(format!(
                        "pgBackRest does not list {}: encryption unknown",
                        unseen.join(", ")
                    ));
                }
                let plain: Vec<String> = repos
                    .iter()
                    .filter(|r| r["encrypted"] != true)
                    .map(|r| format!("repo{}", r["repo"]))
                    .collect();
                verdict(
                    plain.is_empty(),
                    format!("{} repositories encrypted", repos.len()),
                    format!("not encrypted: {}", plain.join(", ")),
                )
            }
        }
    ),
    check!(
        "BAK-004",
        Backups,
        Medium,
        "an offsite repository is configured",
        "Add an [offsite] section (Wasabi) and run costplus-backup setup.",
        None,
        |f| match extra(f, "backup") {
            Err(o) => o,
            Ok(b) => verdict(
                b["repos"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r["repo"] == 2)),
                "repo2 configured",
                "no offsite repository"
            ),
        }
    ),
    check!(
        "BAK-005",
        Backups,
        High,
        "the last restore drill passed within the last 35 days",
        "costplus-backup drill (monthly maintenance runs it).",
        None,
        |f| match extra(f, "backup") {
            Err(o) => o,
            Ok(b) if b["drill"]["error"].is_string() =>
                unknown(b["drill"]["error"].as_str().unwrap_or_default().to_string()),
            Ok(b) => match (b["drill"]["ok"].as_bool(), b["drill"]["age_days"].as_f64()) {
                (Some(ok), Some(age)) => verdict(
                    ok && age <= 35.0,
                    format!("passed {age:.0} days ago"),
                    if ok {
                        format!("last drill {age:.0} days ago")
                    } else {
                        "the last drill failed".into()
                    }
                ),
                _ => fail("no restore drill on record"),
            },
        }
    ),
    check!(
        "BAK-006",
        Backups,
        High,
        "WAL archiving works (archive_mode on, no failure since the last success)",
        "Check archive_command and the repositories: pgbackrest check.",
        None,
        |f| match (setting(f, "archive_mode"), f.archiver) {
            (Some("off"), _) => fail("archive_mode = off"),
            (Some(_), Some((_, _, failing))) => verdict(
                !failing,
                "archiving works",
                "the last archive attempt failed"
            ),
            _ => unknown("archiver state could not be read"),
        }
    ),
    // ---------------------------------------------------------------- Host
    check!(
        "HOST-001",
        Host,
        Medium,
        "a fail2ban jail protects the PostgreSQL port",
        "costplus-fail2ban install",
        None,
        |f| match &f.host.fail2ban_jail {
            Ok(s) => verdict(
                s.contains("Status for the jail"),
                "jail running",
                "jail not running"
            ),
            Err(e) =>
                if e.contains("not installed") {
                    fail(e.clone())
                } else {
                    unknown(e.clone())
                },
        }
    ),
    check!(
        "HOST-002",
        Host,
        High,
        "the firewall denies incoming traffic by default",
        "ufw default deny incoming && ufw allow 22/tcp && ufw allow <pg port>/tcp && ufw enable",
        None,
        |f| match &f.host.ufw {
            Ok(s) => verdict(
                s.contains("Status: active") && s.contains("deny (incoming)"),
                "ufw active, default deny incoming",
                s.lines().take(3).collect::<Vec<_>>().join(" / ")
            ),
            Err(e) => unknown(e.clone()),
        }
    ),
    check!(
        "HOST-003",
        Host,
        Medium,
        "the firewall opens only SSH and PostgreSQL",
        "ufw delete allow <other port>",
        None,
        |f| match &f.host.ufw {
            Ok(s) => {
                let port = setting(f, "port").unwrap_or("5432");
                let open: Vec<&str> = s
                    .lines()
                    .filter(|l| l.contains("ALLOW IN"))
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|p| !(p.starts_with("22") || p.starts_with(port) || *p == "OpenSSH"))
                    .collect();
                verdict(
                    open.is_empty(),
                    "only SSH and PostgreSQL",
                    format!("also open: {}", open.join(", ")),
                )
            }
            Err(e) => unknown(e.clone()),
        }
    ),
    check!(
        "HOST-004",
        Host,
        High,
        "sshd refuses password logins",
        "PasswordAuthentication no in /etc/ssh/sshd_config; systemctl reload ssh",
        None,
        |f| match sshd(f, "passwordauthentication") {
            Err(o) => o,
            Ok(v) => verdict(
                v == "no",
                "passwordauthentication no",
                format!("passwordauthentication {v}")
            ),
        }
    ),
    check!(
        "HOST-005",
        Host,
        High,
        "sshd refuses root logins with a password",
        "PermitRootLogin prohibit-password (or no)",
        None,
        |f| match sshd(f, "permitrootlogin") {
            Err(o) => o,
            Ok(v) => verdict(
                v != "yes",
                format!("permitrootlogin {v}"),
                "permitrootlogin yes"
            ),
        }
    ),
    check!(
        "HOST-006",
        Host,
        Low,
        "sshd listens on a non-default port",
        "Port 2222 (any non-22) in sshd_config; open it in the firewall first",
        None,
        |f| match sshd(f, "port") {
            Err(o) => o,
            Ok(v) => verdict(v != "22", format!("port {v}"), "port 22"),
        }
    ),
    check!(
        "HOST-007",
        Host,
        Medium,
        "unattended security upgrades are enabled",
        "apt-get install unattended-upgrades && dpkg-reconfigure -plow unattended-upgrades",
        None,
        |f| match &f.host.unattended_upgrades {
            Ok(v) => verdict(*v, "enabled", "disabled"),
            Err(e) => unknown(e.clone()),
        }
    ),
    check!(
        "HOST-008",
        Host,
        High,
        "the data directory file system is less than 80% full",
        "Free space or grow the disk before PostgreSQL stops on a full disk.",
        None,
        |f| match f.host.disk_used_percent.get("data") {
            Some(Ok(p)) => verdict(*p < 80.0, format!("{p:.1}% used"), format!("{p:.1}% used")),
            Some(Err(e)) => unknown(e.clone()),
            None => unknown("data directory not checked (run on the database host)"),
        }
    ),
    check!(
        "HOST-009",
        Host,
        Medium,
        "the backup repository file system is less than 80% full",
        "Lower repo1 retention or grow the disk.",
        None,
        |f| match f.host.disk_used_percent.get("repository") {
            Some(Ok(p)) => verdict(*p < 80.0, format!("{p:.1}% used"), format!("{p:.1}% used")),
            Some(Err(e)) => unknown(e.clone()),
            None => unknown("repository path not configured"),
        }
    ),
    check!(
        "HOST-010",
        Host,
        High,
        "the data directory is private (0700 or 0750)",
        "chmod 700 <data directory>",
        Some("1.2"),
        |f| match &f.host.data_dir_mode {
            Ok(m) => verdict(
                m & 0o027 == 0,
                format!("mode {m:04o}"),
                format!("mode {m:04o}")
            ),
            Err(e) => unknown(e.clone()),
        }
    ),
    check!(
        "HOST-011",
        Host,
        Medium,
        "the PostgreSQL major version is supported (13 or newer)",
        "Plan an upgrade with pg_upgrade.",
        Some("1.1"),
        |f| if f.version_num == 0 {
            unknown("version unknown")
        } else {
            verdict(
                f.version_num >= 130000,
                format!("server_version_num {}", f.version_num),
                format!("server_version_num {} is out of support", f.version_num),
            )
        }
    ),
];

/// Look a check up by id.
pub fn by_id(id: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.id == id)
}
