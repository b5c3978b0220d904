//! Crash safety: every change is stopped at every step (failpoints), and the vault must then
//! open as exactly the old or exactly the new state, stay sound, and accept the change again.
//! (The CLI tests also SIGKILL real `costplus-vault` processes in the middle of writes.)

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use costplus_vault::{ArchiveKey, Error, KeySource, NewKey, NewRecord, Status, Vault, Which};
use secrecy::ExposeSecret;

type State = BTreeMap<(String, String), (Status, u64, Option<String>)>;

/// Everything observable: per (name, status) the generation and the secret.
fn state(dir: &Path, keys: &[PathBuf]) -> State {
    let mut last = None;
    for k in keys {
        match Vault::open(dir, &KeySource::KeyFile(k.clone())) {
            Ok(v) => {
                let report = v.verify(None);
                assert!(report.problems.is_empty(), "{:?}", report.problems);
                let mut st: State = v
                    .list()
                    .into_iter()
                    .map(|s| {
                        let secret = match s.wrapped_to {
                            "vault key" => Some(
                                v.get(Which::Id(&s.id))
                                    .unwrap()
                                    .secret
                                    .expose_secret()
                                    .to_string(),
                            ),
                            _ => None,
                        };
                        (
                            (s.name.clone(), s.status.to_string()),
                            (s.status, s.generation, secret),
                        )
                    })
                    .collect();
                // Which key opens it is part of the state (key rotation changes only that).
                let key = k.file_name().unwrap().to_string_lossy().into_owned();
                st.insert(
                    ("#key".into(), String::new()),
                    (Status::Active, 0, Some(key)),
                );
                return st;
            }
            Err(e @ Error::WrongKeyFile { .. }) => last = Some(e),
            Err(e) => panic!("the vault does not open after a crash: {e}"),
        }
    }
    panic!("no key opens the vault: {last:?}")
}

