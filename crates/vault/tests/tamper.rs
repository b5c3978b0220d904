//! The tamper and bad-input suite: every kind of damage is detected with its own error variant,
//! and no plaintext comes out.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use costplus_vault::format::{self, MANIFEST_FILE, RECORD_FILE};
use costplus_vault::{Error, KdfParams, KeySource, NewKey, NewRecord, Vault, Which};
use secrecy::ExposeSecret;

const ALICE_PW: &str = "alice-Secret-0001";
const BOB_PW: &str = "bob-Secret-0002";

struct Fx {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault");
        let key = tmp.path().join("vault.key");
        let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
        v.put(NewRecord::customer(
            "alice",
            "alice_user",
            "alice_db",
            "main",
            ALICE_PW.into(),
        ))
        .unwrap();
        v.put(NewRecord::customer(
            "bob",
            "bob_user",
            "bob_db",
            "main",
            BOB_PW.into(),
        ))
        .unwrap();
        Fx {
            _tmp: tmp,
            dir,
            key,
        }
    }
    fn source(&self) -> KeySource {
        KeySource::KeyFile(self.key.clone())
    }
    fn open(&self) -> Result<Vault, Error> {
        Vault::open(&self.dir, &self.source())
    }
    /// Open and read `name`: the secret, or the error.
    fn read(&self, name: &str) -> Result<String, Error> {
        let v = self.open()?;
        v.get(name).map(|r| r.secret.expose_secret().to_string())
    }
    fn manifest(&self) -> PathBuf {
        self.dir.join("manifest")
    }
    fn record_file(&self, name: &str) -> PathBuf {
        let v = self.open().unwrap();
        let id = v.summary(name).unwrap().id;
        record_file_of(&self.dir, &id)
    }
}

