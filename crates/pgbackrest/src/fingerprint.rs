//! What a backup should contain, recorded cheaply at backup time and compared after a restore.
//!
//! Method: for every database that accepts connections (templates excluded), the list of
//! permanent tables (`relkind = 'r'`, `relpersistence = 'p'`, outside `pg_catalog`,
//! `information_schema` and toast) with
//! - an exact `count(*)` when the planner's estimate (`pg_class.reltuples`) is at most
//!   `backup.exact_count_max_rows` (default 1,000,000), or
//! - the table's size on disk (`pg_relation_size`) for bigger tables, where counting would
//!   cost as much as the backup; `pg_amcheck` then verifies their pages after a restore.
//!
//! A backup runs while the server takes writes, so `costplus-backup run` records a
//! fingerprint just before and just after the backup. A restored value is right when it lies
//! between the two (both equal on an idle server: an exact match). Unlogged tables are left
//! out: a restore empties them by design.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use costplus_pgcluster::connect::{ConnectOptions, connect};

use crate::{Error, Result, pg_err, quote_ident};

/// One table's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum TableMark {
    /// Exact number of rows.
    Rows {
        /// `count(*)`.
        rows: i64,
    },
    /// Size of the main fork in bytes (big tables).
    Bytes {
        /// `pg_relation_size`.
        bytes: i64,
    },
}

/// The tables of one database: `schema.table` -> mark.
pub type DatabaseMark = BTreeMap<String, TableMark>;

/// A snapshot of every database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Database name -> tables.
    pub databases: BTreeMap<String, DatabaseMark>,
}

/// The fingerprint of one backup: snapshots just before and just after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupFingerprint {
    /// The backup label.
    pub label: String,
    /// Repository the backup went to.
    pub repo: u32,
    /// Before the backup started.
    pub before: Snapshot,
    /// After it finished.
    pub after: Snapshot,
}

/// Take a snapshot of the server `template` points at (its `dbname` is replaced per
/// database). `exact_max` is the row estimate above which a table is measured in bytes.
pub async fn snapshot(template: &ConnectOptions, exact_max: u64) -> Result<Snapshot> {
    let taken_at = chrono::Utc::now().to_rfc3339();
    let mut first = template.clone();
    first.dbname = "postgres".into();
    let client = connect(&first).await?;
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            &[],
        )
        .await
        .map_err(pg_err("listing databases"))?;
    drop(client);
    let mut databases = BTreeMap::new();
    for r in rows {
        let db: String = r.get(0);
        let mut opts = template.clone();
        opts.dbname = db.clone();
        let client = connect(&opts).await?;
        databases.insert(db, database_mark(&client, exact_max).await?);
    }
    Ok(Snapshot {
        taken_at,
        databases,
    })
}

/// The tables of the database `client` is connected to.
pub async fn database_mark(
    client: &tokio_postgres::Client,
    exact_max: u64,
) -> Result<DatabaseMark> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, c.reltuples::float8, pg_relation_size(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND c.relpersistence = 'p'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(pg_err("listing tables"))?;
    let mut mark = DatabaseMark::new();
    for r in rows {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let estimate: f64 = r.get(2);
        let bytes: i64 = r.get(3);
        let m = if estimate <= exact_max as f64 {
            let q = format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote_ident(&schema),
                quote_ident(&table)
            );
            let row = client
                .query_one(&q, &[])
                .await
                .map_err(pg_err(&format!("counting {schema}.{table}")))?;
            TableMark::Rows { rows: row.get(0) }
        } else {
            TableMark::Bytes { bytes }
        };
        mark.insert(format!("{schema}.{table}"), m);
    }
    Ok(mark)
}

/// One difference between the fingerprint and a restored database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Database.
    pub database: String,
    /// Table (`schema.table`), or `None` when the whole database is missing.
    pub table: Option<String>,
    /// What is wrong.
    pub problem: String,
}

fn range(a: i64, b: i64) -> (i64, i64) {
    (a.min(b), a.max(b))
}

/// Compare a restored database with the fingerprint. Tables present in only one of the two
/// snapshots (created or dropped during the backup) may be there or not.
pub fn compare_database(
    fp: &BackupFingerprint,
    database: &str,
    restored: &DatabaseMark,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let empty = DatabaseMark::new();
    let before = fp.before.databases.get(database).unwrap_or(&empty);
    let after = fp.after.databases.get(database).unwrap_or(&empty);
    let mismatch = |table: &str, problem: String| Mismatch {
        database: database.to_string(),
        table: Some(table.to_string()),
        problem,
    };
    for (table, a) in after {
        let Some(b) = before.get(table) else { continue };
        let Some(got) = restored.get(table) else {
            out.push(mismatch(table, "table missing after restore".into()));
            continue;
        };
        match (b, a, got) {
            (
                TableMark::Rows { rows: x },
                TableMark::Rows { rows: y },
                TableMark::Rows { rows: r },
            ) => {
                let (lo, hi) = range(*x, *y);
                if *r < lo || *r > hi {
                    let expect = if lo == hi {
                        format!("{lo}")
                    } else {
                        format!("{lo}..{hi}")
                    };
                    out.push(mismatch(
                        table,
                        format!("{r} rows restored, {expect} at backup time"),
                    ));
                }
            }
            (
                TableMark::Bytes { bytes: x },
                TableMark::Bytes { bytes: y },
                TableMark::Bytes { bytes: r },
            ) => {
                let (lo, hi) = range(*x, *y);
                if *r < lo || *r > hi {
                    out.push(mismatch(
                        table,
                        format!("{r} bytes restored, {lo}..{hi} at backup time"),
                    ));
                }
            }
            // The method changed between snapshots (a table crossed the threshold): nothing
            // to compare exactly; amcheck still verifies it.
            _ => {}
        }
    }
    out
}

