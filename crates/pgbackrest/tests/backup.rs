//! Backups, info, status and drills against real PostgreSQL 15, pgBackRest 2.45 and the S3
//! server of the test harness.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

mod common;

use std::time::{Duration, Instant};

use common::Rig;
use costplus_pgbackrest::conf::{self, PgTarget};
use costplus_pgbackrest::drill::CheckStatus;
use costplus_pgbackrest::info::BackupKind;
use costplus_pgbackrest::secrets::RepoSecrets;
use costplus_pgbackrest::{BackupConfig, BackupType, Error, FailureKind, PgBackRest, status};
use costplus_pgcluster::Cluster;
use costplus_testsupport::block_on;

#[test]
fn full_then_incremental_on_both_repositories_then_a_drill_restores_the_rows() {
    let rig = Rig::new(true);
    rig.sql("postgres", "CREATE DATABASE acme_db");
    rig.sql("postgres", "CREATE DATABASE globex_db");
    rig.sql(
        "acme_db",
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'first ' || g FROM generate_series(1, 100) g",
    );
    rig.sql(
        "globex_db",
        "CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 7) g",
    );
    let mut fulls = Vec::new();
    for repo in [1, 2] {
        let r = rig.backup(BackupType::Full, repo);
        assert!(r.size_bytes > 0 && r.repo_delta_bytes > 0, "{r:?}");
        assert!(r.fingerprint_file.as_ref().unwrap().exists());
        fulls.push(r);
    }
    // Writes between the full and the incremental backups.
    rig.sql(
        "acme_db",
        "INSERT INTO orders SELECT g, 'second ' || g FROM generate_series(101, 150) g;
         DELETE FROM orders WHERE id <= 10",
    );
    let mut incrs = Vec::new();
    for repo in [1, 2] {
        incrs.push(rig.backup(BackupType::Incr, repo));
    }

    // info, cross-checked against what we did.
    let info = rig.pgbr.info(None).unwrap();
    assert_eq!(info.status.code, 0, "{:?}", info.status);
    assert_eq!(info.cipher, "aes-256-cbc");
    for repo in [1u32, 2] {
        let i = (repo - 1) as usize;
        assert_eq!(info.repo_status(repo).unwrap().code, 0);
        let sets: Vec<_> = info.backups_in(repo).collect();
        assert_eq!(sets.len(), 2, "repo{repo}: {sets:?}");
        assert_eq!(sets[0].kind, BackupKind::Full);
        assert_eq!(sets[0].label, fulls[i].label);
        assert_eq!(sets[1].kind, BackupKind::Incr);
        assert_eq!(sets[1].label, incrs[i].label);
        assert_eq!(sets[1].prior.as_deref(), Some(fulls[i].label.as_str()));
        assert!(sets[1].label.starts_with(&fulls[i].label));
        assert!(sets[0].timestamp.stop <= sets[1].timestamp.start);
        assert!(sets[1].info.repository.delta < sets[0].info.repository.delta);
        let archive = info.archive_in(repo).unwrap();
        let (min, max) = (archive.min.clone().unwrap(), archive.max.clone().unwrap());
        for b in &sets {
            let a = b.archive.as_ref().unwrap();
            let (start, stop) = (a.start.clone().unwrap(), a.stop.clone().unwrap());
            assert!(min <= start && start <= stop && stop <= max, "{b:?}");
        }
    }
    // The set detail lists the databases.
    let detail = rig.pgbr.info_set(1, &incrs[0].label).unwrap();
    let dbs: Vec<String> = detail.backup[0]
        .database_ref
        .clone()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(dbs.contains(&"acme_db".to_string()) && dbs.contains(&"globex_db".to_string()));

    // verify finds nothing wrong.
    rig.pgbr.verify(Some(1)).unwrap();

    // Status: both repositories fresh, sizes known, no WAL gaps.
    let st = block_on(async {
        let c = rig.pg.connect().await;
        status::gather(&rig.pgbr, &rig.cfg, &rig.repos(), Some(&c))
            .await
            .unwrap()
    });
    assert!(st.ok, "{:#?}", st.problems);
    for r in &st.repos {
        assert_eq!(
            r.last_full.as_ref().unwrap().label,
            fulls[(r.repo - 1) as usize].label
        );
        assert_eq!(
            r.last_incr.as_ref().unwrap().label,
            incrs[(r.repo - 1) as usize].label
        );
        assert!(r.last_diff.is_none());
        assert!(!r.stale && r.newest_age_hours.unwrap() < 1.0);
        assert!(r.size_bytes.unwrap() > 0 && r.wal_gaps.is_empty(), "{r:?}");
    }

    // The drill from the offsite repository restores exactly the rows written.
    let mut opts = rig.drill_options(2);
    opts.keep_scratch = true;
    let report = rig.drill(&rig.pgbr, &opts);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.set.as_deref(), Some(incrs[1].label.as_str()));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "backup_set",
            "restore",
            "start",
            "databases",
            "fingerprint",
            "amcheck",
            "cleanup"
        ]
    );
    assert!(
        report.checks.iter().all(|c| c.status == CheckStatus::Pass),
        "{report:#?}"
    );
    let t = report.timings;
    assert!(t.restore_seconds > 0.0 && t.start_seconds > 0.0);
    assert!((t.rto_seconds - (t.restore_seconds + t.start_seconds)).abs() < 0.01);
    assert!(t.total_seconds >= t.rto_seconds + t.checks_seconds - 0.01);
    assert!(report.history_file.as_ref().unwrap().exists());
    assert_eq!(
        costplus_pgbackrest::drill::history(&rig.cfg.drill_history_dir())
            .unwrap()
            .len(),
        1
    );
    // Look at the kept scratch cluster ourselves: the exact rows.
    let scratch = Cluster::open(&report.scratch).unwrap();
    scratch.start().unwrap();
    let (n, sum, firsts): (i64, i64, i64) = block_on(async {
        let c = scratch.connect_socket("acme_db").await.unwrap();
        let r = c
            .query_one(
                "SELECT count(*), sum(id), count(*) FILTER (WHERE note LIKE 'first %') FROM orders",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get::<_, Option<i64>>(1).unwrap(), r.get(2))
    });
    scratch.destroy().unwrap();
    assert_eq!((n, sum, firsts), (140, (11..=150).sum::<i64>(), 90));
}

