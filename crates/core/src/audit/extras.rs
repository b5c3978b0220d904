//! The audit's extra facts, from the leaf crates: the server certificate and key file
//! (`costplus-tls` inspect), the protocols the server accepts on the wire (`costplus-tls`
//! probe), the pg_hba.conf lint (`costplus-hba`), the customer isolation proof
//! ([`crate::customer::isolation`]) and the backups (`costplus-pgbackrest` info per repository
//! and the last restore drill record).
//!
//! Each fact lands in [`Facts::extra`] under its key; where a source is not configured or
//! cannot be read, the value is `{"error": "why"}` and the checks that read it report
//! `unknown` with that reason, never `pass`.
//!
//! | key | fields |
//! |---|---|
//! | `tls_certificate` | `source` (`file`/`probe`), `file`, `days_left`, `not_after`, `key_type`, `key_bits`, `host`, `san_matches`, `key_file`, `key_file_private`, `key_file_problem`, `findings` |
//! | `tls_probe` | `target`, `protocols` (`{"SSLv3": "refused", ..., "TLSv1.3": "accepted"}`), `findings` |
//! | `hba_lint` | `file`, `findings` (`[{id, severity, line, file, message}]`) |
//! | `isolation` | `customers`, `pairs`, `violations`, `live` |
//! | `backup` | `stanza`, `repos` (`[{repo, encrypted, cipher, status_code, status_message, last_good, stopped_at, age_hours, stale_after_hours}]`), `drill` (`{ok, age_days, started_at, repo, reason}` or `null`) |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::Facts;
use crate::config::{Config, ServerConfig};

/// What [`gather_extras`] may do.
#[derive(Debug, Clone)]
pub struct ExtraOptions {
    /// The audit runs on the database host: files (certificate, key, pg_hba.conf,
    /// pgbackrest.conf, drill records) are read.
    pub on_host: bool,
    /// Ordered pairs of customers tried with real logins in the isolation proof (needs the vault).
    pub live_pairs: usize,
    /// Timeout of every probe connection and read.
    pub probe_timeout: Duration,
}

impl Default for ExtraOptions {
    fn default() -> Self {
        Self {
            on_host: true,
            live_pairs: 4,
            probe_timeout: Duration::from_secs(3),
        }
    }
}

fn error(why: impl std::fmt::Display) -> Value {
    json!({ "error": why.to_string() })
}

const NOT_ON_HOST: &str = "not read: the audit runs away from the database host (--no-host)";

/// Fill `facts.extra` (`tls_certificate`, `tls_probe`, `hba_lint`, `isolation`, `backup`).
/// `admin` is the audit's admin connection (the isolation proof reads the catalog with it).
/// Never fails: what cannot be gathered is an `{"error": ...}` value.
pub async fn gather_extras(
    config: &Config,
    server: &ServerConfig,
    admin: &tokio_postgres::Client,
    facts: &mut Facts,
    opts: &ExtraOptions,
) {
    // The slow parts run at once: the probe (network), the backups (pgbackrest processes, on
    // a blocking thread) and the isolation proof (catalog queries, live logins).
    let backup = {
        let (config, server, on_host) = (config.clone(), server.clone(), opts.on_host);
        tokio::task::spawn_blocking(move || backup(&config, &server, on_host))
    };
    let probe = tls_probe(server, facts, opts);
    let isolation = isolation(config, server, admin, facts, opts);
    let (probe, isolation, backup) = tokio::join!(probe, isolation, backup);
    let backup = backup.unwrap_or_else(|e| error(format!("backup facts: {e}")));
    let (probe_value, probe_cert) = probe;
    let cert = tls_certificate(server, facts, opts, probe_cert);
    let lint = hba_lint(facts, opts);
    facts.extra.insert("tls_certificate".into(), cert);
    facts.extra.insert("tls_probe".into(), probe_value);
    facts.extra.insert("hba_lint".into(), lint);
    facts.extra.insert("isolation".into(), isolation);
    facts.extra.insert("backup".into(), backup);
}

