//! One customer back in time, without touching anyone else: a selective point-in-time restore
//! of only that customer's database (`--db-include`) into a scratch cluster, then a copy into a
//! NEW database on the live server, owned by the customer's role, with CONNECT revoked from
//! PUBLIC. The live database is never overwritten: the copy gets its own name
//! (`<db>_restored_<timestamp>` by default) and an existing name is refused.
//!
//! The copy is `pg_dump -Fc` from the scratch cluster (over its private socket) piped into
//! `pg_restore --no-owner --no-acl --role=<customer role>` on the live server (TLS verified,
//! password from a temporary 0600 `PGPASSFILE`, never argv or environment).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use secrecy::ExposeSecret;
use serde::Serialize;

use crate::exec::{PgBackRest, RestoreOptions};
use crate::{Error, Result, pg_err, quote_ident};
use costplus_pgcluster::connect::{ConnectOptions, SslMode, connect};
use costplus_pgcluster::{Cluster, PgBin};

/// What to restore.
#[derive(Debug, Clone)]
pub struct CustomerRestoreOptions {
    /// The customer's live database.
    pub database: String,
    /// The customer's role (owner of the new database).
    pub role: String,
    /// Recovery target time (`2026-12-04 15:00:00+00`).
    pub target: String,
    /// Name of the new database.
    pub into: String,
    /// Repository to restore from.
    pub repo: u32,
    /// Where the scratch cluster goes.
    pub scratch_dir: PathBuf,
    /// Parallel restore processes.
    pub process_max: Option<u32>,
    /// Superuser of the backed-up cluster.
    pub superuser: String,
    /// PostgreSQL binaries (default: located).
    pub bin: Option<PgBin>,
    /// Put the copy in place of the live database once it is there, keeping the live one
    /// under this name ([`replace_live`]); asked for explicitly (`--replace --yes`).
    pub replace: Option<String>,
}

/// The default name of the copy: `<db>_restored_<YYYYMMDDHHMMSS>` (cut to 63 bytes).
pub fn default_into(database: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    stamped(database, "restored", now)
}

