//! `costplus-tls probe|inspect|issue|renew`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use costplus_tls::inspect::{self, Policy};
use costplus_tls::issue::{KeyType, ServerCertRequest};
use costplus_tls::probe::{self, Mode, ProbeOptions, Verdict};
use costplus_tls::renew::{self, InstallOptions, IssueOptions, Outcome, Reload};
use costplus_tls::{Finding, Severity};

use crate::output::{Format, print_json};

/// Arguments of `costplus-tls` / `costplus tls`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    command: Box<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe a live server: protocol versions, cipher suites, certificate, plaintext login.
    Probe(ProbeArgs),
    /// Check certificate, key and CA files offline.
    Inspect(InspectArgs),
    /// Issue a server certificate from a private CA (created on request) and install it.
    Issue(IssueArgs),
    /// Renew the server certificate when needed, install it and reload PostgreSQL.
    Renew(RenewArgs),
}

/// Exit 3 when a finding is at least this severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    /// Any finding.
    Info,
    /// A warning or a failure.
    Warn,
    /// A failure (default).
    Fail,
    /// Never: exit 0 whatever was found.
    Never,
}

impl FailOn {
    fn code(self, worst: Option<Severity>) -> ExitCode {
        let threshold = match self {
            FailOn::Info => Severity::Info,
            FailOn::Warn => Severity::Warn,
            FailOn::Fail => Severity::Fail,
            FailOn::Never => return ExitCode::SUCCESS,
        };
        match worst {
            Some(w) if w >= threshold => ExitCode::from(3),
            _ => ExitCode::SUCCESS,
        }
    }
}

#[derive(Debug, ClapArgs)]
struct PolicyArgs {
    /// Warn when at most this many days are left.
    #[arg(long, default_value_t = 30)]
    warn_days: i64,
    /// Fail when at most this many days are left.
    #[arg(long, default_value_t = 7)]
    fail_days: i64,
    /// Exit with 3 when a finding is at least this severe.
    #[arg(long, value_enum, default_value_t = FailOn::Fail)]
    fail_on: FailOn,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy {
            warn_days: self.warn_days,
            fail_days: self.fail_days,
            ..Policy::default()
        }
    }
}

#[derive(Debug, ClapArgs)]
struct ProbeArgs {
    /// Host name or IP address.
    #[arg(long)]
    host: String,
    /// Port.
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// CA certificate file to verify the chain against (sslrootcert).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Name for SNI and verification (default: --host).
    #[arg(long)]
    servername: Option<String>,
    /// Start with TLS directly (PostgreSQL 17 sslnegotiation=direct) instead of SSLRequest.
    #[arg(long)]
    direct: bool,
    /// Also try a login without TLS as this role (no password is ever sent).
    #[arg(long, requires = "dbname")]
    user: Option<String>,
    /// Database for --user.
    #[arg(long, requires = "user")]
    dbname: Option<String>,
    /// Only the protocol versions and the chain; no cipher suite enumeration.
    #[arg(long)]
    no_ciphers: bool,
    /// Timeout of every connect and read, in seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, ClapArgs)]
struct InspectArgs {
    /// Certificate file (PEM, may hold the chain; or DER).
    #[arg(long)]
    cert: PathBuf,
    /// Private key file: must belong to the certificate; with --server-user, PostgreSQL's file
    /// ownership and permission rules are checked too.
    #[arg(long)]
    key: Option<PathBuf>,
    /// CA file the chain must reach.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Host name or address clients use (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// OS user running PostgreSQL, for the key file rules (default: postgres when it exists
    /// and --key is given).
    #[arg(long)]
    server_user: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyTypeArg {
    /// ECDSA on P-256 (default).
    EcdsaP256,
    /// RSA 3072, for old clients.
    Rsa3072,
}

#[derive(Debug, ClapArgs)]
struct PairArgs {
    /// CA certificate file.
    #[arg(long)]
    ca_cert: PathBuf,
    /// CA private key file (0600).
    #[arg(long)]
    ca_key: PathBuf,
    /// Server certificate file to write (ssl_cert_file).
    #[arg(long)]
    cert: PathBuf,
    /// Server key file to write (ssl_key_file).
    #[arg(long)]
    key: PathBuf,
    /// DNS name for the certificate (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// IP address for the certificate (repeatable).
    #[arg(long = "ip")]
    ips: Vec<IpAddr>,
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::EcdsaP256)]
    key_type: KeyTypeArg,
    /// Validity in days.
    #[arg(long, default_value_t = ServerCertRequest::DEFAULT_VALIDITY_DAYS)]
    days: u32,
    /// OS user owning the files (the server's; PostgreSQL refuses a key it does not own).
    /// Default when run as root: postgres (when that user exists); otherwise the current user.
    #[arg(long)]
    owner: Option<String>,
    /// Show what would be done, do nothing.
    #[arg(long)]
    plan: bool,
}