fn setting<'a>(facts: &'a Facts, name: &str) -> Option<&'a str> {
    facts.settings.get(name).map(|s| s.value.as_str())
}

/// A server file setting (`ssl_cert_file`) as the server reads it.
fn server_path(facts: &Facts, name: &str) -> Option<PathBuf> {
    crate::servercert::server_file(setting(facts, "data_directory"), setting(facts, name)?)
}

/// The name clients use for the server (None for a Unix socket).
fn client_host(server: &ServerConfig) -> Option<&str> {
    (!server.host.starts_with('/')).then_some(server.host.as_str())
}

/// `host:port` to probe: the configured host, or loopback when the admin reaches the server
/// over a Unix socket and the server listens on loopback.
fn probe_target(server: &ServerConfig, facts: &Facts, on_host: bool) -> Result<String, String> {
    if let Some(h) = client_host(server) {
        return Ok(h.to_string());
    }
    let listen = setting(facts, "listen_addresses").unwrap_or("");
    let loopback = listen
        .split(',')
        .map(str::trim)
        .any(|a| matches!(a, "*" | "0.0.0.0" | "localhost" | "127.0.0.1"));
    if on_host && loopback {
        Ok("127.0.0.1".into())
    } else {
        Err(format!(
            "the server is reached over a Unix socket ({}) and listen_addresses = {listen:?} has no loopback to probe; run costplus-tls probe from a client",
            server.host
        ))
    }
}