/// `<db>_<what>_<YYYYMMDDHHMMSS>`, the database name cut so the whole fits in 63 bytes.
fn stamped(database: &str, what: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let suffix = format!("_{what}_{}", now.format("%Y%m%d%H%M%S"));
    let keep = 63usize.saturating_sub(suffix.len());
    let mut base: String = database.to_string();
    while base.len() > keep {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// What was (or would be) done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerRestoreReport {
    /// Done (false for a plan).
    pub done: bool,
    /// Source database.
    pub database: String,
    /// New database.
    pub into: String,
    /// Its owner.
    pub owner: String,
    /// Recovery target time.
    pub target: String,
    /// Repository.
    pub repo: u32,
    /// The steps, in words.
    pub steps: Vec<String>,
    /// Tables in the new database.
    pub tables: Option<usize>,
    /// Seconds for the restore into the scratch cluster (restore + recovery).
    pub restore_seconds: Option<f64>,
    /// Seconds for the copy into the live server.
    pub copy_seconds: Option<f64>,
    /// What the replacement did ([`CustomerRestoreOptions::replace`]).
    pub replaced: Option<ReplaceReport>,
}

/// The steps, for `--plan` and the report.
pub fn plan(pgbr: &PgBackRest, opts: &CustomerRestoreOptions) -> CustomerRestoreReport {
    let r = restore_options(opts, &opts.scratch_dir.join("<scratch>"));
    CustomerRestoreReport {
        done: false,
        database: opts.database.clone(),
        into: opts.into.clone(),
        owner: opts.role.clone(),
        target: opts.target.clone(),
        repo: opts.repo,
        steps: vec![
            format!(
                "check on the live server: database {} and role {} exist, database {} does not",
                opts.database, opts.role, opts.into
            ),
            format!("restore: {}", pgbr.command_line("restore", &r.args())),
            "start the scratch cluster on a free port (socket only, archiving off) and wait for recovery".into(),
            format!(
                "CREATE DATABASE {} OWNER {} on the live server; REVOKE ALL ON DATABASE FROM PUBLIC; GRANT CONNECT TO {}",
                quote_ident(&opts.into),
                quote_ident(&opts.role),
                quote_ident(&opts.role)
            ),
            format!(
                "pg_dump -Fc {} (scratch) | pg_restore --no-owner --no-acl --role={} -d {} (live)",
                opts.database, opts.role, opts.into
            ),
            "stop and remove the scratch cluster".into(),
            match &opts.replace {
                None => format!(
                    "the live database {} is not touched; add a pg_hba.conf line for {} if the customer should reach it",
                    opts.database, opts.into
                ),
                Some(keep_as) => format!(
                    "--replace: refuse connections to {db}, end its sessions, rename {db} to {keep_as} (kept) and {} to {db}",
                    opts.into,
                    db = opts.database
                ),
            },
        ],
        tables: None,
        restore_seconds: None,
        copy_seconds: None,
        replaced: None,
    }
}

fn restore_options(opts: &CustomerRestoreOptions, scratch: &std::path::Path) -> RestoreOptions {
    RestoreOptions {
        repo: Some(opts.repo),
        target: Some(opts.target.clone()),
        db_include: vec![opts.database.clone()],
        process_max: opts.process_max,
        ..RestoreOptions::into_scratch(scratch)
    }
}

/// Restore the customer's database as of `opts.target` into the new database `opts.into` on
/// the live server reached with `live` (an administrator). On failure after the new
/// database was created, it is dropped again.
pub async fn run(
    pgbr: &PgBackRest,
    live: &ConnectOptions,
    opts: &CustomerRestoreOptions,
) -> Result<CustomerRestoreReport> {
    let mut report = plan(pgbr, opts);
    if opts.into == opts.database {
        return Err(Error::Config(format!(
            "--into {} is the live database: restore-customer never overwrites it; choose a new name",
            opts.into
        )));
    }
    let mut admin_opts = live.clone();
    admin_opts.dbname = "postgres".into();
    let mut admin = connect(&admin_opts).await?;
    let exists = |name: String, sql: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_opt(sql, &[&name])
                .await
                .map(|r| r.is_some())
                .map_err(pg_err("checking the live server"))
        }
    };
    if !exists(
        opts.database.clone(),
        "SELECT 1 FROM pg_database WHERE datname = $1",
    )
    .await?
    {
        return Err(Error::Config(format!(
            "database {} does not exist on the live server",
            opts.database
        )));
    }
    if !exists(
        opts.role.clone(),
        "SELECT 1 FROM pg_roles WHERE rolname = $1",
    )
    .await?
    {
        return Err(Error::Config(format!(
            "role {} does not exist on the live server",
            opts.role
        )));
    }
    if exists(
        opts.into.clone(),
        "SELECT 1 FROM pg_database WHERE datname = $1",
    )
    .await?
    {
        return Err(Error::Config(format!(
            "database {} already exists on the live server; choose another --into",
            opts.into
        )));
    }
    if let Some(keep_as) = &opts.replace
        && exists(
            keep_as.clone(),
            "SELECT 1 FROM pg_database WHERE datname = $1",
        )
        .await?
    {
        return Err(Error::Config(format!(
            "database {keep_as} already exists on the live server; nothing was changed"
        )));
    }

    // Short: the socket path under it is limited to 107 bytes.
    let scratch = opts.scratch_dir.join(format!(
        "c-{}",
        crate::drill::base36(chrono::Utc::now().timestamp_millis())
    ));
    let t = Instant::now();
    let result = async {
        crate::drill::prepare_scratch(&scratch, pgbr)?;
        pgbr.restore(&restore_options(opts, &scratch))?;
        let cluster =
            crate::drill::start_scratch(&scratch, pgbr, &opts.superuser, opts.bin.clone())?;
        let restore_seconds = t.elapsed().as_secs_f64();
        let copied = copy_into_live(&cluster, &admin, live, opts).await;
        let _ = cluster.stop_mode("fast");
        copied.map(|(tables, copy)| (restore_seconds, tables, copy))
    }
    .await;
    if scratch.exists() {
        if let Ok(c) = Cluster::open(&scratch) {
            let _ = c.stop_mode("immediate");
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let (restore_seconds, tables, copy_seconds) = result?;
    report.done = true;
    report.tables = Some(tables);
    report.restore_seconds = Some(restore_seconds);
    report.copy_seconds = Some(copy_seconds);
    if let Some(keep_as) = &opts.replace {
        report.replaced = Some(swap(&mut admin, &opts.database, &opts.into, keep_as).await?);
    }
    Ok(report)
}

/// What [`replace_live`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaceReport {
    /// The customer's database name, now holding the restored copy.
    pub database: String,
    /// The restored copy's former name.
    pub restored_from: String,
    /// Where the replaced live database was kept (connections to it are refused).
    pub kept_as: String,
    /// Sessions on the live database that were terminated.
    pub terminated_sessions: i64,
}

