//! The customer operations over one server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::journal::{Journal, Operation};
use super::names::{self, CustomerNames, quote_ident, quote_literal};
use super::password;
use crate::config::{Config, ServerConfig};
use crate::{Error, Result};
use costplus_hba::{ApplyOptions, ApplyReport, PgVersion, ReadOptions, RuleSpec};
use costplus_vault::{NewRecord, Status as VaultStatus, Vault};

/// A failpoint at a step boundary (compiled in with the `failpoints` feature).
macro_rules! step_boundary {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| Err(Error::Invalid(format!(
            "failpoint {} triggered",
            $name
        ))));
    };
}

/// Everything an operation needs about one server.
pub struct Ctx<'a> {
    /// The whole configuration.
    pub config: &'a Config,
    /// The server.
    pub server: &'a ServerConfig,
    /// A superuser connection to it.
    pub admin: &'a tokio_postgres::Client,
    /// The vault.
    pub vault: &'a mut Vault,
    /// What the server told us about itself.
    pub facts: ServerFacts,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("server", &self.server.name)
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// Discovered from the server (`SHOW hba_file`, version, ssl, ...).
#[derive(Debug, Clone, Serialize)]
pub struct ServerFacts {
    /// pg_hba.conf path.
    pub hba_file: PathBuf,
    /// Major version.
    pub major: u32,
    /// `ssl = on`.
    pub ssl: bool,
    /// `data_directory`.
    pub data_directory: PathBuf,
    /// The administrator role (never a customer).
    pub admin_role: String,
}

/// Ask the server about itself.
pub async fn discover(admin: &tokio_postgres::Client) -> Result<ServerFacts> {
    let row = admin
        .query_one(
            "SELECT current_setting('hba_file'), current_setting('server_version_num')::int / 10000, \
             current_setting('ssl') = 'on', current_setting('data_directory'), current_user::text",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(ServerFacts {
        hba_file: PathBuf::from(row.get::<_, String>(0)),
        major: row.get::<_, i32>(1) as u32,
        ssl: row.get(2),
        data_directory: PathBuf::from(row.get::<_, String>(3)),
        admin_role: row.get(4),
    })
}

fn pg(e: tokio_postgres::Error) -> Error {
    Error::Pg(costplus_pgcluster::Error::Postgres(e))
}

fn vault_err(e: costplus_vault::Error) -> Error {
    Error::Vault(e)
}

fn hba_err(e: costplus_hba::Error) -> Error {
    Error::Hba(e)
}

impl Ctx<'_> {
    fn state_dir(&self) -> PathBuf {
        self.config.state_dir()
    }

    fn names(&self, customer: &str) -> Result<CustomerNames> {
        let admin = [
            self.facts.admin_role.as_str(),
            self.server.admin_database.as_str(),
            self.server.admin_user.as_str(),
        ];
        names::validate(customer, &self.config.naming, &admin)
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    fn hba_options(&self) -> ApplyOptions {
        let version = PgVersion::new(self.facts.major).unwrap_or_default();
        let mut read = ReadOptions::for_version(version);
        read.ssl_enabled = self.facts.ssl;
        let mut opts = ApplyOptions::new(self.facts.hba_file.clone(), read);
        // Backups and the lock live in our state directory, never in the data directory
        // (pgBackRest would copy them, and could not read a root-owned lock).
        let dir = self.state_dir().join("hba").join(&self.server.name);
        opts.backup_dir = Some(dir.join("backups"));
        opts.lock_file = Some(dir.join("pg_hba.lock"));
        opts
    }

    fn customer_rules(&self, n: &CustomerNames) -> Vec<RuleSpec> {
        self.config
            .customers
            .allowed_networks
            .iter()
            .map(|net| RuleSpec::hostssl_scram(&n.database, &n.role, net))
            .collect()
    }

    async fn role_exists(&self, role: &str) -> Result<bool> {
        let r = self
            .admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(pg)?;
        Ok(r.is_some())
    }

    async fn database_exists(&self, db: &str) -> Result<bool> {
        let r = self
            .admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(pg)?;
        Ok(r.is_some())
    }

    async fn exec(&self, sql: &str) -> Result<()> {
        self.admin.batch_execute(sql).await.map_err(pg)
    }

    /// Open an admin connection to another database of this server.
    async fn connect_db(&self, db: &str) -> Result<tokio_postgres::Client> {
        let mut o = self.server.admin_connect_options()?;
        o.dbname = db.into();
        Ok(costplus_pgcluster::connect::connect(&o).await?)
    }

    async fn apply_hba(
        &self,
        plan_only: bool,
        edit: impl FnOnce(&mut costplus_hba::Document) -> Result<(), costplus_hba::EditError>,
    ) -> Result<ApplyReport> {
        let opts = self.hba_options();
        if let Some(dir) = &opts.backup_dir {
            costplus_fs::create_dir_with_mode(dir, 0o700)?;
        }
        if plan_only {
            costplus_hba::plan(&opts, edit).map_err(hba_err)
        } else {
            costplus_hba::apply(Some(self.admin), &opts, edit)
                .await
                .map_err(hba_err)
        }
    }
}

/// A killed earlier run may leave its statement running in the server (a backend finishes
/// `CREATE DATABASE` even when its client is gone). Before resuming, terminate our own leftover
/// backends that touch this customer and wait until they are gone.
async fn settle_leftovers(ctx: &Ctx<'_>, n: &CustomerNames) -> Result<()> {
    let pattern = format!("%{}%", n.customer);
    for _ in 0..100 {
        let row = ctx
            .admin
            .query_one(
                "SELECT count(*), count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'costplus' AND pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE $1",
                &[&pattern],
            )
            .await
            .map_err(pg)?;
        if row.get::<_, i64>(0) == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(Error::Invalid(format!(
        "an earlier costplus session on {} does not end; check pg_stat_activity",
        n.customer
    )))
}

/// One operation on a customer at a time (per server): a lock file beside the journal.
fn lock_customer(
    state: &std::path::Path,
    server: &str,
    customer: &str,
) -> Result<costplus_fs::LockFile> {
    Ok(costplus_fs::LockFile::acquire(&lock_path(
        state, server, customer,
    )?)?)
}

/// [`lock_customer`] without waiting: another session's lock is an error naming the customer.
fn try_lock_customer(
    state: &std::path::Path,
    server: &str,
    customer: &str,
) -> Result<costplus_fs::LockFile> {
    let path = lock_path(state, server, customer)?;
    match costplus_fs::LockFile::try_acquire(&path) {
        Err(costplus_fs::Error::Locked { path }) => Err(Error::Invalid(format!(
            "customer {customer} is being changed by another costplus session (lock {}); run the batch again when it is done",
            path.display()
        ))),
        r => Ok(r?),
    }
}

/// The customer's lock file, beside its journal (the directory created when missing).
fn lock_path(state: &std::path::Path, server: &str, customer: &str) -> Result<std::path::PathBuf> {
    let dir = super::journal::dir(state, server);
    costplus_fs::create_dir_with_mode(&dir, 0o700)?;
    Ok(dir.join(format!("{customer}.lock")))
}

/// One step of a plan or a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// Stable step name.
    pub step: &'static str,
    /// Already done before this run (from the journal or the server's state).
    pub already_done: bool,
    /// The SQL it runs (verifiers redacted).
    pub sql: Vec<String>,
}

/// What `provision` did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionReport {
    /// Customer name.
    pub customer: String,
    /// The customer's database.
    pub database: String,
    /// The customer's role.
    pub role: String,
    /// Server name.
    pub server: String,
    /// Plan only: nothing changed.
    pub plan: bool,
    /// The customer existed completely before: nothing to do.
    pub already_provisioned: bool,
    /// A half-done earlier run was finished.
    pub resumed: bool,
    /// Every step.
    pub steps: Vec<StepReport>,
    /// pg_hba.conf change (unified diff).
    pub hba_diff: String,
    /// What happened in the vault.
    pub vault: String,
}

