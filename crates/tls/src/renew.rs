//! Issue and renew a server's certificate: decide, back up, install atomically, reload
//! PostgreSQL (no restart: a reload makes new connections use the new pair while open ones
//! keep theirs) and confirm on the wire that the server presents the new certificate.
//!
//! Every mutating entry point has a plan ([`plan`]) that says what it would do and does nothing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use x509_parser::prelude::*;

use crate::issue::{Authority, CertifiedKey, ServerCertRequest};
use crate::{Error, Result};
use costplus_fs::{OsUser, WriteOptions, write_atomic};

/// Why a certificate needs renewing (or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Renew now.
    pub renew: bool,
    /// The reasons, for people.
    pub reasons: Vec<String>,
    /// Days left on the current certificate, when there is one.
    pub days_left: Option<i64>,
}

/// Decide whether the certificate `current` (PEM or DER; `None` when there is none) must be
/// replaced by one matching `wanted` at `now` (unix seconds): renew when less than a third of
/// its lifetime is left, when it is expired or unreadable, or when its names differ.
pub fn decide(current: Option<&[u8]>, wanted: &ServerCertRequest, now: i64) -> Decision {
    let mut d = Decision {
        renew: false,
        reasons: Vec::new(),
        days_left: None,
    };
    let Some(bytes) = current else {
        d.renew = true;
        d.reasons.push("there is no certificate yet".into());
        return d;
    };
    let der = match crate::inspect::read_certificates(bytes) {
        Ok(mut c) => c.remove(0),
        Err(f) => {
            d.renew = true;
            d.reasons.push(format!(
                "the current certificate is unusable: {}",
                f.message
            ));
            return d;
        }
    };
    let Ok((_, cert)) = parse_x509_certificate(&der) else {
        d.renew = true;
        d.reasons
            .push("the current certificate does not parse".into());
        return d;
    };
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let left = na - now;
    d.days_left = Some(left.div_euclid(86_400));
    if left <= 0 {
        d.renew = true;
        d.reasons.push("the certificate has expired".into());
    } else if left * 3 < (na - nb) {
        d.renew = true;
        d.reasons.push(format!(
            "less than a third of its lifetime is left ({} of {} days)",
            left.div_euclid(86_400),
            (na - nb).div_euclid(86_400)
        ));
    }
    let facts = crate::inspect::facts(&der, now).ok();
    if let Some(f) = facts {
        let have = name_set(&f.dns_names, &f.ip_addresses);
        let want = name_set(&wanted.dns_names, &wanted.ip_addresses);
        if have != want {
            let missing: Vec<&String> = want.difference(&have).collect();
            let extra: Vec<&String> = have.difference(&want).collect();
            d.renew = true;
            d.reasons.push(format!(
                "the names changed (to add: {missing:?}; to drop: {extra:?})"
            ));
        }
    }
    if !d.renew {
        d.reasons.push(format!(
            "valid for {} more days with the right names",
            d.days_left.unwrap_or(0)
        ));
    }
    d
}

fn name_set(dns: &[String], ips: &[IpAddr]) -> std::collections::BTreeSet<String> {
    dns.iter()
        .map(|d| d.to_ascii_lowercase())
        .chain(ips.iter().map(ToString::to_string))
        .collect()
}

/// How to make PostgreSQL pick up the new files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reload {
    /// Do not reload (the operator will).
    None,
    /// `pg_ctl reload` of a cluster created by costplus (`costplus-pgcluster`).
    Cluster(PathBuf),
    /// `SELECT pg_reload_conf()` over a connection (superuser or granted the function).
    Sql(costplus_pgcluster::connect::ConnectOptions),
}

/// Where the server's pair lives and how to replace it.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The certificate file (`ssl_cert_file`).
    pub cert_file: PathBuf,
    /// The key file (`ssl_key_file`).
    pub key_file: PathBuf,
    /// Owner of both files (the server's OS user); `None` keeps the current user.
    pub owner: Option<OsUser>,
    /// What the new certificate says.
    pub request: ServerCertRequest,
    /// Renew even when [`decide`] says it is not needed.
    pub force: bool,
    /// How to reload the server.
    pub reload: Reload,
    /// After the reload, probe this `host:port` until it presents the new certificate.
    pub verify: Option<(String, u16)>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What the step does.
    pub action: String,
    /// Done (apply) or would be done (plan).
    pub done: bool,
}

