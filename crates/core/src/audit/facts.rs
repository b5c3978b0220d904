//! What the audit looks at, gathered with a constant number of catalog queries (plus one small
//! query per customer database) and a few host commands. Checks are pure functions of this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::config::NamingPolicy;

/// A server setting as `pg_settings` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// Current value (with unit applied where PostgreSQL shows one).
    pub value: String,
    /// Where it came from (`default`, `configuration file`, ...).
    pub source: String,
    /// File that set it, when known.
    pub file: Option<String>,
    /// Line in that file.
    pub line: Option<i32>,
}

/// A role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Name.
    pub name: String,
    /// SUPERUSER.
    pub superuser: bool,
    /// CREATEDB.
    pub createdb: bool,
    /// CREATEROLE.
    pub createrole: bool,
    /// REPLICATION.
    pub replication: bool,
    /// BYPASSRLS.
    pub bypassrls: bool,
    /// LOGIN.
    pub login: bool,
    /// CONNECTION LIMIT (-1: none).
    pub connlimit: i32,
    /// Kind of stored password: `scram`, `md5`, `plain`, or `none`.
    pub password_kind: String,
    /// Roles it is a member of (directly or not).
    pub member_of: Vec<String>,
}

/// A customer database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerDb {
    /// Customer name (from the naming policy).
    pub customer: String,
    /// Database.
    pub database: String,
    /// Owner role.
    pub owner: String,
    /// PUBLIC may CONNECT.
    pub public_connect: bool,
    /// PUBLIC may create TEMP tables.
    pub public_temp: bool,
    /// PUBLIC may CREATE in schema public (None: could not connect to check).
    pub public_schema_create: Option<bool>,
    /// Risky extensions and untrusted languages installed (None: could not connect).
    pub risky_objects: Option<Vec<String>>,
}

/// A pg_hba.conf rule as the server reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HbaRule {
    /// Line number.
    pub line: i32,
    /// Connection type.
    pub kind: Option<String>,
    /// Databases.
    pub database: Vec<String>,
    /// Users.
    pub user: Vec<String>,
    /// Address.
    pub address: Option<String>,
    /// Netmask.
    pub netmask: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// Error text, when the line is invalid.
    pub error: Option<String>,
}

/// Facts about the host (`Err` holds why a fact could not be read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// `sshd -T` output as key -> value, or why not.
    pub sshd: Result<BTreeMap<String, String>, String>,
    /// `ufw status verbose` output, or why not.
    pub ufw: Result<String, String>,
    /// Whether unattended upgrades are enabled, or why unknown.
    pub unattended_upgrades: Result<bool, String>,
    /// `fail2ban-client status costplus-postgresql`, or why not.
    pub fail2ban_jail: Result<String, String>,
    /// Mode of the data directory, or why unknown.
    pub data_dir_mode: Result<u32, String>,
    /// Disk use in percent per label, or why unknown.
    pub disk_used_percent: BTreeMap<String, Result<f64, String>>,
}

impl Default for HostFacts {
    fn default() -> Self {
        fn no<T>() -> Result<T, String> {
            Err("not collected".to_string())
        }
        Self {
            sshd: no(),
            ufw: no(),
            unattended_upgrades: no(),
            fail2ban_jail: no(),
            data_dir_mode: no(),
            disk_used_percent: BTreeMap::new(),
        }
    }
}

/// Everything the checks read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Server name.
    pub server: String,
    /// `server_version_num`.
    pub version_num: i32,
    /// Settings by name.
    pub settings: BTreeMap<String, Setting>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// Customer databases.
    pub customers: Vec<CustomerDb>,
    /// pg_hba.conf as the server reads it.
    pub hba: Vec<HbaRule>,
    /// The pg_hba.conf path.
    pub hba_file: Option<String>,
    /// Roles or databases with `password_encryption` overridden (role/db, value).
    pub password_encryption_overrides: Vec<(String, String)>,
    /// `pg_stat_archiver`: (archived_count, failed_count, failing: the last attempt failed and the
    /// last success is more than 15 minutes older, or there never was one; a single transient
    /// failure that the next attempt fixes does not count).
    pub archiver: Option<(i64, i64, bool)>,
    /// Host facts.
    pub host: HostFacts,
    /// Extra facts supplied by other crates (backups, offsite, TLS probe, isolation proof,
    /// hba lint), as JSON by key.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Settings the audit reads.
pub const SETTINGS: &[&str] = &[
    "ssl",
    "ssl_min_protocol_version",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_cert_file",
    "ssl_key_file",
    "password_encryption",
    "log_connections",
    "log_disconnections",
    "log_line_prefix",
    "lc_messages",
    "log_statement",
    "logging_collector",
    "log_destination",
    "log_file_mode",
    "log_timezone",
    "archive_mode",
    "archive_command",
    "listen_addresses",
    "data_directory",
    "hba_file",
    "port",
    "server_version_num",
];

