//! `costplus-hba rules|lint|explain|fmt|add|remove|apply`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};
use costplus_hba::{
    ApplyOptions, ConnType, Connection, Document, PgVersion, ReadOptions, RuleSpec, Severity,
};

use crate::output::{Format, print_json};

/// Read, lint, explain, edit and apply pg_hba.conf exactly as PostgreSQL reads it.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, ClapArgs)]
struct ReadArgs {
    /// The pg_hba.conf file.
    file: PathBuf,
    /// PostgreSQL major version whose rules to apply (13 to 18; default: the installed
    /// server's, else 15).
    #[arg(long = "pg-version")]
    pg_version: Option<PgVersion>,
    /// Read as a server with `ssl = off` (hostssl lines then carry an error).
    #[arg(long)]
    ssl_off: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Debug, Clone, ClapArgs)]
struct ServerArgs {
    /// A costplus cluster root (as created by costplus-pgcluster) to validate and reload.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Unix socket directory of the server to validate and reload (peer/trust login).
    #[arg(long, requires = "port")]
    socket_dir: Option<PathBuf>,
    /// Port of the server (with --socket-dir).
    #[arg(long)]
    port: Option<u16>,
    /// Superuser to log in as (with --socket-dir).
    #[arg(long = "login-user", default_value = "postgres")]
    login_user: String,
    /// Write and validate through pg_hba_file_rules, but do not reload.
    #[arg(long)]
    no_reload: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The rules as the server reads them: one object per rule line with the columns of
    /// pg_hba_file_rules (exit 0 even when lines have errors).
    Rules(ReadArgs),
    /// Findings with stable ids and severities (exit 3 when any reaches --fail-on).
    Lint {
        #[command(flatten)]
        read: ReadArgs,
        /// Lowest severity that makes the exit code 3.
        #[arg(long, value_enum, default_value_t = FailOn::Error)]
        fail_on: FailOn,
    },
    /// Which line decides a connection, as the server matches (first match), or none.
    Explain {
        #[command(flatten)]
        read: ReadArgs,
        /// Connection type: local, host (TCP without TLS), hostssl (TLS), hostgssenc.
        #[arg(long = "type", default_value = "hostssl")]
        conn_type: String,
        /// Database.
        #[arg(long)]
        db: String,
        /// User.
        #[arg(long)]
        user: String,
        /// Client address.
        #[arg(long)]
        addr: Option<std::net::IpAddr>,
        /// Client host name (reverse DNS), for host-name rules.
        #[arg(long)]
        hostname: Option<String>,
        /// Roles the user is a member of (comma separated).
        #[arg(long, value_delimiter = ',')]
        member_of: Vec<String>,
        /// A physical replication connection.
        #[arg(long)]
        replication: bool,
    },
    /// Print the file through the lossless document (no edits: the exact bytes).
    Fmt {
        /// The pg_hba.conf file.
        file: PathBuf,
    },
    /// Set a customer's rules in the managed block (hostssl + scram-sha-256 by default).
    Add {
        #[command(flatten)]
        read: ReadArgs,
        /// Customer name (tag in the managed block).
        #[arg(long)]
        customer: String,
        /// Database (default: the customer name).
        #[arg(long)]
        db: Option<String>,
        /// User (default: the customer name).
        #[arg(long)]
        user: Option<String>,
        /// Client addresses (CIDR); default 0.0.0.0/0 and ::/0.
        #[arg(long = "addr", value_delimiter = ',')]
        addrs: Vec<String>,
        /// Method.
        #[arg(long, default_value = "scram-sha-256")]
        method: String,
        /// Print the diff and change nothing.
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a customer's rules from the managed block.
    Remove {
        #[command(flatten)]
        read: ReadArgs,
        /// Customer name.
        #[arg(long)]
        customer: String,
        /// Print the diff and change nothing.
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Install SOURCE as the server's pg_hba.conf: lock, backup, atomic write, validation
    /// through pg_hba_file_rules, reload (old file restored on any error).
    Apply {
        /// The new contents.
        source: PathBuf,
        /// The file to replace (default: the server's hba_file).
        #[arg(long)]
        hba_file: Option<PathBuf>,
        /// PostgreSQL major version (default: the server's).
        #[arg(long = "pg-version")]
        pg_version: Option<PgVersion>,
        /// Print the diff and change nothing.
        #[arg(long)]
        plan: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FailOn {
    Error,
    Warning,
    Info,
    Never,
}

fn default_version() -> PgVersion {
    costplus_pgcluster::PgBin::locate()
        .ok()
        .and_then(|b| PgVersion::new(b.major()))
        .unwrap_or(PgVersion::V15)
}

fn read_opts(a: &ReadArgs) -> ReadOptions {
    let mut o = ReadOptions::for_version(a.pg_version.unwrap_or_else(default_version));
    o.ssl_enabled = !a.ssl_off;
    o
}

fn read(a: &ReadArgs) -> anyhow::Result<costplus_hba::RuleSet> {
    Ok(costplus_hba::read_rules_file(&a.file, &read_opts(a))?)
}

fn opt_list(v: &Option<Vec<String>>) -> String {
    match v {
        Some(v) => v.join(","),
        None => "-".into(),
    }
}

/// Run `costplus-hba ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Rules(a) => {
            let set = read(&a)?;
            match a.format {
                Format::Json => print_json(&set.rows)?,
                Format::Human => {
                    for r in &set.rows {
                        let v = r.view();
                        match &v.error {
                            Some(e) => println!("{}:{}: error: {e}", v.file_name, v.line_number),
                            None => println!(
                                "{}:{}: {} {} {} {}{} {}{}",
                                v.file_name,
                                v.line_number,
                                v.conn_type.unwrap_or("-"),
                                opt_list(&v.database),
                                opt_list(&v.user_name),
                                v.address.as_deref().unwrap_or("-"),
                                v.netmask
                                    .as_deref()
                                    .map(|m| format!(" {m}"))
                                    .unwrap_or_default(),
                                v.auth_method.unwrap_or("-"),
                                v.options
                                    .as_ref()
                                    .map(|o| format!(" {}", o.join(" ")))
                                    .unwrap_or_default(),
                            ),
                        }
                    }
                    for d in set
                        .diagnostics
                        .iter()
                        .filter(|d| d.severity != Severity::Error)
                    {
                        eprintln!("{d}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lint { read: a, fail_on } => {
            let set = read(&a)?;
            let doc = Document::parse(&std::fs::read(&a.file)?);
            let customer_lines = doc.customer_line_numbers();
            let findings = costplus_hba::lint(&set, &customer_lines);
            match a.format {
                Format::Json => print_json(&findings)?,
                Format::Human => {
                    for f in &findings {
                        let sev = match f.severity {
                            Severity::Error => "error",
                            Severity::Warning => "warning",
                            _ => "info",
                        };
                        match f.line_number {
                            Some(l) => {
                                println!("{}:{l}: {sev}[{}]: {}", f.file_name, f.id, f.message)
                            }
                            None => println!("{}: {sev}[{}]: {}", f.file_name, f.id, f.message),
                        }
                    }
                    if findings.is_empty() {
                        println!("no findings");
                    }
                }
            }
            let threshold = match fail_on {
                FailOn::Error => Some(Severity::Error),
                FailOn::Warning => Some(Severity::Warning),
                FailOn::Info => Some(Severity::Info),
                FailOn::Never => None,
            };
            let failed = threshold.is_some_and(|t| findings.iter().any(|f| f.severity >= t));
            Ok(if failed {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Explain {
            read: a,
            conn_type,
            db,
            user,
            addr,
            hostname,
            member_of,
            replication,
        } => {
            let set = read(&a)?;
            let Some(ct) = ConnType::parse(conn_type.as_bytes()) else {
                bail!(
                    "unknown connection type {conn_type:?} (local, host, hostssl, hostnossl, hostgssenc, hostnogssenc)"
                );
            };
            if ct != ConnType::Local && addr.is_none() && hostname.is_none() {
                bail!("--addr is required for a {conn_type} connection");
            }
            let conn = Connection {
                conn_type: ct,
                database: db,
                user,
                addr,
                hostname,
                member_of,
                physical_replication: replication,
            };
            let version = read_opts(&a).version;
            let ex = costplus_hba::explain(&set, &conn, version.major() >= 16);
            match a.format {
                Format::Json => print_json(&ex)?,
                Format::Human => {
                    for v in &ex.considered {
                        println!("{}:{}: no: {}", v.file_name, v.line_number, v.reason);
                    }
                    match &ex.decision {
                        Some(d) => println!("{}:{}: {}", d.file_name, d.line_number, d.reason),
                        None => println!(
                            "no line matches: the server rejects the connection (no pg_hba.conf entry)"
                        ),
                    }
                    for n in &ex.notes {
                        println!("note: {n}");
                    }
                    if ex.file_has_errors {
                        println!(
                            "warning: the server refuses this file (it keeps its previous rules); run `costplus-hba lint`"
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fmt { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc = Document::parse(&bytes);
            let mut out = std::io::stdout().lock();
            out.write_all(&doc.to_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Add {
            read: a,
            customer,
            db,
            user,
            addrs,
            method,
            plan,
            server,
        } => {
            let Some(m) = costplus_hba::AuthMethod::parse(method.as_bytes()) else {
                bail!("unknown method {method:?}");
            };
            let db = db.unwrap_or_else(|| customer.clone());
            let user = user.unwrap_or_else(|| customer.clone());
            let addrs = if addrs.is_empty() {
                vec!["0.0.0.0/0".to_string(), "::/0".to_string()]
            } else {
                addrs
            };
            let specs: Vec<RuleSpec> = addrs
                .iter()
                .map(|ad| {
                    let mut r = RuleSpec::hostssl_scram(&db, &user, ad);
                    r.method = m;
                    r
                })
                .collect();
            let opts = ApplyOptions::new(absolute(&a.file)?, read_opts(&a));
            mutate(opts, plan, &server, a.format, move |d| {
                d.set_customer_rules(&customer, &specs).map(|_| ())
            })
        }
        Command::Remove {
            read: a,
            customer,
            plan,
            server,
        } => {
            let opts = ApplyOptions::new(absolute(&a.file)?, read_opts(&a));
            mutate(opts, plan, &server, a.format, move |d| {
                d.remove_customer_rules(&customer).map(|_| ())
            })
        }
        Command::Apply {
            source,
            hba_file,
            pg_version,
            plan,
            format,
            server,
        } => {
            let new =
                std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
            let rt = runtime()?;
            let client = rt.block_on(connect(&server))?;
            let (hba, version) = match (&hba_file, &client) {
                (Some(p), _) => (absolute(p)?, pg_version.unwrap_or_else(default_version)),
                (None, Some(c)) => rt.block_on(async {
                    let row = c.query_one("SELECT current_setting('hba_file'), current_setting('server_version_num')::int / 10000", &[]).await?;
                    let p: String = row.get(0);
                    let v: i32 = row.get(1);
                    Ok::<_, anyhow::Error>((
                        PathBuf::from(p),
                        pg_version
                            .or_else(|| PgVersion::new(v as u32))
                            .unwrap_or(PgVersion::V15),
                    ))
                })?,
                (None, None) => bail!("give --hba-file, or a server (--cluster or --socket-dir)"),
            };
            let mut opts = ApplyOptions::new(hba, ReadOptions::for_version(version));
            opts.reload = !server.no_reload;
            let edit = move |d: &mut Document| {
                *d = Document::parse(&new);
                Ok(())
            };
            finish_mutation(&rt, opts, plan, client.as_ref(), format, edit)
        }
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn connect(server: &ServerArgs) -> anyhow::Result<Option<tokio_postgres::Client>> {
    if let Some(root) = &server.cluster {
        let cluster = costplus_pgcluster::Cluster::open(root)?;
        return Ok(Some(cluster.connect("postgres").await?));
    }
    if let Some(dir) = &server.socket_dir {
        let port = server.port.unwrap_or(5432);
        let mut o = costplus_pgcluster::connect::ConnectOptions::new(
            &dir.to_string_lossy(),
            port,
            &server.login_user,
            "postgres",
        );
        o.ssl = costplus_pgcluster::connect::SslMode::Disable;
        return Ok(Some(costplus_pgcluster::connect::connect(&o).await?));
    }
    Ok(None)
}

fn mutate(
    mut opts: ApplyOptions,
    plan: bool,
    server: &ServerArgs,
    format: Format,
    edit: impl FnOnce(&mut Document) -> Result<(), costplus_hba::EditError>,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let client = rt.block_on(connect(server))?;
    opts.reload = !server.no_reload;
    finish_mutation(&rt, opts, plan, client.as_ref(), format, edit)
}

fn finish_mutation(
    rt: &tokio::runtime::Runtime,
    opts: ApplyOptions,
    plan: bool,
    client: Option<&tokio_postgres::Client>,
    format: Format,
    edit: impl FnOnce(&mut Document) -> Result<(), costplus_hba::EditError>,
) -> anyhow::Result<ExitCode> {
    let report = if plan {
        costplus_hba::plan(&opts, edit)?
    } else {
        rt.block_on(costplus_hba::apply(client, &opts, edit))?
    };
    match format {
        Format::Json => print_json(&report)?,
        Format::Human => {
            if plan {
                print!("{}", report.diff);
                if !report.changed {
                    println!("no change");
                }
            } else if !report.changed {
                println!(
                    "{}: no change{}",
                    report.path.display(),
                    if report.reloaded { ", reloaded" } else { "" }
                );
            } else {
                print!("{}", report.diff);
                if let Some(b) = &report.backup {
                    println!("backup: {}", b.display());
                }
                println!(
                    "written: {}{}{}",
                    report.path.display(),
                    if report.validated_by_server {
                        ", validated by the server"
                    } else {
                        ""
                    },
                    if report.reloaded { ", reloaded" } else { "" }
                );
            }
            if report.reload_pending {
                println!(
                    "reload pending: the server may not run this file yet; the next apply that reloads (with a server connection, without --no-reload) does"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
