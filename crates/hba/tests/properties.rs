#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Property tests: reading never panics, printing is byte-identical, and an edited document
//! re-parses to the intended rules while every operator line keeps its bytes and order.

use costplus_hba::{
    AuthMethod, ConnType, Connection, Document, MemEnv, PgVersion, ReadOptions, RuleSpec, explain,
    lint, read_rules,
};
use proptest::prelude::*;

fn env() -> MemEnv {
    MemEnv::new()
        .with_file("/d/f", b"a, b\n\"all\" +g\n".to_vec())
        .with_file("/d/loop", b"@loop\n".to_vec())
        .with_file(
            "/d/inc.conf",
            b"host all all all trust\ninclude inc.conf\n".to_vec(),
        )
        .with_file("/d/conf.d/a.conf", b"local all all peer\n".to_vec())
}

fn exercise(bytes: &[u8], v: u32) {
    let doc = Document::parse(bytes);
    assert_eq!(doc.to_bytes(), bytes);
    let _ = doc.records();
    let _ = doc.customers();
    let set = read_rules(
        bytes,
        "/d/pg_hba.conf",
        &ReadOptions::for_version(PgVersion::new(v).unwrap()),
        &env(),
    );
    let _ = serde_json::to_string(&set.rows).unwrap();
    let _ = lint(&set, &[]);
    let _ = explain(
        &set,
        &Connection {
            conn_type: ConnType::HostSsl,
            database: "a".into(),
            user: "b".into(),
            addr: Some("10.0.0.1".parse().unwrap()),
            hostname: Some("h.example".into()),
            member_of: vec!["g".into()],
            physical_replication: false,
        },
        v >= 16,
    );
}

const PIECES: &[&str] = &[
    "local",
    "host",
    "hostssl",
    "hostnossl",
    "hostgssenc",
    "include",
    "include_dir",
    "include_if_exists",
    "all",
    "sameuser",
    "samerole",
    "replication",
    "\"",
    "\"\"",
    ",",
    "#",
    "\\\n",
    "\\",
    "@f",
    "@loop",
    "@",
    "+g",
    "/^re(",
    "/^ok$",
    "10.0.0.0/8",
    "10.0.0.1",
    "255.0.0.0",
    "::/0",
    "fe80::1%lo",
    ".example.com",
    "samehost",
    "md5",
    "trust",
    "reject",
    "scram-sha-256",
    "cert",
    "ldap",
    "radius",
    "peer",
    "ident",
    "map=x",
    "clientcert=verify-ca",
    "clientcert=1",
    "ldapurl=ldap://h/x??one",
    "ldapbasedn=o",
    "radiusservers=127.0.0.1",
    "radiussecrets=s",
    "inc.conf",
    "conf.d",
    " ",
    "\t",
    "\r",
    "\n",
    "\r\n",
    "\0",
    "\u{e9}",
    "\u{ff}x",
];

fn hba_like() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(PIECES).prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..60,
    )
    .prop_map(|parts| {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&p);
            out.push(b' ');
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..3000), v in 13u32..=18) {
        exercise(&bytes, v);
    }

    #[test]
    fn hba_like_input_never_panics(bytes in hba_like(), v in 13u32..=18) {
        exercise(&bytes, v);
    }
}

/// (customer, database, user, [(cidr, address, netmask)])
type Intended = (String, String, String, Vec<(String, String, String)>);

const BASES: &[&str] = &[
    "local all postgres peer\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
    "# op\nlocal all postgres peer\n\n# reject the rest\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n",
    "local all postgres peer\r\nhost all all 0.0.0.0/0 reject\r\n",
    "",
    "local all all trust \\\n  # continued\nhost all all all reject",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,10}",
        prop::sample::select(vec![
            "all",
            "sameuser",
            "replication",
            "+grp",
            "@file",
            "/re",
            "a b",
            "q\"uote",
            "c,d",
            "h#x",
            "\u{e9}t\u{e9}",
            "x\\y",
            "",
        ])
        .prop_map(String::from),
    ]
}

fn customer() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,12}"
}