async fn tls_probe(
    server: &ServerConfig,
    facts: &Facts,
    opts: &ExtraOptions,
) -> (Value, Option<costplus_tls::probe::CertificateReport>) {
    use costplus_tls::probe::{ProbeOptions, probe};
    if setting(facts, "ssl") == Some("off") {
        return (error("ssl = off: the server offers no TLS"), None);
    }
    let host = match probe_target(server, facts, opts.on_host) {
        Ok(h) => h,
        Err(e) => return (error(e), None),
    };
    let port = setting(facts, "port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(server.port);
    let mut o = ProbeOptions::new(&host, port);
    o.ciphers = false;
    o.check_direct_tls = false;
    o.connect_timeout = opts.probe_timeout;
    o.io_timeout = opts.probe_timeout;
    o.ca = server
        .sslrootcert
        .as_deref()
        .and_then(|p| std::fs::read(p).ok());
    match probe(&o).await {
        Err(e) => (error(format!("probe of {host}:{port}: {e}")), None),
        Ok(r) if !r.tls_enabled => (
            error(format!(
                "{}: the server answered N to SSLRequest (TLS off)",
                r.target
            )),
            None,
        ),
        Ok(r) => (
            json!({
                "target": r.target,
                "protocols": r.protocols,
                "findings": r.findings.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            }),
            r.certificate,
        ),
    }
}

/// The `tls_certificate` fact: the certificate file (and key file rules) when `opts.on_host`,
/// else (or when the file cannot be read) the certificate `probed` on the wire.
pub fn tls_certificate(
    server: &ServerConfig,
    facts: &Facts,
    opts: &ExtraOptions,
    probed: Option<costplus_tls::probe::CertificateReport>,
) -> Value {
    use costplus_tls::inspect::{self, HostMatch, Input, match_host};
    if setting(facts, "ssl") == Some("off") {
        return error("ssl = off: the server has no certificate in use");
    }
    let host = client_host(server);
    let san = |c: &inspect::CertFacts| {
        host.map(|h| {
            match_host(h, &c.dns_names, &c.ip_addresses, &c.common_names)
                == HostMatch::SubjectAltName
        })
    };
    // Away from the host (or when the file cannot be read): what the server presents on the
    // wire; the key file is not seen.
    let from_probe = |why: String| match &probed {
        Some(c) => json!({
            "source": "probe",
            "days_left": c.leaf.days_left,
            "not_after": c.leaf.not_after,
            "key_type": c.leaf.key.algorithm,
            "key_bits": c.leaf.key.bits,
            "host": host,
            "san_matches": san(&c.leaf),
            "key_file_problem": why,
        }),
        None => error(format!("{why}, and the probe obtained no certificate")),
    };
    if !opts.on_host {
        return from_probe(format!("certificate files {NOT_ON_HOST}"));
    }
    let Some(cert_path) = server_path(facts, "ssl_cert_file") else {
        return from_probe("ssl_cert_file or data_directory could not be read".into());
    };
    let cert = match std::fs::read(&cert_path) {
        Ok(b) => b,
        Err(e) => return from_probe(format!("{}: {e}", cert_path.display())),
    };
    let key_path = server_path(facts, "ssl_key_file");
    let key = key_path.as_deref().and_then(|p| std::fs::read(p).ok());
    let ca = server
        .sslrootcert
        .as_deref()
        .and_then(|p| std::fs::read(p).ok());
    let report = inspect::inspect(&Input {
        cert: &cert,
        key: key.as_deref(),
        ca: ca.as_deref(),
        hosts: host.map(|h| vec![h.to_string()]).unwrap_or_default(),
        now: inspect::now(),
        policy: Default::default(),
    });
    let Some(c) = &report.certificate else {
        return error(format!(
            "{}: {}",
            cert_path.display(),
            report
                .findings
                .first()
                .map(|f| f.message.as_str())
                .unwrap_or("not a certificate")
        ));
    };
    let (key_private, key_problem) = match &key_path {
        None => (None, Some("ssl_key_file could not be read".to_string())),
        Some(p) => match (
            inspect::key_file_meta(p),
            inspect::server_identity(&server.os_user),
        ) {
            (Ok(meta), Ok(who)) => {
                let problems = inspect::check_key_file(&p.display().to_string(), meta, &who);
                (
                    Some(problems.is_empty()),
                    (!problems.is_empty()).then(|| {
                        problems
                            .iter()
                            .map(|f| f.message.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    }),
                )
            }
            (Err(e), _) => (None, Some(e.to_string())),
            (_, Err(e)) => (None, Some(format!("server user {}: {e}", server.os_user))),
        },
    };
    json!({
        "source": "file",
        "file": cert_path,
        "days_left": c.days_left,
        "not_after": c.not_after,
        "key_type": c.key.algorithm,
        "key_bits": c.key.bits,
        "host": host,
        "san_matches": san(c),
        "key_file": key_path,
        "key_file_private": key_private,
        "key_file_problem": key_problem,
        "findings": report.findings.iter().map(|f| json!({"id": f.id, "severity": f.severity, "message": f.message})).collect::<Vec<_>>(),
    })
}

fn read_options(facts: &Facts) -> costplus_hba::ReadOptions {
    let version =
        costplus_hba::PgVersion::new((facts.version_num / 10000).max(0) as u32).unwrap_or_default();
    let mut read = costplus_hba::ReadOptions::for_version(version);
    read.ssl_enabled = setting(facts, "ssl") == Some("on");
    read
}

fn hba_lint(facts: &Facts, opts: &ExtraOptions) -> Value {
    if !opts.on_host {
        return error(format!("pg_hba.conf {NOT_ON_HOST}"));
    }
    let Some(file) = facts.hba_file.as_deref().map(PathBuf::from) else {
        return error("hba_file could not be read from the server");
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => return error(format!("{}: {e}", file.display())),
    };
    let set = match costplus_hba::read_rules_file(&file, &read_options(facts)) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let doc = costplus_hba::Document::parse(&bytes);
    let customer_lines = doc.customer_line_numbers();
    let findings: Vec<Value> = costplus_hba::lint(&set, &customer_lines)
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "severity": f.severity,
                "line": f.line_number,
                "file": f.file_name,
                "message": f.message,
            })
        })
        .collect();
    json!({ "file": file, "findings": findings })
}

