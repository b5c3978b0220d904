//! The isolation proof: for every ordered pair of customers (A, B), A cannot reach B's
//! database. Three sources of evidence:
//!
//! - the catalog (constant number of queries): CONNECT privileges on B's database (PUBLIC, A,
//!   or a role A belongs to), A's membership in B's role, A's SUPERUSER / CREATEROLE /
//!   BYPASSRLS, dangerous predefined roles, and server-side connection tools in A's database
//!   (dblink, postgres_fdw, untrusted languages: one small query per customer database);
//! - pg_hba.conf read as PostgreSQL reads it (costplus-hba): a non-reject network rule that matches
//!   user A and database B, confirmed by the matcher walking the rules in order as the server
//!   does;
//! - live attempts: for a sample of pairs, A's real credentials against B's database must be
//!   refused, and a plaintext (non-TLS) login of each sampled customer must be refused.
//!
//! A violation that applies to every customer is reported once with `"*"`, not N times.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::{Error, Result};
use costplus_hba::{ConnType, Connection, ReadOptions};

/// One way a customer can reach another's database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    /// Customer A (`*`: every customer).
    pub from: String,
    /// Customer B whose database A reaches (`*`: every customer).
    pub to: String,
    /// `catalog`, `pg_hba` or `live`.
    pub source: &'static str,
    /// Short kind (`public-connect`, `granted-connect`, `member-of-role`, `superuser`, ...).
    pub kind: String,
    /// What was seen.
    pub evidence: String,
}

/// Results of the live attempts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveResults {
    /// Ordered pairs tried.
    pub pairs_tried: usize,
    /// Pairs refused as they should be.
    pub pairs_refused: usize,
    /// Plaintext logins tried.
    pub plaintext_tried: usize,
    /// Plaintext logins refused.
    pub plaintext_refused: usize,
    /// Why live checks were skipped or limited, if they were.
    pub note: Option<String>,
}

/// The proof.
#[derive(Debug, Clone, Serialize)]
pub struct IsolationReport {
    /// Server.
    pub server: String,
    /// Customers found (databases named by the policy and owned by their role).
    pub customers: usize,
    /// Ordered pairs covered by the catalog and pg_hba analysis.
    pub pairs: usize,
    /// Every violation; empty when isolated.
    pub violations: Vec<Violation>,
    /// The live attempts.
    pub live: LiveResults,
    /// Catalog queries used (constant in the number of customers).
    pub catalog_queries: usize,
    /// Time taken by the catalog and pg_hba analysis, ms.
    pub analysis_ms: u128,
}

/// A customer as the catalog shows it.
#[derive(Debug, Clone)]
struct Cust {
    name: String,
    role: String,
    db: String,
}

/// What the catalog says, gathered in a fixed number of queries.
struct Catalog {
    customers: Vec<Cust>,
    /// role -> every role it belongs to (transitively).
    member_of: BTreeMap<String, BTreeSet<String>>,
    /// role -> (superuser, createrole, bypassrls)
    attrs: BTreeMap<String, (bool, bool, bool)>,
    /// db -> grantees of CONNECT (`PUBLIC` for public)
    connect: BTreeMap<String, BTreeSet<String>>,
}

const DANGEROUS: &[&str] = &[
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
];

async fn catalog(admin: &tokio_postgres::Client, config: &Config) -> Result<Catalog> {
    let pg = |e: tokio_postgres::Error| Error::Pg(costplus_pgcluster::Error::Postgres(e));
    let mut customers = Vec::new();
    for r in admin
        .query("SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE NOT d.datistemplate", &[])
        .await
        .map_err(pg)?
    {
        let (db, owner): (String, String) = (r.get(0), r.get(1));
        if let Some(c) = config.naming.customer_of_database(&db)
            && config.naming.role_for(&c) == owner
        {
            customers.push(Cust { name: c, role: owner, db });
        }
    }
    customers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut attrs = BTreeMap::new();
    for r in admin
        .query(
            "SELECT rolname, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles",
            &[],
        )
        .await
        .map_err(pg)?
    {
        attrs.insert(r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3)));
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in admin
        .query("SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid", &[])
        .await
        .map_err(pg)?
    {
        edges.entry(r.get(0)).or_default().insert(r.get(1));
    }
    let mut member_of = BTreeMap::new();
    for c in &customers {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = edges.get(&c.role).into_iter().flatten().cloned().collect();
        while let Some(g) = stack.pop() {
            if seen.insert(g.clone()) {
                stack.extend(edges.get(&g).into_iter().flatten().cloned());
            }
        }
        member_of.insert(c.role.clone(), seen);
    }
    let mut connect: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in admin
        .query(
            "SELECT d.datname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END \
             FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
             WHERE a.privilege_type = 'CONNECT' AND NOT d.datistemplate",
            &[],
        )
        .await
        .map_err(pg)?
    {
        connect.entry(r.get(0)).or_default().insert(r.get(1));
    }
    Ok(Catalog {
        customers,
        member_of,
        attrs,
        connect,
    })
}

