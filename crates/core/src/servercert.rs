//! The server's own certificate, as the running server names it (`ssl_cert_file`, relative to
//! the data directory): where it is and how long it has left. Read where the file is readable
//! (on the database host); the monthly maintenance and the exporter use it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// The server certificate's file and validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerCertificate {
    /// The certificate file.
    pub path: PathBuf,
    /// Subject of the leaf certificate.
    pub subject: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
}

/// Ask the server where its certificate is (`ssl_cert_file`, `data_directory`) and read it.
pub async fn read(client: &tokio_postgres::Client) -> Result<ServerCertificate> {
    let row = client
        .query_one(
            "SELECT current_setting('ssl_cert_file'), current_setting('data_directory')",
            &[],
        )
        .await
        .map_err(costplus_pgcluster::Error::from)?;
    let (file, data): (String, String) = (row.get(0), row.get(1));
    let path = server_file(Some(&data), &file).ok_or_else(|| {
        Error::Invalid("the server names no certificate (ssl_cert_file is empty)".into())
    })?;
    read_file(&path, chrono::Utc::now().timestamp())
}

/// A server file setting (`ssl_cert_file = 'server.crt'`) as a path: relative names are
/// relative to the data directory, as the server reads them; `None` when the setting is empty,
/// or relative with the data directory unknown.
pub fn server_file(data_directory: Option<&str>, setting: &str) -> Option<PathBuf> {
    let p = Path::new(setting);
    if setting.is_empty() {
        None
    } else if p.is_absolute() {
        Some(p.to_path_buf())
    } else {
        Some(Path::new(data_directory?).join(p))
    }
}

/// Read the leaf certificate of a PEM file and its validity at `now` (Unix seconds).
pub fn read_file(path: &Path, now: i64) -> Result<ServerCertificate> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
    let certs = costplus_tls::inspect::read_certificates(&bytes).map_err(|f| bad(f.message))?;
    let leaf = certs
        .first()
        .ok_or_else(|| bad("no certificate in the file".into()))?;
    let facts = costplus_tls::inspect::facts(leaf, now).map_err(bad)?;
    Ok(ServerCertificate {
        path: path.to_path_buf(),
        subject: facts.subject,
        not_after: facts.not_after,
        days_left: facts.days_left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_files_are_relative_to_the_data_directory() {
        let data = Some("/pg/data");
        assert_eq!(
            server_file(data, "server.crt"),
            Some(PathBuf::from("/pg/data/server.crt"))
        );
        assert_eq!(
            server_file(data, "/etc/ssl/x.crt"),
            Some(PathBuf::from("/etc/ssl/x.crt"))
        );
        assert_eq!(server_file(data, ""), None);
        assert_eq!(
            server_file(None, "/etc/ssl/x.crt"),
            Some(PathBuf::from("/etc/ssl/x.crt"))
        );
        assert_eq!(server_file(None, "server.crt"), None);
    }

    #[test]
    fn days_left_of_a_generated_certificate_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = costplus_tls::issue::Authority::generate("test CA", 365).unwrap();
        let now = chrono::Utc::now().timestamp();
        let path = dir.path().join("server.crt");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        let c = read_file(&path, now).unwrap();
        assert!((364..=365).contains(&c.days_left), "{c:?}");
        let later = read_file(&path, now + 400 * 86_400).unwrap();
        assert!(later.days_left < 0, "{later:?}");
        std::fs::write(&path, "not a certificate").unwrap();
        let e = read_file(&path, now).unwrap_err().to_string();
        assert!(e.contains("server.crt"), "{e}");
        let e = read_file(&dir.path().join("missing.crt"), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.crt"), "{e}");
    }
}
