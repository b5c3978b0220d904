//! `pgbackrest.conf` from our configuration (pure text), and installing it with the right
//! owner and mode.
//!
//! The file holds the cipher passphrases and the S3 keys: pgBackRest refuses them on the
//! command line, and we never put them there. It is written atomically with mode 0640, owned by
//! root with the server's group (so that `archive_command`, run by the server, can read it),
//! or 0600 owned by the server's user when we are that user.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::secrets::RepoSecrets;
use crate::{BackupConfig, Error, Result};
use costplus_fs::{OsUser, WriteOptions};
use costplus_pgcluster::Cluster;
use costplus_s3::OffsiteConfig;

/// The PostgreSQL server that the stanza backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// Data directory (`pg1-path`).
    pub data_dir: PathBuf,
    /// Port (`pg1-port`).
    pub port: u16,
    /// Unix socket directory (`pg1-socket-path`).
    pub socket_dir: PathBuf,
    /// The OS user that runs the server (pgBackRest runs as this user too).
    pub os_user: OsUser,
    /// The database superuser pgBackRest connects as (`pg1-user`).
    pub superuser: String,
}

impl PgTarget {
    /// The target for a cluster created by costplus.
    pub fn of_cluster(cluster: &Cluster) -> Self {
        Self {
            data_dir: cluster.data_dir(),
            port: cluster.port(),
            socket_dir: cluster.socket_dir(),
            os_user: cluster.os_user().clone(),
            superuser: cluster.superuser().to_string(),
        }
    }
}

/// Host and port of an S3 endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// Host name (pgBackRest 2.45 checks certificates against DNS names only: use a name).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Split `https://host[:port][/]` into host and port. pgBackRest speaks HTTPS only.
pub fn parse_endpoint(url: &str) -> Result<S3Endpoint> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        Error::Config(format!(
            "offsite endpoint {url:?}: pgBackRest reaches S3 over HTTPS only (https://host[:port])"
        ))
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(Error::Config(format!(
            "offsite endpoint {url:?}: expected https://host[:port] with no path"
        )));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| Error::Config(format!("offsite endpoint {url:?}: bad port {p:?}")))?,
        ),
        None => (rest, 443),
    };
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return Err(Error::Config(format!(
            "offsite endpoint {url:?}: use a host name, not an IP address (pgBackRest 2.45 verifies certificates against DNS names only)"
        )));
    }
    Ok(S3Endpoint {
        host: host.to_string(),
        port,
    })
}

/// The repositories in use: 1, and 2 when there is an offsite.
pub fn repos(offsite: Option<&OffsiteConfig>) -> Vec<u32> {
    if offsite.is_some() {
        vec![1, 2]
    } else {
        vec![1]
    }
}

/// The `archive_command` PostgreSQL runs for every WAL segment.
pub fn archive_command(cfg: &BackupConfig) -> String {
    format!(
        "pgbackrest --config={} --stanza={} archive-push %p",
        cfg.config_file.display(),
        cfg.stanza
    )
}

fn value(name: &str, v: &str) -> Result<String> {
    if v.contains(['\n', '\r']) || v.trim() != v {
        return Err(Error::Config(format!(
            "{name}: the value has a newline or surrounding spaces, which pgbackrest.conf cannot hold"
        )));
    }
    Ok(format!("{name}={v}\n"))
}