fn catalog_violations(cat: &Catalog, risky: &BTreeMap<String, Vec<String>>) -> Vec<Violation> {
    let mut v = Vec::new();
    let by_role: BTreeMap<&str, &Cust> =
        cat.customers.iter().map(|c| (c.role.as_str(), c)).collect();
    for a in &cat.customers {
        let (su, cr, br) = cat.attrs.get(&a.role).copied().unwrap_or_default();
        for (flag, kind) in [(su, "superuser"), (cr, "createrole"), (br, "bypassrls")] {
            if flag {
                v.push(Violation {
                    from: a.name.clone(),
                    to: "*".into(),
                    source: "catalog",
                    kind: kind.into(),
                    evidence: format!("role {} has {}", a.role, kind.to_uppercase()),
                });
            }
        }
        let groups = cat.member_of.get(&a.role).cloned().unwrap_or_default();
        for g in &groups {
            if DANGEROUS.contains(&g.as_str()) {
                v.push(Violation {
                    from: a.name.clone(),
                    to: "*".into(),
                    source: "catalog",
                    kind: "dangerous-role".into(),
                    evidence: format!("role {} is a member of {g}", a.role),
                });
            }
            if let Some(b) = by_role.get(g.as_str())
                && b.name != a.name
            {
                v.push(Violation {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    source: "catalog",
                    kind: "member-of-role".into(),
                    evidence: format!("role {} is a member of {} (SET ROLE)", a.role, b.role),
                });
            }
        }
        if let Some(objs) = risky.get(&a.db)
            && !objs.is_empty()
        {
            v.push(Violation {
                from: a.name.clone(),
                to: "*".into(),
                source: "catalog",
                kind: "server-side-connections".into(),
                evidence: format!("{} has {}", a.db, objs.join(", ")),
            });
        }
    }
    for b in &cat.customers {
        let grantees = cat.connect.get(&b.db).cloned().unwrap_or_default();
        if grantees.contains("PUBLIC") {
            v.push(Violation {
                from: "*".into(),
                to: b.name.clone(),
                source: "catalog",
                kind: "public-connect".into(),
                evidence: format!("PUBLIC has CONNECT on {}", b.db),
            });
        }
        for a in &cat.customers {
            if a.name == b.name {
                continue;
            }
            let via: Vec<&String> = grantees
                .iter()
                .filter(|g| {
                    **g == a.role || cat.member_of.get(&a.role).is_some_and(|m| m.contains(*g))
                })
                .collect();
            for g in via {
                v.push(Violation {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    source: "catalog",
                    kind: "granted-connect".into(),
                    evidence: format!("{g} has CONNECT on {}", b.db),
                });
            }
        }
    }
    v
}

/// How one pg_hba field matches: every customer, or these names.
enum Matches {
    All,
    Some(BTreeSet<String>),
}