/// The databases both snapshots had: each must exist after a restore.
pub fn expected_databases(fp: &BackupFingerprint) -> Vec<String> {
    fp.after
        .databases
        .keys()
        .filter(|d| fp.before.databases.contains_key(*d))
        .cloned()
        .collect()
}

/// How the fingerprint measured each table of `database` (after the backup): `true` for an
/// exact count, `false` for the size in bytes. A restored database is measured the same way,
/// so the comparison is like for like.
pub fn methods_of(fp: &BackupFingerprint, database: &str) -> BTreeMap<String, bool> {
    fp.after
        .databases
        .get(database)
        .map(|m| {
            m.iter()
                .map(|(t, mark)| (t.clone(), matches!(mark, TableMark::Rows { .. })))
                .collect()
        })
        .unwrap_or_default()
}

/// Measure a restored database with the methods the fingerprint used for each table (see
/// [`methods_of`]); tables unknown to the fingerprint (created after the backup) are left out.
pub async fn restored_mark(
    client: &tokio_postgres::Client,
    methods: &BTreeMap<String, bool>,
) -> Result<DatabaseMark> {
    database_mark_methods(client, methods).await
}

async fn database_mark_methods(
    client: &tokio_postgres::Client,
    methods: &BTreeMap<String, bool>,
) -> Result<DatabaseMark> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, pg_relation_size(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND c.relpersistence = 'p'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
            &[],
        )
        .await
        .map_err(pg_err("listing restored tables"))?;
    let mut mark = DatabaseMark::new();
    for r in rows {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let key = format!("{schema}.{table}");
        let Some(exact) = methods.get(&key) else {
            continue;
        };
        let m = if *exact {
            let q = format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote_ident(&schema),
                quote_ident(&table)
            );
            let row = client
                .query_one(&q, &[])
                .await
                .map_err(pg_err(&format!("counting restored {key}")))?;
            TableMark::Rows { rows: row.get(0) }
        } else {
            TableMark::Bytes { bytes: r.get(2) }
        };
        mark.insert(key, m);
    }
    Ok(mark)
}

/// Where the fingerprint of `label` is stored.
pub fn path_for(dir: &Path, label: &str) -> PathBuf {
    dir.join(format!("{label}.json"))
}

/// Store a fingerprint (atomically) in `dir`.
pub fn save(dir: &Path, fp: &BackupFingerprint) -> Result<PathBuf> {
    costplus_fs::create_dir_with_mode(dir, 0o750)?;
    let path = path_for(dir, &fp.label);
    let text = serde_json::to_vec_pretty(fp).map_err(|e| Error::Record {
        path: path.clone(),
        message: e.to_string(),
    })?;
    costplus_fs::write_atomic(
        &path,
        &text,
        &costplus_fs::WriteOptions {
            mode: 0o640,
            owner: None,
        },
    )?;
    Ok(path)
}

/// Load the fingerprint of `label`, if one was recorded.
pub fn load(dir: &Path, label: &str) -> Result<Option<BackupFingerprint>> {
    let path = path_for(dir, label);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Record {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path, source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(db: &[(&str, &[(&str, TableMark)])]) -> Snapshot {
        Snapshot {
            taken_at: "t".into(),
            databases: db
                .iter()
                .map(|(d, t)| {
                    (
                        d.to_string(),
                        t.iter().map(|(n, m)| (n.to_string(), *m)).collect(),
                    )
                })
                .collect(),
        }
    }

    fn rows(n: i64) -> TableMark {
        TableMark::Rows { rows: n }
    }

    #[test]
    fn restored_counts_must_lie_between_before_and_after() {
        let fp = BackupFingerprint {
            label: "L".into(),
            repo: 1,
            before: snap(&[("a", &[("public.t", rows(10)), ("public.gone", rows(1))])]),
            after: snap(&[
                ("a", &[("public.t", rows(12)), ("public.new", rows(3))]),
                ("b", &[]),
            ]),
        };
        assert_eq!(expected_databases(&fp), ["a"]);
        let check = |restored: &[(&str, TableMark)], problems: &[&str]| {
            let m: DatabaseMark = restored.iter().map(|(n, m)| (n.to_string(), *m)).collect();
            let got: Vec<String> = compare_database(&fp, "a", &m)
                .into_iter()
                .map(|x| format!("{}: {}", x.table.unwrap(), x.problem))
                .collect();
            assert_eq!(got, problems);
        };
        check(&[("public.t", rows(11))], &[]);
        check(&[("public.t", rows(12)), ("public.new", rows(0))], &[]);
        check(
            &[("public.t", rows(9))],
            &["public.t: 9 rows restored, 10..12 at backup time"],
        );
        check(&[], &["public.t: table missing after restore"]);
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let fp = BackupFingerprint {
            label: "20260101-000000F".into(),
            repo: 2,
            before: snap(&[]),
            after: snap(&[("a", &[("s.t", TableMark::Bytes { bytes: 8192 })])]),
        };
        save(dir.path(), &fp).unwrap();
        assert_eq!(load(dir.path(), &fp.label).unwrap(), Some(fp));
        assert_eq!(load(dir.path(), "other").unwrap(), None);
    }
}
