//! Offsite verification of a REAL pgBackRest repo2 on the real S3 test server: a cluster
//! archiving WAL through pgBackRest to repo1 (local) and repo2 (S3, aes-256-cbc), a full and an
//! incremental backup to repo2, then `verify_repo` before and after objects are deleted or
//! altered.
#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use costplus_s3::verify::{ProblemKind, VerifyOptions, VerifyReport};
use costplus_s3::{ClientOptions, Credentials, Offsite, OffsiteConfig, Provider};
use costplus_testsupport::{TestCluster, TestS3, block_on, random_string, require_tool};

const STANZA: &str = "t";
const BUCKET: &str = "pgbr";

/// pgBackRest set up for one test cluster: its config file and directories.
struct PgBackRest<'a> {
    cluster: &'a TestCluster,
    conf: PathBuf,
}

impl PgBackRest<'_> {
    /// Run `pgbackrest --config=... --stanza=t ARGS` as the server's OS user.
    fn run(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(require_tool("pgbackrest"));
        cmd.arg(format!("--config={}", self.conf.display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args);
        self.cluster.cluster().as_server_user(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "pgbackrest {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn server_dir(path: &Path, cluster: &TestCluster) {
    std::fs::create_dir_all(path).unwrap();
    let u = cluster.cluster().os_user();
    costplus_fs::chown(path, u.uid, u.gid).unwrap();
}

fn setup() -> (TestS3, TestCluster, tempfile::TempDir, PathBuf) {
    require_tool("pgbackrest");
    let s3 = TestS3::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("pgbackrest.conf");
    let cluster = TestCluster::builder()
        .setting("archive_mode", "on")
        .setting(
            "archive_command",
            &format!(
                "'pgbackrest --config={} --stanza={STANZA} archive-push %p'",
                conf.display()
            ),
        )
        .start();
    for d in ["repo1", "log", "lock"] {
        server_dir(&dir.path().join(d), &cluster);
    }
    let c = cluster.cluster();
    let text = format!(
        "[global]\n\
         repo1-path={d}/repo1\n\
         repo2-type=s3\n\
         repo2-path=/pgbackrest\n\
         repo2-s3-bucket={BUCKET}\n\
         repo2-s3-endpoint=localhost\n\
         repo2-storage-port={port}\n\
         repo2-storage-ca-file={ca}\n\
         repo2-s3-uri-style=path\n\
         repo2-s3-region=us-east-1\n\
         repo2-s3-key={key}\n\
         repo2-s3-key-secret={secret}\n\
         repo2-cipher-type=aes-256-cbc\n\
         repo2-cipher-pass={pass}\n\
         log-path={d}/log\n\
         lock-path={d}/lock\n\
         log-level-console=warn\n\
         start-fast=y\n\
         archive-timeout=60\n\
         \n[{STANZA}]\n\
         pg1-path={data}\n\
         pg1-port={pgport}\n\
         pg1-socket-path={socket}\n\
         pg1-user={su}\n",
        d = dir.path().display(),
        port = s3.port(),
        ca = s3.ca_file().display(),
        key = s3.access_key(),
        secret = s3.secret_key(),
        pass = random_string(48),
        data = c.data_dir().display(),
        pgport = c.port(),
        socket = c.socket_dir().display(),
        su = c.superuser(),
    );
    cluster.write_server_file(&conf, text.as_bytes());
    (s3, cluster, dir, conf)
}

fn offsite(s3: &TestS3) -> Offsite {
    let cfg = OffsiteConfig {
        provider: Provider::S3Compatible,
        endpoint: Some(s3.endpoint()),
        ca_file: Some(s3.ca_file()),
        ..OffsiteConfig::wasabi("us-east-1", BUCKET)
    };
    let creds = Credentials::new(s3.access_key(), s3.secret_key().to_string().into());
    Offsite::new(&cfg, &creds, ClientOptions::default()).unwrap()
}

fn verify(c: &Offsite, info: &[costplus_s3::pgbackrest_info::Stanza]) -> VerifyReport {
    let opts = VerifyOptions {
        sample: usize::MAX,
        ..VerifyOptions::default()
    };
    block_on(c.verify_repo("/pgbackrest", Some(info), &opts)).unwrap()
}

fn has(report: &VerifyReport, kind: ProblemKind, key: &str) -> bool {
    report
        .problems
        .iter()
        .any(|p| p.kind == kind && p.key == key)
}

#[test]
fn verification_of_a_real_repo2() {
    let (s3, cluster, _dir, conf) = setup();
    let pgbr = PgBackRest {
        cluster: &cluster,
        conf,
    };
    pgbr.run(&["stanza-create"]);
    pgbr.run(&["check"]);
    pgbr.run(&["backup", "--repo=2", "--type=full"]);
    block_on(async {
        let db = cluster.connect().await;
        db.batch_execute(
            "CREATE TABLE t AS SELECT g AS x, md5(g::text) AS y FROM generate_series(1, 20000) g;
             SELECT pg_switch_wal();",
        )
        .await
        .unwrap();
    });
    pgbr.run(&["backup", "--repo=2", "--type=incr"]);
    pgbr.run(&["check"]);
    let info_json = pgbr.run(&["info", "--output=json"]);
    let info = costplus_s3::pgbackrest_info::parse(&info_json).unwrap();
    assert_eq!(info[0].backups_in(2).count(), 2, "{info_json}");

    let c = offsite(&s3);
    let report = verify(&c, &info);
    assert!(report.ok, "{:#?}", report.problems);
    assert!(report.compared_with_pgbackrest);
    let stanza = &report.stanzas[0];
    assert_eq!(stanza.name, STANZA);
    assert_eq!(stanza.backups.len(), 2);
    assert!(
        stanza
            .backups
            .iter()
            .all(|b| b.expected_bytes == Some(b.bytes))
    );
    assert!(stanza.wal[0].segments >= 3, "{:?}", stanza.wal);
    assert_eq!(report.sampled, report.objects, "every object sampled");
    // The listing alone (no pgBackRest output) passes too.
    let alone = block_on(c.verify_repo("/pgbackrest", None, &VerifyOptions::default())).unwrap();
    assert!(alone.ok, "{:#?}", alone.problems);

    let listing = block_on(c.list("pgbackrest/")).unwrap();
    let p = "pgbackrest/";

    // 1. A WAL segment in the middle of the range is deleted: the gap names it.
    let wal: Vec<&str> = listing
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.starts_with(&format!("{p}archive/{STANZA}/")) && k.ends_with(".gz"))
        .collect();
    assert!(wal.len() >= 3, "{wal:?}");
    let victim = wal[1].to_string();
    let saved = block_on(c.get_bytes(&victim)).unwrap();
    block_on(c.delete(&victim)).unwrap();
    let r = verify(&c, &info);
    assert!(!r.ok);
    let seg = victim.rsplit('/').next().unwrap()[..24].to_string();
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::WalGap
            && p.key.ends_with(&seg)
            && victim.starts_with(&p.key)),
        "{:#?}",
        r.problems
    );
    block_on(c.put_bytes(&victim, saved)).unwrap();
    assert!(verify(&c, &info).ok);

    // 2. A data file of the full backup is altered (replaced by plaintext): named as not
    //    encrypted and of the wrong size; the backup's byte count no longer matches.
    let full = &stanza.backups[0].label;
    let data_key = listing
        .iter()
        .map(|o| o.key.clone())
        .find(|k| k.contains(&format!("/{full}/pg_data/")) && k.ends_with("PG_VERSION.gz"))
        .unwrap();
    let saved = block_on(c.get_bytes(&data_key)).unwrap();
    block_on(c.put_bytes(&data_key, b"15\n".to_vec())).unwrap();
    let r = verify(&c, &info);
    assert!(!r.ok);
    assert!(
        has(&r, ProblemKind::NotEncrypted, &data_key),
        "{:#?}",
        r.problems
    );
    assert!(
        has(&r, ProblemKind::BadCipherLength, &data_key),
        "{:#?}",
        r.problems
    );
    assert!(
        has(
            &r,
            ProblemKind::SizeMismatch,
            &format!("{p}backup/{STANZA}/{full}/")
        ),
        "{:#?}",
        r.problems
    );
    block_on(c.put_bytes(&data_key, saved)).unwrap();
    assert!(verify(&c, &info).ok);

    // 3. A data file is deleted: the backup's bytes differ from pgBackRest's record.
    let saved = block_on(c.get_bytes(&data_key)).unwrap();
    block_on(c.delete(&data_key)).unwrap();
    let r = verify(&c, &info);
    assert!(
        has(
            &r,
            ProblemKind::SizeMismatch,
            &format!("{p}backup/{STANZA}/{full}/")
        ),
        "{:#?}",
        r.problems
    );
    block_on(c.put_bytes(&data_key, saved)).unwrap();

    // 4. backup.info.copy and a manifest are deleted: both named as missing.
    let copy = format!("{p}backup/{STANZA}/backup.info.copy");
    let manifest = format!("{p}backup/{STANZA}/{full}/backup.manifest");
    block_on(c.delete(&copy)).unwrap();
    block_on(c.delete(&manifest)).unwrap();
    let r = verify(&c, &info);
    assert!(has(&r, ProblemKind::Missing, &copy), "{:#?}", r.problems);
    assert!(
        has(&r, ProblemKind::Missing, &manifest),
        "{:#?}",
        r.problems
    );
}