fn copy_dir(from: &Path, to: &Path) {
    costplus_fs::create_dir_with_mode(to, 0o700).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

struct Ctx {
    tmp: PathBuf,
}

impl Ctx {
    fn keys(&self) -> Vec<PathBuf> {
        vec![self.tmp.join("k1"), self.tmp.join("k2")]
    }
    fn open(&self, dir: &Path) -> Vault {
        Vault::open(dir, &KeySource::KeyFile(self.tmp.join("k1"))).unwrap()
    }
}

type Op = fn(&Ctx, &mut Vault) -> Result<(), Error>;

fn ops() -> Vec<(&'static str, Op, &'static [&'static str])> {
    const PUT: &[&str] = &[
        "vault::put::record-written",
        "vault::commit::before",
        "vault::commit::after",
    ];
    const COMMIT: &[&str] = &["vault::commit::before", "vault::commit::after"];
    vec![
        (
            "put new",
            |_, v| {
                v.put(NewRecord::customer("new", "r", "d", "s", "pw-new".into()))
                    .map(|_| ())
            },
            PUT,
        ),
        (
            "put next generation",
            |_, v| v.set_secret("a", "pw-a-2".into()).map(|_| ()),
            PUT,
        ),
        (
            "import (put many)",
            |_, v| {
                v.put_many(
                    (0..5)
                        .map(|i| NewRecord::customer(&format!("imp{i}"), "r", "d", "s", "x".into()))
                        .collect(),
                    false,
                )
                .map(|_| ())
            },
            PUT,
        ),
        (
            "set status",
            |_, v| v.set_status("a", Status::Active).map(|_| ()),
            COMMIT,
        ),
        (
            "archive to the archive key",
            |c, v| {
                let ak = ArchiveKey::from_file(&c.tmp.join("archive.key"), true)?;
                v.archive("b", Some(&ak)).map(|_| ())
            },
            &[
                "vault::archive::record-written",
                "vault::commit::before",
                "vault::commit::after",
            ],
        ),
        (
            "shred",
            |_, v| v.shred(Which::Live("c")).map(|_| ()),
            COMMIT,
        ),
        (
            "remove",
            |_, v| v.remove(Which::Live("c")).map(|_| ()),
            COMMIT,
        ),
        (
            "rotate key",
            |c, v| {
                v.rotate_key(&NewKey::key_file(&c.tmp.join("k2")))
                    .map(|_| ())
            },
            &[
                "vault::rotate::record-written",
                "vault::commit::before",
                "vault::commit::after",
            ],
        ),
    ]
}

#[test]
fn a_crash_at_every_step_leaves_the_old_or_the_new_vault() {
    let scenario = fail::FailScenario::setup();
    let mut checked = 0;
    for (what, op, points) in ops() {
        for point in points.iter() {
            let tmp = tempfile::tempdir().unwrap();
            let ctx = Ctx {
                tmp: tmp.path().to_path_buf(),
            };
            let dir = tmp.path().join("v");
            let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&tmp.path().join("k1"))).unwrap();
            for n in ["a", "b", "c"] {
                v.put(NewRecord::customer(
                    n,
                    "r",
                    "d",
                    "s",
                    format!("pw-{n}").into(),
                ))
                .unwrap();
            }
            drop(v);
            let old = state(&dir, &ctx.keys());
            // The new state: the same change, uninterrupted, on a copy.
            let copy = tmp.path().join("copy");
            copy_dir(&dir, &copy);
            op(&ctx, &mut ctx.open(&copy)).unwrap();
            let new = state(&copy, &ctx.keys());
            assert_ne!(old, new, "{what}: the change changes nothing");

            // The same change, stopped at `point`.
            fail::cfg(*point, "return").unwrap();
            let got = op(&ctx, &mut ctx.open(&dir));
            fail::remove(*point);
            match got {
                Err(Error::Failpoint(p)) => assert_eq!(p, *point),
                other => panic!("{what} at {point}: the failpoint did not fire: {other:?}"),
            }
            let after = state(&dir, &ctx.keys());
            let expect = if point.ends_with("commit::after") {
                &new
            } else {
                &old
            };
            assert_eq!(
                &after, expect,
                "{what} stopped at {point}: neither exactly old nor exactly new"
            );
            // The vault stays usable: leftovers are collected, and an interrupted change can be
            // made again.
            let keys = ctx.keys();
            let key = keys
                .iter()
                .find(|k| Vault::open(&dir, &KeySource::KeyFile((*k).clone())).is_ok())
                .unwrap();
            let mut v = Vault::open(&dir, &KeySource::KeyFile(key.clone())).unwrap();
            v.gc().unwrap();
            assert!(v.verify(None).leftovers.is_empty());
            if !point.ends_with("commit::after") {
                drop(v);
                op(&ctx, &mut ctx.open(&dir)).unwrap();
                assert_eq!(state(&dir, &ctx.keys()), new, "{what}: redo after {point}");
            }
            checked += 1;
        }
    }
    scenario.teardown();
    assert_eq!(checked, 21);
}

/// The handle that saw the failure stays usable and in step with the disk.
#[test]
fn the_same_handle_recovers_after_a_failed_commit() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let key = tmp.path().join("k1");
    let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
    v.put(NewRecord::service("svc/a", "one".into())).unwrap();
    // Stopped before the commit: nothing happened.
    fail::cfg("vault::commit::before", "return").unwrap();
    assert!(matches!(
        v.set_secret("svc/a", "two".into()),
        Err(Error::Failpoint(_))
    ));
    fail::remove("vault::commit::before");
    assert_eq!(v.summary("svc/a").unwrap().generation, 1);
    assert_eq!(v.get("svc/a").unwrap().secret.expose_secret(), "one");
    // Stopped right after the commit: the disk has generation 2; the handle catches up on its
    // next change instead of overwriting it.
    fail::cfg("vault::commit::after", "return").unwrap();
    assert!(matches!(
        v.set_secret("svc/a", "two".into()),
        Err(Error::Failpoint(_))
    ));
    fail::remove("vault::commit::after");
    let s = v.set_secret("svc/a", "three".into()).unwrap();
    assert_eq!(s.generation, 3);
    let fresh = Vault::open(&dir, &KeySource::KeyFile(key)).unwrap();
    assert_eq!(fresh.get("svc/a").unwrap().secret.expose_secret(), "three");
    assert!(fresh.verify(None).problems.is_empty());
    scenario.teardown();
}