async fn isolation(
    config: &Config,
    server: &ServerConfig,
    admin: &tokio_postgres::Client,
    facts: &Facts,
    opts: &ExtraOptions,
) -> Value {
    use crate::customer::isolation::{CheckOptions, check};
    if !opts.on_host {
        return error(format!(
            "the isolation proof reads pg_hba.conf: {NOT_ON_HOST}"
        ));
    }
    let Some(hba_file) = facts.hba_file.as_deref().map(PathBuf::from) else {
        return error("hba_file could not be read from the server");
    };
    let risky: BTreeMap<String, Vec<String>> = facts
        .customers
        .iter()
        .filter_map(|c| c.risky_objects.clone().map(|r| (c.database.clone(), r)))
        .collect();
    // The vault holds the customers' passwords for the live attempts; without it the proof
    // still covers the catalog and pg_hba.conf.
    let vault = config
        .vault
        .as_ref()
        .and_then(|v| costplus_vault::Vault::open_config(v, None).ok());
    let o = CheckOptions {
        live_pairs: opts.live_pairs,
        hba_file,
        read: read_options(facts),
    };
    match check(admin, config, server, &o, Some(risky), vault.as_ref()).await {
        Ok(r) => json!({
            "customers": r.customers,
            "pairs": r.pairs,
            "violations": r.violations,
            "live": r.live,
        }),
        Err(e) => error(format!("isolation proof: {e}")),
    }
}

/// The `backup` fact: pgBackRest's info for every configured repository and the last drill
/// record (blocking: runs pgbackrest).
pub fn backup(config: &Config, server: &ServerConfig, on_host: bool) -> Value {
    use costplus_pgbackrest::{PgBackRest, conf, drill};
    let Some(cfg) = &config.backup else {
        return error(format!(
            "{}: no [backup] section (pgBackRest is not configured)",
            config.path.display()
        ));
    };
    if !on_host {
        return error(format!("pgbackrest.conf and drill records {NOT_ON_HOST}"));
    }
    let os_user = match costplus_fs::OsUser::by_name(&server.os_user) {
        Ok(u) => u,
        Err(e) => return error(format!("server user: {e}")),
    };
    let pgbr = PgBackRest::new(cfg, os_user).with_io_timeout(10);
    let info = match pgbr.info(None) {
        Ok(i) => i,
        Err(e) => return error(format!("pgbackrest info: {e}")),
    };
    let now = chrono::Utc::now().timestamp();
    let repos: Vec<Value> = conf::repos(config.offsite.as_ref())
        .into_iter()
        .map(|n| {
            let listed = info.repo.iter().find(|r| r.key == n);
            let last = info.latest(n, None);
            let cipher = listed.map(|r| r.cipher.clone()).filter(|c| !c.is_empty());
            json!({
                "repo": n,
                // Unknown (null) when pgBackRest does not list the repository.
                "encrypted": cipher.as_deref().map(|c| c != "none"),
                "cipher": cipher,
                "status_code": listed.map(|r| r.status.code),
                "status_message": listed.map(|r| costplus_pgbackrest::failure::printable(&r.status.message, 300)),
                "last_good": last.map(|b| b.label.clone()),
                "stopped_at": last.and_then(|b| chrono::DateTime::from_timestamp(b.timestamp.stop, 0)).map(|t| t.to_rfc3339()),
                "age_hours": last.map(|b| (now - b.timestamp.stop) as f64 / 3600.0),
                "stale_after_hours": cfg.stale_after_hours,
            })
        })
        .collect();
    let drill = match drill::history(&cfg.drill_history_dir()) {
        Ok(records) => records.last().map_or(Value::Null, |r| {
            let started = r["started_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            json!({
                "ok": r["ok"].as_bool(),
                "started_at": r["started_at"],
                "age_days": started.map(|t| (now - t.timestamp()) as f64 / 86400.0),
                "repo": r["repo"],
                "reason": r["reason"],
                "records": records.len(),
            })
        }),
        Err(e) => error(format!("drill records: {e}")),
    };
    json!({ "stanza": info.name, "repos": repos, "drill": drill })
}