/// Roles whose membership gives a customer power over the server or other customers.
pub const DANGEROUS_ROLES: &[&str] = &[
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_signal_backend",
    "pg_checkpoint",
    "pg_read_all_settings",
    "pg_monitor",
];

/// Gather the catalog facts over an admin (superuser) connection.
pub async fn gather_catalog(
    client: &tokio_postgres::Client,
    server: &str,
    naming: &NamingPolicy,
) -> Result<Facts, tokio_postgres::Error> {
    client
        .batch_execute("SET statement_timeout = '30s'")
        .await?;
    let mut f = Facts {
        server: server.into(),
        ..Facts::default()
    };
    let names: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    for r in client
        .query("SELECT name, setting, source, sourcefile, sourceline FROM pg_settings WHERE name = ANY($1)", &[&names])
        .await?
    {
        f.settings.insert(r.get(0), Setting { value: r.get(1), source: r.get(2), file: r.get(3), line: r.get(4) });
    }
    f.version_num = f
        .settings
        .get("server_version_num")
        .and_then(|s| s.value.parse().ok())
        .unwrap_or(0);
    f.hba_file = f.settings.get("hba_file").map(|s| s.value.clone());

    for r in client
        .query(
            // Memberships (direct or not) from the pg_auth_members graph: linear in roles and
            // grants (pg_has_role for every pair of roles grew with the square of customers).
            "WITH RECURSIVE m(member, roleid) AS ( \
                 SELECT member, roleid FROM pg_auth_members \
                 UNION SELECT m.member, g.roleid FROM m JOIN pg_auth_members g ON g.member = m.roleid), \
             groups AS (SELECT m.member, array_agg(DISTINCT b.rolname ORDER BY b.rolname) AS names \
                 FROM m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member <> m.roleid GROUP BY m.member) \
             SELECT a.rolname, a.rolsuper, a.rolcreatedb, a.rolcreaterole, a.rolreplication, a.rolbypassrls, \
                    a.rolcanlogin, a.rolconnlimit, \
                    CASE WHEN a.rolpassword IS NULL THEN 'none' \
                         WHEN a.rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' \
                         WHEN a.rolpassword ~ '^md5[0-9a-f]{32}$' THEN 'md5' ELSE 'plain' END, \
                    coalesce(g.names, '{}') \
             FROM pg_authid a LEFT JOIN groups g ON g.member = a.oid \
             WHERE a.rolname NOT LIKE 'pg\\_%' ORDER BY 1",
            &[],
        )
        .await?
    {
        let role = Role {
            name: r.get(0),
            superuser: r.get(1),
            createdb: r.get(2),
            createrole: r.get(3),
            replication: r.get(4),
            bypassrls: r.get(5),
            login: r.get(6),
            connlimit: r.get(7),
            password_kind: r.get(8),
            member_of: r.get(9),
        };
        f.roles.insert(role.name.clone(), role);
    }

    for r in client
        .query(
            "SELECT coalesce(r.rolname, ''), coalesce(d.datname, ''), array_to_string(s.setconfig, ',') \
             FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole \
             LEFT JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE array_to_string(s.setconfig, ',') LIKE '%password_encryption%'",
            &[],
        )
        .await?
    {
        let (role, db, setting): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        f.password_encryption_overrides
            .push((format!("{role}@{db}"), setting));
    }

    let dbs = client
        .query(
            "SELECT d.datname, r.rolname, \
                    has_database_privilege('public', d.oid, 'CONNECT'), has_database_privilege('public', d.oid, 'TEMP') \
             FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE NOT d.datistemplate ORDER BY 1",
            &[],
        )
        .await?;
    for r in dbs {
        let (db, owner): (String, String) = (r.get(0), r.get(1));
        let Some(customer) = naming.customer_of_database(&db) else {
            continue;
        };
        if naming.role_for(&customer) != owner {
            continue;
        }
        f.customers.push(CustomerDb {
            customer,
            database: db,
            owner,
            public_connect: r.get(2),
            public_temp: r.get(3),
            public_schema_create: None,
            risky_objects: None,
        });
    }
    for r in client
        .query(
            "SELECT line_number, type, coalesce(database, '{}'), coalesce(user_name, '{}'), address, netmask, auth_method, error \
             FROM pg_hba_file_rules ORDER BY line_number",
            &[],
        )
        .await?
    {
        f.hba.push(HbaRule {
            line: r.get(0),
            kind: r.get(1),
            database: r.get(2),
            user: r.get(3),
            address: r.get(4),
            netmask: r.get(5),
            method: r.get(6),
            error: r.get(7),
        });
    }
    if let Ok(r) = client
        .query_one(
            "SELECT archived_count, failed_count, coalesce(last_failed_time > coalesce(last_archived_time, 'epoch') \
             AND (last_archived_time IS NULL OR last_failed_time - last_archived_time > interval '15 minutes'), false) \
             FROM pg_stat_archiver",
            &[],
        )
        .await
    {
        f.archiver = Some((r.get(0), r.get(1), r.get(2)));
    }
    Ok(f)
}