fn record_file_of(dir: &Path, id: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{id}-"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// Replace a file's contents in place (keeping its mode, as an attacker with write access
/// would).
fn overwrite(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The error must be `want` and must not carry any secret.
fn expect_err<T: std::fmt::Debug>(case: &str, got: Result<T, Error>, want: fn(&Error) -> bool) {
    match got {
        Ok(v) => panic!("{case}: no error, got {v:?}"),
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(want(&e), "{case}: unexpected error {e:?}");
            for pw in [ALICE_PW, BOB_PW] {
                assert!(
                    !text.contains(pw),
                    "{case}: the error leaks a secret: {text}"
                );
            }
            assert!(!e.to_string().is_empty());
        }
    }
}

fn spans(kind: &format::FileKind, path: &Path) -> Vec<format::RegionSpan> {
    format::spans(kind, path, &std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_clean_vault_reads_back() {
    let fx = Fx::new();
    assert_eq!(fx.read("alice").unwrap(), ALICE_PW);
    assert_eq!(fx.read("bob").unwrap(), BOB_PW);
    let v = fx.open().unwrap();
    let report = v.verify(None);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.checked, 2);
}

#[test]
fn one_flipped_bit_in_every_record_region() {
    for (i, span) in spans(&RECORD_FILE, &Fx::new().record_file("alice"))
        .into_iter()
        .enumerate()
    {
        let fx = Fx::new();
        let path = fx.record_file("alice");
        let orig = std::fs::read(&path).unwrap();
        // Bits at the start, the middle and the end of the region body.
        for at in [
            span.offset + 9,
            span.offset + span.len / 2,
            span.offset + span.len - 1,
        ] {
            let at = at.min(span.offset + span.len - 1);
            let mut b = orig.clone();
            b[at] ^= 0x04;
            overwrite(&path, &b);
            let case = format!("record region {} byte {at}", span.name);
            let region = span.name;
            if i == 0 && at < 10 {
                // Inside the magic or the version.
                expect_err(&case, fx.read("alice"), |e| {
                    matches!(e, Error::BadMagic { .. } | Error::UnsupportedVersion { .. })
                });
            } else {
                let got = fx.read("alice");
                match &got {
                    Err(Error::Corrupt { region: r, .. }) => assert_eq!(*r, region, "{case}"),
                    other => panic!("{case}: {other:?}"),
                }
            }
            // Bob is untouched.
            assert_eq!(fx.read("bob").unwrap(), BOB_PW);
        }
        overwrite(&path, &orig);
        assert_eq!(fx.read("alice").unwrap(), ALICE_PW);
    }
}

/// A deliberate edit with the checksums recomputed: the cryptography catches it, region by
/// region, each with its own error.
#[test]
fn deliberate_edits_of_record_regions_with_checksums_fixed() {
    let fx = Fx::new();
    let path = fx.record_file("alice");
    let orig = std::fs::read(&path).unwrap();
    let sp = spans(&RECORD_FILE, &path);
    type Want = fn(&Error) -> bool;
    let cases: [(&str, Want); 5] = [
        ("wrapped key", |e| {
            matches!(e, Error::KeyUnwrapFailed { .. })
        }),
        ("key commitment", |e| {
            matches!(e, Error::KeyCommitmentMismatch { .. })
        }),
        ("nonce", |e| matches!(e, Error::RecordTampered { .. })),
        ("ciphertext", |e| matches!(e, Error::RecordTampered { .. })),
        ("tag", |e| matches!(e, Error::RecordTampered { .. })),
    ];
    for (region, want) in cases {
        let span = sp.iter().find(|s| s.name == region).unwrap();
        for at in [span.offset, span.offset + span.len - 1] {
            let mut b = orig.clone();
            b[at] ^= 0x80;
            overwrite(&path, &format::danger_recompute_checksums(&RECORD_FILE, &b));
            expect_err(&format!("{region} at {at}"), fx.read("alice"), want);
        }
    }
    // The header: an edit of the commit counter (still valid JSON) breaks the key wrap.
    let header = &orig[sp[1].offset..sp[1].offset + sp[1].len];
    let text = String::from_utf8(header.to_vec()).unwrap();
    let edited = text.replace("\"seq\":1", "\"seq\":0");
    assert_ne!(edited, text);
    overwrite(
        &path,
        &format::danger_replace_region(&RECORD_FILE, &orig, 0, edited.as_bytes()),
    );
    expect_err("header seq edited", fx.read("alice"), |e| {
        matches!(e, Error::KeyUnwrapFailed { .. })
    });
    // Garbage JSON with valid checksums.
    overwrite(
        &path,
        &format::danger_replace_region(&RECORD_FILE, &orig, 0, b"{not json"),
    );
    expect_err("header garbage", fx.read("alice"), |e| {
        matches!(
            e,
            Error::Malformed {
                region: "header",
                ..
            }
        )
    });
    overwrite(&path, &orig);
    assert_eq!(fx.read("alice").unwrap(), ALICE_PW);
}

#[test]
fn one_flipped_bit_in_every_manifest_region() {
    let fx = Fx::new();
    let path = fx.manifest();
    let orig = std::fs::read(&path).unwrap();
    for span in spans(&MANIFEST_FILE, &path) {
        let at = if span.name == "prologue" {
            span.offset + 11 // the region count
        } else {
            span.offset + span.len / 2
        };
        let mut b = orig.clone();
        b[at] ^= 0x01;
        overwrite(&path, &b);
        match fx.read("alice") {
            Err(Error::Corrupt { region, .. }) => assert_eq!(region, span.name),
            other => panic!("manifest region {}: {other:?}", span.name),
        }
    }
    // Deliberate edits with checksums fixed.
    overwrite(&path, &orig);
    let sp = spans(&MANIFEST_FILE, &path);
    let mac = &sp[2];
    let mut b = orig.clone();
    b[mac.offset] ^= 1;
    overwrite(
        &path,
        &format::danger_recompute_checksums(&MANIFEST_FILE, &b),
    );
    expect_err("header mac edited", fx.read("alice"), |e| {
        matches!(e, Error::HeaderTampered { .. })
    });
    let header = String::from_utf8(orig[sp[1].offset..sp[1].offset + sp[1].len].to_vec()).unwrap();
    let edited = header.replacen("\"created\":\"2", "\"created\":\"1", 1);
    assert_ne!(edited, header);
    overwrite(
        &path,
        &format::danger_replace_region(&MANIFEST_FILE, &orig, 0, edited.as_bytes()),
    );
    expect_err("header edited", fx.read("alice"), |e| {
        matches!(e, Error::HeaderTampered { .. })
    });
    let m = &sp[3];
    for at in [m.offset, m.offset + m.len / 2, m.offset + m.len - 1] {
        let mut b = orig.clone();
        b[at] ^= 0x10;
        overwrite(
            &path,
            &format::danger_recompute_checksums(&MANIFEST_FILE, &b),
        );
        expect_err("manifest edited", fx.read("alice"), |e| {
            matches!(e, Error::ManifestTampered { .. })
        });
    }
    overwrite(&path, &orig);
    assert_eq!(fx.read("alice").unwrap(), ALICE_PW);
}

#[test]
fn truncation_at_every_region_boundary() {
    let fx = Fx::new();
    for (kind, path) in [
        (RECORD_FILE, fx.record_file("alice")),
        (MANIFEST_FILE, fx.manifest()),
    ] {
        let orig = std::fs::read(&path).unwrap();
        let sp = spans(&kind, &path);
        // Boundaries: inside the prologue, then the start and end of every region body, and
        // one byte short of the end of the file.
        let mut cuts = vec![(4, "prologue"), (sp[1].offset - 1, "prologue")];
        for (i, s) in sp.iter().enumerate().skip(1) {
            cuts.push((s.offset, s.name));
            cuts.push((s.offset + s.len, s.name));
            if let Some(next) = sp.get(i + 1) {
                cuts.push((next.offset, next.name));
            }
        }
        cuts.push((orig.len() - 1, sp.last().unwrap().name));
        for (cut, region) in cuts {
            overwrite(&path, &orig[..cut]);
            match fx.read("alice") {
                Err(Error::Truncated { region: r, .. }) => {
                    assert_eq!(r, region, "{} cut at {cut}", kind.what)
                }
                other => panic!("{} cut at {cut}: {other:?}", kind.what),
            }
        }
        overwrite(&path, &[]);
        expect_err("empty", fx.read("alice"), |e| {
            matches!(e, Error::EmptyFile { .. })
        });
        overwrite(&path, &orig);
    }
    assert_eq!(fx.read("alice").unwrap(), ALICE_PW);
}

#[test]
fn a_record_swapped_between_two_customers() {
    let fx = Fx::new();
    let alice = fx.record_file("alice");
    let bob = fx.record_file("bob");
    let bob_orig = std::fs::read(&bob).unwrap();
    // Bob's file now holds Alice's record: reading bob must not give Alice's password.
    std::fs::copy(&alice, &bob).unwrap();
    expect_err(
        "swap",
        fx.read("bob"),
        |e| matches!(e, Error::RecordSwapped { found, .. } if found == "alice"),
    );
    // The attacker also rewrites the header to claim to be Bob's (checksums fixed): the
    // associated data no longer matches.
    let a = std::fs::read(&alice).unwrap();
    let sp = format::spans(&RECORD_FILE, &alice, &a).unwrap();
    let bsp = format::spans(&RECORD_FILE, &bob, &bob_orig).unwrap();
    let bob_header = &bob_orig[bsp[1].offset..bsp[1].offset + bsp[1].len];
    let _ = sp;
    overwrite(
        &bob,
        &format::danger_replace_region(&RECORD_FILE, &a, 0, bob_header),
    );
    expect_err("swap with forged header", fx.read("bob"), |e| {
        matches!(e, Error::KeyUnwrapFailed { .. })
    });
    overwrite(&bob, &bob_orig);
    assert_eq!(fx.read("bob").unwrap(), BOB_PW);
}

#[test]
fn a_record_from_another_vault() {
    let fx = Fx::new();
    let other = Fx::new();
    let path = fx.record_file("alice");
    std::fs::copy(other.record_file("alice"), &path).unwrap();
    expect_err("other vault", fx.read("alice"), |e| {
        matches!(e, Error::WrongVault { .. })
    });
}

#[test]
fn a_record_rolled_back_to_an_older_copy() {
    let fx = Fx::new();
    let old_path = fx.record_file("alice");
    let old = std::fs::read(&old_path).unwrap();
    let mut v = fx.open().unwrap();
    v.set_secret("alice", "alice-NEW-password".into()).unwrap();
    drop(v);
    let new_path = fx.record_file("alice");
    assert_ne!(old_path, new_path);
    assert!(
        !old_path.exists(),
        "the superseded generation must be removed"
    );
    // The old content under the new file name.
    let new = std::fs::read(&new_path).unwrap();
    overwrite(&new_path, &old);
    expect_err("old content, new name", fx.read("alice"), |e| {
        matches!(
            e,
            Error::RecordRolledBack {
                expected: 2,
                found: 1,
                ..
            }
        )
    });
    // The old file restored under its own name, the new one gone.
    std::fs::remove_file(&new_path).unwrap();
    overwrite(&old_path, &old);
    expect_err("old file restored", fx.read("alice"), |e| {
        matches!(
            e,
            Error::RecordRolledBack {
                expected: 2,
                found: 1,
                ..
            }
        )
    });
    std::fs::remove_file(&old_path).unwrap();
    overwrite(&new_path, &new);
    assert_eq!(fx.read("alice").unwrap(), "alice-NEW-password");
}

#[test]
fn the_manifest_rolled_back_to_an_older_copy() {
    let fx = Fx::new();
    let old_manifest = std::fs::read(fx.manifest()).unwrap();
    let mut v = fx.open().unwrap();
    v.set_secret("alice", "alice-NEW-password".into()).unwrap();
    drop(v);
    overwrite(&fx.manifest(), &old_manifest);
    // The old manifest still authenticates, but Alice's file is newer than it.
    expect_err(
        "manifest rolled back",
        fx.read("alice"),
        |e| matches!(e, Error::ManifestRolledBack { name, .. } if name == "alice"),
    );
    let report = fx.open().unwrap().verify(None);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("manifest was rolled back")),
        "{report:?}"
    );
    // An open vault notices when the manifest goes back in time under it.
    let fresh = Fx::new();
    let mut v = fresh.open().unwrap();
    let old = std::fs::read(fresh.manifest()).unwrap();
    v.set_secret("bob", "x-1234567".into()).unwrap();
    overwrite(&fresh.manifest(), &old);
    expect_err(
        "rolled back under an open vault",
        v.set_secret("bob", "y-1234567".into()),
        |e| matches!(e, Error::ManifestRolledBack { .. }),
    );
}