const PROVISION_STEPS: &[&str] = &[
    "vault-pending",
    "role",
    "database",
    "privileges",
    "schema",
    "hba",
    "vault-active",
];

fn role_sql(n: &CustomerNames, verifier: &str, limit: i32, create: bool) -> String {
    format!(
        "{} ROLE {} {}LOGIN PASSWORD {} CONNECTION LIMIT {limit} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT",
        if create { "CREATE" } else { "ALTER" },
        quote_ident(&n.role),
        "",
        quote_literal(verifier)
    )
}

fn privileges_sql(n: &CustomerNames) -> String {
    format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}",
        db = quote_ident(&n.database),
        role = quote_ident(&n.role)
    )
}

fn schema_sql(n: &CustomerNames) -> String {
    format!(
        "ALTER SCHEMA public OWNER TO {role}; REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT USAGE, CREATE ON SCHEMA public TO {role}",
        role = quote_ident(&n.role)
    )
}

/// Options of [`provision`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ProvisionOptions {
    /// Only plan.
    pub plan: bool,
}

/// What every operation on one customer begins with.
struct Started {
    n: CustomerNames,
    state: std::path::PathBuf,
    server: String,
    /// The customer's lock (none for a plan).
    _lock: Option<costplus_fs::LockFile>,
    /// The journal of an unfinished operation, if any.
    journal: Option<Journal>,
    /// The customer's vault record.
    record: Option<costplus_vault::Summary>,
    role_exists: bool,
    db_exists: bool,
}

/// Names, the customer's lock (unless `plan`), the journal of an unfinished operation (its
/// leftover sessions settled) and a refusal when that operation is not `operation`, and what
/// of the customer exists now (vault record, role, database).
async fn start(
    ctx: &mut Ctx<'_>,
    customer: &str,
    plan: bool,
    operation: Operation,
) -> Result<Started> {
    let n = ctx.names(customer)?;
    let state = ctx.state_dir();
    let server = ctx.server.name.clone();
    let lock = if plan {
        None
    } else {
        Some(lock_customer(&state, &server, customer)?)
    };
    let journal = Journal::load(&state, &server, customer)?;
    if journal.is_some() && !plan {
        settle_leftovers(ctx, &n).await?;
    }
    if let Some(j) = &journal
        && j.operation != operation
    {
        return Err(Error::Invalid(format!(
            "customer {customer} has an unfinished {:?} (journal {}); finish or abort it first",
            j.operation,
            super::journal::path(&state, &server, customer).display()
        )));
    }
    let record = ctx.vault.summary(customer).ok();
    let role_exists = ctx.role_exists(&n.role).await?;
    let db_exists = ctx.database_exists(&n.database).await?;
    Ok(Started {
        n,
        state,
        server,
        _lock: lock,
        journal,
        record,
        role_exists,
        db_exists,
    })
}

