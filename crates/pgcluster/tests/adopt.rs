//! `Cluster::adopt` on a copy of a real data directory (as a restore would leave it).

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use costplus_pgcluster::{AdoptOptions, Cluster, ClusterOptions, Status};

#[test]
fn adopted_copy_runs_on_its_own_port_and_socket_only() {
    let parent = tempfile::Builder::new()
        .prefix("costplus-adopt-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = Cluster::create(ClusterOptions::new(&parent.path().join("src"))).unwrap();
    source.start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = source.connect_socket("postgres").await.unwrap();
        c.batch_execute("CREATE TABLE marker AS SELECT 42 AS answer; CHECKPOINT")
            .await
            .unwrap();
    });
    source.stop().unwrap();

    // Copy the data directory as a restore would, keeping owners.
    let root = parent.path().join("copy");
    std::fs::create_dir(&root).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(source.data_dir())
        .arg(root.join("data"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut opts = AdoptOptions::new(&root);
    opts.settings = vec![("archive_mode".into(), "off".into())];
    let adopted = Cluster::adopt(opts).unwrap();
    assert_ne!(adopted.port(), source.port());
    source.start().unwrap();
    adopted.start().unwrap();
    assert!(matches!(adopted.status().unwrap(), Status::Running { .. }));
    rt.block_on(async {
        let c = adopted.connect_socket("postgres").await.unwrap();
        let row = c.query_one("SELECT answer FROM marker", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
        let port: String = c.query_one("SHOW port", &[]).await.unwrap().get(0);
        assert_eq!(port, adopted.port().to_string());
    });
    // Reopened from its manifest like any cluster.
    let again = Cluster::open(&root).unwrap();
    assert_eq!(again.port(), adopted.port());
    // Adopting twice replaces the block instead of stacking them.
    adopted.stop().unwrap();
    Cluster::adopt(AdoptOptions::new(&root)).unwrap();
    let auto = std::fs::read_to_string(root.join("data/postgresql.auto.conf")).unwrap();
    assert_eq!(auto.matches("# costplus adopt: begin").count(), 1, "{auto}");
    source.stop().unwrap();
    // Nothing to adopt: a clear error.
    let e = Cluster::adopt(AdoptOptions::new(&parent.path().join("none")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no data directory to adopt"), "{e}");
}
