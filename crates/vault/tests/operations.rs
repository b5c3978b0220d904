//! Every vault operation, through the public API, on real files.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use costplus_vault::{
    ArchiveKey, Error, KdfParams, KeySource, Kind, NewKey, NewRecord, Status, Vault, Which,
};
use secrecy::ExposeSecret;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_private_files_and_refuses_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let key = tmp.path().join("k");
    let (_, report) = Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
    assert!(report.key_file_created);
    assert_eq!(report.key_source, "key file");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.join("manifest")), 0o600);
    assert_eq!(mode(&dir.join("records")), 0o700);
    assert!(matches!(
        Vault::init(&dir, &NewKey::key_file(&key)),
        Err(Error::AlreadyInitialized { .. })
    ));
    // An existing key file is used, not replaced.
    let key_bytes = std::fs::read(&key).unwrap();
    let dir2 = tmp.path().join("v2");
    let (_, r2) = Vault::init(&dir2, &NewKey::key_file(&key)).unwrap();
    assert!(!r2.key_file_created);
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);
    assert!(matches!(
        Vault::open(&tmp.path().join("nothing"), &KeySource::KeyFile(key)),
        Err(Error::NotInitialized { .. })
    ));
}

#[test]
fn provisioning_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let key = tmp.path().join("k");
    let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
    let mut rec = NewRecord::customer("acme", "acme_user", "acme_db", "main", "pw-1".into());
    rec.metadata.insert("plan".into(), "small".into());
    let s = v.put(rec).unwrap();
    assert_eq!(
        (s.status, s.generation, s.kind),
        (Status::Pending, 1, Kind::Customer)
    );
    let s = v.set_status("acme", Status::Active).unwrap();
    assert_eq!((s.status, s.generation), (Status::Active, 1));
    assert!(matches!(
        v.set_status("acme", Status::Archived),
        Err(Error::InvalidTransition { .. })
    ));
    // Rotation: a new generation, same id and creation time, metadata kept.
    let before = v.summary("acme").unwrap();
    let after = v.set_secret("acme", "pw-2".into()).unwrap();
    assert_eq!(after.generation, 2);
    assert_eq!(after.id, before.id);
    assert_eq!(after.created, before.created);
    assert!(after.updated >= before.updated);
    let v = Vault::open(&dir, &KeySource::KeyFile(key.clone())).unwrap();
    let r = v.get("acme").unwrap();
    assert_eq!(r.secret.expose_secret(), "pw-2");
    assert_eq!(r.metadata["plan"], "small");
    assert_eq!(r.summary.role.as_deref(), Some("acme_user"));
    assert_eq!(r.summary.database.as_deref(), Some("acme_db"));
    assert_eq!(r.summary.server.as_deref(), Some("main"));
    // Debug never shows the secret.
    assert!(!format!("{r:?}").contains("pw-2"));
    assert!(matches!(v.get("nobody"), Err(Error::NotFound { .. })));
}

#[test]
fn names_and_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut v, _) = Vault::init(
        &tmp.path().join("v"),
        &NewKey::key_file(&tmp.path().join("k")),
    )
    .unwrap();
    v.put(NewRecord::service(
        "pgbackrest/repo1-cipher-pass",
        "c".into(),
    ))
    .unwrap();
    assert_eq!(
        v.summary("pgbackrest/repo1-cipher-pass").unwrap().kind,
        Kind::Service
    );
    assert!(matches!(
        v.put(NewRecord::service("no-slash", "c".into())),
        Err(Error::InvalidField { field: "kind", .. })
    ));
    assert!(matches!(
        v.put(NewRecord::service("../x", "c".into())),
        Err(Error::InvalidName { .. })
    ));
    // Nothing was written by the refused puts.
    assert_eq!(v.list().len(), 1);
}

#[test]
fn archive_shred_remove_and_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&tmp.path().join("k"))).unwrap();
    for n in ["a", "b", "c"] {
        v.put(NewRecord::customer(
            n,
            &format!("{n}_user"),
            &format!("{n}_db"),
            "main",
            format!("pw-{n}").into(),
        ))
        .unwrap();
    }
    // Archived without an archive key: still readable with the vault key.
    let s = v.archive("a", None).unwrap();
    assert_eq!(s.status, Status::Archived);
    assert!(matches!(v.get("a"), Err(Error::NotFound { .. })));
    assert_eq!(
        v.get(Which::Archived("a")).unwrap().secret.expose_secret(),
        "pw-a"
    );
    // A new customer may reuse the name.
    v.put(NewRecord::customer(
        "a",
        "a_user",
        "a_db",
        "main",
        "pw-a2".into(),
    ))
    .unwrap();
    assert_eq!(v.get("a").unwrap().secret.expose_secret(), "pw-a2");
    // Archived to an archive key.
    let ak = ArchiveKey::from_file(&tmp.path().join("archive.key"), true).unwrap();
    v.archive("b", Some(&ak)).unwrap();
    assert_eq!(
        v.get_archived(Which::Archived("b"), &ak)
            .unwrap()
            .secret
            .expose_secret(),
        "pw-b"
    );
    let s = v.shred(Which::Live("c")).unwrap();
    assert_eq!(s.status, Status::Shredded);
    assert!(matches!(
        v.shred(Which::Id(&s.id)),
        Err(Error::Shredded { .. })
    ));
    let removed = v.remove(Which::Archived("a")).unwrap();
    assert_eq!(removed.status, Status::Archived);
    let list: Vec<(String, Status)> = v.list().into_iter().map(|s| (s.name, s.status)).collect();
    assert_eq!(
        list,
        vec![
            ("a".into(), Status::Pending),
            ("b".into(), Status::Archived),
            ("c".into(), Status::Shredded)
        ]
    );
    let report = v.verify(None);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.checked, report.structure_only), (1, 1));
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    let report = v.verify(Some(&ak));
    assert_eq!((report.checked, report.structure_only), (2, 0));
}