#[test]
fn a_backup_on_an_unconfigured_stanza_is_a_typed_error() {
    let rig = Rig::new(false);
    // A stanza pgbackrest.conf does not know at all.
    let other = BackupConfig {
        stanza: "nowhere".into(),
        ..rig.cfg.clone()
    };
    let pgbr = PgBackRest::new(&other, rig.pg.cluster().os_user().clone());
    match pgbr.backup(BackupType::Full, 1) {
        Err(Error::PgBackRest(f)) => {
            assert_eq!(f.kind, FailureKind::StanzaMissing, "{f}");
            assert!(f.to_string().contains("costplus-backup setup"), "{f}");
        }
        other => panic!("expected a typed failure, got {other:?}"),
    }
    // A stanza in the configuration whose stanza-create never ran.
    let fresh = BackupConfig {
        stanza: "fresh".into(),
        config_file: rig.path("fresh.conf"),
        ..rig.cfg.clone()
    };
    conf::configure(
        &fresh,
        None,
        &PgTarget::of_cluster(rig.pg.cluster()),
        &costplus_pgbackrest::secrets::FileSecrets,
    )
    .unwrap();
    let pgbr = PgBackRest::new(&fresh, rig.pg.cluster().os_user().clone());
    match pgbr.backup(BackupType::Full, 1) {
        Err(Error::PgBackRest(f)) => {
            assert_eq!(
                (f.kind, f.code),
                (FailureKind::StanzaMissing, Some(55)),
                "{f}"
            )
        }
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

fn failing_drill_reason(rig: &Rig, pgbr: &PgBackRest) -> (String, String) {
    let report = rig.drill(pgbr, &rig.drill_options(1));
    assert!(!report.ok, "the drill passed: {report:#?}");
    let failed = report.checks.iter().find(|c| !c.ok).unwrap();
    // Nothing is left behind, whatever failed.
    assert!(
        !report.scratch.exists(),
        "scratch left: {}",
        report.scratch.display()
    );
    (failed.name.clone(), report.reason.unwrap())
}

#[test]
fn a_wrong_passphrase_fails_the_drill_with_a_clear_reason() {
    let rig = Rig::new(false);
    rig.sql("postgres", "CREATE TABLE t AS SELECT 1 AS x");
    rig.backup(BackupType::Full, 1);
    // The same configuration with another repo1 passphrase.
    let bad = BackupConfig {
        config_file: rig.path("wrong.conf"),
        ..rig.cfg.clone()
    };
    let secrets = RepoSecrets {
        repo1_cipher_pass: costplus_pgbackrest::secrets::generate_passphrase().unwrap(),
        repo2_cipher_pass: None,
        s3_key: None,
        s3_key_secret: None,
    };
    let text = conf::render(
        &bad,
        None,
        &PgTarget::of_cluster(rig.pg.cluster()),
        &secrets,
    )
    .unwrap();
    conf::install(&bad, &text, rig.pg.cluster().os_user()).unwrap();
    let pgbr = rig.pgbr.clone().with_config_file(&bad.config_file);
    let (check, reason) = failing_drill_reason(&rig, &pgbr);
    assert_eq!(check, "backup_set", "{reason}");
    assert!(reason.contains("wrong cipher passphrase"), "{reason}");
    // With the right passphrase the same backup drills fine.
    let good = rig.drill(&rig.pgbr, &rig.drill_options(1));
    assert!(good.ok, "{good:#?}");
}

#[test]
fn a_corrupted_repository_file_fails_the_drill_with_a_clear_reason() {
    let rig = Rig::new(false);
    rig.sql(
        "postgres",
        "CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    );
    let full = rig.backup(BackupType::Full, 1);
    // Damage the biggest data file of the backup set (encrypted and compressed on disk).
    let set_dir = rig.cfg.repo1_path.join("backup/main").join(&full.label);
    let mut files = common::files_under(&set_dir.join("pg_data/base"));
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = files.last().unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(victim, &bytes).unwrap();
    let (check, reason) = failing_drill_reason(&rig, &rig.pgbr);
    assert_eq!(check, "restore", "{reason}");
    assert!(reason.contains("restore failed"), "{reason}");
    assert!(reason.contains("next step"), "{reason}");
}

#[test]
fn a_missing_wal_segment_fails_the_drill_with_a_clear_reason() {
    let rig = Rig::new(false);
    rig.sql("postgres", "CREATE TABLE t AS SELECT 1 AS x");
    let full = rig.backup(BackupType::Full, 1);
    let info = rig.pgbr.info(Some(1)).unwrap();
    let b = info.backup.iter().find(|b| b.label == full.label).unwrap();
    let start = b.archive.as_ref().unwrap().start.clone().unwrap();
    // Remove the first segment the backup needs from the archive.
    let archive = rig.cfg.repo1_path.join("archive/main");
    let removed: Vec<_> = common::files_under(&archive)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{start}-"))
        })
        .collect();
    assert_eq!(
        removed.len(),
        1,
        "{start} not found under {}",
        archive.display()
    );
    std::fs::remove_file(&removed[0]).unwrap();
    let (check, reason) = failing_drill_reason(&rig, &rig.pgbr);
    assert_eq!(check, "start", "{reason}");
    assert!(reason.contains("did not start"), "{reason}");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn an_offsite_outage_does_not_stop_postgres_shows_in_status_and_catches_up() {
    let mut rig = Rig::new(true);
    rig.backup(BackupType::Full, 1);
    rig.backup(BackupType::Full, 2);
    let port = rig.s3.as_ref().unwrap().port();
    rig.s3.as_mut().unwrap().pause();

    // PostgreSQL keeps taking writes and switching WAL while repo2 is unreachable.
    rig.sql("postgres", "CREATE TABLE during (x int)");
    let t = Instant::now();
    for i in 0..4 {
        rig.sql(
            "postgres",
            &format!("INSERT INTO during VALUES ({i}); SELECT pg_switch_wal()"),
        );
    }
    assert!(t.elapsed() < Duration::from_secs(10), "writes stalled");
    assert_eq!(rig.count("postgres", "SELECT count(*) FROM during"), 4);

    // Status reports the outage (repo2 unreachable and archiving failing), repo1 keeps up.
    let quick = rig.pgbr.clone().with_io_timeout(3);
    let deadline = Instant::now() + Duration::from_secs(90);
    let during = loop {
        let st = block_on(async {
            let c = rig.pg.connect().await;
            status::gather(&quick, &rig.cfg, &rig.repos(), Some(&c))
                .await
                .unwrap()
        });
        let archiving_noticed =
            st.archiver.as_ref().unwrap().failing || !st.async_errors.is_empty();
        if archiving_noticed && st.repos[1].status_code != 0 {
            break st;
        }
        assert!(Instant::now() < deadline, "outage not reported: {st:#?}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(!during.ok);
    assert!(
        during.problems.iter().any(|p| p.starts_with("repo2")),
        "{:#?}",
        during.problems
    );
    let repo1_max = during.repos[0].archive_max.clone().unwrap();

    // The offsite returns: archiving catches up on repo2.
    rig.s3.as_mut().unwrap().resume(port);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        rig.switch_wal();
        let st = block_on(async {
            let c = rig.pg.connect().await;
            status::gather(&quick, &rig.cfg, &rig.repos(), Some(&c))
                .await
                .unwrap()
        });
        let repo2_max = st.repos[1].archive_max.clone().unwrap_or_default();
        if st.ok && repo2_max >= repo1_max && st.repos[1].wal_gaps.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "repo2 did not catch up: {st:#?}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_drill_to_a_target_time_restores_that_moment() {
    let rig = Rig::new(false);
    rig.sql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 10) AS x",
    );
    rig.backup(BackupType::Full, 1);
    std::thread::sleep(Duration::from_millis(1100));
    rig.sql("postgres", "INSERT INTO t SELECT generate_series(11, 25)");
    let target: String = block_on(async {
        let c = rig.pg.connect().await;
        c.query_one("SELECT now()::text", &[]).await.unwrap().get(0)
    });
    std::thread::sleep(Duration::from_millis(1100));
    rig.sql("postgres", "DELETE FROM t");
    rig.pgbr.check().unwrap();
    let mut opts = rig.drill_options(1);
    opts.target = Some(target.clone());
    opts.keep_scratch = true;
    let report = rig.drill(&rig.pgbr, &opts);
    assert!(report.ok, "{report:#?}");
    let fp = report
        .checks
        .iter()
        .find(|c| c.name == "fingerprint")
        .unwrap();
    assert_eq!(fp.status, CheckStatus::Skip, "{report:#?}");
    // The rows of that moment: inserted after the backup, deleted after the target.
    let scratch = Cluster::open(&report.scratch).unwrap();
    scratch.start().unwrap();
    let n: i64 = block_on(async {
        let c = scratch.connect_socket("postgres").await.unwrap();
        c.query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0)
    });
    scratch.destroy().unwrap();
    assert_eq!(n, 25, "as of {target}");
}
