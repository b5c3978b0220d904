//! Creating, configuring, starting and stopping a cluster.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::connect::{ConnectOptions, SslMode};
use crate::{Error, PgBin, Result};
use costplus_fs::{LockFile, OsUser, WriteOptions, write_atomic};

/// Certificate, key and CA that the server uses for TLS, PEM encoded.
#[derive(Clone)]
pub struct TlsFiles {
    /// Server certificate chain.
    pub cert_pem: String,
    /// Server private key. Secret.
    pub key_pem: String,
    /// The CA that signed the certificate (clients verify against it).
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").finish_non_exhaustive()
    }
}

/// How to create a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Directory that will hold `data/`, `run/` (socket), `tls/` and `server.log`.
    pub root: PathBuf,
    /// TCP port; `None` picks a free one.
    pub port: Option<u16>,
    /// Listen address (default `127.0.0.1`).
    pub listen: String,
    /// Name of the bootstrap superuser (default `postgres`).
    pub superuser: String,
    /// Password of the superuser for TCP logins (scram-sha-256). `None`: socket (peer) only.
    pub password: Option<SecretString>,
    /// TLS material; `None` leaves `ssl = off`.
    pub tls: Option<TlsFiles>,
    /// Extra `postgresql.conf` settings, written last (they win).
    pub settings: Vec<(String, String)>,
    /// pg_hba.conf contents; `None` writes the default (peer for the superuser over the socket,
    /// scram-sha-256 over hostssl on loopback, nothing else).
    pub hba: Option<String>,
    /// Turn on `logging_collector` with `log/postgresql.log` (as on a real server).
    pub logging_collector: bool,
    /// `fsync = off`: for throwaway test clusters only.
    pub danger_no_fsync: bool,
    /// The OS user that runs the server; default: `postgres` when we are root, else ourselves.
    pub os_user: Option<OsUser>,
    /// Binaries to use; default [`PgBin::locate`].
    pub bin: Option<PgBin>,
}

impl ClusterOptions {
    /// Defaults for a cluster under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            port: None,
            listen: "127.0.0.1".into(),
            superuser: "postgres".into(),
            password: None,
            tls: None,
            settings: Vec::new(),
            hba: None,
            logging_collector: false,
            danger_no_fsync: false,
            os_user: None,
            bin: None,
        }
    }
}

/// How to adopt an existing (restored) data directory: see [`Cluster::adopt`].
#[derive(Debug, Clone)]
pub struct AdoptOptions {
    /// Directory whose `data/` holds the data directory; `run/`, `server.log` and
    /// `cluster.json` are created beside it.
    pub root: PathBuf,
    /// TCP port; `None` picks a free one.
    pub port: Option<u16>,
    /// The OS user that runs the server (must own `data/`); default as for [`Cluster::create`].
    pub os_user: Option<OsUser>,
    /// The superuser of the data directory (default `postgres`).
    pub superuser: String,
    /// Binaries to use; default [`PgBin::locate`].
    pub bin: Option<PgBin>,
    /// Extra settings appended last (value as written in the file, quoted if needed).
    pub settings: Vec<(String, String)>,
}

impl AdoptOptions {
    /// Defaults for the data directory `<root>/data`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            port: None,
            os_user: None,
            superuser: "postgres".into(),
            bin: None,
            settings: Vec::new(),
        }
    }
}

/// Whether the server is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// The postmaster runs with this PID.
    Running {
        /// Process id of the postmaster.
        pid: u32,
    },
    /// The data directory exists; no server runs.
    Stopped,
    /// There is no data directory.
    Missing,
}

/// What we keep in `<root>/cluster.json` so that [`Cluster::open`] can find everything again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    port: u16,
    listen: String,
    superuser: String,
    os_user: String,
    bindir: PathBuf,
    tls: bool,
    logging_collector: bool,
}

