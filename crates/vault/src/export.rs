//! What a customer gets: a connection URI, a `.pgpass` line and a `pg_service.conf` section
//! (pure string building, plus [`write_files`] that writes them 0600).

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Record;

/// Everything a client needs to connect as the customer.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Server host name (must match the server certificate).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// Login role.
    pub user: String,
    /// Password.
    pub password: SecretString,
    /// Path of the CA certificate on the customer's machine.
    pub sslrootcert: String,
}

impl Connection {
    /// The connection of a customer record, reached at `host:port`.
    pub fn from_record(rec: &Record, host: &str, port: u16, sslrootcert: &str) -> Result<Self> {
        let name = &rec.summary.name;
        let need = |v: &Option<String>, what: &str| {
            v.clone().ok_or_else(|| Error::Export {
                name: name.clone(),
                message: format!("the record has no {what}"),
            })
        };
        let c = Connection {
            host: host.to_string(),
            port,
            database: need(&rec.summary.database, "database")?,
            user: need(&rec.summary.role, "role")?,
            password: rec.secret.clone(),
            sslrootcert: sslrootcert.to_string(),
        };
        for (what, v) in [
            ("host", &c.host),
            ("database", &c.database),
            ("user", &c.user),
            ("sslrootcert", &c.sslrootcert),
        ] {
            if v.is_empty() || v.chars().any(char::is_control) {
                return Err(Error::Export {
                    name: name.clone(),
                    message: format!("{what} is empty or has control characters"),
                });
            }
        }
        if c.password
            .expose_secret()
            .chars()
            .any(|ch| ch == '\n' || ch == '\r')
        {
            return Err(Error::Export {
                name: name.clone(),
                message: "the password has a line break; it cannot go in .pgpass".into(),
            });
        }
        Ok(c)
    }

    /// `postgresql://user:password@host:port/database?sslmode=verify-full&sslrootcert=...`,
    /// every part percent-encoded.
    pub fn uri(&self) -> SecretString {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            pct(&self.host)
        };
        SecretString::from(format!(
            "postgresql://{}:{}@{host}:{}/{}?sslmode=verify-full&sslrootcert={}",
            pct(&self.user),
            pct(self.password.expose_secret()),
            self.port,
            pct(&self.database),
            pct(&self.sslrootcert),
        ))
    }

    /// `host:port:database:user:password` with `\` and `:` escaped, as libpq reads `.pgpass`.
    pub fn pgpass_line(&self) -> SecretString {
        SecretString::from(format!(
            "{}:{}:{}:{}:{}\n",
            pgpass_escape(&self.host),
            self.port,
            pgpass_escape(&self.database),
            pgpass_escape(&self.user),
            pgpass_escape(self.password.expose_secret()),
        ))
    }

    /// A `pg_service.conf` section named `service` (no password: libpq takes it from
    /// `.pgpass`).
    pub fn service_section(&self, service: &str) -> String {
        format!(
            "[{service}]\nhost={}\nport={}\ndbname={}\nuser={}\nsslmode=verify-full\nsslrootcert={}\n",
            self.host, self.port, self.database, self.user, self.sslrootcert
        )
    }
}

/// Escape a `.pgpass` field: `\` becomes `\\`, `:` becomes `\:`.
pub fn pgpass_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The files [`write_files`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportFiles {
    /// `connection-uri.txt`: the URI.
    pub uri: PathBuf,
    /// `pgpass`: the `.pgpass` line.
    pub pgpass: PathBuf,
    /// `pg_service.conf`: the service section.
    pub service: PathBuf,
}

/// Write the three files for `service` into `dir` (created 0700 when missing; an existing
/// directory keeps its mode), each 0600 and atomic.
pub fn write_files(dir: &Path, service: &str, c: &Connection) -> Result<ExportFiles> {
    crate::model::validate_name(service).map_err(|_| Error::Export {
        name: service.to_string(),
        message: "the service name must be a simple name".into(),
    })?;
    if service.contains('/') {
        return Err(Error::Export {
            name: service.to_string(),
            message: "the service name cannot contain `/`".into(),
        });
    }
    if !dir.is_dir() {
        costplus_fs::create_dir_with_mode(dir, 0o700)?;
    }
    let files = ExportFiles {
        uri: dir.join("connection-uri.txt"),
        pgpass: dir.join("pgpass"),
        service: dir.join("pg_service.conf"),
    };
    let private = costplus_fs::WriteOptions::private();
    let uri = zeroize::Zeroizing::new(format!("{}\n", c.uri().expose_secret()));
    costplus_fs::write_atomic(&files.uri, uri.as_bytes(), &private)?;
    costplus_fs::write_atomic(
        &files.pgpass,
        c.pgpass_line().expose_secret().as_bytes(),
        &private,
    )?;
    costplus_fs::write_atomic(
        &files.service,
        c.service_section(service).as_bytes(),
        &private,
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(password: &str) -> Connection {
        Connection {
            host: "db.example.com".into(),
            port: 5433,
            database: "acme_db".into(),
            user: "acme_user".into(),
            password: password.into(),
            sslrootcert: "/home/acme/.postgresql/root.crt".into(),
        }
    }

    #[test]
    fn pgpass_escapes_colon_and_backslash() {
        assert_eq!(
            conn(r"a:b\c").pgpass_line().expose_secret(),
            "db.example.com:5433:acme_db:acme_user:a\\:b\\\\c\n"
        );
        assert_eq!(pgpass_escape("::"), r"\:\:");
    }

    #[test]
    fn uri_is_percent_encoded() {
        assert_eq!(
            conn("p@ss/w:rd?&").uri().expose_secret(),
            "postgresql://acme_user:p%40ss%2Fw%3Ard%3F%26@db.example.com:5433/acme_db?sslmode=verify-full&sslrootcert=%2Fhome%2Facme%2F.postgresql%2Froot.crt"
        );
        let mut c = conn("x");
        c.host = "::1".into();
        assert!(c.uri().expose_secret().contains("@[::1]:5433/"));
    }

    #[test]
    fn service_section_has_no_password() {
        let s = conn("hunter2").service_section("acme");
        assert!(s.starts_with("[acme]\nhost=db.example.com\nport=5433\n"));
        assert!(s.contains("sslmode=verify-full\n"));
        assert!(!s.contains("hunter2"));
    }
}