/// Put a restored copy in place of the live database, explicitly asked for
/// (`restore-customer --replace --yes`): the live database stops accepting connections, its
/// sessions are terminated, and in one transaction it is renamed to `keep_as` (kept, not
/// dropped, with connections refused) and `restored` takes its name. On any error before the
/// commit the live database is left as it was, accepting connections again.
pub async fn replace_live(
    live: &ConnectOptions,
    database: &str,
    restored: &str,
    keep_as: &str,
) -> Result<ReplaceReport> {
    let mut admin_opts = live.clone();
    admin_opts.dbname = "postgres".into();
    let mut admin = connect(&admin_opts).await?;
    for (name, want) in [(database, true), (restored, true), (keep_as, false)] {
        let found = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(pg_err("checking the live server"))?
            .is_some();
        if found != want {
            return Err(Error::Config(if want {
                format!("database {name} does not exist on the live server")
            } else {
                format!("database {name} already exists on the live server; nothing was changed")
            }));
        }
    }
    swap(&mut admin, database, restored, keep_as).await
}

/// The swap of [`replace_live`], once the names are checked.
async fn swap(
    admin: &mut tokio_postgres::Client,
    database: &str,
    restored: &str,
    keep_as: &str,
) -> Result<ReplaceReport> {
    let (db, new, keep) = (
        quote_ident(database),
        quote_ident(restored),
        quote_ident(keep_as),
    );
    admin
        .batch_execute(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false"))
        .await
        .map_err(pg_err("refusing new connections to the live database"))?;
    let swapped = async {
        let mut terminated = 0i64;
        for _ in 0..100 {
            let row = admin
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)), count(*) FROM pg_stat_activity \
                     WHERE datname = ANY($1) AND pid <> pg_backend_pid()",
                    &[&vec![database.to_string(), restored.to_string()]],
                )
                .await
                .map_err(pg_err("terminating sessions"))?;
            let (killed, left): (i64, i64) = (row.get(0), row.get(1));
            terminated += killed;
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let tx = admin
            .transaction()
            .await
            .map_err(pg_err("starting the swap"))?;
        tx.batch_execute(&format!(
            "ALTER DATABASE {db} RENAME TO {keep}; ALTER DATABASE {new} RENAME TO {db}; \
             ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .map_err(pg_err("swapping the databases"))?;
        tx.commit().await.map_err(pg_err("swapping the databases"))?;
        Ok::<_, Error>(terminated)
    }
    .await;
    match swapped {
        Ok(terminated_sessions) => Ok(ReplaceReport {
            database: database.into(),
            restored_from: restored.into(),
            kept_as: keep_as.into(),
            terminated_sessions,
        }),
        Err(e) => {
            let _ = admin
                .batch_execute(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true"))
                .await;
            Err(e)
        }
    }
}

/// The default name the replaced live database is kept under: `<db>_replaced_<YYYYMMDDHHMMSS>`.
pub fn default_keep_as(database: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    stamped(database, "replaced", now)
}

async fn copy_into_live(
    scratch: &Cluster,
    admin: &tokio_postgres::Client,
    live: &ConnectOptions,
    opts: &CustomerRestoreOptions,
) -> Result<(usize, f64)> {
    let t = Instant::now();
    let (db, role) = (quote_ident(&opts.into), quote_ident(&opts.role));
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {db} OWNER {role} TEMPLATE template0"
        ))
        .await
        .map_err(pg_err("creating the new database"))?;
    let copied = async {
        admin
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}"
            ))
            .await
            .map_err(pg_err("setting the new database's privileges"))?;
        // The public schema as provisioning leaves a customer's: owned by the customer's role,
        // nothing for PUBLIC (the restore runs as that role and creates its objects there).
        let mut o = live.clone();
        o.dbname = opts.into.clone();
        let c = connect(&o).await?;
        c.batch_execute(&format!(
            "ALTER SCHEMA public OWNER TO {role}; REVOKE ALL ON SCHEMA public FROM PUBLIC; \
             GRANT USAGE, CREATE ON SCHEMA public TO {role}"
        ))
        .await
        .map_err(pg_err("locking the new database's public schema"))?;
        pipe_dump_restore(scratch, live, opts)?;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema')
                   AND n.nspname NOT LIKE 'pg_toast%'",
                &[],
            )
            .await
            .map_err(pg_err("counting restored tables"))?
            .get(0);
        Ok::<_, Error>(n as usize)
    }
    .await;
    match copied {
        Ok(n) => Ok((n, t.elapsed().as_secs_f64())),
        Err(e) => {
            // Leave nothing half-done.
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await;
            Err(e)
        }
    }
}

