#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Conformance: every fixture file under `tests/fixtures/conformance/` (plus a few byte-level
//! cases built here) is written as the pg_hba.conf of a real PostgreSQL 15 cluster, and every
//! column of `SELECT * FROM pg_hba_file_rules` is compared with what `read_rules` derives.
//! Values are compared as the raw bytes the server sends (`textsend`), arrays in the server's
//! text form.
//!
//! The only tolerated difference is the one the crate documents: where PostgreSQL 15 shows a
//! row of NULLs without a message (a line it refuses but only logs), the view's columns must
//! still match exactly (`view_error()` is NULL) and our `error` must be set.

use std::path::{Path, PathBuf};

use costplus_hba::{AddressSpec, PgVersion, ReadOptions, RuleRow, SystemEnv, Token, read_rules};
use costplus_testsupport::{TestCluster, block_on};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance")
}

/// PostgreSQL's `array_out` for a text[] value.
fn pg_array(items: &[String]) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let b = it.as_bytes();
        let needs = b.is_empty()
            || it.eq_ignore_ascii_case("NULL")
            || b.iter().any(|c| {
                matches!(
                    c,
                    b'"' | b'\\'
                        | b'{'
                        | b'}'
                        | b','
                        | b' '
                        | b'\t'
                        | b'\n'
                        | b'\r'
                        | b'\x0b'
                        | b'\x0c'
                )
            });
        if needs {
            out.push(b'"');
            for &c in b {
                if c == b'"' || c == b'\\' {
                    out.push(b'\\');
                }
                out.push(c);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(b);
        }
    }
    out.push(b'}');
    out
}

type ViewRow = (i32, [Option<Vec<u8>>; 8]);

/// Our row as the view would send it. The crate's string columns are lossy UTF-8; names and
/// host names are taken from the parsed rule's raw bytes so non-UTF-8 input compares exactly.
fn ours(row: &RuleRow) -> ViewRow {
    let t = |s: &Option<String>| s.as_ref().map(|s| s.as_bytes().to_vec());
    let raw_list = |toks: &[Token]| -> Vec<u8> {
        // array_out on raw bytes: same quoting as pg_array
        let items: Vec<String> = toks
            .iter()
            .map(|t| unsafe_free_bytes_to_string(&t.text))
            .collect();
        string_bytes(&pg_array(&items))
    };
    let (database, user_name, address) = match &row.rule {
        Some(rule) => (
            Some(raw_list(&rule.databases)),
            Some(raw_list(&rule.users)),
            match &rule.address {
                Some(AddressSpec::Hostname(h)) => Some(h.clone()),
                _ => t(&row.address()),
            },
        ),
        None => (
            row.database().as_ref().map(|v| pg_array(v)),
            row.user_name().as_ref().map(|v| pg_array(v)),
            t(&row.address()),
        ),
    };
    (
        row.line_number as i32,
        [
            row.conn_type().map(|s| s.as_bytes().to_vec()),
            database,
            user_name,
            address,
            t(&row.netmask()),
            row.auth_method().map(|s| s.as_bytes().to_vec()),
            row.options().as_deref().map(pg_array),
            row.view_error().map(|e| e.as_bytes().to_vec()),
        ],
    )
}

/// Bytes carried through a `String` losslessly: each byte maps to the char U+0000+byte
/// (Latin-1), undone by `string_bytes`.
fn unsafe_free_bytes_to_string(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn string_bytes(b: &[u8]) -> Vec<u8> {
    String::from_utf8(b.to_vec())
        .unwrap()
        .chars()
        .map(|c| c as u32 as u8)
        .collect()
}

fn show(r: &ViewRow) -> String {
    let cols: Vec<String> =
        r.1.iter()
            .map(|c| match c {
                Some(b) => String::from_utf8_lossy(b).into_owned(),
                None => "NULL".into(),
            })
            .collect();
    format!("{} | {}", r.0, cols.join(" | "))
}

fn copy_includes(tc: &TestCluster, from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_includes(tc, &e.path(), &target);
        } else {
            tc.write_server_file(&target, &std::fs::read(e.path()).unwrap());
        }
    }
}