/// The text of pgbackrest.conf. Holds secrets: zeroized when dropped.
pub fn render(
    cfg: &BackupConfig,
    offsite: Option<&OffsiteConfig>,
    target: &PgTarget,
    secrets: &RepoSecrets,
) -> Result<Zeroizing<String>> {
    cfg.validate()?;
    let mut s = Zeroizing::new(String::new());
    s.push_str(
        "# Written by costplus (costplus-backup setup); changes are overwritten.\n\
         # Holds the repository cipher passphrases and S3 keys: keep it 0640 root:<server group> or 0600.\n\
         [global]\n",
    );
    let p = |path: &Path| path.display().to_string();
    let mut push = |name: &str, v: &str| -> Result<()> {
        s.push_str(&value(name, v)?);
        Ok(())
    };
    push("repo1-type", "posix")?;
    push("repo1-path", &p(&cfg.repo1_path))?;
    push("repo1-cipher-type", "aes-256-cbc")?;
    push(
        "repo1-cipher-pass",
        secrets.repo1_cipher_pass.expose_secret(),
    )?;
    push("repo1-retention-full-type", "count")?;
    push(
        "repo1-retention-full",
        &cfg.repo1_retention_full.to_string(),
    )?;
    if let Some(off) = offsite {
        let ep = parse_endpoint(&off.endpoint_url())?;
        let missing = |what: &str| Error::Secret {
            what: what.into(),
            message: "an [offsite] is configured but the secret source gave none".into(),
        };
        push("repo2-type", "s3")?;
        push("repo2-path", &off.repo_path)?;
        push("repo2-s3-endpoint", &ep.host)?;
        push("repo2-storage-port", &ep.port.to_string())?;
        push("repo2-s3-bucket", &off.bucket)?;
        push("repo2-s3-region", &off.region)?;
        push(
            "repo2-s3-uri-style",
            if off.path_style { "path" } else { "host" },
        )?;
        if let Some(ca) = &off.ca_file {
            push("repo2-storage-ca-file", &p(ca))?;
        }
        push(
            "repo2-s3-key",
            secrets
                .s3_key
                .as_ref()
                .ok_or_else(|| missing("S3 access key"))?
                .expose_secret(),
        )?;
        push(
            "repo2-s3-key-secret",
            secrets
                .s3_key_secret
                .as_ref()
                .ok_or_else(|| missing("S3 secret key"))?
                .expose_secret(),
        )?;
        push("repo2-cipher-type", "aes-256-cbc")?;
        push(
            "repo2-cipher-pass",
            secrets
                .repo2_cipher_pass
                .as_ref()
                .ok_or_else(|| missing("repo2 cipher passphrase"))?
                .expose_secret(),
        )?;
        push("repo2-retention-full-type", "time")?;
        push(
            "repo2-retention-full",
            &cfg.repo2_retention_days.to_string(),
        )?;
    }
    push("archive-async", "y")?;
    push("spool-path", &p(&cfg.spool_path))?;
    push("archive-timeout", &cfg.archive_timeout_seconds.to_string())?;
    push("compress-type", &cfg.compress_type)?;
    push("process-max", &cfg.process_max.to_string())?;
    push("start-fast", "y")?;
    push("log-path", &p(&cfg.log_path))?;
    push("log-level-file", "info")?;
    push("log-level-console", "warn")?;
    push("log-level-stderr", "off")?;
    push("lock-path", &p(&cfg.lock_path))?;
    s.push_str(&format!("\n[{}]\n", cfg.stanza));
    let mut push = |name: &str, v: &str| -> Result<()> {
        s.push_str(&value(name, v)?);
        Ok(())
    };
    push("pg1-path", &p(&target.data_dir))?;
    push("pg1-port", &target.port.to_string())?;
    push("pg1-socket-path", &p(&target.socket_dir))?;
    push("pg1-user", &target.superuser)?;
    Ok(s)
}

/// Create repo1, the spool, log, lock and state directories, owned by the server's user where
/// pgBackRest writes.
pub fn prepare_directories(cfg: &BackupConfig, os_user: &OsUser) -> Result<()> {
    for (dir, mode) in [
        (&cfg.repo1_path, 0o750),
        (&cfg.spool_path, 0o750),
        (&cfg.log_path, 0o770),
        (&cfg.lock_path, 0o770),
    ] {
        let existed = dir.exists();
        costplus_fs::create_dir_with_mode(dir, mode)?;
        if !existed && !os_user.is_current() {
            costplus_fs::chown(dir, os_user.uid, os_user.gid)?;
        }
    }
    costplus_fs::create_dir_with_mode(&cfg.state_path, 0o755)?;
    Ok(())
}

/// Write pgbackrest.conf (only when its text changed). Returns whether it was written.
pub fn install(cfg: &BackupConfig, text: &str, os_user: &OsUser) -> Result<bool> {
    let path = &cfg.config_file;
    if let Ok(old) = std::fs::read(path).map(Zeroizing::new)
        && old.as_slice() == text.as_bytes()
    {
        return Ok(false);
    }
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        costplus_fs::create_dir_with_mode(parent, 0o755)?;
    }
    let opts = if os_user.is_current() {
        WriteOptions::private()
    } else {
        WriteOptions {
            mode: 0o640,
            owner: Some((nix_uid(), os_user.gid)),
        }
    };
    costplus_fs::write_atomic(path, text.as_bytes(), &opts)?;
    Ok(true)
}

/// Create the directories and write pgbackrest.conf with the secrets from `source`. Returns
/// whether the file changed.
pub fn configure(
    cfg: &BackupConfig,
    offsite: Option<&OffsiteConfig>,
    target: &PgTarget,
    source: &dyn crate::secrets::SecretSource,
) -> Result<bool> {
    let secrets = source.repo_secrets(cfg, offsite)?;
    let text = render(cfg, offsite, target, &secrets)?;
    prepare_directories(cfg, &target.os_user)?;
    install(cfg, &text, &target.os_user)
}

