//! Any bytes: the document prints back identically; reading, linting and explaining never
//! panic, for every supported version.
#![no_main]

use costplus_hba::{
    ConnType, Connection, Document, MemEnv, PgVersion, ReadOptions, explain, lint, read_rules,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let doc = Document::parse(data);
    assert_eq!(doc.to_bytes(), data);
    let _ = doc.records();
    let env = MemEnv::new()
        .with_file("/d/f", b"a, b\n\"all\" +g\n".to_vec())
        .with_file("/d/loop", b"@loop\n".to_vec())
        .with_file(
            "/d/inc.conf",
            b"host all all all trust\ninclude inc.conf\n".to_vec(),
        );
    let v = 13 + (data.first().copied().unwrap_or(0) % 6) as u32;
    let set = read_rules(
        data,
        "/d/pg_hba.conf",
        &ReadOptions::for_version(PgVersion::new(v).unwrap()),
        &env,
    );
    let _ = lint(&set, &[]);
    let _ = explain(
        &set,
        &Connection {
            conn_type: ConnType::HostSsl,
            database: "a".into(),
            user: "b".into(),
            addr: Some("10.0.0.1".parse().unwrap()),
            hostname: None,
            member_of: vec!["g".into()],
            physical_replication: false,
        },
        v >= 16,
    );
});