/// What a renewal did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// SHA-256 of the new certificate, when one was issued.
    pub new_sha256: Option<String>,
    /// Backup copies made.
    pub backups: Vec<PathBuf>,
    /// The server presented the new certificate after the reload.
    pub verified: Option<bool>,
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// A free backup name beside `path`: `<name>.bak-<UTC timestamp>[-N]`.
pub fn backup_path(path: &Path) -> PathBuf {
    let stamp = ::time::OffsetDateTime::now_utc()
        .format(&::time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "backup".into());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = path.with_file_name(format!("{name}.bak-{stamp}"));
    if !base.exists() {
        return base;
    }
    (1..)
        .map(|i| path.with_file_name(format!("{name}.bak-{stamp}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or(base)
}

/// Copy `path` to a backup with the same mode and owner; `None` when it does not exist.
pub fn backup(path: &Path) -> Result<Option<PathBuf>> {
    let Some(bytes) = read_opt(path)? else {
        return Ok(None);
    };
    let dest = backup_path(path);
    write_atomic(&dest, &bytes, &WriteOptions::like(path)?)?;
    Ok(Some(dest))
}

/// Install a pair: back up both existing files, then write the key and the certificate
/// atomically (key 0600, certificate 0644, owned by `owner`). Never overwrites a key without
/// a backup.
pub fn install_pair(
    pair: &CertifiedKey,
    cert_file: &Path,
    key_file: &Path,
    owner: Option<&OsUser>,
) -> Result<Vec<PathBuf>> {
    let mut backups = Vec::new();
    for p in [key_file, cert_file] {
        if let Some(b) = backup(p)? {
            backups.push(b);
        }
    }
    // Both old files are backed up above; write without a second round of backups.
    write_pair_unchecked(pair, cert_file, key_file, owner)?;
    Ok(backups)
}

/// Write a pair whose old files were already backed up.
fn write_pair_unchecked(
    pair: &CertifiedKey,
    cert_file: &Path,
    key_file: &Path,
    owner: Option<&OsUser>,
) -> Result<()> {
    let (mut cert_opts, mut key_opts) = (WriteOptions::public(), WriteOptions::private());
    if let Some(user) = owner {
        cert_opts = cert_opts.owned_by(user);
        key_opts = key_opts.owned_by(user);
    }
    write_atomic(key_file, pair.key_pem.as_bytes(), &key_opts)?;
    write_atomic(cert_file, pair.cert_pem.as_bytes(), &cert_opts)?;
    Ok(())
}

fn steps(opts: &InstallOptions, decision: &Decision) -> Vec<Step> {
    let mut s = Vec::new();
    if !(decision.renew || opts.force) {
        return s;
    }
    let step = |a: String| Step {
        action: a,
        done: false,
    };
    s.push(step(format!(
        "issue a new {:?} certificate for {:?} {:?}, valid {} days",
        opts.request.key_type,
        opts.request.dns_names,
        opts.request
            .ip_addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        opts.request.validity_days
    )));
    for p in [&opts.key_file, &opts.cert_file] {
        if p.exists() {
            s.push(step(format!(
                "back up {} to {}",
                p.display(),
                backup_path(p).display()
            )));
        }
    }
    let owner = opts
        .owner
        .as_ref()
        .map_or_else(|| "the current user".to_string(), |u| u.name.clone());
    s.push(step(format!(
        "write {} (0600, owner {owner}) atomically",
        opts.key_file.display()
    )));
    s.push(step(format!(
        "write {} (0644, owner {owner}) atomically",
        opts.cert_file.display()
    )));
    match &opts.reload {
        Reload::None => {}
        Reload::Cluster(root) => s.push(step(format!(
            "pg_ctl reload the cluster in {}",
            root.display()
        ))),
        Reload::Sql(c) => s.push(step(format!(
            "SELECT pg_reload_conf() on {}:{} as {}",
            c.host, c.port, c.user
        ))),
    }
    if let Some((h, p)) = &opts.verify {
        s.push(step(format!(
            "check that {h}:{p} presents the new certificate"
        )));
    }
    s
}

/// What [`renew`] would do, doing nothing.
pub fn plan(opts: &InstallOptions) -> Result<Outcome> {
    let current = read_opt(&opts.cert_file)?;
    let decision = decide(current.as_deref(), &opts.request, crate::inspect::now());
    Ok(Outcome {
        steps: steps(opts, &decision),
        decision,
        new_sha256: None,
        backups: Vec::new(),
        verified: None,
    })
}

/// Renew when needed (or forced): issue from `ca`, back up, install, reload, verify.
pub async fn renew(opts: &InstallOptions, ca: &Authority) -> Result<Outcome> {
    let mut out = plan(opts)?;
    if !(out.decision.renew || opts.force) {
        return Ok(out);
    }
    let pair = ca.issue_server(&opts.request)?;
    let der = crate::inspect::read_certificates(pair.cert_pem.as_bytes())
        .map_err(|f| Error::Renew(f.message))?
        .remove(0);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&der))
    };
    out.new_sha256 = Some(sha.clone());
    out.backups = install_pair(&pair, &opts.cert_file, &opts.key_file, opts.owner.as_ref())?;
    for s in out.steps.iter_mut() {
        if s.action.starts_with("issue")
            || s.action.starts_with("back up")
            || s.action.starts_with("write")
        {
            s.done = true;
        }
    }
    match &opts.reload {
        Reload::None => {}
        Reload::Cluster(root) => {
            costplus_pgcluster::Cluster::open(root)?.reload()?;
            mark(&mut out.steps, "pg_ctl reload");
        }
        Reload::Sql(c) => {
            let client = costplus_pgcluster::connect::connect(c).await?;
            client
                .query_one("SELECT pg_reload_conf()", &[])
                .await
                .map_err(|e| {
                    Error::Renew(format!(
                        "pg_reload_conf(): {}",
                        costplus_pgcluster::pg_message(&e)
                    ))
                })?;
            mark(&mut out.steps, "SELECT pg_reload_conf()");
        }
    }
    if let Some((host, port)) = &opts.verify {
        let mut ok = false;
        // The postmaster handles SIGHUP asynchronously: poll for a few seconds.
        for _ in 0..50 {
            let probe = crate::probe::ProbeOptions::new(host, *port);
            if let Ok(chain) = crate::probe::fetch_chain(&probe).await
                && let Some(leaf) = chain.first()
            {
                use sha2::Digest;
                if hex::encode(sha2::Sha256::digest(leaf)) == sha {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        out.verified = Some(ok);
        if ok {
            mark(&mut out.steps, "check that");
        } else {
            return Err(Error::Renew(format!(
                "the new pair is installed (backups: {:?}) but {host}:{port} still presents another certificate after the reload: check the server log (a reload with a bad pair keeps the old one)",
                out.backups
            )));
        }
    }
    Ok(out)
}

/// [`renew`] on a runtime of its own, for synchronous callers (the CLI).
pub fn renew_blocking(opts: &InstallOptions, ca: &Authority) -> Result<Outcome> {
    crate::probe::runtime()?.block_on(renew(opts, ca))
}

fn mark(steps: &mut [Step], prefix: &str) {
    for s in steps.iter_mut().filter(|s| s.action.starts_with(prefix)) {
        s.done = true;
    }
}

/// Options of [`issue`]: a new pair (and, when asked, a new CA) written to files.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// CA certificate file (read, or written with `create_ca`).
    pub ca_cert: PathBuf,
    /// CA key file (read, or written 0600 with `create_ca`).
    pub ca_key: PathBuf,
    /// Create the CA when its files do not exist.
    pub create_ca: bool,
    /// CA validity in days when creating it.
    pub ca_validity_days: u32,
    /// Where the server pair goes.
    pub cert_file: PathBuf,
    /// Where the server key goes.
    pub key_file: PathBuf,
    /// Owner of the server files.
    pub owner: Option<OsUser>,
    /// What the certificate says.
    pub request: ServerCertRequest,
}

/// Load the CA from its files, or create it when allowed and absent (planned only when
/// `apply` is false). Returns the authority and whether it was (or would be) created.
pub fn load_or_create_ca(opts: &IssueOptions, apply: bool) -> Result<(Option<Authority>, bool)> {
    let cert = read_opt(&opts.ca_cert)?;
    let key = read_opt(&opts.ca_key)?;
    match (cert, key) {
        (Some(c), Some(k)) => {
            let c = String::from_utf8(c).map_err(|_| Error::BadInput {
                what: opts.ca_cert.display().to_string(),
                problem: "not PEM text".into(),
            })?;
            let k = String::from_utf8(k).map_err(|_| Error::BadInput {
                what: opts.ca_key.display().to_string(),
                problem: "not PEM text".into(),
            })?;
            Ok((Some(Authority::from_pem(&c, &k)?), false))
        }
        (None, None) if opts.create_ca => {
            if !apply {
                return Ok((None, true));
            }
            let ca = Authority::generate("costplus PostgreSQL CA", opts.ca_validity_days)?;
            write_atomic(
                &opts.ca_key,
                ca.key_pem().as_bytes(),
                &WriteOptions::private(),
            )?;
            write_atomic(
                &opts.ca_cert,
                ca.cert_pem().as_bytes(),
                &WriteOptions::public(),
            )?;
            Ok((Some(ca), true))
        }
        (None, None) => Err(Error::BadInput {
            what: opts.ca_cert.display().to_string(),
            problem: "no CA here; pass --create-ca to create one".into(),
        }),
        _ => Err(Error::BadInput {
            what: opts.ca_cert.display().to_string(),
            problem: format!(
                "only one of the CA certificate and key ({}) exists",
                opts.ca_key.display()
            ),
        }),
    }
}

/// Issue a pair from the CA (creating the CA when allowed) and install it with backups.
/// With `apply = false` nothing is written: the steps say what would happen.
pub fn issue(opts: &IssueOptions, apply: bool) -> Result<Outcome> {
    let (ca, creates) = load_or_create_ca(opts, apply)?;
    let mut out = Outcome {
        decision: Decision {
            renew: true,
            reasons: vec!["issue requested".into()],
            days_left: None,
        },
        steps: Vec::new(),
        new_sha256: None,
        backups: Vec::new(),
        verified: None,
    };
    if creates {
        out.steps.push(Step {
            action: format!(
                "create a CA: {} (0644) and {} (0600)",
                opts.ca_cert.display(),
                opts.ca_key.display()
            ),
            done: apply,
        });
    }
    let inst = InstallOptions {
        cert_file: opts.cert_file.clone(),
        key_file: opts.key_file.clone(),
        owner: opts.owner.clone(),
        request: opts.request.clone(),
        force: true,
        reload: Reload::None,
        verify: None,
    };
    out.steps.extend(steps(&inst, &out.decision));
    let Some(ca) = ca.filter(|_| apply) else {
        return Ok(out);
    };
    let pair = ca.issue_server(&opts.request)?;
    let der = crate::inspect::read_certificates(pair.cert_pem.as_bytes())
        .map_err(|f| Error::Renew(f.message))?
        .remove(0);
    {
        use sha2::Digest;
        out.new_sha256 = Some(hex::encode(sha2::Sha256::digest(&der)));
    }
    out.backups = install_pair(&pair, &opts.cert_file, &opts.key_file, opts.owner.as_ref())?;
    for s in out.steps.iter_mut() {
        s.done = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(days: u32, names: &[&str]) -> (Vec<u8>, ServerCertRequest) {
        let ca = Authority::generate("t", 3650).unwrap();
        let mut req =
            ServerCertRequest::for_names(names.iter().map(|s| s.to_string()).collect(), vec![]);
        req.validity_days = days;
        let pair = ca.issue_server(&req).unwrap();
        (pair.cert_pem.into_bytes(), req)
    }

    #[test]
    fn renewal_decisions() {
        let now = crate::inspect::now();
        let (pem, req) = cert_with(90, &["db.example.com"]);
        let d = decide(Some(&pem), &req, now);
        assert!(!d.renew, "{d:?}");
        // 61 days later: 29 of 90 days left, less than a third.
        let d = decide(Some(&pem), &req, now + 61 * 86_400);
        assert!(d.renew && d.reasons[0].contains("third"), "{d:?}");
        let d = decide(Some(&pem), &req, now + 59 * 86_400);
        assert!(!d.renew, "{d:?}");
        let d = decide(Some(&pem), &req, now + 91 * 86_400);
        assert!(d.renew && d.reasons[0].contains("expired"), "{d:?}");
        let mut other = req.clone();
        other.dns_names.push("db2.example.com".into());
        let d = decide(Some(&pem), &other, now);
        assert!(d.renew && d.reasons[0].contains("names changed"), "{d:?}");
        assert!(decide(None, &req, now).renew);
        let d = decide(Some(b"garbage"), &req, now);
        assert!(d.renew && d.reasons[0].contains("unusable"), "{d:?}");
    }

    #[test]
    fn backups_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.key");
        std::fs::write(&p, b"one").unwrap();
        let b1 = backup(&p).unwrap().unwrap();
        let b2 = backup(&p).unwrap().unwrap();
        assert_ne!(b1, b2);
        assert_eq!(std::fs::read(&b2).unwrap(), b"one");
        assert!(backup(&dir.path().join("absent")).unwrap().is_none());
    }
}