/// A local PostgreSQL cluster. A handle only: dropping it does not stop the server.
#[derive(Debug, Clone)]
pub struct Cluster {
    root: PathBuf,
    port: u16,
    listen: String,
    superuser: String,
    os_user: OsUser,
    bin: PgBin,
    tls: bool,
    logging_collector: bool,
}

/// Pick a TCP port on loopback that nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Io {
        path: "127.0.0.1:0".into(),
        source: e,
    })?;
    Ok(l.local_addr()
        .map_err(|e| Error::Io {
            path: "127.0.0.1:0".into(),
            source: e,
        })?
        .port())
}

/// The OS user that should run a server started by this process.
fn default_os_user() -> Result<OsUser> {
    if OsUser::running_as_root() {
        OsUser::by_name("postgres").map_err(|_| {
            Error::Config(
                "running as root, but there is no `postgres` OS user to run the server; install PostgreSQL (apt-get install -y postgresql) or create the user".into(),
            )
        })
    } else {
        Ok(OsUser::current()?)
    }
}

const TEMPLATE_RECIPE: &str = "v1";

impl Cluster {
    /// Create a new cluster under `opts.root` (which must not hold one yet) and configure it.
    /// The server is not started.
    pub fn create(opts: ClusterOptions) -> Result<Self> {
        let bin = match opts.bin.clone() {
            Some(b) => b,
            None => PgBin::locate()?,
        };
        let os_user = match opts.os_user.clone() {
            Some(u) => u,
            None => default_os_user()?,
        };
        let root = absolute(&opts.root)?;
        if root.join("data").join("PG_VERSION").exists() {
            return Err(Error::Config(format!(
                "{} already holds a cluster; use Cluster::open",
                root.display()
            )));
        }
        check_reachable(&root, &os_user)?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let cluster = Self {
            root: root.clone(),
            port,
            listen: opts.listen.clone(),
            superuser: opts.superuser.clone(),
            os_user,
            bin,
            tls: opts.tls.is_some(),
            logging_collector: opts.logging_collector,
        };
        let socket = cluster.socket_dir();
        // Unix socket paths are limited to 107 bytes.
        let socket_len = socket.join(format!(".s.PGSQL.{port}")).as_os_str().len();
        if socket_len > 100 {
            return Err(Error::Config(format!(
                "socket path under {} is too long ({socket_len} bytes, at most 100); choose a shorter directory",
                socket.display()
            )));
        }
        costplus_fs::create_dir_with_mode(&root, 0o700)?;
        costplus_fs::create_dir_with_mode(&socket, 0o700)?;
        costplus_fs::create_dir_with_mode(&root.join("tls"), 0o700)?;
        cluster.chown(&root)?;
        cluster.chown(&socket)?;
        cluster.chown(&root.join("tls"))?;

        cluster.init_data_dir(opts.superuser.as_str())?;
        cluster.write_config(&opts)?;
        cluster.save_manifest()?;
        if let Some(password) = &opts.password {
            // Set the password on first start, as a SCRAM verifier computed here.
            cluster.start()?;
            let result = cluster.set_superuser_password(password);
            let stop = cluster.stop();
            result?;
            stop?;
            let pw_file = cluster.password_file();
            write_atomic(
                &pw_file,
                password.expose_secret().as_bytes(),
                &WriteOptions::private(),
            )?;
        }
        Ok(cluster)
    }

