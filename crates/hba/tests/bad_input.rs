#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too
//! Bad input: every case gives a precise error with file and line, never a panic or a hang,
//! and never a written file.

use std::path::Path;
use std::time::{Duration, Instant};

use costplus_hba::{
    ApplyOptions, Document, EditError, Error, MemEnv, PgVersion, ReadOptions, RuleSet, RuleSpec,
    Severity, SystemEnv, read_rules, read_rules_file,
};

const FILE: &str = "/srv/pg/pg_hba.conf";

fn read(bytes: &[u8], v: u32, env: &MemEnv) -> RuleSet {
    read_rules(
        bytes,
        FILE,
        &ReadOptions::for_version(PgVersion::new(v).unwrap()),
        env,
    )
}

/// The error diagnostics as (file, line, message).
fn errors(set: &RuleSet) -> Vec<(String, Option<u32>, String)> {
    set.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.file.display().to_string(), d.line, d.message.clone()))
        .collect()
}

fn warnings(set: &RuleSet) -> Vec<(Option<u32>, String)> {
    set.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| (d.line, d.message.clone()))
        .collect()
}

#[test]
fn non_utf8_bytes_are_data() {
    let input = b"local \xff\xfe all trust\nhost all all h\xe9.example md5\nlocal all all trust #\xc3\x28\n";
    let set = read(input, 15, &MemEnv::new());
    assert!(errors(&set).is_empty(), "{:?}", set.diagnostics);
    assert_eq!(set.rows.len(), 3);
    assert_eq!(set.rows[0].database().unwrap()[0], "\u{fffd}\u{fffd}");
    let rule = set.rows[1].rule.as_ref().unwrap();
    assert_eq!(
        rule.address,
        Some(costplus_hba::AddressSpec::Hostname(
            b"h\xe9.example".to_vec()
        ))
    );
    assert_eq!(Document::parse(input).to_bytes(), input);
}

#[test]
fn nul_bytes_are_reported_and_block_edits() {
    let input =
        b"local all all trust\nhost a\0bc all all trust\nhost d all all trust\nlocal x all trust\n";
    let set = read(input, 15, &MemEnv::new());
    // PostgreSQL glues "host a" and the next line: line 2 is refused, the numbering shifts.
    assert_eq!(
        errors(&set),
        vec![
            (
                FILE.to_string(),
                Some(2),
                "NUL byte: PostgreSQL drops the rest of this line and joins the next line to it"
                    .to_string()
            ),
            (
                FILE.to_string(),
                Some(2),
                "invalid authentication method \"all\"".to_string()
            ),
        ]
    );
    assert_eq!(set.rows.last().unwrap().line_number, 3);
    let mut doc = Document::parse(input);
    assert_eq!(
        doc.set_customer_rules("a", &[RuleSpec::hostssl_scram("a", "a", "::/0")]),
        Err(EditError::NulByte { line: 2 })
    );
    assert_eq!(doc.to_bytes(), input);
}