/// Provision (or finish provisioning) one customer.
pub async fn provision(
    ctx: &mut Ctx<'_>,
    customer: &str,
    opts: ProvisionOptions,
) -> Result<ProvisionReport> {
    let Started {
        n,
        state,
        server,
        _lock,
        journal,
        record,
        role_exists,
        db_exists,
    } = start(ctx, customer, opts.plan, Operation::Provision).await?;
    let fully = journal.is_none()
        && role_exists
        && db_exists
        && record
            .as_ref()
            .is_some_and(|r| r.status == VaultStatus::Active);
    let mut report = ProvisionReport {
        customer: n.customer.clone(),
        database: n.database.clone(),
        role: n.role.clone(),
        server: server.clone(),
        plan: opts.plan,
        already_provisioned: fully,
        resumed: journal.is_some(),
        steps: Vec::new(),
        hba_diff: String::new(),
        vault: String::new(),
    };
    if fully {
        report.vault = "active record present; nothing to do".into();
        return Ok(report);
    }
    if journal.is_none() {
        // Not ours to create over: an existing role or database without our journal.
        if role_exists {
            return Err(Error::Invalid(format!(
                "role {} already exists and is not a costplus customer in progress; refusing to take it over",
                n.role
            )));
        }
        if db_exists {
            return Err(Error::Invalid(format!(
                "database {} already exists and is not a costplus customer in progress; refusing to take it over",
                n.database
            )));
        }
        if let Some(r) = &record {
            return Err(Error::Invalid(format!(
                "the vault already holds a {} record named {customer} without a provisioning in progress; inspect it with costplus-vault get {customer}",
                r.status
            )));
        }
    }
    let mut journal =
        journal.unwrap_or_else(|| Journal::new(Operation::Provision, &server, customer));
    let limit = ctx.config.customers.connection_limit;
    let redacted = "'SCRAM-SHA-256$<redacted>'";
    let hba_rules = ctx.customer_rules(&n);
    for step in PROVISION_STEPS {
        let done = journal.is_done(step);
        let sql = match *step {
            "role" => vec![role_sql(&n, "x", limit, !role_exists).replace("'x'", redacted)],
            "database" => vec![format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&n.database),
                quote_ident(&n.role)
            )],
            "privileges" => vec![privileges_sql(&n)],
            "schema" => vec![format!("-- in {}: {}", n.database, schema_sql(&n))],
            _ => vec![],
        };
        report.steps.push(StepReport {
            step,
            already_done: done,
            sql,
        });
    }
    if opts.plan {
        let hba = ctx
            .apply_hba(true, |doc| {
                doc.set_customer_rules(customer, &hba_rules).map(drop)
            })
            .await?;
        report.hba_diff = hba.diff;
        report.vault = if record.is_some() {
            "keep the pending record".into()
        } else {
            format!("add pending record {customer}, then mark it active")
        };
        return Ok(report);
    }

    // 0. The journal exists before anything else does, so a crash is always recognised as ours.
    journal.save(&state)?;
    // 1. The password goes into the vault first.
    if !journal.is_done("vault-pending") {
        if record.is_none() {
            let pw = password::generate()
                .map_err(|e| Error::Invalid(format!("OS random generator: {e}")))?;
            ctx.vault
                .put(NewRecord::customer(
                    customer,
                    &n.role,
                    &n.database,
                    &server,
                    pw,
                ))
                .map_err(vault_err)?;
        }
        journal.mark(&state, "vault-pending")?;
    }
    step_boundary!("provision-after-vault-pending");
    let password = ctx.vault.get(customer).map_err(vault_err)?.secret;

    // 2. The role, with a verifier computed here.
    if !journal.is_done("role") {
        let exists = ctx.role_exists(&n.role).await?;
        ctx.exec(&role_sql(
            &n,
            &password::scram_verifier(&password),
            limit,
            !exists,
        ))
        .await?;
        journal.mark(&state, "role")?;
    }
    step_boundary!("provision-after-role");
    // 3. The database.
    if !journal.is_done("database") {
        if !ctx.database_exists(&n.database).await? {
            ctx.exec(&format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&n.database),
                quote_ident(&n.role)
            ))
            .await?;
        }
        journal.mark(&state, "database")?;
    }
    step_boundary!("provision-after-database");
    // 4. Only the customer may connect.
    if !journal.is_done("privileges") {
        ctx.exec(&privileges_sql(&n)).await?;
        journal.mark(&state, "privileges")?;
    }
    step_boundary!("provision-after-privileges");
    // 5. The public schema belongs to the customer alone.
    if !journal.is_done("schema") {
        let db = ctx.connect_db(&n.database).await?;
        db.batch_execute(&schema_sql(&n)).await.map_err(pg)?;
        journal.mark(&state, "schema")?;
    }
    step_boundary!("provision-after-schema");
    // 6. pg_hba.conf: validated by the server before the reload.
    if !journal.is_done("hba") {
        let r = ctx
            .apply_hba(false, |doc| {
                doc.set_customer_rules(customer, &hba_rules).map(drop)
            })
            .await?;
        report.hba_diff = r.diff;
        journal.mark(&state, "hba")?;
    }
    step_boundary!("provision-after-hba");
    // 7. Done: the record becomes active, the journal goes.
    ctx.vault
        .set_status(customer, VaultStatus::Active)
        .map_err(vault_err)?;
    journal.mark(&state, "vault-active")?;
    journal.finish(&state)?;
    drop(password);
    report.vault = format!("record {customer} active");
    Ok(report)
}

