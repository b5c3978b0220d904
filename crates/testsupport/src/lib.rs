//! Test harness for costplus: real servers on loopback, cleaned up however the test ends.
//!
//! - [`TestCluster`]: a throwaway PostgreSQL cluster (temp directory, free port, own socket
//!   directory, scram-sha-256 with a generated superuser password, TLS with an in-process CA).
//!   [`TestCluster::shared`] gives one per test process; [`TestCluster::start`] a private one
//!   for tests that change server state.
//! - [`TestS3`]: the S3-compatible HTTPS server of `costplus-s3local` with a `localhost`
//!   certificate, SigV4 keys and buckets.
//! - [`sandbox::Sandbox`]: a whole `costplus sandbox` for end-to-end scenarios, run through the
//!   binaries with its environment.
//! - [`require_tool`]: find `pgbackrest`, `openssl`, `fail2ban-regex`, ... or fail the test
//!   with the command that installs it. A missing tool never skips a test silently.
//!
//! Cleanup: a dropped [`TestCluster`] stops its server and removes its directory. Because a
//! test process can also die without running destructors (a static, `SIGKILL`, a timeout),
//! every cluster also has a reaper: a small detached shell process that waits for our end of a
//! pipe to close and then stops the server and removes the directory. When a test panics, the
//! server log is kept under `$TMPDIR/costplus-test-logs/` and its path is printed.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // test support: failing loudly is the job

mod cluster;
mod s3;
pub mod sandbox;
mod tools;

pub use cluster::{TestCluster, TestClusterBuilder};
pub use s3::TestS3;
pub use tools::{require_tool, workspace_bin};

/// A random alphanumeric string (passwords, keys, names in tests).
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Run a future to completion on a fresh current-thread runtime (for sync tests and setup).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
