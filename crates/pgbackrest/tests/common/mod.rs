//! A rig: a real PostgreSQL cluster archiving through a real pgBackRest to an encrypted local
//! repo1 and, optionally, an encrypted repo2 on a real S3 server.

#![allow(clippy::unwrap_used, dead_code)] // test helpers; not every test uses every helper

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use costplus_pgbackrest::conf::{self, PgTarget};
use costplus_pgbackrest::secrets::{FileSecrets, ensure_passphrase_file};
use costplus_pgbackrest::{BackupConfig, BackupType, PgBackRest, archiving, backup};
use costplus_s3::{OffsiteConfig, Provider};
use costplus_testsupport::{TestCluster, TestS3, block_on, require_tool};

pub const BUCKET: &str = "costplus-backups";

pub struct Rig {
    pub pg: TestCluster,
    pub s3: Option<TestS3>,
    pub dir: tempfile::TempDir,
    pub cfg: BackupConfig,
    pub offsite: Option<OffsiteConfig>,
    pub pgbr: PgBackRest,
}

impl Rig {
    pub fn new(with_s3: bool) -> Self {
        require_tool("pgbackrest");
        let pg = TestCluster::start();
        let dir = tempfile::Builder::new()
            .prefix("costplus-pgbr-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        let cfg = BackupConfig {
            config_file: d.join("pgbackrest.conf"),
            repo1_path: d.join("repo1"),
            spool_path: d.join("spool"),
            log_path: d.join("log"),
            lock_path: d.join("lock"),
            state_path: d.join("state"),
            repo1_cipher_pass_file: Some(d.join("repo1.pass")),
            repo2_cipher_pass_file: Some(d.join("repo2.pass")),
            archive_timeout_seconds: 30,
            ..BackupConfig::default()
        };
        ensure_passphrase_file(&d.join("repo1.pass")).unwrap();
        ensure_passphrase_file(&d.join("repo2.pass")).unwrap();
        let (s3, offsite) = if with_s3 {
            let s3 = TestS3::start();
            s3.create_bucket(BUCKET);
            let creds = d.join("s3.credentials");
            costplus_fs::write_atomic(
                &creds,
                format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                    s3.access_key(),
                    s3.secret_key()
                )
                .as_bytes(),
                &costplus_fs::WriteOptions::private(),
            )
            .unwrap();
            let off = OffsiteConfig {
                provider: Provider::S3Compatible,
                endpoint: Some(s3.endpoint()),
                ca_file: Some(s3.ca_file()),
                credentials_file: Some(creds),
                ..OffsiteConfig::wasabi("us-east-1", BUCKET)
            };
            (Some(s3), Some(off))
        } else {
            (None, None)
        };
        let target = PgTarget::of_cluster(pg.cluster());
        conf::configure(&cfg, offsite.as_ref(), &target, &FileSecrets).unwrap();
        let pgbr = PgBackRest::new(&cfg, pg.cluster().os_user().clone());
        let rig = Rig {
            pg,
            s3,
            dir,
            cfg,
            offsite,
            pgbr,
        };
        // The PostgreSQL side: archive_mode needs a restart.
        let report = block_on(async {
            let c = rig.pg.connect().await;
            archiving::apply(&c, &rig.cfg).await.unwrap()
        });
        assert!(report.restart_needed, "{report:?}");
        assert!(
            report.pending_restart.contains(&"archive_mode".to_string()),
            "{report:?}"
        );
        rig.pg.cluster().stop().unwrap();
        rig.pg.cluster().start().unwrap();
        let again = block_on(async {
            let c = rig.pg.connect().await;
            archiving::plan(&c, &rig.cfg).await.unwrap()
        });
        assert!(
            again.changes.is_empty() && !again.restart_needed,
            "{again:?}"
        );
        rig.pgbr.stanza_create().unwrap();
        rig.pgbr.check().unwrap();
        rig
    }

    pub fn repos(&self) -> Vec<u32> {
        conf::repos(self.offsite.as_ref())
    }

    pub fn sql(&self, db: &str, sql: &str) {
        block_on(async {
            let c = self.pg.connect_db(db).await;
            c.batch_execute(sql).await.unwrap();
        })
    }

    pub fn count(&self, db: &str, sql: &str) -> i64 {
        block_on(async {
            let c = self.pg.connect_db(db).await;
            c.query_one(sql, &[]).await.unwrap().get(0)
        })
    }

    pub fn backup(&self, kind: BackupType, repo: u32) -> backup::BackupRecord {
        block_on(async {
            let live = self.pg.connect_options("postgres");
            backup::run(&self.pgbr, &self.cfg, Some(&live), kind, repo)
                .await
                .unwrap()
        })
    }

    pub fn drill_options(&self, repo: u32) -> costplus_pgbackrest::drill::DrillOptions {
        costplus_pgbackrest::drill::DrillOptions::from_config(&self.cfg, repo)
    }

    pub fn drill(
        &self,
        pgbr: &PgBackRest,
        opts: &costplus_pgbackrest::drill::DrillOptions,
    ) -> costplus_pgbackrest::drill::DrillReport {
        block_on(costplus_pgbackrest::drill::run(pgbr, opts)).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Switch WAL and wait until the switched segment is archived (all repositories reachable).
    pub fn switch_wal(&self) {
        self.sql("postgres", "SELECT pg_switch_wal()");
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