impl PairArgs {
    fn request(&self) -> anyhow::Result<ServerCertRequest> {
        if self.dns.is_empty() && self.ips.is_empty() {
            anyhow::bail!("give at least one --dns or --ip name for the certificate");
        }
        let mut req = ServerCertRequest::for_names(self.dns.clone(), self.ips.clone());
        req.key_type = match self.key_type {
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
            KeyTypeArg::Rsa3072 => KeyType::Rsa3072,
        };
        req.validity_days = self.days;
        Ok(req)
    }
    fn owner(&self) -> anyhow::Result<Option<costplus_fs::OsUser>> {
        match self.owner.as_deref() {
            Some(name) => Ok(Some(costplus_fs::OsUser::by_name(name).context("--owner")?)),
            // As root, files owned by root are useless to the server: default to `postgres`.
            None if costplus_fs::OsUser::running_as_root() => {
                Ok(costplus_fs::OsUser::by_name("postgres").ok())
            }
            None => Ok(None),
        }
    }
}

#[derive(Debug, ClapArgs)]
struct IssueArgs {
    #[command(flatten)]
    pair: PairArgs,
    /// Create the CA when its files do not exist.
    #[arg(long)]
    create_ca: bool,
    /// CA validity in days when creating it.
    #[arg(long, default_value_t = 3650)]
    ca_days: u32,
}

#[derive(Debug, ClapArgs)]
struct RenewArgs {
    #[command(flatten)]
    pair: PairArgs,
    /// Renew even when the certificate is still good.
    #[arg(long)]
    force: bool,
    /// Reload this costplus-managed cluster (its root directory) with pg_ctl.
    #[arg(long, conflicts_with = "reload_host")]
    cluster_root: Option<PathBuf>,
    /// Reload with SELECT pg_reload_conf() on this host (TLS verify-full with --reload-ca).
    #[arg(long)]
    reload_host: Option<String>,
    /// Port for --reload-host and the post-reload check.
    #[arg(long, default_value_t = 5432)]
    reload_port: u16,
    /// Role for --reload-host.
    #[arg(long, default_value = "postgres")]
    reload_user: String,
    /// File holding that role's password (0600).
    #[arg(long)]
    reload_password_file: Option<PathBuf>,
    /// CA to verify --reload-host with (default: --ca-cert).
    #[arg(long)]
    reload_ca: Option<PathBuf>,
    /// After the reload, check that HOST:PORT presents the new certificate.
    #[arg(long, value_name = "HOST:PORT")]
    verify: Option<String>,
}

/// Run `costplus-tls ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match *args.command {
        Command::Probe(p) => run_probe(p, args.format),
        Command::Inspect(i) => run_inspect(i, args.format),
        Command::Issue(i) => run_issue(i, args.format),
        Command::Renew(r) => run_renew(r, args.format),
    }
}

fn run_probe(a: ProbeArgs, format: Format) -> anyhow::Result<ExitCode> {
    let mut opts = ProbeOptions::new(&a.host, a.port);
    opts.server_name = a.servername.clone();
    if let Some(ca) = &a.ca {
        opts.ca = Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    opts.mode = if a.direct {
        Mode::Direct
    } else {
        Mode::SslRequest
    };
    opts.ciphers = !a.no_ciphers;
    if !(a.timeout > 0.0 && a.timeout < 3600.0) {
        anyhow::bail!("--timeout must be between 0 and 3600 seconds");
    }
    opts.connect_timeout = Duration::from_secs_f64(a.timeout);
    opts.io_timeout = Duration::from_secs_f64(a.timeout);
    opts.policy = a.policy.policy();
    if let (Some(u), Some(d)) = (a.user, a.dbname) {
        opts.plaintext_login = Some((u, d));
    }
    let report = probe::probe_blocking(&opts)?;
    match format {
        Format::Json => print_json(&report)?,
        Format::Human => {
            println!(
                "{} ({}, verified as {})",
                report.target,
                match report.mode {
                    Mode::Direct => "direct TLS",
                    _ => "SSLRequest",
                },
                report.server_name
            );
            for v in costplus_tls::wire::ProtocolVersion::ALL {
                let verdict = report.protocols.get(v);
                let word = match verdict {
                    Verdict::Accepted => "accepted",
                    Verdict::Refused => "refused",
                    _ => "not tested",
                };
                let n = report.ciphers.get(v.name()).map_or(0, Vec::len);
                if verdict == Verdict::Accepted {
                    println!("  {:<8} {word} ({n} cipher suites)", v.name());
                } else {
                    println!("  {:<8} {word}", v.name());
                }
            }
            if let Some(c) = &report.certificate {
                println!(
                    "  certificate {} issued by {}, {} days left, {} {} bits, trusted: {}",
                    c.leaf.subject,
                    c.leaf.issuer,
                    c.leaf.days_left,
                    c.leaf.key.algorithm,
                    c.leaf.key.bits,
                    match c.trusted {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "not checked (no --ca)",
                    }
                );
            }
            print_findings(&report.findings);
            println!(
                "  {} connections in {} ms",
                report.connections, report.elapsed_ms
            );
        }
    }
    Ok(a.policy.fail_on.code(report.worst()))
}

fn print_findings(findings: &[Finding]) {
    if findings.is_empty() {
        println!("  no findings");
    }
    for f in findings {
        println!("  [{}] {}: {}", f.severity, f.id, f.message);
    }
}

fn run_inspect(a: InspectArgs, format: Format) -> anyhow::Result<ExitCode> {
    let server_user = match (&a.server_user, &a.key) {
        (Some(u), _) => Some(inspect::server_identity(u)?),
        (None, Some(_)) => inspect::server_identity("postgres").ok(),
        _ => None,
    };
    let files = inspect::Files {
        cert: a.cert.clone(),
        key: a.key.clone(),
        ca: a.ca.clone(),
        hosts: a.hosts.clone(),
        policy: a.policy.policy(),
        server_user,
    };
    let report = inspect::inspect_files(&files)?;
    match format {
        Format::Json => print_json(&report)?,
        Format::Human => {
            if let Some(c) = &report.certificate {
                println!(
                    "{}: {} issued by {}, {} days left ({}), {} {} bits, names {:?} {:?}",
                    a.cert.display(),
                    c.subject,
                    c.issuer,
                    c.days_left,
                    c.not_after,
                    c.key.algorithm,
                    c.key.bits,
                    c.dns_names,
                    c.ip_addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                );
            } else {
                println!("{}: no readable certificate", a.cert.display());
            }
            print_findings(&report.findings);
        }
    }
    Ok(a.policy.fail_on.code(report.worst()))
}

fn print_outcome(out: &Outcome, format: Format, plan: bool) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(out)?,
        Format::Human => {
            let verdict = if out.decision.renew {
                "renew"
            } else if out.steps.is_empty() {
                "keep"
            } else {
                "renew (forced)"
            };
            println!("{verdict}: {}", out.decision.reasons.join("; "));
            for s in &out.steps {
                let mark = if s.done {
                    "done"
                } else if plan {
                    "plan"
                } else {
                    "skipped"
                };
                println!("  [{mark}] {}", s.action);
            }
            if let Some(sha) = &out.new_sha256 {
                println!("  new certificate sha256 {sha}");
            }
        }
    }
    Ok(())
}