fn nix_uid() -> u32 {
    OsUser::current().map(|u| u.uid).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn target() -> PgTarget {
        PgTarget {
            data_dir: "/srv/pg/data".into(),
            port: 5433,
            socket_dir: "/run/postgresql".into(),
            os_user: OsUser::current().unwrap(),
            superuser: "postgres".into(),
        }
    }

    fn secrets(with_s3: bool) -> RepoSecrets {
        RepoSecrets {
            repo1_cipher_pass: SecretString::from("pass-one".to_string()),
            repo2_cipher_pass: with_s3.then(|| SecretString::from("pass-two".to_string())),
            s3_key: with_s3.then(|| SecretString::from("AKID".to_string())),
            s3_key_secret: with_s3.then(|| SecretString::from("SKEY".to_string())),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn both_repositories_encrypted_with_their_own_passphrase() {
        let mut off = OffsiteConfig::wasabi("eu-central-1", "acme");
        off.ca_file = Some("/etc/ssl/ca.pem".into());
        let text = render(
            &BackupConfig::default(),
            Some(&off),
            &target(),
            &secrets(true),
        )
        .unwrap();
        let l = lines(&text);
        for expect in [
            "[global]",
            "repo1-path=/var/lib/pgbackrest",
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=pass-one",
            "repo1-retention-full=2",
            "repo2-type=s3",
            "repo2-s3-endpoint=s3.eu-central-1.wasabisys.com",
            "repo2-storage-port=443",
            "repo2-s3-bucket=acme",
            "repo2-s3-region=eu-central-1",
            "repo2-s3-uri-style=path",
            "repo2-storage-ca-file=/etc/ssl/ca.pem",
            "repo2-path=/pgbackrest",
            "repo2-s3-key=AKID",
            "repo2-s3-key-secret=SKEY",
            "repo2-cipher-type=aes-256-cbc",
            "repo2-cipher-pass=pass-two",
            "repo2-retention-full-type=time",
            "repo2-retention-full=90",
            "archive-async=y",
            "spool-path=/var/spool/pgbackrest",
            "compress-type=zst",
            "start-fast=y",
            "log-path=/var/log/pgbackrest",
            "[main]",
            "pg1-path=/srv/pg/data",
            "pg1-port=5433",
            "pg1-socket-path=/run/postgresql",
            "pg1-user=postgres",
        ] {
            assert!(l.contains(&expect), "missing {expect:?} in\n{}", *text);
        }
        // Stanza options come after every global option.
        let stanza = l.iter().position(|x| *x == "[main]").unwrap();
        assert!(l[stanza..].iter().all(|x| !x.starts_with("repo")));
    }

    #[test]
    fn local_only_has_no_repo2() {
        let text = render(&BackupConfig::default(), None, &target(), &secrets(false)).unwrap();
        assert!(!text.contains("repo2"), "{}", *text);
    }

    #[test]
    fn endpoints() {
        let check =
            |url: &str, expect: Result<(&str, u16), &str>| match (parse_endpoint(url), expect) {
                (Ok(ep), Ok((h, p))) => assert_eq!((ep.host.as_str(), ep.port), (h, p), "{url}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            };
        check("https://localhost:9000", Ok(("localhost", 9000)));
        check("https://s3.wasabisys.com/", Ok(("s3.wasabisys.com", 443)));
        check("http://localhost:9000", Err("HTTPS only"));
        check("https://127.0.0.1:9000", Err("not an IP address"));
        check("https://host:x", Err("bad port"));
        check("https://host/bucket", Err("no path"));
    }

    #[test]
    fn secrets_with_newlines_are_refused() {
        let mut s = secrets(false);
        s.repo1_cipher_pass = SecretString::from("a\nrepo1-path=/evil".to_string());
        let e = render(&BackupConfig::default(), None, &target(), &s).unwrap_err();
        assert!(e.to_string().contains("newline"), "{e}");
        assert!(
            !e.to_string().contains("evil"),
            "the secret leaked into the error"
        );
    }

    #[test]
    fn install_writes_once_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BackupConfig {
            config_file: dir.path().join("etc/pgbackrest.conf"),
            ..BackupConfig::default()
        };
        let me = OsUser::current().unwrap();
        assert!(install(&cfg, "[global]\n", &me).unwrap());
        assert!(!install(&cfg, "[global]\n", &me).unwrap());
        costplus_fs::check_private(&cfg.config_file).unwrap();
    }
}