/// Look inside every customer database (public schema privileges, risky extensions and
/// languages): one small query per database, `concurrency` at a time. `connect_db` opens an
/// admin connection to a database (the Unix socket is much cheaper than TLS + SCRAM).
pub async fn gather_customer_dbs<F, Fut>(facts: &mut Facts, connect_db: F, concurrency: usize)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<tokio_postgres::Client>>,
{
    let names: Vec<String> = facts.customers.iter().map(|c| c.database.clone()).collect();
    for (db, inside) in look_inside(names, connect_db, concurrency).await {
        if let Some(c) = facts.customers.iter_mut().find(|c| c.database == db) {
            c.public_schema_create = Some(inside.public_create);
            c.risky_objects = Some(inside.risky);
        }
    }
}

/// What one small query sees inside a customer database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inside {
    /// PUBLIC may CREATE in schema public.
    pub public_create: bool,
    /// Server-side connection tools: `extension dblink`, `language plpython3u`, ...
    pub risky: Vec<String>,
}

/// Run the inside-the-database query on every database in `dbs`, `concurrency` at a time.
/// Databases that cannot be opened are left out of the result.
pub async fn look_inside<F, Fut>(
    dbs: Vec<String>,
    connect_db: F,
    concurrency: usize,
) -> BTreeMap<String, Inside>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<tokio_postgres::Client>>,
{
    use futures_util::StreamExt;
    const SQL: &str = "SELECT coalesce((SELECT has_schema_privilege('public', 'public', 'CREATE') \
                              WHERE EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public')), false), \
                       coalesce((SELECT array_agg(x ORDER BY x) FROM ( \
                           SELECT 'extension ' || extname AS x FROM pg_extension \
                            WHERE extname IN ('dblink', 'postgres_fdw', 'file_fdw', 'adminpack') \
                           UNION ALL SELECT 'language ' || lanname FROM pg_language WHERE NOT lanpltrusted AND lanispl) s), '{}')";
    futures_util::stream::iter(dbs)
        .map(|db| {
            let fut = connect_db(db.clone());
            async move {
                let row = match fut.await {
                    Some(client) => client.query_one(SQL, &[]).await.ok().map(|r| Inside {
                        public_create: r.get(0),
                        risky: r.get(1),
                    }),
                    None => None,
                };
                (db, row)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|(db, row)| async move { row.map(|r| (db, r)) })
        .collect()
        .await
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let path = costplus_fs::system_tool(cmd).ok_or_else(|| format!("{cmd} is not installed"))?;
    let out = Command::new(&path)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Gather host facts (run on the database host; most need root to be complete).
pub fn gather_host(data_dir: Option<&Path>, disk_paths: &[(String, PathBuf)]) -> HostFacts {
    let sshd = run("sshd", &["-T"]).map(|t| {
        t.lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect()
    });
    let ufw = run("ufw", &["status", "verbose"]);
    let unattended_upgrades = std::fs::read_to_string("/etc/apt/apt.conf.d/20auto-upgrades")
        .map(|t| {
            t.lines()
                .any(|l| l.contains("Unattended-Upgrade") && l.contains("\"1\""))
        })
        .map_err(|e| format!("/etc/apt/apt.conf.d/20auto-upgrades: {e}"));
    let fail2ban_jail = run("fail2ban-client", &["status", crate::fail2ban::NAME]);
    let data_dir_mode = match data_dir {
        Some(d) => std::fs::metadata(d)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .map_err(|e| format!("{}: {e}", d.display())),
        None => Err("data directory unknown".into()),
    };
    let disk_used_percent = disk_paths
        .iter()
        .map(|(label, p)| {
            let d = crate::incident::disk(label, p);
            (
                label.clone(),
                match d.error {
                    None => Ok(d.used_percent),
                    Some(e) => Err(format!("{}: {e}", p.display())),
                },
            )
        })
        .collect();
    HostFacts {
        sshd,
        ufw,
        unattended_upgrades,
        fail2ban_jail,
        data_dir_mode,
        disk_used_percent,
    }
}