/// Provision many customers: names validated first, one vault commit, roles and databases
/// over one connection, one pg_hba.conf apply and reload, one vault commit to activate.
pub async fn provision_batch(
    ctx: &mut Ctx<'_>,
    customers: &[String],
    opts: ProvisionOptions,
) -> Result<Vec<ProvisionReport>> {
    let mut all = Vec::new();
    let mut seen = BTreeSet::new();
    // The same per-customer locks as `provision NAME`, held for the whole batch; never waited
    // for (a customer another session is changing fails the batch before anything is done).
    let mut locks = Vec::new();
    for c in customers {
        if !seen.insert(c.as_str()) {
            return Err(Error::Invalid(format!(
                "customer {c} appears twice in the batch"
            )));
        }
        let n = ctx.names(c)?;
        if !opts.plan {
            locks.push(try_lock_customer(&ctx.state_dir(), &ctx.server.name, c)?);
        }
        if ctx.role_exists(&n.role).await?
            || ctx.database_exists(&n.database).await?
            || ctx.vault.summary(c.as_str()).is_ok()
        {
            return Err(Error::Invalid(format!(
                "customer {c} already exists (or is half-done): provision it on its own"
            )));
        }
        all.push(n);
    }
    let server = ctx.server.name.clone();
    let state = ctx.state_dir();
    let limit = ctx.config.customers.connection_limit;
    let rules: Vec<(String, Vec<RuleSpec>)> = all
        .iter()
        .map(|n| (n.customer.clone(), ctx.customer_rules(n)))
        .collect();
    let mut reports: Vec<ProvisionReport> = all
        .iter()
        .map(|n| ProvisionReport {
            customer: n.customer.clone(),
            database: n.database.clone(),
            role: n.role.clone(),
            server: server.clone(),
            plan: opts.plan,
            already_provisioned: false,
            resumed: false,
            steps: Vec::new(),
            hba_diff: String::new(),
            vault: String::new(),
        })
        .collect();
    let edit = |doc: &mut costplus_hba::Document| -> Result<(), costplus_hba::EditError> {
        for (c, r) in &rules {
            doc.set_customer_rules(c, r)?;
        }
        Ok(())
    };
    if opts.plan {
        let hba = ctx.apply_hba(true, edit).await?;
        if let Some(first) = reports.first_mut() {
            first.hba_diff = hba.diff;
        }
        return Ok(reports);
    }
    // Journals first (one sync round for all), so that a crash at any later point leaves
    // every customer of the batch recognised as ours: `provision NAME` finishes it (each step
    // checks the server and the vault first), `--abort` undoes it.
    let mut journals: Vec<Journal> = all
        .iter()
        .map(|n| Journal::new(Operation::Provision, &server, &n.customer))
        .collect();
    Journal::save_all(&state, &journals)?;
    // The vault: one commit.
    let mut records = Vec::new();
    for n in &all {
        let pw = password::generate()
            .map_err(|e| Error::Invalid(format!("OS random generator: {e}")))?;
        records.push(NewRecord::customer(
            &n.customer,
            &n.role,
            &n.database,
            &server,
            pw,
        ));
    }
    let verifiers: Vec<String> = records
        .iter()
        .map(|r| password::scram_verifier(&r.secret))
        .collect();
    ctx.vault.put_many(records, false).map_err(vault_err)?;
    step_boundary!("provision-batch-after-vault");
    // Make sure new databases are born locked down (template public schema without PUBLIC CREATE).
    let template = locked_template(ctx).await?;
    // Every role in one round trip (one transaction: all or none).
    let roles: Vec<String> = all
        .iter()
        .zip(&verifiers)
        .map(|(n, v)| role_sql(n, v, limit, true))
        .collect();
    ctx.exec(&roles.join(";\n")).await?;
    // The databases, several at a time: each CREATE DATABASE copies the template and waits
    // for its own I/O, so a few connections keep the server busy.
    create_databases(ctx, &all, &template).await?;
    // Only the customer may connect: one round trip (one transaction).
    let privileges: Vec<String> = all.iter().map(privileges_sql).collect();
    ctx.exec(&privileges.join(";\n")).await?;
    for j in &mut journals {
        for step in ["vault-pending", "role", "database", "privileges", "schema"] {
            j.note(step);
        }
    }
    Journal::save_all(&state, &journals)?;
    step_boundary!("provision-batch-after-databases");
    let hba = ctx.apply_hba(false, edit).await?;
    for j in &mut journals {
        j.note("hba");
    }
    Journal::save_all(&state, &journals)?;
    step_boundary!("provision-batch-after-hba");
    let names: Vec<&str> = all.iter().map(|n| n.customer.as_str()).collect();
    ctx.vault
        .set_status_many(&names, VaultStatus::Active)
        .map_err(vault_err)?;
    for j in &journals {
        j.finish(&state)?;
    }
    for (i, r) in reports.iter_mut().enumerate() {
        r.vault = format!("record {} active", r.customer);
        if i == 0 {
            r.hba_diff = hba.diff.clone();
        }
    }
    Ok(reports)
}

/// Connections a batch creates its databases over (the admin connection and more).
const BATCH_CONNECTIONS: usize = 4;

/// `CREATE DATABASE ... OWNER ... TEMPLATE` for every customer of a batch, over up to
/// [`BATCH_CONNECTIONS`] admin connections at once (one for small batches).
async fn create_databases(ctx: &Ctx<'_>, all: &[CustomerNames], template: &str) -> Result<()> {
    let sql = |n: &CustomerNames| {
        format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE {}",
            quote_ident(&n.database),
            quote_ident(&n.role),
            quote_ident(template)
        )
    };
    let extra = (all.len() / 8).min(BATCH_CONNECTIONS - 1);
    let mut clients = Vec::with_capacity(extra);
    for _ in 0..extra {
        clients.push(ctx.connect_db(&ctx.server.admin_database).await?);
    }
    let lanes: Vec<&tokio_postgres::Client> =
        std::iter::once(ctx.admin).chain(clients.iter()).collect();
    let work = lanes.iter().enumerate().map(|(lane, client)| {
        let mine: Vec<String> = all
            .iter()
            .skip(lane)
            .step_by(lanes.len())
            .map(&sql)
            .collect();
        async move {
            for q in mine {
                client.batch_execute(&q).await.map_err(pg)?;
            }
            Ok::<(), Error>(())
        }
    });
    for r in futures_util::future::join_all(work).await {
        r?;
    }
    Ok(())
}