#[test]
fn a_record_deleted_behind_the_manifests_back() {
    let fx = Fx::new();
    std::fs::remove_file(fx.record_file("alice")).unwrap();
    expect_err(
        "deleted",
        fx.read("alice"),
        |e| matches!(e, Error::RecordMissing { name, .. } if name == "alice"),
    );
    let report = fx.open().unwrap().verify(None);
    assert_eq!(report.checked, 1);
    assert!(report.problems[0].contains("missing"), "{report:?}");
}

#[test]
fn wrong_key_file_and_wrong_key_source() {
    let fx = Fx::new();
    let other = fx.dir.parent().unwrap().join("other.key");
    costplus_vault::keys::create_key_file(&other).unwrap();
    expect_err(
        "wrong key file",
        Vault::open(&fx.dir, &KeySource::KeyFile(other)),
        |e| matches!(e, Error::WrongKeyFile { .. }),
    );
    expect_err(
        "passphrase for a key-file vault",
        Vault::open(&fx.dir, &KeySource::Passphrase("whatever-123".into())),
        |e| {
            matches!(
                e,
                Error::WrongKeySource {
                    expected: "key file",
                    ..
                }
            )
        },
    );
}

fn passphrase_vault(dir: &Path, pass: &str, kdf: KdfParams) -> Vault {
    let key = NewKey {
        source: KeySource::Passphrase(pass.into()),
        kdf: Some(kdf),
    };
    let (mut v, _) = Vault::init(dir, &key).unwrap();
    v.put(NewRecord::service(
        "s3/offsite/secret-key",
        "s3-SECRET".into(),
    ))
    .unwrap();
    v
}

