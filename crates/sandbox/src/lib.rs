//! The sandbox: the whole costplus system on one machine, on loopback.
//!
//! `up` creates (or restarts) under one directory:
//! - a PostgreSQL cluster with TLS from a local CA (`ssl_min_protocol_version` TLSv1.2,
//!   scram-sha-256, the logging collector on, `log_line_prefix` with time and client host);
//! - an S3-compatible HTTPS server (costplus-s3local) as a background process, with one bucket;
//! - `costplus.toml`, the configuration every costplus command accepts via `--config` or
//!   `$COSTPLUS_CONFIG`.
//!
//! `env` gives the variables that let psql and other tools reach it, `status` says what runs,
//! `down` stops everything and removes the directory. `up` is idempotent.
//!
//! Layout of the sandbox directory:
//!
//! | path | what |
//! |---|---|
//! | `costplus.toml` | configuration for every costplus command |
//! | `sandbox.json` | ports, names, paths (no secrets) |
//! | `ca/ca.crt`, `ca/ca.key` | the local CA (key 0600) |
//! | `pg/` | the cluster (`data/`, `run/` socket, `tls/`, `superuser.password` 0600) |
//! | `s3/` | the S3 server: `data/<bucket>/`, `server.crt`, `server.key`, `credentials` (0600), `s3.pid`, `s3.log` |
//! | `vault/`, `vault.key` | the credential vault (0700) and its key file (0600): `costplus-vault --config costplus.toml ...` |
//! | `pgbackrest/` | backups: `pgbackrest.conf` (0640 root:postgres, holds the secrets), `repo1/` (encrypted local repository), `spool/`, `log/`, `lock/`, `state/` (fingerprints, drill history, drill scratch), `repo1.pass` and `repo2.pass` (0600 cipher passphrases; they move into the vault when it lands) |
//!
//! Backups: repo1 is local (`pgbackrest/repo1`), repo2 is the sandbox's own S3 server (bucket
//! `costplus-offsite`, path `/pgbackrest`), both encrypted (aes-256-cbc) with their own
//! generated passphrase (48 random bytes, base64). Archiving is on (`up` restarts the cluster
//! once at creation for `archive_mode`) and the stanza `main` exists, so
//! `costplus-backup run|info|drill` work right away.

pub mod demo;
mod s3proc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use costplus_core::config::{Config, NamingPolicy, ServerConfig};
use costplus_fs::{LockFile, WriteOptions, write_atomic};
use costplus_pgcluster::{Cluster, ClusterOptions, Status, TlsFiles};
use costplus_s3::{OffsiteConfig, Provider};
use costplus_tls::issue::{Authority, ServerCertRequest};
use costplus_vault::VaultConfig;

pub use s3proc::serve_s3_foreground;

