use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use costplus_pgcluster::connect::ConnectOptions;
use costplus_pgcluster::{Cluster, ClusterOptions, Error as PgError, TlsFiles};
use costplus_tls::issue::{Authority, ServerCertRequest};
use secrecy::{ExposeSecret, SecretString};

/// Builder for a [`TestCluster`].
#[derive(Debug, Default, Clone)]
pub struct TestClusterBuilder {
    settings: Vec<(String, String)>,
    hba: Option<String>,
    no_tls: bool,
    logging_collector: bool,
}

impl TestClusterBuilder {
    /// Add a `postgresql.conf` setting (value as written in the file, quoted if needed).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
    /// Use this pg_hba.conf instead of the default.
    pub fn hba(mut self, hba: &str) -> Self {
        self.hba = Some(hba.into());
        self
    }
    /// Leave TLS off.
    pub fn without_tls(mut self) -> Self {
        self.no_tls = true;
        self
    }
    /// Turn on the logging collector (log in `data/log/postgresql.log`).
    pub fn logging_collector(mut self) -> Self {
        self.logging_collector = true;
        self
    }
    /// Create and start the cluster.
    pub fn start(self) -> TestCluster {
        TestCluster::launch(self)
    }
}

/// A throwaway PostgreSQL cluster for one test (or one test process, see [`TestCluster::shared`]).
pub struct TestCluster {
    cluster: Cluster,
    ca: Option<Authority>,
    password: SecretString,
    reaper: Mutex<Option<Child>>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("root", &self.cluster.root())
            .field("port", &self.cluster.port())
            .finish()
    }
}

static SHARED: OnceLock<TestCluster> = OnceLock::new();