#[test]
fn wrong_passphrase_and_kdf_over_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    passphrase_vault(
        &dir,
        "correct horse battery",
        KdfParams::new(8 * 1024, 1, 1),
    );
    let good = KeySource::Passphrase("correct horse battery".into());
    let v = Vault::open(&dir, &good).unwrap();
    assert_eq!(
        v.get("s3/offsite/secret-key")
            .unwrap()
            .secret
            .expose_secret(),
        "s3-SECRET"
    );
    expect_err(
        "wrong passphrase",
        Vault::open(&dir, &KeySource::Passphrase("incorrect horse".into())),
        |e| matches!(e, Error::WrongPassphrase { .. }),
    );
    // A hostile header asking for 4 GiB of memory, or 1000 passes.
    let path = dir.join("manifest");
    let orig = std::fs::read(&path).unwrap();
    let sp = format::spans(&MANIFEST_FILE, &path, &orig).unwrap();
    let header = String::from_utf8(orig[sp[1].offset..sp[1].offset + sp[1].len].to_vec()).unwrap();
    for (from, to) in [
        ("\"m_cost_kib\":8192", "\"m_cost_kib\":4194304"),
        ("\"t_cost\":1", "\"t_cost\":1000"),
        ("\"p_cost\":1", "\"p_cost\":64"),
    ] {
        let edited = header.replace(from, to);
        assert_ne!(edited, header, "{from}");
        overwrite(
            &path,
            &format::danger_replace_region(&MANIFEST_FILE, &orig, 0, edited.as_bytes()),
        );
        let start = std::time::Instant::now();
        expect_err(to, Vault::open(&dir, &good), |e| {
            matches!(e, Error::KdfTooExpensive { .. })
        });
        // Refused before running anything expensive.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
    overwrite(&path, &orig);
    assert!(Vault::open(&dir, &good).is_ok());
}