    /// Adopt a data directory that costplus did not create (a restored backup) at
    /// `<opts.root>/data`, so it runs like any other cluster: on `opts.port` (or a free one),
    /// as `opts.os_user`, with its socket in `<root>/run`.
    ///
    /// The data directory keeps its own configuration, except for a block appended to
    /// `postgresql.auto.conf` (read last, so it wins): port, `listen_addresses`, socket
    /// directory, `hba_file`/`ident_file` in the data directory, `ssl = off`, no logging
    /// collector (the log goes to `<root>/server.log`), then `opts.settings`. `pg_hba.conf`
    /// is replaced by one that admits only the superuser over the socket by peer
    /// authentication (mapped from the server's OS user and the calling user): nothing can
    /// reach an adopted cluster over TCP. A missing `postgresql.conf` (Debian keeps it in
    /// `/etc`) is created empty. The server is not started.
    pub fn adopt(opts: AdoptOptions) -> Result<Self> {
        let bin = match opts.bin.clone() {
            Some(b) => b,
            None => PgBin::locate()?,
        };
        let os_user = match opts.os_user.clone() {
            Some(u) => u,
            None => default_os_user()?,
        };
        let root = absolute(&opts.root)?;
        let data = root.join("data");
        if !data.join("PG_VERSION").exists() {
            return Err(Error::Config(format!(
                "{} holds no data directory to adopt (no PG_VERSION)",
                data.display()
            )));
        }
        check_reachable(&root, &os_user)?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let cluster = Self {
            root: root.clone(),
            port,
            listen: "127.0.0.1".into(),
            superuser: opts.superuser.clone(),
            os_user,
            bin,
            tls: false,
            logging_collector: false,
        };
        let socket = cluster.socket_dir();
        let socket_len = socket.join(format!(".s.PGSQL.{port}")).as_os_str().len();
        if socket_len > 100 {
            return Err(Error::Config(format!(
                "socket path under {} is too long ({socket_len} bytes, at most 100); choose a shorter directory",
                socket.display()
            )));
        }
        costplus_fs::create_dir_with_mode(&socket, 0o700)?;
        // The server writes server.log into the root.
        cluster.chown(&root)?;
        cluster.chown(&socket)?;
        let as_server = WriteOptions {
            mode: 0o600,
            owner: Some((cluster.os_user.uid, cluster.os_user.gid)),
        };
        let main = data.join("postgresql.conf");
        if !main.exists() {
            write_atomic(
                &main,
                b"# Created by costplus when adopting this data directory.\n",
                &as_server,
            )?;
        }
        let hba = format!(
            "# Written by costplus (adopted cluster): superuser over the socket only.\n\
             local   all   {}   peer map=costplus_admin\n",
            cluster.superuser
        );
        write_atomic(&data.join("pg_hba.conf"), hba.as_bytes(), &as_server)?;
        let mut ident = format!(
            "costplus_admin   {}   {}\n",
            cluster.os_user.name, cluster.superuser
        );
        if let Ok(me) = OsUser::current()
            && me.name != cluster.os_user.name
        {
            ident.push_str(&format!(
                "costplus_admin   {}   {}\n",
                me.name, cluster.superuser
            ));
        }
        write_atomic(&data.join("pg_ident.conf"), ident.as_bytes(), &as_server)?;

        const MARK: &str = "# costplus adopt: begin";
        let auto = data.join("postgresql.auto.conf");
        let old = std::fs::read_to_string(&auto).unwrap_or_default();
        let mut text = match old.find(MARK) {
            Some(i) => old[..i].to_string(),
            None => old,
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(MARK);
        text.push('\n');
        let d = |p: &Path| quote(&p.to_string_lossy());
        let mut settings: Vec<(String, String)> = vec![
            ("port".into(), port.to_string()),
            ("listen_addresses".into(), quote(&cluster.listen)),
            ("unix_socket_directories".into(), d(&socket)),
            ("hba_file".into(), d(&data.join("pg_hba.conf"))),
            ("ident_file".into(), d(&data.join("pg_ident.conf"))),
            ("ssl".into(), "off".into()),
            ("logging_collector".into(), "off".into()),
        ];
        settings.extend(opts.settings.iter().cloned());
        for (k, v) in &settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        write_atomic(&auto, text.as_bytes(), &as_server)?;
        cluster.save_manifest()?;
        Ok(cluster)
    }

    /// Open a cluster created earlier under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let root = absolute(root)?;
        let path = root.join("cluster.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(Self {
            root,
            port: m.port,
            listen: m.listen,
            superuser: m.superuser,
            os_user: OsUser::by_name(&m.os_user)?,
            bin: PgBin::at(&m.bindir)?,
            tls: m.tls,
            logging_collector: m.logging_collector,
        })
    }

    fn save_manifest(&self) -> Result<()> {
        let m = Manifest {
            port: self.port,
            listen: self.listen.clone(),
            superuser: self.superuser.clone(),
            os_user: self.os_user.name.clone(),
            bindir: self.bin.dir().to_path_buf(),
            tls: self.tls,
            logging_collector: self.logging_collector,
        };
        let text = serde_json::to_string_pretty(&m).map_err(|e| Error::Config(e.to_string()))?;
        write_atomic(
            &self.root.join("cluster.json"),
            text.as_bytes(),
            &WriteOptions::public(),
        )?;
        Ok(())
    }

    /// Root directory of the cluster.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Directory of the Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Listen address.
    pub fn listen(&self) -> &str {
        &self.listen
    }
    /// Superuser name.
    pub fn superuser(&self) -> &str {
        &self.superuser
    }
    /// The OS user running the server.
    pub fn os_user(&self) -> &OsUser {
        &self.os_user
    }
    /// The binaries.
    pub fn bin(&self) -> &PgBin {
        &self.bin
    }
    /// The server log: `data/log/postgresql.log` with the logging collector, else `server.log`.
    pub fn log_file(&self) -> PathBuf {
        if self.logging_collector {
            self.data_dir().join("log").join("postgresql.log")
        } else {
            self.root.join("server.log")
        }
    }
    /// The CA certificate clients verify the server against (when TLS is on).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.root.join("tls").join("ca.crt"))
    }
    /// The pg_hba.conf file.
    pub fn hba_file(&self) -> PathBuf {
        self.data_dir().join("pg_hba.conf")
    }
    /// File holding the superuser password (0600, owned by the creating user).
    pub fn password_file(&self) -> PathBuf {
        self.root.join("superuser.password")
    }
    /// The superuser password, when one was set.
    pub fn password(&self) -> Result<Option<SecretString>> {
        match std::fs::read_to_string(self.password_file()) {
            Ok(s) => Ok(Some(SecretString::from(s))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                path: self.password_file(),
                source: e,
            }),
        }
    }

    /// A `Command` for a PostgreSQL tool, run as the server's OS user.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.tool(tool));
        self.as_server_user(&mut cmd);
        cmd
    }

    /// Make `cmd` run as the server's OS user (when we are root and it is someone else), with a
    /// clean environment for libpq.
    pub fn as_server_user(&self, cmd: &mut Command) {
        if !self.os_user.is_current() {
            cmd.uid(self.os_user.uid).gid(self.os_user.gid);
            cmd.env("HOME", &self.os_user.home)
                .env("USER", &self.os_user.name);
        }
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSSLMODE",
            "PGSSLROOTCERT",
            "PGDATA",
            "PGPASSFILE",
            "PGSERVICE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C").current_dir(&self.root);
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if !self.os_user.is_current() {
            costplus_fs::chown(path, self.os_user.uid, self.os_user.gid)?;
        }
        Ok(())
    }

    /// initdb into a cached template once per (version, user, recipe), then copy it: a copy
    /// takes milliseconds where initdb takes seconds.
    fn init_data_dir(&self, superuser: &str) -> Result<()> {
        let base = std::env::temp_dir().join("costplus-pg-templates");
        std::fs::create_dir_all(&base).map_err(|e| Error::Io {
            path: base.clone(),
            source: e,
        })?;
        let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777));
        let name = format!(
            "{}-{}-{}-{}",
            TEMPLATE_RECIPE,
            self.bin.major(),
            self.os_user.name,
            superuser
        );
        let template = base.join(&name);
        let lock_path = base.join(format!("{name}.lock"));
        {
            let _lock = LockFile::acquire(&lock_path)?;
            if !template.join("data").join("PG_VERSION").exists() {
                self.run_initdb(&template, superuser)?;
            }
        }
        // cp -a keeps ownership and modes; run as the server user so files are theirs.
        let data = self.data_dir();
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(template.join("data")).arg(&data);
        if !self.os_user.is_current() {
            cp.uid(self.os_user.uid).gid(self.os_user.gid);
        }
        run(&mut cp, "cp -a <template> <data>")?;
        Ok(())
    }

    fn run_initdb(&self, template: &Path, superuser: &str) -> Result<()> {
        let tmp = template.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        costplus_fs::create_dir_with_mode(&tmp, 0o700)?;
        self.chown(&tmp)?;
        let mut cmd = self.command("initdb");
        cmd.current_dir(&tmp)
            .arg("-D")
            .arg(tmp.join("data"))
            .args([
                "-U",
                superuser,
                "-E",
                "UTF8",
                "--locale=C",
                "--data-checksums",
                "-N",
            ])
            .args([
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ]);
        run(&mut cmd, "initdb")?;
        std::fs::rename(&tmp, template).map_err(|e| Error::Io {
            path: template.to_path_buf(),
            source: e,
        })?;
        Ok(())
    }

    fn write_config(&self, opts: &ClusterOptions) -> Result<()> {
        let data = self.data_dir();
        let as_server = WriteOptions {
            mode: 0o600,
            owner: Some((self.os_user.uid, self.os_user.gid)),
        };
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), quote(&self.listen)),
            ("port".into(), self.port.to_string()),
            (
                "unix_socket_directories".into(),
                quote(&self.socket_dir().to_string_lossy()),
            ),
            ("password_encryption".into(), quote("scram-sha-256")),
            ("max_connections".into(), "100".into()),
            ("shared_buffers".into(), quote("32MB")),
            ("log_line_prefix".into(), quote("%m [%p] %q%u@%d %h ")),
            ("lc_messages".into(), quote("C")),
            ("log_timezone".into(), quote("UTC")),
            ("timezone".into(), quote("UTC")),
        ];
        if let Some(tls) = &opts.tls {
            let tls_dir = self.root.join("tls");
            write_atomic(
                &tls_dir.join("server.crt"),
                tls.cert_pem.as_bytes(),
                &WriteOptions {
                    mode: 0o644,
                    ..as_server.clone()
                },
            )?;
            write_atomic(
                &tls_dir.join("server.key"),
                tls.key_pem.as_bytes(),
                &as_server,
            )?;
            write_atomic(
                &tls_dir.join("ca.crt"),
                tls.ca_pem.as_bytes(),
                &WriteOptions {
                    mode: 0o644,
                    ..as_server.clone()
                },
            )?;
            settings.extend([
                ("ssl".into(), "on".into()),
                (
                    "ssl_cert_file".into(),
                    quote(&tls_dir.join("server.crt").to_string_lossy()),
                ),
                (
                    "ssl_key_file".into(),
                    quote(&tls_dir.join("server.key").to_string_lossy()),
                ),
                ("ssl_min_protocol_version".into(), quote("TLSv1.2")),
            ]);
        }
        if opts.logging_collector {
            settings.extend([
                ("logging_collector".into(), "on".into()),
                ("log_directory".into(), quote("log")),
                ("log_filename".into(), quote("postgresql.log")),
                ("log_file_mode".into(), "0640".into()),
                ("log_rotation_age".into(), "0".into()),
            ]);
        }
        if opts.danger_no_fsync {
            settings.extend([
                ("fsync".into(), "off".into()),
                ("synchronous_commit".into(), "off".into()),
                ("full_page_writes".into(), "off".into()),
            ]);
        }
        settings.extend(opts.settings.iter().cloned());
        let mut conf = String::from("# Written by costplus when this cluster was created.\n");
        for (k, v) in &settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        write_atomic(&data.join("costplus.conf"), conf.as_bytes(), &as_server)?;

        let main = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&main).map_err(|e| Error::Io {
            path: main.clone(),
            source: e,
        })?;
        if !text.contains("include_if_exists = 'costplus.conf'") {
            text.push_str("\n# costplus settings\ninclude_if_exists = 'costplus.conf'\n");
        }
        write_atomic(&main, text.as_bytes(), &as_server)?;

        let hba = match &opts.hba {
            Some(h) => h.clone(),
            None => self.default_hba(),
        };
        write_atomic(&data.join("pg_hba.conf"), hba.as_bytes(), &as_server)?;
        let mut ident = String::from("# MAPNAME        SYSTEM-USERNAME   PG-USERNAME\n");
        ident.push_str(&format!(
            "costplus_admin   {}   {}\n",
            self.os_user.name, self.superuser
        ));
        if let Ok(me) = OsUser::current()
            && me.name != self.os_user.name
        {
            ident.push_str(&format!(
                "costplus_admin   {}   {}\n",
                me.name, self.superuser
            ));
        }
        write_atomic(&data.join("pg_ident.conf"), ident.as_bytes(), &as_server)?;
        Ok(())
    }

    /// The default pg_hba.conf: the superuser over the socket by peer (mapped from the server's
    /// OS user and the operator), everyone else by scram-sha-256, TCP only over TLS on loopback,
    /// and a final reject for every other network connection.
    pub fn default_hba(&self) -> String {
        let hostline = if self.tls { "hostssl" } else { "host" };
        format!(
            "# TYPE  DATABASE  USER  ADDRESS  METHOD\n\
             local   all   {su}   peer map=costplus_admin\n\
             local   all   all   scram-sha-256\n\
             {hostline} all   all   127.0.0.1/32   scram-sha-256\n\
             {hostline} all   all   ::1/128   scram-sha-256\n\
             # Everything else is refused, explicitly.\n\
             host    all   all   0.0.0.0/0   reject\n\
             host    all   all   ::/0   reject\n",
            su = self.superuser
        )
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(&self) -> Result<()> {
        if let Status::Running { .. } = self.status()? {
            return Ok(());
        }
        let log = self.root.join("server.log");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "-s"]);
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        match run(&mut cmd, "pg_ctl start") {
            Ok(_) => Ok(()),
            Err(Error::Command {
                command,
                status,
                log: out,
            }) => {
                let tail = self.log_tail_since(&log, log_start);
                if tail.contains("Address already in use") {
                    return Err(Error::PortInUse { port: self.port });
                }
                Err(Error::Command {
                    command,
                    status,
                    log: format!("{out}{tail}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn log_tail_since(&self, log: &Path, offset: u64) -> String {
        let mut text = std::fs::read(log).unwrap_or_default();
        if (offset as usize) < text.len() {
            text.drain(..offset as usize);
        }
        let mut s = String::from_utf8_lossy(&text).into_owned();
        if self.logging_collector {
            s.push_str(&tail_lines(&self.log_file(), 20));
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stop the server (fast shutdown: active sessions are disconnected) and wait.
    pub fn stop(&self) -> Result<()> {
        self.stop_mode("fast")
    }

    /// Stop with an explicit mode: `smart`, `fast` or `immediate`.
    pub fn stop_mode(&self, mode: &str) -> Result<()> {
        if !matches!(self.status()?, Status::Running { .. }) {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "120", "-s"]);
        run(&mut cmd, "pg_ctl stop").map(drop)
    }

    /// Reload the configuration (SIGHUP through `pg_ctl reload`).
    pub fn reload(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("reload").arg("-D").arg(self.data_dir()).arg("-s");
        run(&mut cmd, "pg_ctl reload").map(drop)
    }

    fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Running, stopped or missing (asks `pg_ctl status`).
    pub fn status(&self) -> Result<Status> {
        if !self.data_dir().join("PG_VERSION").exists() {
            return Ok(Status::Missing);
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(self.data_dir());
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Command {
                command: "pg_ctl status".into(),
                status: e.to_string(),
                log: String::new(),
            })?;
        match out.status.code() {
            Some(0) => Ok(Status::Running {
                pid: self.pid().unwrap_or(0),
            }),
            Some(3) => Ok(Status::Stopped),
            Some(4) => Ok(Status::Missing),
            _ => Err(Error::Command {
                command: "pg_ctl status".into(),
                status: out.status.to_string(),
                log: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }

    /// Connection options for the superuser over TCP (TLS verified against the cluster's CA
    /// when TLS is on).
    pub fn connect_options(&self, dbname: &str) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new(&self.listen, self.port, &self.superuser, dbname);
        opts.password = self.password()?;
        opts.ssl = match self.ca_file() {
            Some(ca) => SslMode::VerifyFull {
                ca_file: ca,
                server_name: None,
            },
            None => SslMode::Disable,
        };
        if opts.password.is_none() {
            // No password: use the Unix socket and peer authentication.
            opts.host = self.socket_dir().to_string_lossy().into_owned();
            opts.ssl = SslMode::Disable;
        }
        Ok(opts)
    }

    /// Connect as the superuser to `dbname` (TCP + TLS when configured, else the socket).
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        crate::connect::connect(&self.connect_options(dbname)?).await
    }

    /// Connect as the superuser over the Unix socket (peer authentication).
    pub async fn connect_socket(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let mut opts = ConnectOptions::new(
            &self.socket_dir().to_string_lossy(),
            self.port,
            &self.superuser,
            dbname,
        );
        opts.ssl = SslMode::Disable;
        crate::connect::connect(&opts).await
    }

    fn set_superuser_password(&self, password: &SecretString) -> Result<()> {
        let verifier =
            postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
        let sql = format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(&self.superuser),
            quote_literal(&verifier)
        );
        // Run on a thread of our own: we may be called from within another runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Io {
                        path: PathBuf::from("tokio runtime"),
                        source: e,
                    })?;
                rt.block_on(async {
                    let client = self.connect_socket("postgres").await?;
                    client.batch_execute(&sql).await?;
                    Ok::<_, Error>(())
                })
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Config("password thread panicked".into())))
        })
    }

    /// Wait until a TCP connection to the server's port succeeds.
    pub fn wait_listening(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((self.listen.as_str(), self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Timeout {
            what: format!("port {}", self.port),
            seconds: timeout.as_secs(),
        })
    }

    /// Remove the cluster: stop immediately and delete the root directory.
    pub fn destroy(self) -> Result<()> {
        let _ = self.stop_mode("immediate");
        std::fs::remove_dir_all(&self.root).map_err(|e| Error::Io {
            path: self.root.clone(),
            source: e,
        })
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::Io {
        path: p.to_path_buf(),
        source: e,
    })
}