impl TestCluster {
    /// A cluster with the defaults (TLS on, scram-sha-256, hostssl on loopback only).
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for a cluster with extra settings.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// One cluster shared by every test of this process, stopped when the process exits.
    /// Use it only for tests that do not change server-wide state.
    pub fn shared() -> &'static TestCluster {
        let c = SHARED.get_or_init(Self::start);
        install_panic_hook();
        c
    }

    fn launch(b: TestClusterBuilder) -> Self {
        let mut last_err = None;
        // A free port can be taken by someone else before the server binds it: retry.
        for _ in 0..5 {
            let root = tempfile::Builder::new()
                .prefix("costplus-pg-")
                .tempdir()
                .unwrap()
                .keep();
            let password = SecretString::from(crate::random_string(24));
            let ca = (!b.no_tls).then(|| Authority::generate("costplus test CA", 30).unwrap());
            let tls = ca.as_ref().map(|ca| {
                let server = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
                TlsFiles {
                    cert_pem: server.cert_pem,
                    key_pem: server.key_pem,
                    ca_pem: ca.cert_pem().to_string(),
                }
            });
            let mut opts = ClusterOptions::new(&root);
            opts.password = Some(password.clone());
            opts.tls = tls;
            opts.settings = b.settings.clone();
            opts.hba = b.hba.clone();
            opts.logging_collector = b.logging_collector;
            opts.danger_no_fsync = true;
            let cluster = match Cluster::create(opts) {
                Ok(c) => c,
                Err(PgError::PortInUse { .. }) => {
                    let _ = std::fs::remove_dir_all(&root);
                    continue;
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&root);
                    panic!("creating a test cluster failed: {e}");
                }
            };
            let reaper = spawn_reaper(&cluster);
            let tc = TestCluster {
                cluster,
                ca,
                password,
                reaper: Mutex::new(Some(reaper)),
            };
            match tc.cluster.start() {
                Ok(()) => return tc,
                Err(PgError::PortInUse { port }) => {
                    last_err = Some(format!("port {port} in use"));
                    drop(tc);
                }
                Err(e) => {
                    tc.keep_log();
                    panic!("starting the test cluster failed: {e}");
                }
            }
        }
        panic!(
            "could not start a test cluster: {}",
            last_err.unwrap_or_default()
        );
    }

    /// The cluster handle (paths, port, start/stop/reload).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }
    /// The superuser's name.
    pub fn superuser(&self) -> &str {
        self.cluster.superuser()
    }
    /// The superuser's password (a test secret).
    pub fn password(&self) -> &str {
        self.password.expose_secret()
    }
    /// The CA certificate file clients verify the server with.
    pub fn ca_file(&self) -> PathBuf {
        self.cluster.ca_file().expect("this cluster has TLS off")
    }
    /// The CA that signed the server certificate (to issue more certificates in a test).
    pub fn ca(&self) -> Option<&Authority> {
        self.ca.as_ref()
    }
    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.cluster.log_file()
    }
    /// The server log's contents.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_file()).unwrap_or_default()).into_owned()
    }
    /// Superuser connection options to `dbname` (TLS verify-full when TLS is on).
    pub fn connect_options(&self, dbname: &str) -> ConnectOptions {
        self.cluster.connect_options(dbname).unwrap()
    }
    /// Connect as the superuser to `postgres`.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_db("postgres").await
    }
    /// Connect as the superuser to `dbname`.
    pub async fn connect_db(&self, dbname: &str) -> tokio_postgres::Client {
        match self.cluster.connect(dbname).await {
            Ok(c) => c,
            Err(e) => {
                self.keep_log();
                panic!("connecting to the test cluster failed: {e}");
            }
        }
    }
    /// Write a file the server reads (owned by the server's OS user, mode 0600).
    pub fn write_server_file(&self, path: &Path, contents: &[u8]) {
        let owner = self.cluster.os_user();
        costplus_fs::write_atomic(
            path,
            contents,
            &costplus_fs::WriteOptions {
                mode: 0o600,
                owner: Some((owner.uid, owner.gid)),
            },
        )
        .unwrap();
    }

    /// Keep the server log after cleanup and print where it is.
    pub fn keep_log(&self) {
        let _ = std::fs::write(self.cluster.root().join("keep-log"), b"");
        let kept = kept_log_path(self.cluster.root());
        let _ = std::fs::create_dir_all(kept.parent().unwrap());
        let _ = std::fs::copy(self.log_file(), &kept);
        eprintln!("costplus test cluster log kept at {}", kept.display());
    }

    /// Simulate the test process dying: close the reaper's pipe without any cleanup of our own.
    /// Returns the root directory so a test can watch it disappear.
    pub fn abandon(self) -> PathBuf {
        let root = self.cluster.root().to_path_buf();
        if let Some(mut reaper) = self.reaper.lock().unwrap().take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
        std::mem::forget(self);
        root
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_log();
        }
        let _ = self.cluster.stop_mode("immediate");
        let _ = std::fs::remove_dir_all(self.cluster.root());
        if let Some(mut reaper) = self.reaper.lock().unwrap().take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

fn kept_log_path(root: &Path) -> PathBuf {
    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    std::env::temp_dir()
        .join("costplus-test-logs")
        .join(format!("{name}.log"))
}

/// A detached shell that waits for EOF on its stdin (our process died or dropped the
/// cluster), then stops the server (SIGQUIT: immediate shutdown) and removes the directory.
fn spawn_reaper(cluster: &Cluster) -> Child {
    const SCRIPT: &str = r#"
read _ignored
if [ -f "$ROOT/keep-log" ]; then mkdir -p "$LOGDIR"; cp "$LOG" "$KEPT" 2>/dev/null; fi
if [ -f "$ROOT/data/postmaster.pid" ]; then
  pid=$(head -n 1 "$ROOT/data/postmaster.pid")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -rf "$ROOT"
"#;
    let kept = kept_log_path(cluster.root());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .env("ROOT", cluster.root())
        .env("LOG", cluster.log_file())
        .env("KEPT", &kept)
        .env("LOGDIR", kept.parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .expect("spawning the cluster reaper (sh) failed");
    // Keep the pipe open; never write to it.
    let _ = child.stdin.as_mut().map(|s| s.flush());
    child
}

fn install_panic_hook() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(c) = SHARED.get() {
                c.keep_log();
            }
            previous(info);
        }));
    });
}