/// Default sandbox directory, relative to the current directory.
pub const DEFAULT_DIR: &str = ".costplus-sandbox";

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no sandbox in the directory.
    #[error("no sandbox in {0} (run `costplus sandbox up` first)")]
    NotFound(PathBuf),
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] costplus_fs::Error),
    /// The cluster failed.
    #[error(transparent)]
    Pg(#[from] costplus_pgcluster::Error),
    /// Certificates could not be made.
    #[error(transparent)]
    Tls(#[from] costplus_tls::Error),
    /// The S3 server failed.
    #[error(transparent)]
    S3(#[from] costplus_s3local::Error),
    /// The vault could not be created.
    #[error(transparent)]
    Vault(#[from] costplus_vault::Error),
    /// The configuration could not be written or read.
    #[error(transparent)]
    Core(#[from] costplus_core::Error),
    /// Setting up backups failed.
    #[error("setting up backups: {0}")]
    Backup(#[from] costplus_pgbackrest::Error),
    /// Any other I/O problem, with the path concerned.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The S3 server process did not come up.
    #[error("the sandbox S3 server did not start: {0}")]
    S3Process(String),
    /// The sandbox state file is damaged.
    #[error("{path} is damaged: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

/// Result type of the sandbox.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `sandbox.json` records (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// PostgreSQL port on 127.0.0.1.
    pub pg_port: u16,
    /// S3 server port on 127.0.0.1 (reached as `localhost`).
    pub s3_port: u16,
    /// The offsite bucket.
    pub bucket: String,
    /// The S3 access key id (the secret is in `s3/credentials`).
    pub s3_access_key: String,
}

/// How to bring the sandbox up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// Program and arguments that run [`serve_s3_foreground`] for this directory (the `costplus`
    /// binary passes itself with `sandbox serve-s3 --dir D`).
    pub s3_server_command: Vec<std::ffi::OsString>,
}

/// What `up` and `status` report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// Whether `up` created it now (false: it existed and was reused).
    pub created: bool,
    /// Whether PostgreSQL runs.
    pub postgres_running: bool,
    /// Whether the S3 server answers.
    pub s3_running: bool,
    /// The recorded state.
    pub state: State,
    /// The configuration file.
    pub config: PathBuf,
    /// The server log.
    pub server_log: PathBuf,
}

/// Paths inside a sandbox directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout of sandbox directory `dir` (made absolute).
    pub fn new(dir: &Path) -> Result<Self> {
        let dir = std::path::absolute(dir).map_err(io(dir))?;
        Ok(Self { dir })
    }
    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `costplus.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("costplus.toml")
    }
    /// `sandbox.json`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }
    /// CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca").join("ca.crt")
    }
    /// CA key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca").join("ca.key")
    }
    /// The cluster's root.
    pub fn pg_root(&self) -> PathBuf {
        self.dir.join("pg")
    }
    /// The S3 server's directory.
    pub fn s3_dir(&self) -> PathBuf {
        self.dir.join("s3")
    }
    /// S3 credentials file (AWS shared-credentials format, 0600).
    pub fn s3_credentials(&self) -> PathBuf {
        self.s3_dir().join("credentials")
    }
    /// PID file of the S3 server process.
    pub fn s3_pid(&self) -> PathBuf {
        self.s3_dir().join("s3.pid")
    }
    /// Log of the S3 server process.
    pub fn s3_log(&self) -> PathBuf {
        self.s3_dir().join("s3.log")
    }
    /// The credential vault directory.
    pub fn vault_dir(&self) -> PathBuf {
        self.dir.join("vault")
    }
    /// The vault's key file (0600).
    pub fn vault_key(&self) -> PathBuf {
        self.dir.join("vault.key")
    }
    /// pgBackRest's directory (configuration, repo1, spool, logs, state).
    pub fn pgbackrest_dir(&self) -> PathBuf {
        self.dir.join("pgbackrest")
    }
    /// Repository 1 (local, encrypted).
    pub fn repo1(&self) -> PathBuf {
        self.pgbackrest_dir().join("repo1")
    }
    fn lock(&self) -> PathBuf {
        self.dir.join(".lock")
    }
}

/// Read the recorded state of the sandbox in `dir`.
pub fn load_state(layout: &Layout) -> Result<State> {
    let path = layout.state();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(layout.dir().into()));
        }
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    serde_json::from_str(&text).map_err(|e| Error::State {
        path,
        message: e.to_string(),
    })
}

/// Bring the sandbox up: create it, or restart what is not running. Idempotent.
pub fn up(opts: &UpOptions) -> Result<Report> {
    let layout = Layout::new(&opts.dir)?;
    costplus_fs::create_dir_with_mode(layout.dir(), 0o755)?;
    let _lock = LockFile::acquire(&layout.lock())?;
    let created = !layout.state().exists();
    if created {
        if let Err(e) = create(&layout, opts) {
            // Leave nothing half-done.
            tracing::warn!(
                "sandbox creation failed, removing {}",
                layout.dir().display()
            );
            let _ = teardown(&layout);
            let _ = std::fs::remove_dir_all(layout.dir());
            return Err(e);
        }
    } else {
        let state = load_state(&layout)?;
        let cluster = Cluster::open(&layout.pg_root())?;
        cluster.start()?;
        if !s3proc::answers(state.s3_port) {
            s3proc::spawn(&layout, &opts.s3_server_command, state.s3_port)?;
        }
    }
    status(layout.dir()).map(|mut r| {
        r.created = created;
        r
    })
}

fn create(layout: &Layout, opts: &UpOptions) -> Result<()> {
    tracing::info!("creating the sandbox in {}", layout.dir().display());
    // The local CA and the server certificates.
    let ca = Authority::generate("costplus sandbox CA", 3650)?;
    costplus_fs::create_dir_with_mode(&layout.dir().join("ca"), 0o755)?;
    write_atomic(
        &layout.ca_key(),
        ca.key_pem().as_bytes(),
        &WriteOptions::private(),
    )?;
    write_atomic(
        &layout.ca_cert(),
        ca.cert_pem().as_bytes(),
        &WriteOptions::public(),
    )?;

    // PostgreSQL.
    let pg_cert = ca.issue_server(&ServerCertRequest::localhost())?;
    let password = random_secret(32);
    let mut copts = ClusterOptions::new(&layout.pg_root());
    copts.password = Some(password.into());
    copts.tls = Some(TlsFiles {
        cert_pem: pg_cert.cert_pem,
        key_pem: pg_cert.key_pem,
        ca_pem: ca.cert_pem().to_string(),
    });
    copts.logging_collector = true;
    // Over the network only the administrator, and customers through the managed block that
    // provisioning adds before the final rejects: nobody else reaches any database.
    copts.hba = Some(
        "# TYPE  DATABASE  USER  ADDRESS  METHOD\n\
         local   all   postgres   peer map=costplus_admin\n\
         local   all   all   scram-sha-256\n\
         hostssl all   postgres   127.0.0.1/32   scram-sha-256\n\
         hostssl all   postgres   ::1/128   scram-sha-256\n\
         # Everything else is refused, explicitly.\n\
         host    all   all   0.0.0.0/0   reject\n\
         host    all   all   ::/0   reject\n"
            .to_string(),
    );
    copts.settings = vec![
        ("log_connections".into(), "on".into()),
        ("log_disconnections".into(), "on".into()),
        ("ssl_min_protocol_version".into(), "'TLSv1.2'".into()),
    ];
    let cluster = Cluster::create(copts)?;
    cluster.start()?;

    // The S3 server: its own certificate for `localhost` (pgBackRest checks DNS names only).
    let s3dir = layout.s3_dir();
    costplus_fs::create_dir_with_mode(&s3dir, 0o755)?;
    let bucket = "costplus-offsite".to_string();
    costplus_s3local::create_bucket(&s3dir.join("data"), &bucket)?;
    let s3_cert = ca.issue_server(&ServerCertRequest::for_names(
        vec!["localhost".into()],
        vec![],
    ))?;
    s3_cert.write(&s3dir.join("server.crt"), &s3dir.join("server.key"), None)?;
    let access_key = format!("AKSANDBOX{}", random_secret(11).to_uppercase());
    let secret_key = random_secret(40);
    let creds = format!(
        "[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
    );
    write_atomic(
        &layout.s3_credentials(),
        creds.as_bytes(),
        &WriteOptions::private(),
    )?;
    let s3_port = costplus_pgcluster::free_port()?;
    let state = State {
        version: 1,
        pg_port: cluster.port(),
        s3_port,
        bucket,
        s3_access_key: access_key,
    };
    let text = serde_json::to_string_pretty(&state).map_err(|e| Error::State {
        path: layout.state(),
        message: e.to_string(),
    })?;
    s3proc::spawn(layout, &opts.s3_server_command, s3_port)?;
    let offsite = OffsiteConfig {
        provider: Provider::S3Compatible,
        region: "us-east-1".into(),
        endpoint: Some(format!("https://localhost:{s3_port}")),
        bucket: state.bucket.clone(),
        ca_file: Some(layout.ca_cert()),
        credentials_file: Some(layout.s3_credentials()),
        ..OffsiteConfig::wasabi("us-east-1", &state.bucket)
    };
    let backup = setup_backups(layout, &cluster, &offsite)?;

    // The credential vault, unlocked by a key file.
    let vault = VaultConfig {
        dir: layout.vault_dir(),
        key_file: Some(layout.vault_key()),
        passphrase_file: None,
    };
    costplus_vault::Vault::init(
        &vault.dir,
        &costplus_vault::NewKey::key_file(&layout.vault_key()),
    )?;

    // The configuration every command reads.
    let config = Config {
        servers: vec![ServerConfig::for_cluster(
            "sandbox",
            &cluster,
            "localhost",
            layout.ca_cert(),
        )],
        naming: NamingPolicy::default(),
        customers: Default::default(),
        state_dir: Some(layout.dir().join("state")),
        vault: Some(vault),
        backup: Some(backup),
        fail2ban: None,
        maintenance: None,
        offsite: Some(offsite),
        path: layout.config(),
    };
    let mut toml = String::from(
        "# costplus configuration of the sandbox (written by `costplus sandbox up`).\n",
    );
    toml.push_str(&config.to_toml());
    write_atomic(&layout.config(), toml.as_bytes(), &WriteOptions::public())?;
    // Written last: its presence means the sandbox is complete.
    write_atomic(&layout.state(), text.as_bytes(), &WriteOptions::public())?;
    Ok(())
}

/// Encrypted repo1 (local) and repo2 (the sandbox S3 server), archiving on (one restart of
/// the cluster for `archive_mode`), the stanza created and checked.
fn setup_backups(
    layout: &Layout,
    cluster: &Cluster,
    offsite: &OffsiteConfig,
) -> Result<costplus_pgbackrest::BackupConfig> {
    use costplus_pgbackrest::{BackupConfig, PgBackRest, archiving, conf, secrets};
    let d = layout.pgbackrest_dir();
    costplus_fs::create_dir_with_mode(&d, 0o755)?;
    let cfg = BackupConfig {
        config_file: d.join("pgbackrest.conf"),
        repo1_path: layout.repo1(),
        spool_path: d.join("spool"),
        log_path: d.join("log"),
        lock_path: d.join("lock"),
        state_path: d.join("state"),
        // Until the vault lands, the passphrases live in 0600 files beside the repository.
        repo1_cipher_pass_file: Some(d.join("repo1.pass")),
        repo2_cipher_pass_file: Some(d.join("repo2.pass")),
        // Everything is local: a stopped S3 server should fail archive-push in seconds, not a
        // minute per attempt (PostgreSQL's shutdown waits for its archiver's last attempts).
        archive_timeout_seconds: 10,
        ..BackupConfig::default()
    };
    secrets::ensure_passphrase_file(&d.join("repo1.pass"))?;
    secrets::ensure_passphrase_file(&d.join("repo2.pass"))?;
    let target = conf::PgTarget::of_cluster(cluster);
    conf::configure(&cfg, Some(offsite), &target, &secrets::FileSecrets)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio runtime")))?;
    let report = rt.block_on(async {
        let client = cluster.connect("postgres").await?;
        Ok::<_, Error>(archiving::apply(&client, &cfg).await?)
    })?;
    if report.restart_needed {
        tracing::info!("restarting the sandbox cluster for archive_mode");
        cluster.stop()?;
        cluster.start()?;
    }
    let pgbr = PgBackRest::new(&cfg, cluster.os_user().clone());
    pgbr.stanza_create()?;
    pgbr.check()?;
    Ok(cfg)
}

/// What runs in the sandbox in `dir`.
pub fn status(dir: &Path) -> Result<Report> {
    let layout = Layout::new(dir)?;
    let state = load_state(&layout)?;
    let cluster = Cluster::open(&layout.pg_root())?;
    let postgres_running = matches!(cluster.status()?, Status::Running { .. });
    Ok(Report {
        dir: layout.dir().to_path_buf(),
        created: false,
        postgres_running,
        s3_running: s3proc::answers(state.s3_port),
        server_log: cluster.log_file(),
        config: layout.config(),
        state,
    })
}

/// The environment that lets psql, pgBackRest, the AWS CLI and costplus reach the sandbox, as
/// (name, value) pairs. Includes the sandbox's own secrets (superuser password, S3 keys).
pub fn env(dir: &Path) -> Result<Vec<(String, String)>> {
    let layout = Layout::new(dir)?;
    let state = load_state(&layout)?;
    let cluster = Cluster::open(&layout.pg_root())?;
    let password =
        std::fs::read_to_string(cluster.password_file()).map_err(io(&cluster.password_file()))?;
    let creds =
        std::fs::read_to_string(layout.s3_credentials()).map_err(io(&layout.s3_credentials()))?;
    let secret = creds
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap_or_default()
        .to_string();
    let p = |p: &Path| p.display().to_string();
    Ok(vec![
        ("PGHOST".into(), "localhost".into()),
        ("PGPORT".into(), state.pg_port.to_string()),
        ("PGUSER".into(), cluster.superuser().into()),
        ("PGPASSWORD".into(), password),
        ("PGDATABASE".into(), "postgres".into()),
        ("PGSSLMODE".into(), "verify-full".into()),
        ("PGSSLROOTCERT".into(), p(&layout.ca_cert())),
        ("COSTPLUS_CONFIG".into(), p(&layout.config())),
        ("COSTPLUS_SERVER_LOG".into(), p(&cluster.log_file())),
        ("COSTPLUS_DATA_DIR".into(), p(&cluster.data_dir())),
        (
            "COSTPLUS_S3_ENDPOINT".into(),
            format!("https://localhost:{}", state.s3_port),
        ),
        ("COSTPLUS_S3_BUCKET".into(), state.bucket.clone()),
        ("COSTPLUS_S3_CA".into(), p(&layout.ca_cert())),
        ("COSTPLUS_REPO1_PATH".into(), p(&layout.repo1())),
        ("AWS_ACCESS_KEY_ID".into(), state.s3_access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret),
    ])
}

/// Render [`env`] as `export NAME='value'` lines for `eval`.
pub fn env_script(vars: &[(String, String)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect()
}

fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// Stop everything and remove the sandbox directory. A missing sandbox is not an error.
pub fn down(dir: &Path) -> Result<bool> {
    let layout = Layout::new(dir)?;
    if !layout.dir().exists() {
        return Ok(false);
    }
    {
        let _lock = LockFile::acquire(&layout.lock())?;
        teardown(&layout)?;
        std::fs::remove_dir_all(layout.dir()).map_err(io(layout.dir()))?;
    }
    Ok(true)
}

fn teardown(layout: &Layout) -> Result<()> {
    // PostgreSQL first: at shutdown its archiver pushes the last WAL segments, and with the
    // S3 server already gone each attempt would wait for pgBackRest's archive timeout.
    if layout.pg_root().join("cluster.json").exists() {
        let cluster = Cluster::open(&layout.pg_root())?;
        cluster.stop()?;
    }
    s3proc::stop(layout)?;
    Ok(())
}

fn random_secret(len: usize) -> String {
    // URI- and .pgpass-safe alphabet.
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut buf = [0u8; 64];
        if getrandom::fill(&mut buf).is_err() {
            continue;
        }
        // Rejection sampling keeps the distribution uniform.
        let limit = 256 - (256 % ALPHABET.len());
        out.extend(
            buf.iter()
                .filter(|&&b| (b as usize) < limit)
                .map(|&b| ALPHABET[b as usize % ALPHABET.len()] as char),
        );
    }
    out.truncate(len);
    out
}

/// Wait for `port` on 127.0.0.1 to accept TCP connections.
fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_use_the_safe_alphabet() {
        let s = random_secret(500);
        assert_eq!(s.len(), 500);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() && !b"0O1lI".contains(&b)),
            "{s}"
        );
        assert_ne!(random_secret(32), random_secret(32));
    }

    #[test]
    fn env_script_quotes() {
        let s = env_script(&[("A".into(), "it's".into())]);
        assert_eq!(s, "export A='it'\\''s'\n");
    }
}