fn hba_violations(cat: &Catalog, set: &costplus_hba::RuleSet, regex_on: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    let by_db: BTreeMap<&str, &Cust> = cat.customers.iter().map(|c| (c.db.as_str(), c)).collect();
    for row in &set.rows {
        if row.error.is_some() {
            continue;
        }
        let view = row.view();
        if view.auth_method == Some("reject") {
            continue;
        }
        let (Some(dbs), Some(users), Some(ty)) = (&view.database, &view.user_name, view.conn_type)
        else {
            continue;
        };
        // Customers never get a shell on the server: only network rules are paths for them
        // (server-side connection tools are reported from the catalog).
        if ty == "local" {
            continue;
        }
        let users_m = if users.iter().any(|u| u == "all") {
            Matches::All
        } else {
            let mut s = BTreeSet::new();
            for c in &cat.customers {
                let groups = cat.member_of.get(&c.role);
                if users.iter().any(|u| {
                    *u == c.role
                        || u.strip_prefix('+')
                            .is_some_and(|g| g == c.role || groups.is_some_and(|m| m.contains(g)))
                }) {
                    s.insert(c.name.clone());
                }
            }
            Matches::Some(s)
        };
        let dbs_m = if dbs.iter().any(|d| d == "all") {
            Matches::All
        } else {
            let mut s = BTreeSet::new();
            for d in dbs {
                if let Some(c) = by_db.get(d.as_str()) {
                    s.insert(c.name.clone());
                }
            }
            // samerole/samegroup: a member of a role named like the database.
            if dbs.iter().any(|d| d == "samerole" || d == "samegroup") {
                for c in &cat.customers {
                    if cat.customers.iter().any(|a| {
                        cat.member_of
                            .get(&a.role)
                            .is_some_and(|m| m.contains(&c.db))
                    }) {
                        s.insert(c.name.clone());
                    }
                }
            }
            Matches::Some(s)
        };
        let addr: Option<IpAddr> = view
            .address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .or(Some(IpAddr::from([203, 0, 113, 10])));
        let conn_type = match ty {
            "local" => ConnType::Local,
            "hostnossl" => ConnType::HostNoSsl,
            "host" => ConnType::Host,
            "hostgssenc" => ConnType::HostGssEnc,
            "hostnogssenc" => ConnType::HostNoGssEnc,
            _ => ConnType::HostSsl,
        };
        // Confirm with the matcher (first match wins, as the server reads the file).
        let decides = |user: &Cust, db: &Cust| {
            let conn = Connection {
                conn_type,
                database: db.db.clone(),
                user: user.role.clone(),
                addr: if conn_type == ConnType::Local {
                    None
                } else {
                    addr
                },
                hostname: None,
                member_of: cat
                    .member_of
                    .get(&user.role)
                    .map(|m| m.iter().cloned().collect())
                    .unwrap_or_default(),
                physical_replication: false,
            };
            let e = costplus_hba::explain(set, &conn, regex_on);
            e.decision
                .as_ref()
                .is_some_and(|d| d.line_number == row.line_number)
                && e.auth_method.as_deref() != Some("reject")
        };
        let evidence = format!(
            "{}:{}: {} {} {} {} {}",
            row.file_name(),
            row.line_number,
            ty,
            dbs.join(","),
            users.join(","),
            view.address.as_deref().unwrap_or(""),
            view.auth_method.unwrap_or("?")
        );
        let (a0, b0) = match (cat.customers.first(), cat.customers.get(1)) {
            (Some(a), Some(b)) => (a, b),
            _ => continue,
        };
        match (&users_m, &dbs_m) {
            (Matches::All, Matches::All) => {
                if decides(a0, b0) || decides(b0, a0) {
                    out.push(Violation {
                        from: "*".into(),
                        to: "*".into(),
                        source: "pg_hba",
                        kind: "rule-opens-every-database".into(),
                        evidence,
                    });
                }
            }
            (Matches::All, Matches::Some(targets)) => {
                for t in targets {
                    let b = cat.customers.iter().find(|c| &c.name == t).unwrap_or(b0);
                    let a = if a0.name == b.name { b0 } else { a0 };
                    if decides(a, b) {
                        out.push(Violation {
                            from: "*".into(),
                            to: t.clone(),
                            source: "pg_hba",
                            kind: "rule-opens-database".into(),
                            evidence: evidence.clone(),
                        });
                    }
                }
            }
            (Matches::Some(from), Matches::All) => {
                for f in from {
                    let a = cat.customers.iter().find(|c| &c.name == f).unwrap_or(a0);
                    let b = if a.name == a0.name { b0 } else { a0 };
                    if decides(a, b) {
                        out.push(Violation {
                            from: f.clone(),
                            to: "*".into(),
                            source: "pg_hba",
                            kind: "rule-opens-every-database".into(),
                            evidence: evidence.clone(),
                        });
                    }
                }
            }
            (Matches::Some(from), Matches::Some(targets)) => {
                for f in from {
                    for t in targets {
                        if f == t {
                            continue;
                        }
                        let (Some(a), Some(b)) = (
                            cat.customers.iter().find(|c| &c.name == f),
                            cat.customers.iter().find(|c| &c.name == t),
                        ) else {
                            continue;
                        };
                        if decides(a, b) {
                            out.push(Violation {
                                from: f.clone(),
                                to: t.clone(),
                                source: "pg_hba",
                                kind: "rule-opens-database".into(),
                                evidence: evidence.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Options of [`check`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How many ordered pairs to try live (0: none).
    pub live_pairs: usize,
    /// The pg_hba.conf file and how the server reads it.
    pub hba_file: std::path::PathBuf,
    /// Server reading options.
    pub read: ReadOptions,
}

/// Try a real login as `role` into `db` with the customer's password; `tls` false forces a
/// plaintext connection. Returns whether the server let it in.
async fn try_login(
    server: &crate::config::ServerConfig,
    role: &str,
    password: &secrecy::SecretString,
    db: &str,
    tls: bool,
) -> bool {
    let Ok(mut o) = server.admin_connect_options() else {
        return false;
    };
    o.user = role.into();
    o.password = Some(password.clone());
    o.dbname = db.into();
    o.connect_timeout = std::time::Duration::from_secs(5);
    if !tls {
        o.ssl = costplus_pgcluster::connect::SslMode::Disable;
    }
    costplus_pgcluster::connect::connect(&o).await.is_ok()
}

/// Prove isolation. `risky` maps customer databases to the server-side connection tools found
/// inside them (see [`crate::audit::facts::gather_customer_dbs`]); with a `vault`, a sample of
/// pairs is tried live with the customers' own credentials.
pub async fn check(
    admin: &tokio_postgres::Client,
    config: &Config,
    server: &crate::config::ServerConfig,
    opts: &CheckOptions,
    risky: Option<BTreeMap<String, Vec<String>>>,
    vault: Option<&costplus_vault::Vault>,
) -> Result<IsolationReport> {
    let started = Instant::now();
    let cat = catalog(admin, config).await?;
    let n = cat.customers.len();
    let mut violations = catalog_violations(&cat, &risky.unwrap_or_default());
    let set = costplus_hba::read_rules_file(&opts.hba_file, &opts.read).map_err(Error::Hba)?;
    violations.extend(hba_violations(&cat, &set, opts.read.version.major() >= 16));
    let analysis_ms = started.elapsed().as_millis();
    let mut results = LiveResults::default();
    match vault {
        Some(vault) if opts.live_pairs > 0 && n >= 1 => {
            let secret = |c: &str| vault.get(c).ok().map(|r| r.secret);
            // A deterministic spread of pairs: (i, i+1), (i, i+n/2), ...
            let mut pairs = Vec::new();
            let mut step = 1;
            while pairs.len() < opts.live_pairs && step < n {
                for i in 0..n {
                    if pairs.len() >= opts.live_pairs {
                        break;
                    }
                    pairs.push((i, (i + step) % n));
                }
                step = (step * 2).max(step + 1);
            }
            if n == 1 {
                results.note = Some("one customer: no pair to try, plaintext login tried".into());
            }
            // With one customer there is no pair, but its plaintext login is still tried.
            let mut sampled: BTreeSet<usize> = if n == 1 { [0].into() } else { BTreeSet::new() };
            for (i, j) in pairs {
                let (a, b) = (&cat.customers[i], &cat.customers[j]);
                let Some(pw) = secret(&a.name) else {
                    results.note = Some(format!(
                        "no vault record for {}: pairs from it not tried",
                        a.name
                    ));
                    continue;
                };
                results.pairs_tried += 1;
                if try_login(server, &a.role, &pw, &b.db, true).await {
                    violations.push(Violation {
                        from: a.name.clone(),
                        to: b.name.clone(),
                        source: "live",
                        kind: "login-succeeded".into(),
                        evidence: format!("{} logged in to {} over TLS", a.role, b.db),
                    });
                } else {
                    results.pairs_refused += 1;
                }
                sampled.insert(i);
            }
            for i in sampled {
                let a = &cat.customers[i];
                let Some(pw) = secret(&a.name) else { continue };
                results.plaintext_tried += 1;
                if try_login(server, &a.role, &pw, &a.db, false).await {
                    violations.push(Violation {
                        from: a.name.clone(),
                        to: a.name.clone(),
                        source: "live",
                        kind: "plaintext-login".into(),
                        evidence: format!("{} logged in to {} without TLS", a.role, a.db),
                    });
                } else {
                    results.plaintext_refused += 1;
                }
            }
        }
        Some(_) if n == 0 => results.note = Some("no customers".into()),
        _ => results.note = Some("live attempts not requested".into()),
    }
    let server = &server.name;
    violations.sort();
    violations.dedup();
    Ok(IsolationReport {
        server: server.into(),
        customers: n,
        pairs: n * n.saturating_sub(1),
        violations,
        live: results,
        catalog_queries: 5,
        analysis_ms,
    })
}