#[test]
fn unknown_format_version() {
    let fx = Fx::new();
    for path in [fx.manifest(), fx.record_file("alice")] {
        let orig = std::fs::read(&path).unwrap();
        let mut b = orig.clone();
        b[8] = 0;
        b[9] = 2;
        overwrite(&path, &b);
        expect_err("version 2", fx.read("alice"), |e| {
            matches!(
                e,
                Error::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            )
        });
        overwrite(&path, &orig);
    }
}

#[test]
fn a_directory_in_place_of_a_file() {
    let fx = Fx::new();
    let rec = fx.record_file("alice");
    std::fs::remove_file(&rec).unwrap();
    std::fs::create_dir(&rec).unwrap();
    expect_err("record is a directory", fx.read("alice"), |e| {
        matches!(e, Error::NotAFile { .. })
    });
    std::fs::rename(fx.manifest(), fx.dir.join("m.bak")).unwrap();
    std::fs::create_dir(fx.manifest()).unwrap();
    expect_err("manifest is a directory", fx.open(), |e| {
        matches!(e, Error::NotAFile { .. })
    });
    let key_dir = fx.dir.parent().unwrap().join("keydir");
    std::fs::create_dir(&key_dir).unwrap();
    expect_err(
        "key file is a directory",
        Vault::open(&fx.dir, &KeySource::KeyFile(key_dir)),
        |e| matches!(e, Error::NotAFile { .. }),
    );
}

#[test]
fn empty_files() {
    let fx = Fx::new();
    overwrite(&fx.record_file("alice"), b"");
    expect_err("empty record", fx.read("alice"), |e| {
        matches!(e, Error::EmptyFile { .. })
    });
    overwrite(&fx.manifest(), b"");
    expect_err("empty manifest", fx.open(), |e| {
        matches!(e, Error::EmptyFile { .. })
    });
    overwrite(&fx.key, b"");
    expect_err("empty key file", fx.open(), |e| {
        matches!(e, Error::EmptyFile { .. })
    });
}

#[test]
fn files_others_can_read_or_that_others_own_are_refused() {
    let fx = Fx::new();
    let check = |path: &Path, mode: u32| {
        let before = std::fs::metadata(path).unwrap().permissions();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        expect_err(
            &format!("{} {mode:o}", path.display()),
            fx.read("alice"),
            |e| matches!(e, Error::Insecure { .. }),
        );
        std::fs::set_permissions(path, before).unwrap();
    };
    check(&fx.manifest(), 0o644);
    check(&fx.record_file("alice"), 0o640);
    check(&fx.key, 0o604);
    check(&fx.dir, 0o755);
    assert_eq!(fx.read("alice").unwrap(), ALICE_PW);
    // Owned by someone else (the tests run as root; give the file to `nobody`).
    if costplus_fs::OsUser::running_as_root() {
        let nobody = costplus_fs::OsUser::by_name("nobody").unwrap();
        let rec = fx.record_file("alice");
        costplus_fs::chown(&rec, nobody.uid, nobody.gid).unwrap();
        expect_err(
            "owned by nobody",
            fx.read("alice"),
            |e| matches!(e, Error::Insecure { problem, .. } if problem.contains("owned by uid")),
        );
    }
}

#[test]
fn shredded_and_archived_records() {
    let fx = Fx::new();
    let mut v = fx.open().unwrap();
    let archive_key =
        costplus_vault::ArchiveKey::from_file(&fx.dir.parent().unwrap().join("archive.key"), true)
            .unwrap();
    v.archive("alice", Some(&archive_key)).unwrap();
    expect_err(
        "archived without key",
        v.get(Which::Archived("alice")),
        |e| matches!(e, Error::ArchiveKey { .. }),
    );
    let wrong = costplus_vault::ArchiveKey::from_file(
        &fx.dir.parent().unwrap().join("wrong-archive.key"),
        true,
    )
    .unwrap();
    expect_err(
        "archived with the wrong key",
        v.get_archived(Which::Archived("alice"), &wrong),
        |e| matches!(e, Error::ArchiveKey { .. }),
    );
    assert_eq!(
        v.get_archived(Which::Archived("alice"), &archive_key)
            .unwrap()
            .secret
            .expose_secret(),
        ALICE_PW
    );
    v.shred(Which::Archived("alice")).unwrap();
    expect_err("shredded", v.get(Which::Archived("alice")), |e| {
        matches!(e, Error::Shredded { .. })
    });
    let rd: Vec<_> = std::fs::read_dir(fx.dir.join("archive")).unwrap().collect();
    assert!(rd.is_empty(), "the shredded file is gone");
}
