#![allow(clippy::unwrap_used)]
use costplus_testsupport::{TestCluster, block_on};
use costplus_tls::probe::{ProbeOptions, probe};
#[test]
fn smoke() {
    let c = TestCluster::start();
    let mut o = ProbeOptions::new("127.0.0.1", c.port());
    o.ca = Some(std::fs::read(c.ca_file()).unwrap());
    o.plaintext_login = Some(("postgres".into(), "postgres".into()));
    let t = std::time::Instant::now();
    let r = block_on(probe(&o)).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    println!("took {:?}", t.elapsed());
}