/// Cases that are easier to build as bytes than to keep as files.
fn built_cases() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let tok = |n: usize| "a".repeat(n);
    v.push((
        "token_limits".into(),
        format!(
            "host {} all all trust\nhost {} all all trust\nhost \"{}\" all all trust\nhost \"{}\" all all trust\nhost {}, all all trust\nhost {}, all 10.0.0.0/8 trust\nlocal all all trust\n",
            tok(10238),
            tok(10239),
            tok(10238),
            tok(10239),
            tok(10238),
            tok(10239),
        )
        .into_bytes(),
    ));
    v.push((
        "nul_bytes".into(),
        b"local all all trust\nhost a\0bc all all trust\nhost d all all trust\nlocal x\0\nall all trust\n\0\nlocal y all trust\n".to_vec(),
    ));
    v.push((
        "non_utf8".into(),
        b"local \"\xff\xfe\" \xc3\x28 trust\nhost all all h\xe9.example trust\nlocal all all trust # \xff\n".to_vec(),
    ));
    let mut long = b"local all all trust ".to_vec();
    long.extend(std::iter::repeat_n(b' ', 1 << 20));
    long.extend_from_slice(b"\nlocal after_long_line all trust\n");
    v.push(("one_megabyte_line".into(), long));
    let mut long_comment = b"local all all md5 #".to_vec();
    long_comment.extend(std::iter::repeat_n(b'x', 5000));
    long_comment.extend_from_slice(b"\nlocal z all trust\n");
    v.push(("long_comment".into(), long_comment));
    v
}

#[test]
fn pg15_view_agrees_line_for_line() {
    let tc = TestCluster::start();
    let hba = tc.cluster().hba_file();
    let original = std::fs::read(&hba).unwrap();
    copy_includes(
        &tc,
        &fixtures_dir().join("inc"),
        &hba.parent().unwrap().join("inc"),
    );

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    names.sort();
    for p in names {
        cases.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(&p).unwrap(),
        ));
    }
    cases.extend(built_cases());
    assert!(cases.len() >= 20, "too few fixture files: {}", cases.len());

    let opts = ReadOptions::for_version(PgVersion::new(15).unwrap());
    let (mut total, mut matched, mut hidden) = (0usize, 0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    block_on(async {
        let client = tc.connect().await;
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            version.starts_with("15"),
            "need PostgreSQL 15, got {version}"
        );
        for (name, bytes) in &cases {
            tc.write_server_file(&hba, bytes);
            let view: Vec<ViewRow> = client
                .query(
                    "SELECT line_number, textsend(type), textsend(database::text), \
                     textsend(user_name::text), textsend(address), textsend(netmask), \
                     textsend(auth_method), textsend(options::text), textsend(error) \
                     FROM pg_hba_file_rules",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, i32>(0),
                        std::array::from_fn(|i| r.get::<_, Option<Vec<u8>>>(i + 1)),
                    )
                })
                .collect();
            let set = read_rules(bytes, &hba, &opts, &SystemEnv);
            let mine: Vec<ViewRow> = set.rows.iter().map(ours).collect();
            for i in 0..view.len().max(mine.len()) {
                total += 1;
                match (view.get(i), mine.get(i)) {
                    (Some(v), Some(m)) if v == m => {
                        matched += 1;
                        let row = &set.rows[i];
                        if row.view_hides_error {
                            hidden += 1;
                            // the server refuses the line: we must say why
                            assert!(row.error.is_some() && row.rule.is_none(), "{name}: {row:?}");
                        }
                    }
                    (v, m) => failures.push(format!(
                        "{name} row {i}:\n  view: {}\n  ours: {}",
                        v.map(show).unwrap_or("(none)".into()),
                        m.map(show).unwrap_or("(none)".into())
                    )),
                }
            }
        }
        tc.write_server_file(&hba, &original);
    });
    println!(
        "{matched}/{total} lines match pg_hba_file_rules of PostgreSQL 15 across {} files ({hidden} rows the view shows as NULLs without a message; we report their error)",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total >= 150, "corpus too small: {total} lines");
}

/// An `@file` loop makes PostgreSQL 15's whole view fail (it runs out of file descriptors);
/// we name the loop on the line.
#[test]
fn include_loop_fails_the_view_and_is_an_error_here() {
    let tc = TestCluster::start();
    let hba = tc.cluster().hba_file();
    let dir = hba.parent().unwrap().to_path_buf();
    tc.write_server_file(&dir.join("loop.txt"), b"@loop.txt\n");
    let text = b"local all all trust\nlocal @loop.txt all trust\n";
    tc.write_server_file(&hba, text);
    let err = block_on(async {
        let client = tc.connect().await;
        client
            .query("SELECT * FROM pg_hba_file_rules", &[])
            .await
            .unwrap_err()
    });
    let msg = costplus_pgcluster::pg_message(&err);
    assert!(msg.contains("exceeded maxAllocatedDescs"), "{msg}");
    let set = read_rules(text, &hba, &ReadOptions::default(), &SystemEnv);
    assert!(!set.is_loadable());
    let e = set.rows[1].error.as_deref().unwrap();
    assert!(e.contains("loop"), "{e}");
}