#[test]
fn rotate_key_rewraps_only_and_change_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let k1 = tmp.path().join("k1");
    let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&k1)).unwrap();
    for i in 0..5 {
        v.put(NewRecord::customer(
            &format!("c{i}"),
            "r",
            "d",
            "s",
            format!("pw{i}").into(),
        ))
        .unwrap();
    }
    let ak = ArchiveKey::from_file(&tmp.path().join("ak"), true).unwrap();
    v.archive("c4", Some(&ak)).unwrap();
    let ct_before = ciphertexts(&dir);
    let k2 = tmp.path().join("k2");
    let r = v.rotate_key(&NewKey::key_file(&k2)).unwrap();
    assert_eq!((r.rewrapped, r.archive_wrapped, r.key_epoch), (4, 1, 1));
    assert!(r.key_file_created);
    // The ciphertexts are unchanged: only the data keys were re-wrapped.
    assert_eq!(ciphertexts(&dir), ct_before);
    assert!(matches!(
        Vault::open(&dir, &KeySource::KeyFile(k1)),
        Err(Error::WrongKeyFile { .. })
    ));
    let v2 = Vault::open(&dir, &KeySource::KeyFile(k2.clone())).unwrap();
    assert_eq!(v2.get("c3").unwrap().secret.expose_secret(), "pw3");
    assert!(v2.verify(Some(&ak)).problems.is_empty());
    // Change to a passphrase, then change the passphrase.
    let p1 = NewKey {
        source: KeySource::Passphrase("first passphrase".into()),
        kdf: Some(KdfParams::new(8 * 1024, 1, 1)),
    };
    v.rotate_key(&p1).unwrap();
    let mut v = Vault::open(&dir, &KeySource::Passphrase("first passphrase".into())).unwrap();
    assert_eq!(v.kdf_params(), Some(KdfParams::new(8 * 1024, 1, 1)));
    let p2 = NewKey {
        source: KeySource::Passphrase("second passphrase".into()),
        kdf: Some(KdfParams::new(8 * 1024, 2, 1)),
    };
    v.rotate_key(&p2).unwrap();
    assert!(matches!(
        Vault::open(&dir, &KeySource::Passphrase("first passphrase".into())),
        Err(Error::WrongPassphrase { .. })
    ));
    let v = Vault::open(&dir, &KeySource::Passphrase("second passphrase".into())).unwrap();
    assert_eq!(v.get("c0").unwrap().secret.expose_secret(), "pw0");
    assert_eq!(v.key_epoch(), 3);
    // A too-short new passphrase is refused before anything is written.
    let mut v3 = Vault::open(&dir, &KeySource::Passphrase("second passphrase".into())).unwrap();
    assert!(matches!(
        v3.rotate_key(&NewKey::passphrase("short".into())),
        Err(Error::Passphrase(_))
    ));
    assert_eq!(v3.key_epoch(), 3);
    assert!(v.verify(None).leftovers.is_empty());
}

/// The ciphertext region of every record file, by record id and generation.
fn ciphertexts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["records", "archive"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            let sp = costplus_vault::format::spans(&costplus_vault::format::RECORD_FILE, &p, &b)
                .unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let (id_gen, _) = name.rsplit_once('-').unwrap();
            let c = &sp[5];
            out.push((id_gen.to_string(), b[c.offset..c.offset + c.len].to_vec()));
        }
    }
    out.sort();
    out
}

#[test]
fn calibrated_passphrase_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let (_, report) = Vault::init(&dir, &NewKey::passphrase("a long passphrase".into())).unwrap();
    let kdf = report.kdf.unwrap();
    assert!(kdf.within_caps());
    assert!(kdf.m_cost_kib >= 64 * 1024, "{kdf:?}");
    let v = Vault::open(&dir, &KeySource::Passphrase("a long passphrase".into())).unwrap();
    assert_eq!(v.kdf_params(), Some(kdf));
}

