//! Import of the legacy plaintext credentials folder: one file per customer, lines of
//! `key=value` or `key: value` (`#` comments and blank lines ignored).
//!
//! | keys (any case, `-` or `_`) | becomes |
//! |---|---|
//! | `password`, `pass`, `passwd`, `pwd`, `db_password`, `pgpassword` | the secret (required) |
//! | `customer`, `customer_name`, `name` | the record name (default: the file name without extension) |
//! | `role`, `user`, `username`, `db_user`, `pguser`, `login` | role |
//! | `database`, `db`, `dbname`, `db_name`, `pgdatabase` | database |
//! | `server` | server |
//! | anything else (`host`, `port`, ...) | metadata |
//!
//! Every imported password sat in a plaintext file: rotate it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Error, Result, io};
use crate::model::{Kind, NewRecord, Status};

/// One legacy file, parsed.
#[derive(Debug, Clone)]
pub struct Legacy {
    /// The file it came from.
    pub path: PathBuf,
    /// The record to write (status active).
    pub record: NewRecord,
}

enum Field {
    Secret,
    Name,
    Role,
    Database,
    Server,
    Other,
}

fn field(key: &str) -> Field {
    match key {
        "password" | "pass" | "passwd" | "pwd" | "db_password" | "pgpassword" => Field::Secret,
        "customer" | "customer_name" | "name" => Field::Name,
        "role" | "user" | "username" | "db_user" | "pguser" | "login" => Field::Role,
        "database" | "db" | "dbname" | "db_name" | "pgdatabase" => Field::Database,
        "server" => Field::Server,
        _ => Field::Other,
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Parse one legacy file's text. `path` names the file (and gives the default record name).
pub fn parse_legacy(path: &Path, text: &str, server: Option<&str>) -> Result<Legacy> {
    let err = |line: usize, message: String| Error::Import {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut secret: Option<SecretString> = None;
    let mut name: Option<String> = None;
    let mut role = None;
    let mut database = None;
    let mut srv = server.map(str::to_string);
    let mut metadata = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let eq = line.find('=');
        let colon = line.find(':');
        let at = match (eq, colon) {
            (Some(e), Some(c)) => e.min(c),
            (Some(e), None) => e,
            (None, Some(c)) => c,
            (None, None) => {
                return Err(err(n, "expected `key=value` or `key: value`".into()));
            }
        };
        let key = line[..at].trim().to_ascii_lowercase().replace('-', "_");
        let value = unquote(line[at + 1..].trim());
        if key.is_empty() {
            return Err(err(n, "empty key".into()));
        }
        if !seen.insert(key.clone()) {
            return Err(err(n, format!("`{key}` appears twice")));
        }
        match field(&key) {
            Field::Secret => {
                if value.is_empty() {
                    return Err(err(n, "empty password".into()));
                }
                secret = Some(SecretString::from(String::from(value)));
            }
            Field::Name => name = Some(value.to_string()),
            Field::Role => role = Some(value.to_string()),
            Field::Database => database = Some(value.to_string()),
            Field::Server => srv = Some(value.to_string()),
            Field::Other => {
                metadata.insert(key, value.to_string());
            }
        }
    }
    let secret = secret.ok_or_else(|| err(0, "no password line".into()))?;
    let name = match name {
        Some(n) => n,
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    metadata.insert("imported_from".into(), path.display().to_string());
    let record = NewRecord {
        kind: Kind::of_name(&name),
        name,
        status: Status::Active,
        secret,
        role,
        database,
        server: srv,
        metadata,
    };
    record.validate().map_err(|e| err(0, e.to_string()))?;
    Ok(Legacy {
        path: path.to_path_buf(),
        record,
    })
}

/// Parse every regular, non-hidden file of the legacy folder `dir` (not recursive), in name
/// order. All files must parse; the first error is returned.
pub fn read_legacy_dir(dir: &Path, server: Option<&str>) -> Result<Vec<Legacy>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("read directory", dir))? {
        let entry = entry.map_err(io("read directory", dir))?;
        let p = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            paths.push(p);
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let bytes = Zeroizing::new(std::fs::read(&p).map_err(io("read", &p))?);
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::Import {
            path: p.clone(),
            line: 0,
            message: "not UTF-8 text".into(),
        })?;
        out.push(parse_legacy(&p, text, server)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    type Expect<'a> = Result<(&'a str, &'a str, Option<&'a str>, Option<&'a str>), &'a str>;

    fn check(text: &str, expect: Expect<'_>) {
        let got = parse_legacy(Path::new("/root/creds/acme.txt"), text, Some("main"));
        match (got, expect) {
            (Ok(l), Ok((name, pw, role, db))) => {
                assert_eq!(l.record.name, name);
                assert_eq!(l.record.secret.expose_secret(), pw);
                assert_eq!(l.record.role.as_deref(), role);
                assert_eq!(l.record.database.as_deref(), db);
                assert_eq!(l.record.server.as_deref(), Some("main"));
            }
            (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{e}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn legacy_formats() {
        check(
            "user=acme_user\ndatabase=acme_db\npassword=s3:cr=t\n",
            Ok(("acme", "s3:cr=t", Some("acme_user"), Some("acme_db"))),
        );
        check(
            "# old style\nUsername: acme_user\nDB-Name: acme_db\nPassword: \"x y\"\nhost: 10.0.0.1\n",
            Ok(("acme", "x y", Some("acme_user"), Some("acme_db"))),
        );
        check(
            "customer=other\npwd=abc\n",
            Ok(("other", "abc", None, None)),
        );
        check("user=acme_user\n", Err("no password line"));
        check(
            "password=a\npassword=b\n",
            Err(":2: `password` appears twice"),
        );
        check("password=a\njunk\n", Err(":2: expected"));
        check("name=bad name\npassword=a\n", Err("invalid record name"));
    }

    #[test]
    fn metadata_keeps_the_rest() {
        let l = parse_legacy(Path::new("x/acme"), "password=a\nport=5433\n", None).unwrap();
        assert_eq!(l.record.metadata["port"], "5433");
        assert_eq!(l.record.metadata["imported_from"], "x/acme");
    }
}