#[test]
fn one_megabyte_lines() {
    let mut input = b"local all all trust\nhost ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1 << 20));
    input.extend_from_slice(b" all all trust\nlocal y all trust\n");
    let t = Instant::now();
    let set = read(&input, 15, &MemEnv::new());
    assert_eq!(
        errors(&set),
        vec![(
            FILE.to_string(),
            Some(2),
            "authentication file token too long".to_string()
        )]
    );
    assert_eq!(set.rows[2].line_number, 3);
    // PostgreSQL 17+ has no token limit.
    let set = read(&input, 17, &MemEnv::new());
    assert!(errors(&set).is_empty(), "{:?}", errors(&set));
    assert_eq!(set.rows[1].database().unwrap()[0].len(), 1 << 20);
    // PostgreSQL 13: 8192-byte lines; the rest of a long line is read as further lines.
    let set = read(&input, 13, &MemEnv::new());
    assert_eq!(
        errors(&set)[0],
        (
            FILE.to_string(),
            Some(2),
            "authentication file line too long".to_string()
        )
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_million_lines() {
    let mut input = Vec::with_capacity(40 << 20);
    for i in 0..1_000_000u32 {
        input
            .extend_from_slice(format!("hostssl db{i} u{i} 10.0.0.0/8 scram-sha-256\n").as_bytes());
    }
    let t = Instant::now();
    let set = read(&input, 15, &MemEnv::new());
    assert_eq!(set.rows.len(), 1_000_000);
    assert_eq!(set.rows[999_999].line_number, 1_000_000);
    assert!(errors(&set).is_empty());
    assert_eq!(Document::parse(&input).to_bytes(), input);
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[test]
fn unterminated_quotes() {
    let set = read(
        b"local all all trust\nlocal \"abc all trust\n",
        15,
        &MemEnv::new(),
    );
    assert_eq!(
        errors(&set),
        vec![(
            FILE.to_string(),
            Some(2),
            "end-of-line before role specification".to_string()
        )]
    );
    assert_eq!(
        warnings(&set),
        vec![(
            Some(2),
            "unterminated quote: PostgreSQL reads \"abc all trust\" as one token".to_string()
        )]
    );
}

#[test]
fn include_loops() {
    let env = MemEnv::new()
        .with_file("/srv/pg/a.txt", b"x @b.txt\n".to_vec())
        .with_file("/srv/pg/b.txt", b"@a.txt\n".to_vec())
        .with_file("/srv/pg/self.conf", b"include self.conf\n".to_vec());
    let set = read(b"local all all trust\nlocal @a.txt all trust\n", 15, &env);
    let e = errors(&set);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].1, Some(2));
    assert!(
        e[0].2.contains("\"/srv/pg/a.txt\"") && e[0].2.contains("loop"),
        "{e:?}"
    );
    // PostgreSQL 16+: the nesting limit reports the loop.
    let set = read(b"local all all trust\nlocal @a.txt all trust\n", 16, &env);
    assert!(
        errors(&set)[0]
            .2
            .ends_with("maximum nesting depth exceeded"),
        "{:?}",
        errors(&set)
    );
    let set = read(b"local all all trust\ninclude self.conf\n", 16, &env);
    let e = errors(&set);
    assert!(!e.is_empty());
    assert!(e[0].2.contains("maximum nesting depth exceeded"), "{e:?}");
}

#[test]
fn exponential_inclusion_is_bounded() {
    let mut env = MemEnv::new();
    for level in 0..12 {
        let next = format!("@f{}.txt ", level + 1).repeat(20);
        env.insert(format!("/srv/pg/f{level}.txt"), next.into_bytes());
    }
    env.insert("/srv/pg/f12.txt", b"leaf\n".to_vec());
    let t = Instant::now();
    let set = read(b"local @f0.txt all trust\n", 15, &env);
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let e = errors(&set);
    assert!(
        e.iter().any(|e| e.2.contains("expands to more than")),
        "{e:?}"
    );
}

#[test]
fn missing_include_files() {
    let env = MemEnv::new();
    let set = read(b"local @users.txt all trust\n", 15, &env);
    assert_eq!(
        errors(&set),
        vec![(
            FILE.to_string(),
            Some(1),
            "could not open secondary authentication file \"@users.txt\" as \"/srv/pg/users.txt\": No such file or directory".to_string()
        )]
    );
    let set = read(b"local all all trust\ninclude extra.conf\n", 16, &env);
    assert_eq!(
        errors(&set),
        vec![(
            FILE.to_string(),
            Some(2),
            "could not open file \"/srv/pg/extra.conf\": No such file or directory".to_string()
        )]
    );
    let set = read(
        b"local all all trust\ninclude_if_exists extra.conf\n",
        16,
        &env,
    );
    assert!(errors(&set).is_empty());
    assert_eq!(set.rows.len(), 1);
    let set = read(b"local all all trust\ninclude_dir conf.d\n", 16, &env);
    assert_eq!(
        errors(&set)[0].2,
        "could not open directory \"/srv/pg/conf.d\""
    );
}

#[test]
fn unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    // a directory where a file is expected
    let err = read_rules_file(dir.path(), &ReadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("Is a directory")
            && err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // a FIFO would block a reader forever: refused at once
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let err = read_rules_file(&fifo, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("Not a regular file"), "{err}");
    let hba = dir.path().join("pg_hba.conf");
    std::fs::write(&hba, b"local @fifo all trust\n").unwrap();
    let set = read_rules_file(&hba, &ReadOptions::default()).unwrap();
    assert!(errors(&set)[0].2.contains("Not a regular file"));
    assert!(t.elapsed() < Duration::from_secs(5));
    // missing top-level file
    let err = read_rules_file(&dir.path().join("nope"), &ReadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
}

#[test]
fn edits_of_bad_files_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("pg_hba.conf");
    let cases: [&[u8]; 3] = [
        b"local all all trust\nhost a\0b all all trust\n",
        b"# BEGIN costplus managed block\nlocal all all trust\n",
        b"local all all trust\nhost all all all bogus\n",
    ];
    for bad in cases {
        std::fs::write(&hba, bad).unwrap();
        let opts = ApplyOptions::new(&hba, ReadOptions::default());
        let err = costplus_hba::plan(&opts, |d| {
            d.set_customer_rules("c", &[RuleSpec::hostssl_scram("c", "c", "::/0")])
                .map(|_| ())
        });
        assert!(err.is_err());
        let err = futures_lite_block_on(costplus_hba::apply(None, &opts, |d| {
            d.set_customer_rules("c", &[RuleSpec::hostssl_scram("c", "c", "::/0")])
                .map(|_| ())
        }))
        .unwrap_err();
        assert!(
            matches!(err, Error::Edit(_) | Error::Invalid { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&hba).unwrap(), bad);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".costplus.lock"))
            .collect();
        assert_eq!(
            names,
            vec!["pg_hba.conf".to_string()],
            "nothing else written"
        );
    }
    let _ = SystemEnv;
    let _ = Path::new("");
}