/// The template new customer databases are created from: template1 when its public schema is
/// already closed to PUBLIC (PostgreSQL 15+ defaults), else a `costplus_template` made so.
async fn locked_template(ctx: &Ctx<'_>) -> Result<String> {
    let t1 = ctx.connect_db("template1").await?;
    let open: bool = t1
        .query_one(
            "SELECT coalesce(has_schema_privilege('public', 'public', 'CREATE'), false) \
             OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public' AND nspowner <> 'pg_database_owner'::regrole)",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if !open {
        return Ok("template1".into());
    }
    if !ctx.database_exists("costplus_template").await? {
        ctx.exec("CREATE DATABASE costplus_template IS_TEMPLATE true ALLOW_CONNECTIONS true")
            .await?;
        let t = ctx.connect_db("costplus_template").await?;
        t.batch_execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            .await
            .map_err(pg)?;
    }
    Ok("costplus_template".into())
}

/// What `abort` undid.
#[derive(Debug, Clone, Serialize)]
pub struct AbortReport {
    /// Customer.
    pub customer: String,
    /// Steps undone, in order.
    pub undone: Vec<String>,
}

/// Undo a half-done provisioning (only when a provisioning journal exists).
pub async fn abort_provision(ctx: &mut Ctx<'_>, customer: &str, plan: bool) -> Result<AbortReport> {
    let n = ctx.names(customer)?;
    let state = ctx.state_dir();
    let _lock = if plan {
        None
    } else {
        Some(lock_customer(&state, &ctx.server.name, customer)?)
    };
    if !plan {
        settle_leftovers(ctx, &n).await?;
    }
    let Some(journal) = Journal::load(&state, &ctx.server.name, customer)? else {
        return Err(Error::Invalid(format!(
            "no provisioning of {customer} in progress: nothing to abort (use costplus-deprovision for a complete customer)"
        )));
    };
    if journal.operation != Operation::Provision {
        return Err(Error::Invalid(format!(
            "the unfinished operation of {customer} is {:?}, not a provisioning",
            journal.operation
        )));
    }
    let mut undone = Vec::new();
    let mut todo = vec!["hba", "database", "role", "vault-record"];
    if plan {
        undone.extend(todo.drain(..).map(String::from));
        return Ok(AbortReport {
            customer: customer.into(),
            undone,
        });
    }
    ctx.apply_hba(false, |doc| doc.remove_customer_rules(customer).map(drop))
        .await?;
    undone.push("hba".into());
    if ctx.database_exists(&n.database).await? {
        ctx.exec(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&n.database)
        ))
        .await?;
        undone.push("database".into());
    }
    if ctx.role_exists(&n.role).await? {
        ctx.exec(&format!("DROP ROLE IF EXISTS {}", quote_ident(&n.role)))
            .await?;
        undone.push("role".into());
    }
    if ctx.vault.summary(customer).is_ok() {
        ctx.vault
            .remove(costplus_vault::Which::Live(customer))
            .map_err(vault_err)?;
        undone.push("vault-record".into());
    }
    journal.finish(&state)?;
    Ok(AbortReport {
        customer: customer.into(),
        undone,
    })
}

/// Options of [`deprovision`].
#[derive(Debug, Clone, Default)]
pub struct DeprovisionOptions {
    /// Only plan.
    pub plan: bool,
    /// Dump the database (pg_dump custom format) into this directory before dropping it.
    pub final_dump: Option<PathBuf>,
}

/// What `deprovision` did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct DeprovisionReport {
    /// Customer.
    pub customer: String,
    /// Database.
    pub database: String,
    /// Role.
    pub role: String,
    /// Plan only.
    pub plan: bool,
    /// Steps and whether each was already done.
    pub steps: Vec<StepReport>,
    /// Sessions terminated.
    pub sessions_terminated: i64,
    /// The final dump file, if one was made.
    pub final_dump: Option<PathBuf>,
    /// pg_hba.conf change.
    pub hba_diff: String,
}

const DEPROVISION_STEPS: &[&str] = &[
    "nologin",
    "revoke-connect",
    "terminate",
    "final-dump",
    "drop-database",
    "drop-owned",
    "drop-role",
    "hba",
    "vault-archive",
];