fn pipe_dump_restore(
    scratch: &Cluster,
    live: &ConnectOptions,
    opts: &CustomerRestoreOptions,
) -> Result<()> {
    let mut dump = scratch.command("pg_dump");
    dump.arg("-Fc")
        .arg("--no-owner")
        .arg("--no-acl")
        .arg("-h")
        .arg(scratch.socket_dir())
        .arg("-p")
        .arg(scratch.port().to_string())
        .arg("-U")
        .arg(scratch.superuser())
        .arg(&opts.database)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A private directory for the password file.
    let tmp = tempfile_dir()?;
    let passfile = tmp.join("pgpass");
    let mut restore = Command::new(scratch.bin().tool("pg_restore"));
    restore
        .arg("--no-owner")
        .arg("--no-acl")
        .arg("--exit-on-error")
        .arg(format!("--role={}", opts.role))
        .arg("-d")
        .arg(&opts.into)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PGPORT", live.port.to_string())
        .env("PGUSER", &live.user)
        .env("PGAPPNAME", "costplus-restore-customer")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match &live.ssl {
        SslMode::VerifyFull {
            ca_file,
            server_name,
        } => {
            restore
                .env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", ca_file);
            match server_name {
                Some(name) => restore.env("PGHOST", name).env("PGHOSTADDR", &live.host),
                None => restore.env("PGHOST", &live.host),
            };
        }
        _ => {
            restore
                .env("PGHOST", &live.host)
                .env("PGSSLMODE", "disable");
        }
    }
    if let Some(pw) = &live.password {
        let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let line = zeroize::Zeroizing::new(format!(
            "*:*:*:{}:{}\n",
            esc(&live.user),
            esc(pw.expose_secret())
        ));
        costplus_fs::write_atomic(
            &passfile,
            line.as_bytes(),
            &costplus_fs::WriteOptions::private(),
        )?;
        restore.env("PGPASSFILE", &passfile);
    }
    let result = (|| {
        let mut d = dump.spawn().map_err(|e| Error::Tool {
            command: "pg_dump".into(),
            status: e.to_string(),
            output: String::new(),
        })?;
        let mut r = restore.spawn().map_err(|e| Error::Tool {
            command: "pg_restore".into(),
            status: e.to_string(),
            output: String::new(),
        })?;
        let mut from = d
            .stdout
            .take()
            .ok_or_else(|| Error::Config("no pg_dump stdout".into()))?;
        let mut to = r
            .stdin
            .take()
            .ok_or_else(|| Error::Config("no pg_restore stdin".into()))?;
        let copy = std::io::copy(&mut from, &mut to);
        let _ = to.flush();
        drop(to);
        let dout = d
            .wait_with_output()
            .map_err(crate::io_err(std::path::Path::new("pg_dump")))?;
        let rout = r
            .wait_with_output()
            .map_err(crate::io_err(std::path::Path::new("pg_restore")))?;
        if !dout.status.success() {
            return Err(Error::Tool {
                command: "pg_dump (scratch cluster)".into(),
                status: dout.status.to_string(),
                output: String::from_utf8_lossy(&dout.stderr).into_owned(),
            });
        }
        if !rout.status.success() {
            return Err(Error::Tool {
                command: "pg_restore (live server)".into(),
                status: rout.status.to_string(),
                output: String::from_utf8_lossy(&rout.stderr).into_owned(),
            });
        }
        copy.map_err(crate::io_err(std::path::Path::new("pg_dump | pg_restore")))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn tempfile_dir() -> Result<PathBuf> {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let dir = std::env::temp_dir().join(format!(
        "costplus-restore-{}-{}",
        std::process::id(),
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    costplus_fs::create_dir_with_mode(&dir, 0o700)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_fit_in_63_bytes() {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            default_into("acme_db", t),
            "acme_db_restored_20270115080000"
        );
        let long = "x".repeat(60);
        let n = default_into(&long, t);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_restored_20270115080000"));
    }
}
