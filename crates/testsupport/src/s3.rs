use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use costplus_s3local::{RunningServer, ServerConfig};
use costplus_tls::issue::{Authority, ServerCertRequest};

/// A real S3-compatible server on loopback over HTTPS, for one test.
///
/// Its certificate names `localhost` (pgBackRest checks DNS names only), so use
/// [`TestS3::endpoint`] (`https://localhost:PORT`) with [`TestS3::ca_file`].
pub struct TestS3 {
    server: Option<RunningServer>,
    dir: PathBuf,
    access_key: String,
    secret_key: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for TestS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestS3")
            .field("dir", &self.dir)
            .field("port", &self.port())
            .finish()
    }
}

impl TestS3 {
    /// Start a server with fresh keys and a fresh CA; no buckets yet.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("costplus-s3-")
            .tempdir()
            .unwrap()
            .keep();
        // Readable by the postgres OS user (pgBackRest reads the CA file).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let ca = Authority::generate("costplus test S3 CA", 30).unwrap();
        let server = ca
            .issue_server(&ServerCertRequest::for_names(
                vec!["localhost".into()],
                vec![],
            ))
            .unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::set_permissions(dir.join("ca.crt"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let mut s3 = TestS3 {
            server: None,
            access_key: format!("AKTEST{}", crate::random_string(14).to_uppercase()),
            secret_key: crate::random_string(40),
            cert_pem: server.cert_pem,
            key_pem: server.key_pem,
            dir,
        };
        s3.run_on("127.0.0.1:0".parse().unwrap());
        s3
    }

    fn run_on(&mut self, listen: std::net::SocketAddr) {
        let server = RunningServer::start(ServerConfig {
            root: self.dir.join("data"),
            listen,
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone().into(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        })
        .unwrap();
        self.server = Some(server);
    }

    /// Stop serving (the data stays); [`TestS3::resume`] starts again on the same port.
    pub fn pause(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().unwrap();
        }
    }

    /// Serve again on the same port after [`TestS3::pause`].
    pub fn resume(&mut self, port: u16) {
        self.run_on(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }

    /// Create a bucket.
    pub fn create_bucket(&self, name: &str) {
        costplus_s3local::create_bucket(&self.dir.join("data"), name).unwrap();
    }
    /// TCP port.
    pub fn port(&self) -> u16 {
        self.server.as_ref().map(|s| s.addr().port()).unwrap_or(0)
    }
    /// `https://localhost:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port())
    }
    /// CA certificate file (world-readable).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The access key id.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }
    /// The secret key (a test secret).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
    /// Directory holding the buckets (a bucket is a sub-directory).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// Path of an object on disk, to corrupt or delete it in a test.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.data_dir()
            .join(bucket)
            .join(Path::new(key.trim_start_matches('/')))
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