/// Deprovision a customer: NOLOGIN, revoke CONNECT, terminate sessions, optional final dump,
/// drop the database, what the role owns elsewhere and the role, remove the pg_hba rules,
/// archive the vault record. Crash-safe: running it again continues.
pub async fn deprovision(
    ctx: &mut Ctx<'_>,
    customer: &str,
    opts: DeprovisionOptions,
) -> Result<DeprovisionReport> {
    let Started {
        n,
        state,
        server,
        _lock,
        journal,
        record,
        role_exists,
        db_exists,
    } = start(ctx, customer, opts.plan, Operation::Deprovision).await?;
    if journal.is_none() && !role_exists && !db_exists && record.is_none() {
        return Err(Error::Invalid(format!(
            "no customer {customer} on server {server} (no role {}, no database {}, no vault record)",
            n.role, n.database
        )));
    }
    let mut journal =
        journal.unwrap_or_else(|| Journal::new(Operation::Deprovision, &server, customer));
    let mut report = DeprovisionReport {
        customer: customer.into(),
        database: n.database.clone(),
        role: n.role.clone(),
        plan: opts.plan,
        steps: DEPROVISION_STEPS
            .iter()
            .map(|s| StepReport {
                step: s,
                already_done: journal.is_done(s),
                sql: Vec::new(),
            })
            .collect(),
        sessions_terminated: 0,
        final_dump: None,
        hba_diff: String::new(),
    };
    let (role, db) = (quote_ident(&n.role), quote_ident(&n.database));
    for s in &mut report.steps {
        s.sql = match s.step {
            "nologin" => vec![format!("ALTER ROLE {role} NOLOGIN")],
            "revoke-connect" => vec![format!(
                "REVOKE CONNECT ON DATABASE {db} FROM {role}, PUBLIC"
            )],
            "terminate" => vec![format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}' OR datname = '{}'",
                n.role, n.database
            )],
            "drop-database" => vec![format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")],
            "drop-owned" => vec![format!(
                "-- in each database where it owns objects: REASSIGN OWNED BY {role} TO <admin>; DROP OWNED BY {role}"
            )],
            "drop-role" => vec![format!("DROP ROLE IF EXISTS {role}")],
            _ => vec![],
        };
    }
    if opts.plan {
        report.hba_diff = ctx
            .apply_hba(true, |doc| doc.remove_customer_rules(customer).map(drop))
            .await?
            .diff;
        return Ok(report);
    }
    journal.save(&state)?;
    if !journal.is_done("nologin") {
        if ctx.role_exists(&n.role).await? {
            ctx.exec(&format!("ALTER ROLE {role} NOLOGIN")).await?;
        }
        journal.mark(&state, "nologin")?;
    }
    step_boundary!("deprovision-after-nologin");
    if !journal.is_done("revoke-connect") {
        if ctx.database_exists(&n.database).await? && ctx.role_exists(&n.role).await? {
            ctx.exec(&format!(
                "REVOKE CONNECT ON DATABASE {db} FROM {role}, PUBLIC"
            ))
            .await?;
        }
        journal.mark(&state, "revoke-connect")?;
    }
    if !journal.is_done("terminate") {
        let row = ctx
            .admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE (usename = $1 OR datname = $2) AND pid <> pg_backend_pid()",
                &[&n.role, &n.database],
            )
            .await
            .map_err(pg)?;
        report.sessions_terminated = row.get(0);
        journal.mark(&state, "terminate")?;
    }
    step_boundary!("deprovision-after-terminate");
    if !journal.is_done("final-dump") {
        if let Some(dir) = &opts.final_dump
            && ctx.database_exists(&n.database).await?
        {
            report.final_dump = Some(final_dump(ctx, &n, dir)?);
        }
        journal.mark(&state, "final-dump")?;
    }
    // The point of no return.
    if !journal.is_done("drop-database") {
        ctx.exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await?;
        journal.mark(&state, "drop-database")?;
    }
    step_boundary!("deprovision-after-drop-database");
    if !journal.is_done("drop-owned") {
        if ctx.role_exists(&n.role).await? {
            let dbs = ctx
                .admin
                .query(
                    "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid \
                     WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
                    &[&n.role],
                )
                .await
                .map_err(pg)?;
            for r in dbs {
                let name: String = r.get(0);
                let c = ctx.connect_db(&name).await?;
                c.batch_execute(&format!(
                    "REASSIGN OWNED BY {role} TO {}; DROP OWNED BY {role}",
                    quote_ident(&ctx.facts.admin_role)
                ))
                .await
                .map_err(pg)?;
            }
        }
        journal.mark(&state, "drop-owned")?;
    }
    if !journal.is_done("drop-role") {
        ctx.exec(&format!("DROP ROLE IF EXISTS {role}")).await?;
        journal.mark(&state, "drop-role")?;
    }
    step_boundary!("deprovision-after-drop-role");
    if !journal.is_done("hba") {
        report.hba_diff = ctx
            .apply_hba(false, |doc| doc.remove_customer_rules(customer).map(drop))
            .await?
            .diff;
        journal.mark(&state, "hba")?;
    }
    if !journal.is_done("vault-archive") {
        if ctx.vault.summary(customer).is_ok() {
            ctx.vault.archive(customer, None).map_err(vault_err)?;
        }
        journal.mark(&state, "vault-archive")?;
    }
    journal.finish(&state)?;
    Ok(report)
}

