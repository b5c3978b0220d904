//! The harness itself, against the real servers.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::process::Command;
use std::time::{Duration, Instant};

use costplus_pgcluster::connect::{ConnectOptions, SslMode, connect};
use costplus_testsupport::{TestCluster, TestS3, require_tool};

#[tokio::test]
async fn cluster_accepts_verified_tls_connection() {
    let c = TestCluster::start();
    let client = c.connect().await;
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "connection is not encrypted");
    let version: String = row.get(1);
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");
    let min: String = client
        .query_one("SHOW ssl_min_protocol_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(min, "TLSv1.2");
    let enc: String = client
        .query_one("SHOW password_encryption", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(enc, "scram-sha-256");
    // The superuser's password is stored as a SCRAM verifier.
    let verifier: String = client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
}

#[tokio::test]
async fn cluster_refuses_wrong_password_and_plaintext() {
    let c = TestCluster::start();
    let mut opts = c.connect_options("postgres");
    opts.password = Some("not-the-password".to_string().into());
    let err = connect(&opts).await.unwrap_err().to_string();
    assert!(err.contains("password authentication failed"), "{err}");

    // Without TLS the final reject line refuses the connection.
    let mut plain = ConnectOptions::new("127.0.0.1", c.port(), c.superuser(), "postgres");
    plain.password = Some(c.password().to_string().into());
    plain.ssl = SslMode::Disable;
    let err = connect(&plain).await.unwrap_err().to_string();
    assert!(err.contains("pg_hba.conf rejects connection"), "{err}");
}

#[tokio::test]
async fn certificate_is_checked_against_the_host_name() {
    let c = TestCluster::start();
    let mut opts = c.connect_options("postgres");
    opts.ssl = SslMode::VerifyFull {
        ca_file: c.ca_file(),
        server_name: Some("db.example.com".into()),
    };
    let err = connect(&opts).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // ... and against the CA: another CA's file is refused.
    let other = TestCluster::start();
    let mut opts = c.connect_options("postgres");
    opts.ssl = SslMode::VerifyFull {
        ca_file: other.ca_file(),
        server_name: None,
    };
    let err = connect(&opts).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn two_clusters_run_side_by_side() {
    let a = TestCluster::start();
    let b = TestCluster::start();
    assert_ne!(a.port(), b.port());
    let (ca, cb) = (a.connect().await, b.connect().await);
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0);
}

#[tokio::test]
async fn shared_cluster_is_reused_within_the_process() {
    let first = TestCluster::shared();
    let second = TestCluster::shared();
    assert_eq!(first.port(), second.port());
    let n: i32 = first
        .connect()
        .await
        .query_one("SELECT 41 + 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 42);
}

#[test]
fn drop_stops_server_and_removes_directory() {
    let c = TestCluster::start();
    let root = c.cluster().root().to_path_buf();
    let port = c.port();
    drop(c);
    assert!(!root.exists(), "{} still exists", root.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listens"
    );
}

#[test]
fn reaper_cleans_up_when_the_process_dies() {
    let c = TestCluster::start();
    let port = c.port();
    let root = c.abandon();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (root.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!root.exists(), "reaper did not remove {}", root.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listens"
    );
}

#[test]
fn extra_settings_are_applied() {
    let c = TestCluster::builder()
        .setting("work_mem", "'7MB'")
        .logging_collector()
        .start();
    let v: String = costplus_testsupport::block_on(async {
        c.connect()
            .await
            .query_one("SHOW work_mem", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(v, "7MB");
    assert!(c.log_file().ends_with("log/postgresql.log"));
    assert!(c.log_file().exists(), "logging collector wrote no log");
}

/// Sign requests with curl's own SigV4 implementation: an independent client.
fn curl(s3: &TestS3, secret: &str, args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("curl.cfg");
    // Keys go through a config file, not argv.
    std::fs::write(&cfg, format!("user = \"{}:{}\"\n", s3.access_key(), secret)).unwrap();
    let out = Command::new(require_tool("curl"))
        .args(["-sS", "-K"])
        .arg(&cfg)
        .args([
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--cacert",
        ])
        .arg(s3.ca_file())
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (body.to_string(), code.to_string())
}

#[test]
fn s3_server_accepts_signed_requests_and_rejects_wrong_keys() {
    let s3 = TestS3::start();
    s3.create_bucket("harness");
    let url = format!("{}/harness/dir/hello.txt", s3.endpoint());
    let (_, code) = curl(
        &s3,
        s3.secret_key(),
        &["-X", "PUT", "--data-binary", "hello s3", &url],
    );
    assert_eq!(code, "200");
    let (body, code) = curl(&s3, s3.secret_key(), &[&url]);
    assert_eq!((body.as_str(), code.as_str()), ("hello s3", "200"));
    assert_eq!(
        std::fs::read(s3.object_path("harness", "dir/hello.txt")).unwrap(),
        b"hello s3"
    );

    let (body, code) = curl(&s3, "wrong-secret-key", &[&url]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    let (body, code) = curl(
        &s3,
        s3.secret_key(),
        &[&format!("{}/harness?list-type=2", s3.endpoint())],
    );
    assert_eq!(code, "200");
    assert!(body.contains("<Key>dir/hello.txt</Key>"), "{body}");
}

#[test]
fn required_tools_are_found() {
    for tool in ["openssl", "pgbackrest", "fail2ban-regex", "curl"] {
        assert!(require_tool(tool).is_file(), "{tool}");
    }
}

#[test]
fn missing_tool_fails_with_install_hint() {
    let err = std::panic::catch_unwind(|| require_tool("costplus-no-such-tool")).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("apt-get install -y"), "{msg}");
}
