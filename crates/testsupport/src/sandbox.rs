//! The end-to-end fixture: a whole sandbox (`costplus sandbox up`) in a temporary directory,
//! taken down on drop, and the workspace's binaries run with its environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::workspace_bin;

/// A sandbox (`costplus sandbox up`) of its own, with the environment `costplus sandbox env`
/// prints; `costplus sandbox down` and the directory removed on drop, also on panic.
#[derive(Debug)]
pub struct Sandbox {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// `COSTPLUS_CONFIG`, `PGHOST`, ... as `costplus sandbox env` prints them.
    pub env: BTreeMap<String, String>,
    _parent: tempfile::TempDir,
}

impl Sandbox {
    /// Bring a sandbox up under a fresh temporary directory named `prefix...`.
    pub fn up(prefix: &str) -> Self {
        let parent = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        // The server runs as the postgres OS user when the tests run as root: it must reach in.
        std::fs::set_permissions(
            parent.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut sb = Sandbox {
            dir: parent.path().join("sb"),
            env: BTreeMap::new(),
            _parent: parent,
        };
        ok(&sb.sandbox(&["up"]));
        sb.env = ok(&sb.sandbox(&["env"]))
            .lines()
            .map(|l| {
                let (k, v) = l.strip_prefix("export ").unwrap().split_once('=').unwrap();
                (k.to_string(), v.trim_matches('\'').to_string())
            })
            .collect();
        sb
    }

    /// `costplus sandbox ARGS --dir DIR`.
    pub fn sandbox(&self, args: &[&str]) -> Output {
        Command::new(workspace_bin("costplus"))
            .arg("sandbox")
            .args(args)
            .args(["--dir", self.dir.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// The sandbox's costplus.toml.
    pub fn config(&self) -> PathBuf {
        PathBuf::from(&self.env["COSTPLUS_CONFIG"])
    }

    /// Run one of the workspace's binaries with the sandbox's environment (and nothing else
    /// but `PATH`).
    pub fn run(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(workspace_bin(bin))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.sandbox(&["down"]);
    }
}

/// The stdout of a command that must have succeeded (else the test fails with its output).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The stdout of a command that must have succeeded, as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}