/// `pg_dump -Fc` of the customer's database into `dir`, as the administrator over a temporary
/// 0600 pgpass file (no password in argv or the environment).
fn final_dump(ctx: &Ctx<'_>, n: &CustomerNames, dir: &std::path::Path) -> Result<PathBuf> {
    costplus_fs::create_dir_with_mode(dir, 0o700)?;
    let file = dir.join(format!(
        "{}-{}.dump",
        n.database,
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    let opts = ctx.server.admin_connect_options()?;
    let tmp = tempfile::Builder::new()
        .prefix(".costplus-pgpass")
        .tempdir_in(dir)
        .map_err(|e| Error::Io {
            path: dir.into(),
            source: e,
        })?;
    let pgpass = tmp.path().join("pgpass");
    let line = match &opts.password {
        Some(p) => format!(
            "*:*:*:{}:{}\n",
            opts.user.replace('\\', "\\\\").replace(':', "\\:"),
            p.expose_secret().replace('\\', "\\\\").replace(':', "\\:")
        ),
        None => String::new(),
    };
    costplus_fs::write_atomic(
        &pgpass,
        line.as_bytes(),
        &costplus_fs::WriteOptions::private(),
    )?;
    let pg_dump = costplus_pgcluster::PgBin::locate()?.tool("pg_dump");
    let mut cmd = std::process::Command::new(&pg_dump);
    cmd.args(["-Fc", "--no-password", "-f"])
        .arg(&file)
        .arg("-h")
        .arg(&opts.host)
        .arg("-p")
        .arg(opts.port.to_string())
        .arg("-U")
        .arg(&opts.user)
        .arg("-d")
        .arg(&n.database);
    cmd.env("PGPASSFILE", &pgpass).env_remove("PGPASSWORD");
    if let costplus_pgcluster::connect::SslMode::VerifyFull { ca_file, .. } = &opts.ssl {
        cmd.env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", ca_file);
    }
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: pg_dump.display().to_string(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: "pg_dump".into(),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(file)
}

/// What `rotate` did.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    /// Customer.
    pub customer: String,
    /// Plan only.
    pub plan: bool,
    /// New vault generation.
    pub generation: Option<u64>,
}

/// Rotate a customer's password: the vault first (a new generation), then `ALTER ROLE` with a
/// verifier. A crash in between is finished by running it again (the journal says so).
pub async fn rotate(ctx: &mut Ctx<'_>, customer: &str, plan: bool) -> Result<RotateReport> {
    let n = ctx.names(customer)?;
    let state = ctx.state_dir();
    let _lock = if plan {
        None
    } else {
        Some(lock_customer(&state, &ctx.server.name, customer)?)
    };
    let existing = Journal::load(&state, &ctx.server.name, customer)?;
    if let Some(j) = &existing
        && j.operation != Operation::Rotate
    {
        return Err(Error::Invalid(format!(
            "customer {customer} has an unfinished {:?}",
            j.operation
        )));
    }
    let summary = ctx.vault.summary(customer).map_err(vault_err)?;
    if summary.status != VaultStatus::Active && existing.is_none() {
        return Err(Error::Invalid(format!(
            "customer {customer} is {} in the vault, not active",
            summary.status
        )));
    }
    if !ctx.role_exists(&n.role).await? {
        return Err(Error::Invalid(format!(
            "role {} does not exist on {}",
            n.role, ctx.server.name
        )));
    }
    if plan {
        return Ok(RotateReport {
            customer: customer.into(),
            plan,
            generation: Some(summary.generation + 1),
        });
    }
    let mut j =
        existing.unwrap_or_else(|| Journal::new(Operation::Rotate, &ctx.server.name, customer));
    if !j.is_done("vault") {
        let pw = password::generate()
            .map_err(|e| Error::Invalid(format!("OS random generator: {e}")))?;
        j.save(&state)?;
        ctx.vault.set_secret(customer, pw).map_err(vault_err)?;
        j.mark(&state, "vault")?;
    }
    step_boundary!("rotate-after-vault");
    let rec = ctx.vault.get(customer).map_err(vault_err)?;
    ctx.exec(&format!(
        "ALTER ROLE {} PASSWORD {}",
        quote_ident(&n.role),
        quote_literal(&password::scram_verifier(&rec.secret))
    ))
    .await?;
    j.mark(&state, "role")?;
    j.finish(&state)?;
    Ok(RotateReport {
        customer: customer.into(),
        plan,
        generation: Some(rec.summary.generation),
    })
}

/// Set a customer's connection limit.
pub async fn set_connection_limit(
    ctx: &Ctx<'_>,
    customer: &str,
    limit: i32,
    plan: bool,
) -> Result<String> {
    let n = ctx.names(customer)?;
    if limit < -1 {
        return Err(Error::Invalid(format!(
            "connection limit {limit} is invalid (-1 means none)"
        )));
    }
    if !ctx.role_exists(&n.role).await? {
        return Err(Error::Invalid(format!("role {} does not exist", n.role)));
    }
    let sql = format!(
        "ALTER ROLE {} CONNECTION LIMIT {limit}",
        quote_ident(&n.role)
    );
    if !plan {
        ctx.exec(&sql).await?;
    }
    Ok(sql)
}

/// One customer as seen from every source, with its drift.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerState {
    /// Customer.
    pub customer: String,
    /// Role exists.
    pub role: bool,
    /// Database exists.
    pub database: bool,
    /// pg_hba.conf managed rules exist.
    pub hba_rules: bool,
    /// Vault status, if a record exists.
    pub vault: Option<String>,
    /// An operation is unfinished.
    pub unfinished: Option<String>,
    /// Sessions now.
    pub sessions: i64,
    /// What is inconsistent.
    pub drift: Vec<String>,
}

/// Every customer with drift detection (role without database, database without rules, rules
/// without role, vault record without role, and the reverse).
pub async fn list(ctx: &Ctx<'_>) -> Result<Vec<CustomerState>> {
    let naming = &ctx.config.naming;
    let mut map: BTreeMap<String, CustomerState> = BTreeMap::new();
    for r in ctx
        .admin
        .query("SELECT rolname FROM pg_roles", &[])
        .await
        .map_err(pg)?
    {
        let role: String = r.get(0);
        if let Some(c) = naming.customer_of_role(&role) {
            map.entry(c.clone())
                .or_insert_with(|| CustomerState {
                    customer: c,
                    ..Default::default()
                })
                .role = true;
        }
    }
    for r in ctx
        .admin
        .query(
            "SELECT datname FROM pg_database WHERE NOT datistemplate",
            &[],
        )
        .await
        .map_err(pg)?
    {
        let db: String = r.get(0);
        if let Some(c) = naming.customer_of_database(&db) {
            map.entry(c.clone())
                .or_insert_with(|| CustomerState {
                    customer: c,
                    ..Default::default()
                })
                .database = true;
        }
    }
    let hba = std::fs::read(&ctx.facts.hba_file).map_err(|e| Error::Io {
        path: ctx.facts.hba_file.clone(),
        source: e,
    })?;
    for c in costplus_hba::Document::parse(&hba).customers() {
        map.entry(c.clone())
            .or_insert_with(|| CustomerState {
                customer: c,
                ..Default::default()
            })
            .hba_rules = true;
    }
    for s in ctx.vault.list() {
        if s.kind == costplus_vault::Kind::Customer
            && s.server.as_deref().is_none_or(|srv| srv == ctx.server.name)
        {
            let st = map.entry(s.name.clone()).or_insert_with(|| CustomerState {
                customer: s.name.clone(),
                ..Default::default()
            });
            st.vault = Some(s.status.to_string());
        }
    }
    for j in Journal::list(&ctx.config.state_dir(), &ctx.server.name)? {
        if let Some(st) = map.get_mut(&j.customer) {
            st.unfinished = Some(format!("{:?}", j.operation).to_lowercase());
        }
    }
    for r in ctx
        .admin
        .query(
            "SELECT usename, count(*) FROM pg_stat_activity WHERE usename IS NOT NULL GROUP BY 1",
            &[],
        )
        .await
        .map_err(pg)?
    {
        let role: String = r.get(0);
        if let Some(c) = naming.customer_of_role(&role)
            && let Some(st) = map.get_mut(&c)
        {
            st.sessions = r.get(1);
        }
    }
    for st in map.values_mut() {
        let archived = matches!(st.vault.as_deref(), Some("archived" | "shredded"));
        let live_vault = st.vault.is_some() && !archived;
        let mut d = Vec::new();
        if st.role && !st.database {
            d.push("role without database".into());
        }
        if st.database && !st.role {
            d.push("database without role".into());
        }
        if st.database && !st.hba_rules {
            d.push("database without pg_hba rules".into());
        }
        if st.hba_rules && !st.role {
            d.push("pg_hba rules without role".into());
        }
        if live_vault && !st.role {
            d.push("vault record without role".into());
        }
        if st.role && !live_vault {
            d.push("role without vault record".into());
        }
        if let Some(op) = &st.unfinished {
            d.push(format!("unfinished {op}"));
        }
        st.drift = d;
    }
    Ok(map
        .into_values()
        .filter(|s| {
            s.role
                || s.database
                || s.hba_rules
                || s.vault
                    .as_deref()
                    .is_some_and(|v| v != "archived" && v != "shredded")
        })
        .collect())
}

/// Read a customer's password from the vault (for connection strings and tests).
pub fn password_of(vault: &Vault, customer: &str) -> Result<SecretString> {
    Ok(vault.get(customer).map_err(vault_err)?.secret)
}

/// An open session on one configured server: the admin connection, the vault and what the
/// server said about itself. What the binaries hold for one command.
pub struct Session {
    /// The configuration.
    pub config: Config,
    /// The chosen server.
    pub server: ServerConfig,
    /// A superuser connection.
    pub admin: tokio_postgres::Client,
    /// The vault of the configuration.
    pub vault: Vault,
    /// Discovered facts.
    pub facts: ServerFacts,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.server.name)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connect to `server` (or the only one) of `config` and open its vault.
    pub async fn open(
        config: Config,
        server: Option<&str>,
        passphrase: Option<SecretString>,
    ) -> Result<Self> {
        let server = config.server(server)?.clone();
        let vault_cfg = config.vault.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no [vault] section: customer credentials need a vault",
                config.path.display()
            ))
        })?;
        let vault = Vault::open_config(&vault_cfg, passphrase).map_err(vault_err)?;
        let admin = costplus_pgcluster::connect::connect(&server.admin_connect_options()?).await?;
        let facts = discover(&admin).await?;
        Ok(Session {
            config,
            server,
            admin,
            vault,
            facts,
        })
    }

    /// The operation context.
    pub fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            server: &self.server,
            admin: &self.admin,
            vault: &mut self.vault,
            facts: self.facts.clone(),
        }
    }

    /// Prove isolation for this server, with `live_pairs` live login attempts.
    pub async fn isolation(&self, live_pairs: usize) -> Result<super::isolation::IsolationReport> {
        let ctx_read = {
            let version = PgVersion::new(self.facts.major).unwrap_or_default();
            let mut read = ReadOptions::for_version(version);
            read.ssl_enabled = self.facts.ssl;
            read
        };
        let opts = super::isolation::CheckOptions {
            live_pairs,
            hba_file: self.facts.hba_file.clone(),
            read: ctx_read,
        };
        // Look inside each customer database for server-side connection tools.
        let dbs: Vec<String> = self
            .admin
            .query(
                "SELECT datname FROM pg_database WHERE NOT datistemplate",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|d| self.config.naming.customer_of_database(d).is_some())
            .collect();
        let admin_opts = self.server.admin_connect_options()?;
        let socket = self
            .server
            .cluster_root
            .as_ref()
            .map(|r| r.join("run"))
            .filter(|p| p.is_dir());
        let inside = crate::audit::facts::look_inside(
            dbs,
            |db| {
                let mut tcp = admin_opts.clone();
                tcp.dbname = db;
                let local = socket.as_ref().map(|dir| {
                    let mut o = tcp.clone();
                    o.host = dir.to_string_lossy().into_owned();
                    o.ssl = costplus_pgcluster::connect::SslMode::Disable;
                    o.password = None;
                    o
                });
                async move {
                    // The socket (peer) is cheapest; fall back to the admin TCP connection.
                    if let Some(o) = local
                        && let Ok(c) = costplus_pgcluster::connect::connect(&o).await
                    {
                        return Some(c);
                    }
                    costplus_pgcluster::connect::connect(&tcp).await.ok()
                }
            },
            8,
        )
        .await;
        let risky = inside.into_iter().map(|(db, i)| (db, i.risky)).collect();
        super::isolation::check(
            &self.admin,
            &self.config,
            &self.server,
            &opts,
            Some(risky),
            Some(&self.vault),
        )
        .await
    }
}