fn run_issue(a: IssueArgs, format: Format) -> anyhow::Result<ExitCode> {
    let opts = IssueOptions {
        ca_cert: a.pair.ca_cert.clone(),
        ca_key: a.pair.ca_key.clone(),
        create_ca: a.create_ca,
        ca_validity_days: a.ca_days,
        cert_file: a.pair.cert.clone(),
        key_file: a.pair.key.clone(),
        owner: a.pair.owner()?,
        request: a.pair.request()?,
    };
    let out = renew::issue(&opts, !a.pair.plan)?;
    print_outcome(&out, format, a.pair.plan)?;
    Ok(ExitCode::SUCCESS)
}

fn run_renew(a: RenewArgs, format: Format) -> anyhow::Result<ExitCode> {
    let reload = if let Some(root) = &a.cluster_root {
        Reload::Cluster(root.clone())
    } else if let Some(host) = &a.reload_host {
        let mut c = costplus_pgcluster::connect::ConnectOptions::new(
            host,
            a.reload_port,
            &a.reload_user,
            "postgres",
        );
        if let Some(pw) = &a.reload_password_file {
            costplus_fs::check_private(pw)?;
            let text =
                std::fs::read_to_string(pw).with_context(|| format!("reading {}", pw.display()))?;
            c.password = Some(secrecy::SecretString::from(text.trim_end().to_string()));
        }
        c.ssl = costplus_pgcluster::connect::SslMode::VerifyFull {
            ca_file: a
                .reload_ca
                .clone()
                .unwrap_or_else(|| a.pair.ca_cert.clone()),
            server_name: None,
        };
        Reload::Sql(c)
    } else {
        Reload::None
    };
    let verify = match &a.verify {
        Some(hp) => {
            let (h, p) = hp.rsplit_once(':').context("--verify wants HOST:PORT")?;
            Some((
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>().context("--verify port")?,
            ))
        }
        None => None,
    };
    let opts = InstallOptions {
        cert_file: a.pair.cert.clone(),
        key_file: a.pair.key.clone(),
        owner: a.pair.owner()?,
        request: a.pair.request()?,
        force: a.force,
        reload,
        verify,
    };
    let issue = IssueOptions {
        ca_cert: a.pair.ca_cert.clone(),
        ca_key: a.pair.ca_key.clone(),
        create_ca: false,
        ca_validity_days: 0,
        cert_file: a.pair.cert.clone(),
        key_file: a.pair.key.clone(),
        owner: None,
        request: opts.request.clone(),
    };
    // Load the CA first, in plan mode too: a plan that cannot be carried out is an error.
    let (ca, _) = renew::load_or_create_ca(&issue, false)?;
    let ca = ca.context("loading the CA")?;
    let out = if a.pair.plan {
        renew::plan(&opts)?
    } else {
        renew::renew_blocking(&opts, &ca)?
    };
    print_outcome(&out, format, a.pair.plan)?;
    Ok(ExitCode::SUCCESS)
}