/// A write that fails before the new file is in place (here: the backup cannot be written)
/// leaves the file, and no reload-pending marker: the server still runs the file on disk.
#[test]
fn a_failed_write_leaves_no_marker() {
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("pg_hba.conf");
    let base = b"local all all peer\nhost all all 0.0.0.0/0 reject\n";
    std::fs::write(&hba, base).unwrap();
    let mut opts = ApplyOptions::new(&hba, ReadOptions::default());
    // a file where the backup directory should be
    let not_a_dir = dir.path().join("backups");
    std::fs::write(&not_a_dir, b"").unwrap();
    opts.backup_dir = Some(not_a_dir);
    let err = futures_lite_block_on(costplus_hba::apply(None, &opts, |d| {
        d.set_customer_rules("c", &[RuleSpec::hostssl_scram("c", "c", "::/0")])
            .map(|_| ())
    }))
    .unwrap_err();
    assert!(matches!(err, Error::Fs { .. }), "{err}");
    assert_eq!(std::fs::read(&hba).unwrap(), base);
    let marker = dir.path().join("pg_hba.conf.costplus.lock.reload-pending");
    assert!(!marker.exists(), "the server runs the file on disk");
    // the same edit with a working backup directory: written, marked pending (offline)
    opts.backup_dir = None;
    let report = futures_lite_block_on(costplus_hba::apply(None, &opts, |d| {
        d.set_customer_rules("c", &[RuleSpec::hostssl_scram("c", "c", "::/0")])
            .map(|_| ())
    }))
    .unwrap();
    assert!(report.written && report.reload_pending, "{report:?}");
    assert!(marker.exists());
}

fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