#[test]
fn put_many_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut v, _) = Vault::init(
        &tmp.path().join("v"),
        &NewKey::key_file(&tmp.path().join("k")),
    )
    .unwrap();
    v.put(NewRecord::customer("x", "r", "d", "s", "1".into()))
        .unwrap();
    let batch = vec![
        NewRecord::customer("y", "r", "d", "s", "2".into()),
        NewRecord::customer("x", "r", "d", "s", "3".into()),
    ];
    assert!(matches!(
        v.put_many(batch, false),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(v.list().len(), 1);
    assert!(v.verify(None).leftovers.is_empty());
}

#[test]
fn two_handles_see_each_others_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let key = KeySource::KeyFile(tmp.path().join("k"));
    Vault::init(&dir, &NewKey::key_file(&tmp.path().join("k"))).unwrap();
    let mut a = Vault::open(&dir, &key).unwrap();
    let mut b = Vault::open(&dir, &key).unwrap();
    a.put(NewRecord::customer("one", "r", "d", "s", "1".into()))
        .unwrap();
    b.put(NewRecord::customer("two", "r", "d", "s", "2".into()))
        .unwrap();
    let c = Vault::open(&dir, &key).unwrap();
    assert_eq!(c.list().len(), 2, "b's commit must not drop a's record");
    // A reader whose manifest went stale (the file it knows was superseded and removed) reads
    // the current generation instead of reporting tampering.
    b.set_secret("one", "1b".into()).unwrap();
    assert_eq!(c.get("one").unwrap().secret.expose_secret(), "1b");
}

#[test]
fn legacy_import_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = tmp.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(
        legacy.join("acme.txt"),
        "user=acme_user\ndatabase=acme_db\npassword=a:b\\c\n",
    )
    .unwrap();
    std::fs::write(
        legacy.join("beta"),
        "Username: beta_user\nDB: beta_db\nPassword: p2\n",
    )
    .unwrap();
    let items = costplus_vault::import::read_legacy_dir(&legacy, Some("main")).unwrap();
    assert_eq!(items.len(), 2);
    let (mut v, _) = Vault::init(
        &tmp.path().join("v"),
        &NewKey::key_file(&tmp.path().join("k")),
    )
    .unwrap();
    v.put_many(items.into_iter().map(|l| l.record).collect(), false)
        .unwrap();
    let acme = v.get("acme").unwrap();
    assert_eq!(acme.secret.expose_secret(), "a:b\\c");
    assert_eq!(acme.summary.status, Status::Active);
    let conn =
        costplus_vault::export::Connection::from_record(&acme, "localhost", 5433, "/etc/ca.crt")
            .unwrap();
    let out = tmp.path().join("out");
    let files = costplus_vault::export::write_files(&out, "acme", &conn).unwrap();
    for f in [&files.uri, &files.pgpass, &files.service] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert_eq!(
        std::fs::read_to_string(&files.pgpass).unwrap(),
        "localhost:5433:acme_db:acme_user:a\\:b\\\\c\n"
    );
}

#[test]
fn concurrent_writers_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let key = tmp.path().join("k");
    Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (dir, key) = (dir.clone(), key.clone());
            std::thread::spawn(move || {
                let mut v = Vault::open(&dir, &KeySource::KeyFile(key)).unwrap();
                for i in 0..15 {
                    v.put(NewRecord::customer(
                        &format!("w{w}c{i}"),
                        "r",
                        "d",
                        "s",
                        format!("{w}-{i}").into(),
                    ))
                    .unwrap();
                    // And rewrite a shared record.
                    v.put(NewRecord::service("shared/item", format!("{w}-{i}").into()))
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let v = Vault::open(&dir, &KeySource::KeyFile(key)).unwrap();
    assert_eq!(v.list().len(), 3 * 15 + 1);
    assert_eq!(v.summary("shared/item").unwrap().generation, 45);
    let r = v.verify(None);
    assert!(r.problems.is_empty() && r.leftovers.is_empty(), "{r:?}");
}

#[test]
fn batch_status_change_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let key = tmp.path().join("k");
    let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
    for n in ["a1", "a2", "a3"] {
        v.put(NewRecord::customer(
            n,
            &format!("{n}_user"),
            &format!("{n}_db"),
            "main",
            "pw".into(),
        ))
        .unwrap();
    }
    // One unknown name: nothing changes.
    assert!(
        v.set_status_many(&["a1", "nope", "a3"], Status::Active)
            .is_err()
    );
    let v2 = Vault::open(&dir, &KeySource::KeyFile(key.clone())).unwrap();
    assert!(
        ["a1", "a2", "a3"]
            .iter()
            .all(|n| v2.summary(*n).unwrap().status == Status::Pending)
    );
    let seq = v.seq();
    let done = v
        .set_status_many(&["a1", "a2", "a3"], Status::Active)
        .unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(v.seq(), seq + 1, "one commit for the whole batch");
    let v3 = Vault::open(&dir, &KeySource::KeyFile(key)).unwrap();
    assert!(
        ["a1", "a2", "a3"]
            .iter()
            .all(|n| v3.summary(*n).unwrap().status == Status::Active)
    );
}
