//! `costplus-vault` from the outside: the acceptance contract, secrets never printed unless
//! asked for, failures print nothing on stdout, plan mode, config mode, passphrase sources,
//! legacy import, and SIGKILL in the middle of writes.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use costplus_testsupport::sandbox::ok;

const BIN: &str = env!("CARGO_BIN_EXE_costplus-vault");

struct Fx {
    tmp: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        Fx {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("vault")
    }
    fn key(&self) -> PathBuf {
        self.tmp.path().join("vault.key")
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    /// `costplus-vault --dir D --key-file K ARGS` with `stdin` piped in.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut all: Vec<String> = vec![
            "--dir".into(),
            self.dir().display().to_string(),
            "--key-file".into(),
            self.key().display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        run_with(
            Command::new(BIN).args(&all).env_remove("COSTPLUS_CONFIG"),
            stdin,
        )
    }
}

fn run_with(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .env_remove("COSTPLUS_VAULT_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that does not read stdin (plan mode, failures) may have exited already.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A failure: non-zero exit, nothing on stdout, and the stderr message contains `needle`.
fn fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const SECRET: &str = "Tr0ub4dor&3:with\\odd chars";

#[test]
fn the_acceptance_contract() {
    let fx = Fx::new();
    assert!(!fx.key().exists());
    ok(&fx.run(&["init"], ""));
    assert_eq!(mode(&fx.key()), 0o600, "init creates the key file 0600");
    assert_eq!(mode(&fx.dir()), 0o700);
    ok(&fx.run(&["put", "acme", "--stdin"], SECRET));
    let out = fx.run(&["get", "acme", "--reveal"], "");
    assert_eq!(ok(&out), SECRET, "get --reveal prints exactly the secret");
    // Any failure: non-zero exit and no secret.
    fails(
        &fx.run(&["get", "nobody", "--reveal"], ""),
        1,
        "no record named `nobody`",
    );
    let other_key = fx.path("other.key");
    let out = run_with(
        Command::new(BIN).args([
            "--dir",
            fx.dir().to_str().unwrap(),
            "--key-file",
            other_key.to_str().unwrap(),
            "get",
            "acme",
            "--reveal",
        ]),
        "",
    );
    // A missing key file is not created by get.
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(!other_key.exists());
    // A wrong key file.
    ok(&Fx::run_init_elsewhere(&fx, &other_key));
    let out = run_with(
        Command::new(BIN).args([
            "--dir",
            fx.dir().to_str().unwrap(),
            "--key-file",
            other_key.to_str().unwrap(),
            "get",
            "acme",
            "--reveal",
        ]),
        "",
    );
    fails(&out, 1, "wrong key file");
    // A tampered record: non-zero, no secret anywhere.
    let rec = std::fs::read_dir(fx.dir().join("records"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let orig = std::fs::read(&rec).unwrap();
    let mut b = orig.clone();
    let n = b.len();
    b[n - 10] ^= 1;
    std::fs::write(&rec, &b).unwrap();
    let out = fx.run(&["get", "acme", "--reveal"], "");
    fails(&out, 1, "damaged");
    std::fs::write(&rec, &orig).unwrap();
    assert_eq!(ok(&fx.run(&["get", "acme", "--reveal"], "")), SECRET);
    // Usage errors exit 2; put without --stdin is one (secrets never on the command line).
    assert_eq!(fx.run(&["put", "acme"], "").status.code(), Some(2));
}

impl Fx {
    fn run_init_elsewhere(&self, key: &Path) -> Output {
        run_with(
            Command::new(BIN).args([
                "--dir",
                self.path("other-vault").to_str().unwrap(),
                "--key-file",
                key.to_str().unwrap(),
                "init",
            ]),
            "",
        )
    }
}

#[test]
fn the_secret_never_shows_without_reveal_nor_in_logs() {
    let fx = Fx::new();
    let mut all_stderr = String::new();
    let mut collect = |out: Output| -> String {
        all_stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        ok(&out)
    };
    collect(fx.run(&["-vvv", "init"], ""));
    collect(fx.run(
        &[
            "-vvv",
            "put",
            "acme",
            "--stdin",
            "--role",
            "acme_user",
            "--database",
            "acme_db",
            "--meta",
            "plan=small",
        ],
        SECRET,
    ));
    let human = collect(fx.run(&["-vvv", "get", "acme"], ""));
    assert!(
        human.contains("acme_user") && human.contains("plan=small"),
        "{human}"
    );
    assert!(human.contains("hidden"), "{human}");
    let json = collect(fx.run(&["-vvv", "get", "acme", "--format", "json"], ""));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "acme");
    assert_eq!(v["role"], "acme_user");
    assert_eq!(v["metadata"]["plan"], "small");
    assert!(v.get("secret").is_none());
    let list = collect(fx.run(&["-vvv", "list", "--format", "json"], ""));
    let l: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(l["records"][0]["name"], "acme");
    let verify = collect(fx.run(&["-vvv", "verify", "--format", "json"], ""));
    let vr: serde_json::Value = serde_json::from_str(&verify).unwrap();
    assert_eq!(vr["ok"], true);
    assert_eq!(vr["checked"], 1);
    collect(fx.run(
        &[
            "-vvv",
            "rotate-key",
            "--new-key-file",
            fx.path("k2").to_str().unwrap(),
        ],
        "",
    ));
    let export_dir = fx.path("out");
    let ex = collect(run_with(
        Command::new(BIN).args([
            "-vvv",
            "--dir",
            fx.dir().to_str().unwrap(),
            "--key-file",
            fx.path("k2").to_str().unwrap(),
            "export",
            "acme",
            "--out-dir",
            export_dir.to_str().unwrap(),
            "--host",
            "db.example.com",
            "--port",
            "5433",
            "--sslrootcert",
            "/home/acme/root.crt",
        ]),
        "",
    ));
    for out in [&human, &json, &list, &verify, &ex] {
        assert!(!out.contains(SECRET), "the secret leaked to stdout: {out}");
    }
    assert!(!all_stderr.contains(SECRET), "the secret leaked to stderr");
    assert!(
        !all_stderr.contains("Tr0ub4dor"),
        "part of the secret leaked to stderr"
    );
    // The export files hold it, 0600.
    let pgpass = std::fs::read_to_string(export_dir.join("pgpass")).unwrap();
    assert_eq!(
        pgpass,
        "db.example.com:5433:acme_db:acme_user:Tr0ub4dor&3\\:with\\\\odd chars\n"
    );
    for f in ["pgpass", "connection-uri.txt", "pg_service.conf"] {
        assert_eq!(mode(&export_dir.join(f)), 0o600, "{f}");
    }
    let uri = std::fs::read_to_string(export_dir.join("connection-uri.txt")).unwrap();
    assert!(
        uri.contains("sslmode=verify-full&sslrootcert=%2Fhome%2Facme%2Froot.crt"),
        "{uri}"
    );
    let service = std::fs::read_to_string(export_dir.join("pg_service.conf")).unwrap();
    assert!(
        service.starts_with(
            "[acme]\nhost=db.example.com\nport=5433\ndbname=acme_db\nuser=acme_user\n"
        ),
        "{service}"
    );
}

#[test]
fn plan_mode_changes_nothing() {
    let fx = Fx::new();
    let out = ok(&fx.run(&["init", "--plan"], ""));
    assert!(out.contains("plan"), "{out}");
    assert!(!fx.dir().exists() && !fx.key().exists());
    ok(&fx.run(&["init"], ""));
    ok(&fx.run(&["put", "acme", "--stdin"], "one"));
    let manifest = std::fs::read(fx.dir().join("manifest")).unwrap();
    for args in [
        vec!["put", "acme", "--stdin", "--plan"],
        vec!["archive", "acme", "--plan"],
        vec!["shred", "acme", "--plan"],
        vec!["remove", "acme", "--plan"],
        vec!["set-status", "acme", "pending", "--plan"],
        vec!["rotate-key", "--new-key-file", "/nonexistent/k", "--plan"],
    ] {
        let out = fx.run(&args, "two");
        let text = ok(&out);
        assert!(text.contains("plan"), "{args:?}: {text}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(
        &fx.run(&["archive", "acme", "--plan", "--format", "json"], "")
    ))
    .unwrap();
    assert_eq!(json["plan"], true);
    assert_eq!(std::fs::read(fx.dir().join("manifest")).unwrap(), manifest);
    assert_eq!(ok(&fx.run(&["get", "acme", "--reveal"], "")), "one");
}

#[test]
fn lifecycle_through_the_cli() {
    let fx = Fx::new();
    ok(&fx.run(&["init"], ""));
    ok(&fx.run(
        &[
            "put",
            "acme",
            "--stdin",
            "--status",
            "pending",
            "--role",
            "acme_user",
        ],
        "pw1\n",
    ));
    // One trailing newline (echo) is not part of the secret.
    assert_eq!(ok(&fx.run(&["get", "acme", "--reveal"], "")), "pw1");
    let s: serde_json::Value = serde_json::from_str(&ok(
        &fx.run(&["set-status", "acme", "active", "--format", "json"], "")
    ))
    .unwrap();
    assert_eq!(s["status"], "active");
    // Rotation keeps role and status, bumps the generation.
    let s: serde_json::Value = serde_json::from_str(&ok(
        &fx.run(&["put", "acme", "--stdin", "--format", "json"], "pw2")
    ))
    .unwrap();
    assert_eq!(
        (
            s["generation"].as_u64(),
            s["status"].as_str(),
            s["role"].as_str()
        ),
        (Some(2), Some("active"), Some("acme_user"))
    );
    ok(&fx.run(
        &["put", "pgbackrest/repo1-cipher-pass", "--stdin"],
        "cipher",
    ));
    let l: serde_json::Value =
        serde_json::from_str(&ok(&fx.run(&["list", "--format", "json"], ""))).unwrap();
    let kinds: Vec<&str> = l["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["customer", "service"]);
    let ak = fx.path("archive.key");
    ok(&fx.run(
        &[
            "archive",
            "acme",
            "--archive-key-file",
            ak.to_str().unwrap(),
        ],
        "",
    ));
    assert_eq!(mode(&ak), 0o600);
    fails(
        &fx.run(&["get", "acme", "--reveal", "--archived"], ""),
        1,
        "archive key",
    );
    assert_eq!(
        ok(&fx.run(
            &[
                "get",
                "acme",
                "--reveal",
                "--archived",
                "--archive-key-file",
                ak.to_str().unwrap()
            ],
            ""
        )),
        "pw2"
    );
    ok(&fx.run(&["shred", "acme", "--archived"], ""));
    fails(
        &fx.run(&["get", "acme", "--reveal", "--archived"], ""),
        1,
        "shredded",
    );
    let all = ok(&fx.run(&["list", "--all"], ""));
    assert!(all.contains("shredded"), "{all}");
    ok(&fx.run(&["remove", "pgbackrest/repo1-cipher-pass"], ""));
    fails(
        &fx.run(&["get", "pgbackrest/repo1-cipher-pass"], ""),
        1,
        "no record",
    );
    // Verify flags a deleted record with exit 3.
    ok(&fx.run(&["put", "beta", "--stdin"], "b"));
    for f in std::fs::read_dir(fx.dir().join("records")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = fx.run(&["verify"], "");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing"));
}

#[test]
fn config_mode_and_passphrase_sources() {
    let fx = Fx::new();
    // A key-file vault through the [vault] section, by --config and by $COSTPLUS_CONFIG.
    let cfg = fx.path("costplus.toml");
    std::fs::write(
        &cfg,
        format!(
            "[vault]\ndir = {:?}\nkey_file = {:?}\n",
            fx.dir().display().to_string(),
            fx.key().display().to_string()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    ok(&run_with(
        Command::new(BIN).args(["--config", c, "init"]),
        "",
    ));
    ok(&run_with(
        Command::new(BIN).args(["--config", c, "put", "acme", "--stdin"]),
        "via-config",
    ));
    assert_eq!(
        ok(&run_with(
            Command::new(BIN)
                .args(["get", "acme", "--reveal"])
                .env("COSTPLUS_CONFIG", &cfg),
            ""
        )),
        "via-config"
    );
    // --dir wins over $COSTPLUS_CONFIG.
    let pdir = fx.path("pvault");
    let pfile = fx.path("pass");
    std::fs::write(&pfile, "a good passphrase\n").unwrap();
    std::fs::set_permissions(&pfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = pdir.to_str().unwrap();
    let pf = pfile.to_str().unwrap();
    ok(&run_with(
        Command::new(BIN)
            .args([
                "--dir",
                p,
                "--passphrase-file",
                pf,
                "init",
                "--kdf-ms",
                "30",
            ])
            .env("COSTPLUS_CONFIG", &cfg),
        "",
    ));
    ok(&run_with(
        Command::new(BIN).args(["--dir", p, "--passphrase-file", pf, "put", "x", "--stdin"]),
        "px",
    ));
    // From a file descriptor.
    let out = run_with(
        Command::new("sh").args([
            "-c",
            &format!("exec {BIN} --dir {p} --passphrase-fd 3 get x --reveal 3<{pf}"),
        ]),
        "",
    );
    assert_eq!(ok(&out), "px");
    // No source at all (no terminal, no variable): a clear error.
    let out = run_with(
        Command::new(BIN)
            .args(["--dir", p, "get", "x", "--reveal"])
            .env("COSTPLUS_VAULT_PASSPHRASE", "a good passphrase")
            .env_remove("COSTPLUS_CONFIG"),
        "",
    );
    fails(&out, 1, "needs a passphrase");
    // From the environment (last resort, with a warning).
    let out = Command::new("sh")
        .args(["-c", &format!("COSTPLUS_VAULT_PASSPHRASE='a good passphrase' exec {BIN} --dir {p} get x --reveal </dev/null")])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "px");
    assert!(String::from_utf8_lossy(&out.stderr).contains("COSTPLUS_VAULT_PASSPHRASE"));
    // A wrong passphrase: non-zero, nothing printed.
    let out = Command::new("sh")
        .args(["-c", &format!("COSTPLUS_VAULT_PASSPHRASE='not it at all' exec {BIN} --dir {p} get x --reveal </dev/null")])
        .output()
        .unwrap();
    fails(&out, 1, "wrong passphrase");
    // A passphrase file others can read is refused.
    std::fs::set_permissions(&pfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    fails(
        &run_with(
            Command::new(BIN).args(["--dir", p, "--passphrase-file", pf, "get", "x", "--reveal"]),
            "",
        ),
        1,
        "chmod 600",
    );
    std::fs::set_permissions(&pfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Change the passphrase.
    let newp = fx.path("newpass");
    std::fs::write(&newp, "another good passphrase").unwrap();
    std::fs::set_permissions(&newp, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&run_with(
        Command::new(BIN).args([
            "--dir",
            p,
            "--passphrase-file",
            pf,
            "change-passphrase",
            "--new-passphrase-file",
            newp.to_str().unwrap(),
            "--kdf-ms",
            "30",
        ]),
        "",
    ));
    fails(
        &run_with(
            Command::new(BIN).args(["--dir", p, "--passphrase-file", pf, "get", "x", "--reveal"]),
            "",
        ),
        1,
        "wrong passphrase",
    );
    assert_eq!(
        ok(&run_with(
            Command::new(BIN).args([
                "--dir",
                p,
                "--passphrase-file",
                newp.to_str().unwrap(),
                "get",
                "x",
                "--reveal"
            ]),
            ""
        )),
        "px"
    );
}

#[test]
fn legacy_import_warns_to_rotate() {
    let fx = Fx::new();
    ok(&fx.run(&["init"], ""));
    let legacy = fx.path("legacy");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(
        legacy.join("acme.txt"),
        "user=acme_user\ndatabase=acme_db\npassword=old-plain\n",
    )
    .unwrap();
    std::fs::write(
        legacy.join("beta.conf"),
        "Username: beta_user\nPassword: beta-plain\n",
    )
    .unwrap();
    let l = legacy.to_str().unwrap();
    let plan = ok(&fx.run(&["import", l, "--plan"], ""));
    assert!(
        plan.contains("import acme") && plan.contains("import beta"),
        "{plan}"
    );
    fails(&fx.run(&["get", "acme"], ""), 1, "no record");
    let out = fx.run(&["import", l, "--server", "main"], "");
    let text = ok(&out);
    assert!(text.contains("imported 2 records"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rotate them"), "{err}");
    assert!(!err.contains("old-plain") && !text.contains("old-plain"));
    assert_eq!(ok(&fx.run(&["get", "acme", "--reveal"], "")), "old-plain");
    // Importing again refuses (names exist) and changes nothing.
    fails(&fx.run(&["import", l], ""), 1, "exists already");
    // A bad file names the file and line.
    std::fs::write(legacy.join("broken"), "password=x\nno separator here\n").unwrap();
    fails(&fx.run(&["import", l, "--plan"], ""), 1, "broken:2");
}

/// SIGKILL `costplus-vault` processes in the middle of writes: the vault always opens as the
/// old or the new state.
#[test]
fn sigkill_in_the_middle_of_writes() {
    let fx = Fx::new();
    ok(&fx.run(&["init"], ""));
    ok(&fx.run(&["put", "acme", "--stdin"], "v0"));
    // Enough records that a rotation takes a while.
    let legacy = fx.path("legacy");
    std::fs::create_dir(&legacy).unwrap();
    for i in 0..150 {
        std::fs::write(legacy.join(format!("c{i:03}")), format!("password=p{i}\n")).unwrap();
    }
    ok(&fx.run(&["import", legacy.to_str().unwrap()], ""));
    let mut last = "v0".to_string();
    let mut killed = 0;
    for i in 1..=40u64 {
        let next = format!("v{i}");
        let key_arg = fx.key().display().to_string();
        let dir_arg = fx.dir().display().to_string();
        let rotate = i % 5 == 0;
        let mut cmd = Command::new(BIN);
        cmd.args(["--dir", &dir_arg, "--key-file", &key_arg]);
        if rotate {
            cmd.args(["rotate-key", "--new-key-file", &key_arg]);
        } else {
            cmd.args(["put", "acme", "--stdin"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(next.as_bytes())
            .unwrap();
        // Kill at a spread of moments, from "at once" to "probably done".
        std::thread::sleep(std::time::Duration::from_micros((i * 997) % 25_000));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed += 1;
        }
        let got = ok(&fx.run(&["get", "acme", "--reveal"], ""));
        if rotate {
            assert_eq!(got, last, "a rotation changed the secret");
        } else {
            assert!(
                got == last || got == next,
                "after kill {i}: {got:?} is neither {last:?} nor {next:?}"
            );
            last = got;
        }
        let v: serde_json::Value =
            serde_json::from_str(&ok(&fx.run(&["verify", "--format", "json", "--gc"], "")))
                .unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["checked"], 151, "{v}");
    }
    assert!(
        killed > 0,
        "no process was killed mid-way; the test proved nothing"
    );
}

#[test]
fn help_snapshot() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    insta::assert_snapshot!("help", ok(&out));
    let out = Command::new(BIN).args(["put", "--help"]).output().unwrap();
    insta::assert_snapshot!("put_help", ok(&out));
}

/// The JSON shapes of `get` and `list` (ids and times replaced by placeholders).
#[test]
fn json_shapes_snapshot() {
    let fx = Fx::new();
    ok(&fx.run(&["init"], ""));
    ok(&fx.run(
        &[
            "put",
            "acme",
            "--stdin",
            "--role",
            "acme_user",
            "--database",
            "acme_db",
            "--server",
            "main",
            "--meta",
            "plan=small",
        ],
        "pw",
    ));
    let normalise = |text: String| -> String {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        fn walk(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m.iter_mut() {
                        if ["id", "created", "updated"].contains(&k.as_str()) {
                            *x = format!("<{k}>").into();
                        } else {
                            walk(x);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
                _ => {}
            }
        }
        walk(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    };
    insta::assert_snapshot!(
        "get_json",
        normalise(ok(&fx.run(&["get", "acme", "--format", "json"], "")))
    );
    insta::assert_snapshot!(
        "get_reveal_json",
        normalise(ok(
            &fx.run(&["get", "acme", "--reveal", "--format", "json"], "")
        ))
    );
    insta::assert_snapshot!(
        "list_json",
        normalise(ok(&fx.run(&["list", "--format", "json"], "")))
    );
}
