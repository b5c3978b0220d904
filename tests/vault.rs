//! The sandbox's vault, used through the real binaries: `costplus sandbox up` creates it and
//! writes `[vault]` into costplus.toml, and `costplus-vault --config` uses it.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use costplus_testsupport::sandbox::ok;
use costplus_testsupport::workspace_bin;

fn vault(args: &[&str], stdin: &str, env_config: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(workspace_bin("costplus-vault"));
    cmd.args(args).env_remove("COSTPLUS_CONFIG");
    if let Some(c) = env_config {
        cmd.env("COSTPLUS_CONFIG", c);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

struct Sandbox {
    dir: std::path::PathBuf,
    _parent: tempfile::TempDir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(workspace_bin("costplus"))
            .args(["sandbox", "down", "--dir", self.dir.to_str().unwrap()])
            .output();
    }
}

#[test]
fn sandbox_up_gives_a_working_vault() {
    let parent = tempfile::Builder::new()
        .prefix("costplus-e2e-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sb = Sandbox {
        dir: parent.path().join("sb"),
        _parent: parent,
    };
    ok(&Command::new(workspace_bin("costplus"))
        .args(["sandbox", "up", "--dir", sb.dir.to_str().unwrap()])
        .output()
        .unwrap());
    let config = sb.dir.join("costplus.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[vault]"), "{text}");
    let key = sb.dir.join("vault.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(sb.dir.join("vault"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let c = config.to_str().unwrap();
    ok(&vault(
        &[
            "--config",
            c,
            "put",
            "demo",
            "--stdin",
            "--role",
            "demo_user",
            "--database",
            "demo_db",
            "--server",
            "sandbox",
        ],
        "sandbox-Secret-1",
        None,
    ));
    assert_eq!(
        ok(&vault(
            &["--config", c, "get", "demo", "--reveal"],
            "",
            None
        )),
        "sandbox-Secret-1"
    );
    // The same through $COSTPLUS_CONFIG, as after `eval "$(costplus sandbox env)"`.
    assert_eq!(
        ok(&vault(&["get", "demo", "--reveal"], "", Some(&config))),
        "sandbox-Secret-1"
    );
    let meta = ok(&vault(&["get", "demo"], "", Some(&config)));
    assert!(!meta.contains("sandbox-Secret-1"), "{meta}");
    // Export takes host, port and CA from the configured server.
    let out = sb.dir.join("export");
    ok(&vault(
        &[
            "--config",
            c,
            "export",
            "demo",
            "--out-dir",
            out.to_str().unwrap(),
        ],
        "",
        None,
    ));
    let uri = std::fs::read_to_string(out.join("connection-uri.txt")).unwrap();
    assert!(
        uri.starts_with("postgresql://demo_user:sandbox-Secret-1@localhost:"),
        "{uri}"
    );
    assert!(uri.contains("sslmode=verify-full&sslrootcert="), "{uri}");
    // The key is not in the configuration.
    let k = std::fs::read_to_string(&key).unwrap();
    let line = k
        .lines()
        .find(|l| l.starts_with("costplus-vault-key-v1:"))
        .unwrap();
    assert!(!text.contains(line.split(':').nth(1).unwrap()));
    // `up` again keeps the vault.
    ok(&Command::new(workspace_bin("costplus"))
        .args(["sandbox", "up", "--dir", sb.dir.to_str().unwrap()])
        .output()
        .unwrap());
    assert_eq!(
        ok(&vault(
            &["--config", c, "get", "demo", "--reveal"],
            "",
            None
        )),
        "sandbox-Secret-1"
    );
}