fn addr() -> impl Strategy<Value = (String, String, String)> {
    prop::sample::select(vec![
        ("0.0.0.0/0", "0.0.0.0", "0.0.0.0"),
        ("::/0", "::", "::"),
        ("10.1.2.3/16", "10.1.2.3", "255.255.0.0"),
        ("2001:db8::/32", "2001:db8::", "ffff:ffff::"),
        ("192.0.2.7/32", "192.0.2.7", "255.255.255.255"),
    ])
    .prop_map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edits_reparse_to_the_intended_rules(
        base in prop::sample::select(BASES),
        custs in prop::collection::vec((customer(), name(), name(), prop::collection::vec(addr(), 1..3)), 1..6),
        remove_first in any::<bool>(),
    ) {
        let mut doc = Document::parse(base.as_bytes());
        let mut intended: Vec<Intended> = Vec::new();
        let mut ever_added = false;
        for (c, db, user, addrs) in &custs {
            let specs: Vec<RuleSpec> = addrs.iter().map(|(a, _, _)| RuleSpec::hostssl_scram(db, user, a)).collect();
            let before = doc.to_bytes();
            match doc.set_customer_rules(c, &specs) {
                Ok(_) => {
                    ever_added = true;
                    intended.retain(|(k, ..)| k != c);
                    intended.push((c.clone(), db.clone(), user.clone(), addrs.clone()));
                }
                Err(_) => prop_assert_eq!(doc.to_bytes(), before, "a refused edit changes nothing"),
            }
        }
        if remove_first && !intended.is_empty() {
            let (c, ..) = intended.remove(0);
            doc.remove_customer_rules(&c).unwrap();
        }
        let printed = doc.to_bytes();
        let set = read_rules(&printed, "/d/pg_hba.conf", &ReadOptions::default(), &MemEnv::new());
        prop_assert!(set.is_loadable() || base.is_empty(), "{:?}", set.diagnostics);
        let reparsed = Document::parse(&printed);
        // every customer's lines, in one pass and in file order
        let mut each: Vec<u32> = reparsed
            .customers()
            .iter()
            .flat_map(|c| reparsed.customer_lines(c))
            .map(|i| i as u32 + 1)
            .collect();
        each.sort_unstable();
        prop_assert_eq!(reparsed.customer_line_numbers(), each);
        for (c, db, user, addrs) in &intended {
            let lines = reparsed.customer_lines(c);
            prop_assert_eq!(lines.len(), addrs.len());
            for (i, (_, a, m)) in lines.iter().zip(addrs) {
                let row = set.rows.iter().find(|r| r.line_number as usize == i + 1).unwrap();
                let rule = row.rule.as_ref().unwrap();
                prop_assert_eq!(row.conn_type(), Some("hostssl"));
                prop_assert_eq!(row.database(), Some(vec![db.clone()]));
                prop_assert_eq!(row.user_name(), Some(vec![user.clone()]));
                prop_assert_eq!(row.address(), Some(a.clone()));
                prop_assert_eq!(row.netmask(), Some(m.clone()));
                prop_assert_eq!(rule.method, AuthMethod::ScramSha256);
                // names are never read as keywords, groups or files
                for k in ["all", "sameuser", "samerole", "samegroup", "replication"] {
                    prop_assert!(!rule.databases[0].is_keyword(k));
                    prop_assert!(!rule.users[0].is_keyword(k));
                }
                prop_assert!(rule.users[0].quoted || !rule.users[0].text.starts_with(b"+"));
            }
        }
        // the operator's lines: same bytes, same order
        let block: Vec<usize> = {
            let mut v = Vec::new();
            let mut inside = false;
            for i in 0..reparsed.line_count() {
                let l = reparsed.line(i).unwrap();
                if l.starts_with(b"# BEGIN costplus managed block") { inside = true; }
                if inside { v.push(i); }
                if l.starts_with(b"# END costplus managed block") { inside = false; }
            }
            v
        };
        let kept: Vec<u8> = (0..reparsed.line_count())
            .filter(|i| !block.contains(i))
            .flat_map(|i| reparsed.line(i).unwrap().to_vec())
            .collect();
        // the only operator byte an edit may add: a final newline when the block is appended
        let mut base_nl = base.as_bytes().to_vec();
        if !base_nl.is_empty() && !base_nl.ends_with(b"\n") {
            base_nl.extend_from_slice(b"\n");
        }
        prop_assert!(kept == base.as_bytes() || (ever_added && kept == base_nl), "{:?}", String::from_utf8_lossy(&kept));
        // removing everyone gives the operator's file back
        let mut all_gone = Document::parse(&printed);
        for (c, ..) in &intended {
            all_gone.remove_customer_rules(c).unwrap();
        }
        let restored = all_gone.to_bytes();
        prop_assert!(restored == base.as_bytes() || (ever_added && restored == base_nl));
    }
}