/// Every ancestor of `root` must be searchable by the server's OS user.
fn check_reachable(root: &Path, user: &OsUser) -> Result<()> {
    if user.is_current() {
        return Ok(());
    }
    let mut dir = root.parent();
    while let Some(d) = dir {
        if let Ok(md) = std::fs::metadata(d) {
            use std::os::unix::fs::MetadataExt;
            let mode = md.mode();
            let ok = if md.uid() == user.uid {
                mode & 0o100 != 0
            } else if md.gid() == user.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return Err(Error::Config(format!(
                    "the server runs as OS user {}, who cannot enter {} (mode {:o}); choose a directory it can reach (for example under /tmp or /var/lib)",
                    user.name,
                    d.display(),
                    mode & 0o777
                )));
            }
        }
        dir = d.parent();
    }
    Ok(())
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
    s.push('\n');
    s
}

/// Run a command to completion; on failure return its stderr/stdout.
fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            command: what.into(),
            status: e.to_string(),
            log: String::new(),
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut log = String::from_utf8_lossy(&out.stderr).into_owned();
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(Error::Command {
            command: what.into(),
            status: out.status.to_string(),
            log,
        })
    }
}

/// Quote a value for postgresql.conf.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quote an SQL identifier.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal (standard_conforming_strings is on in every supported version).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }

    #[test]
    fn log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&p, 2), "b\nc\n");
    }
}
