//! The TOML configuration: one or more servers (a fleet; one VPS is the first case) and the
//! policies that apply to all of them.
//!
//! Secrets are never in this file: passwords come from files (0600) it points to.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use costplus_pgcluster::connect::{ConnectOptions, SslMode};

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "COSTPLUS_CONFIG";

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The PostgreSQL servers this operator runs.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// How customer databases and roles are named.
    #[serde(default)]
    pub naming: NamingPolicy,
    /// What every customer gets (connection limit, networks allowed in pg_hba.conf).
    #[serde(default)]
    pub customers: CustomerPolicy,
    /// Where journals, fingerprints and run records are kept (default /var/lib/costplus).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The credential vault.
    #[serde(default)]
    pub vault: Option<costplus_vault::VaultConfig>,
    /// pgBackRest backups (repo1 local; repo2 is the offsite).
    #[serde(default)]
    pub backup: Option<costplus_pgbackrest::BackupConfig>,
    /// The offsite bucket (Wasabi or S3-compatible).
    #[serde(default)]
    pub offsite: Option<costplus_s3::OffsiteConfig>,
    /// fail2ban jail settings (ports and log path default to each server's).
    #[serde(default)]
    pub fail2ban: Option<crate::fail2ban::JailOptions>,
    /// Scheduled maintenance: state directory and heartbeat URLs.
    #[serde(default)]
    pub maintenance: Option<crate::maintain::MaintenanceConfig>,
    /// Where this file was read from (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
}

/// One PostgreSQL server and how the operator reaches it as an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Short name used with `--server`.
    pub name: String,
    /// Host name or IP address (or a Unix socket directory starting with `/`).
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Administrator role.
    #[serde(default = "default_admin")]
    pub admin_user: String,
    /// Database to connect to for administration.
    #[serde(default = "default_admin")]
    pub admin_database: String,
    /// `verify-full` (default; needs `sslrootcert`) or `disable` (Unix socket only).
    #[serde(default)]
    pub sslmode: ConfigSslMode,
    /// CA certificate that signed the server certificate.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// File holding the administrator password (must be 0600). Never put the password here.
    /// Without it, `$PGPASSFILE` or `~/.pgpass` is used as libpq would.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The OS user that runs the server (owner of its files).
    #[serde(default = "default_admin")]
    pub os_user: String,
    /// Directory of the local cluster created by costplus (sandbox, drills), when there is one.
    #[serde(default)]
    pub cluster_root: Option<PathBuf>,
    /// The server's log file (read by fail2ban, the incident report and the log review).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
}

fn default_port() -> u16 {
    5432
}
fn default_admin() -> String {
    "postgres".into()
}

/// TLS policy for administrator connections.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSslMode {
    /// Encrypt and verify the certificate chain and host name.
    #[default]
    VerifyFull,
    /// No TLS: only allowed for Unix-socket hosts.
    Disable,
}

/// How customer objects are named: `{name}` is replaced by the customer name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamingPolicy {
    /// Database name pattern (default `{name}_db`).
    #[serde(default = "default_db_pattern")]
    pub database: String,
    /// Role name pattern (default `{name}_user`).
    #[serde(default = "default_role_pattern")]
    pub role: String,
}

fn default_db_pattern() -> String {
    "{name}_db".into()
}
fn default_role_pattern() -> String {
    "{name}_user".into()
}

/// What every customer gets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerPolicy {
    /// `CONNECTION LIMIT` of each customer role.
    pub connection_limit: i32,
    /// Client networks allowed in each customer's `hostssl` rules (IPv4 and IPv6).
    pub allowed_networks: Vec<String>,
}

impl Default for CustomerPolicy {
    fn default() -> Self {
        Self {
            connection_limit: 20,
            allowed_networks: vec!["0.0.0.0/0".into(), "::/0".into()],
        }
    }
}

fn extract(pattern: &str, value: &str) -> Option<String> {
    let (prefix, suffix) = pattern.split_once("{name}")?;
    let name = value.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!name.is_empty()).then(|| name.to_string())
}

impl Default for NamingPolicy {
    fn default() -> Self {
        Self {
            database: default_db_pattern(),
            role: default_role_pattern(),
        }
    }
}

impl NamingPolicy {
    /// The database of customer `name`.
    pub fn database_for(&self, name: &str) -> String {
        self.database.replace("{name}", name)
    }
    /// The role of customer `name`.
    pub fn role_for(&self, name: &str) -> String {
        self.role.replace("{name}", name)
    }

    /// The customer whose database this is by name (`acme_db` -> `acme`), if any.
    pub fn customer_of_database(&self, database: &str) -> Option<String> {
        extract(&self.database, database)
    }

    /// The customer whose role this is by name (`acme_user` -> `acme`), if any.
    pub fn customer_of_role(&self, role: &str) -> Option<String> {
        extract(&self.role, role)
    }
}

impl Config {
    /// Parse configuration text; `path` is used for messages and relative paths.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.path = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read the configuration from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// The configuration named by `--config`, else `$COSTPLUS_CONFIG`, else
    /// `/etc/costplus/costplus.toml`.
    pub fn discover(explicit: Option<&Path>) -> Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os(CONFIG_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/costplus/costplus.toml")),
        };
        Self::load(&path)
    }

    /// The state directory (journals, fingerprints, run records).
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/costplus"))
    }

    /// The `[maintenance]` section, or its defaults with run records under
    /// [`Config::state_dir`]`/maintenance`.
    pub fn maintenance_config(&self) -> crate::maintain::MaintenanceConfig {
        self.maintenance
            .clone()
            .unwrap_or_else(|| crate::maintain::MaintenanceConfig {
                state_dir: self.state_dir().join("maintenance"),
                ..crate::maintain::MaintenanceConfig::default()
            })
    }

    /// pgBackRest for `server` with the `[backup]` section, run as the cluster's OS user
    /// (`cluster_root`) or the server's `os_user`; `None` without a `[backup]` section.
    pub fn pgbackrest(
        &self,
        server: &ServerConfig,
    ) -> Result<Option<costplus_pgbackrest::PgBackRest>> {
        let Some(backup) = &self.backup else {
            return Ok(None);
        };
        let user = match &server.cluster_root {
            Some(root) => costplus_pgcluster::Cluster::open(root)?.os_user().clone(),
            None => costplus_fs::OsUser::by_name(&server.os_user)?,
        };
        Ok(Some(costplus_pgbackrest::PgBackRest::new(backup, user)))
    }

    /// The `[backup]` section, or an error saying it is missing.
    pub fn backup_section(&self) -> Result<&costplus_pgbackrest::BackupConfig> {
        self.backup.as_ref().ok_or_else(|| Error::Config {
            path: self.path.clone(),
            message: "no [backup] section; add one (see `costplus sandbox up` for an example)"
                .into(),
        })
    }

    /// What pgBackRest backs up on `server` (`pg1-*`): the cluster under `cluster_root`, else
    /// `[backup] pg_data` and `pg_socket_dir` with the server's port, OS user and admin user.
    pub fn pg_target(&self, server: &ServerConfig) -> Result<costplus_pgbackrest::conf::PgTarget> {
        let err = |message: String| Error::Config {
            path: self.path.clone(),
            message,
        };
        let backup = self.backup_section()?;
        if let Some(root) = &server.cluster_root {
            return Ok(costplus_pgbackrest::conf::PgTarget::of_cluster(
                &costplus_pgcluster::Cluster::open(root)?,
            ));
        }
        Ok(costplus_pgbackrest::conf::PgTarget {
            data_dir: backup.pg_data.clone().ok_or_else(|| {
                err(format!(
                    "server {}: set backup.pg_data (the data directory) or cluster_root",
                    server.name
                ))
            })?,
            port: server.port,
            socket_dir: backup
                .pg_socket_dir
                .clone()
                .unwrap_or_else(|| "/var/run/postgresql".into()),
            os_user: costplus_fs::OsUser::by_name(&server.os_user)?,
            superuser: server.admin_user.clone(),
        })
    }

    /// Serialise back to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        let err = |message: String| Error::Config {
            path: self.path.clone(),
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.servers {
            if !seen.insert(s.name.as_str()) {
                return Err(err(format!("server name {:?} appears twice", s.name)));
            }
            if s.sslmode == ConfigSslMode::VerifyFull
                && s.sslrootcert.is_none()
                && !s.host.starts_with('/')
            {
                return Err(err(format!(
                    "server {:?}: sslmode verify-full needs sslrootcert (the CA that signed the server certificate)",
                    s.name
                )));
            }
            if s.sslmode == ConfigSslMode::Disable && !s.host.starts_with('/') {
                return Err(err(format!(
                    "server {:?}: sslmode disable is only allowed for a Unix socket host (starting with /)",
                    s.name
                )));
            }
        }
        for (what, pattern) in [
            ("database", &self.naming.database),
            ("role", &self.naming.role),
        ] {
            if !pattern.contains("{name}") {
                return Err(err(format!(
                    "naming.{what} = {pattern:?} must contain {{name}}"
                )));
            }
        }
        Ok(())
    }

    /// The server named `name`, or the only one when `name` is `None`.
    pub fn server(&self, name: Option<&str>) -> Result<&ServerConfig> {
        let known = || {
            self.servers
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(n) => {
                self.servers
                    .iter()
                    .find(|s| s.name == n)
                    .ok_or_else(|| Error::UnknownServer {
                        name: n.into(),
                        path: self.path.clone(),
                        known: known(),
                    })
            }
            None => match self.servers.as_slice() {
                [one] => Ok(one),
                [] => Err(Error::Config {
                    path: self.path.clone(),
                    message: "no [[servers]] defined".into(),
                }),
                _ => Err(Error::Config {
                    path: self.path.clone(),
                    message: format!(
                        "several servers defined ({}); choose one with --server",
                        known()
                    ),
                }),
            },
        }
    }
}

impl ServerConfig {
    /// The server `name` for a local cluster reached at `host` over verified TLS (CA file
    /// `sslrootcert`) as its superuser with the cluster's password file.
    pub fn for_cluster(
        name: &str,
        cluster: &costplus_pgcluster::Cluster,
        host: &str,
        sslrootcert: PathBuf,
    ) -> Self {
        ServerConfig {
            name: name.into(),
            host: host.into(),
            port: cluster.port(),
            admin_user: cluster.superuser().into(),
            admin_database: "postgres".into(),
            sslmode: ConfigSslMode::VerifyFull,
            sslrootcert: Some(sslrootcert),
            password_file: Some(cluster.password_file()),
            os_user: cluster.os_user().name.clone(),
            cluster_root: Some(cluster.root().to_path_buf()),
            log_file: Some(cluster.log_file()),
        }
    }

    /// Administrator connection options (password read from `password_file`, which must be
    /// private to this user).
    pub fn admin_connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new(
            &self.host,
            self.port,
            &self.admin_user,
            &self.admin_database,
        );
        if let Some(file) = &self.password_file {
            costplus_fs::check_private(file)?;
            let pw = std::fs::read_to_string(file).map_err(|e| Error::Config {
                path: file.clone(),
                message: e.to_string(),
            })?;
            opts.password = Some(SecretString::from(
                pw.trim_end_matches(['\n', '\r']).to_string(),
            ));
        } else if let Some(pgpass) = pgpass_path() {
            // Like libpq: $PGPASSFILE, else ~/.pgpass, only when private.
            if pgpass.exists() {
                costplus_fs::check_private(&pgpass)?;
                let text = std::fs::read_to_string(&pgpass).map_err(|e| Error::Config {
                    path: pgpass.clone(),
                    message: e.to_string(),
                })?;
                opts.password = pgpass_lookup(
                    &text,
                    &self.host,
                    self.port,
                    &self.admin_database,
                    &self.admin_user,
                )
                .map(SecretString::from);
            }
        }
        opts.ssl = match (self.sslmode, &self.sslrootcert) {
            (ConfigSslMode::VerifyFull, Some(ca)) => SslMode::VerifyFull {
                ca_file: ca.clone(),
                server_name: None,
            },
            _ => SslMode::Disable,
        };
        Ok(opts)
    }
}

fn pgpass_path() -> Option<PathBuf> {
    std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))
}

/// Find the password for (host, port, database, user) in `.pgpass` text, as libpq does: the
/// first line whose fields match (`*` matches anything; `\:` and `\\` are escapes).
pub fn pgpass_lookup(
    text: &str,
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let ok = |f: &str, v: &str| f == "*" || f == v;
        if ok(&fields[0], host)
            && ok(&fields[1], &port)
            && ok(&fields[2], database)
            && ok(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml_str(text, Path::new("test.toml"))
    }

    #[test]
    fn minimal_server_gets_defaults() {
        let cfg = parse("[[servers]]\nname='a'\nhost='h'\nsslrootcert='/ca'\n").unwrap();
        let s = cfg.server(None).unwrap();
        assert_eq!(
            (s.port, s.admin_user.as_str(), s.sslmode),
            (5432, "postgres", ConfigSslMode::VerifyFull)
        );
        assert_eq!(cfg.naming.role_for("acme"), "acme_user");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("[[servers]]\nname='a'\nhost='h'\n", "needs sslrootcert"),
            (
                "[[servers]]\nname='a'\nhost='h'\nsslmode='disable'\n",
                "only allowed for a Unix socket",
            ),
            ("[naming]\ndatabase='db'\n", "must contain {name}"),
            (
                "[[servers]]\nname='a'\nhost='/run'\nsslmode='disable'\n[[servers]]\nname='a'\nhost='/run'\nsslmode='disable'\n",
                "appears twice",
            ),
            (
                "[[servers]]\nname='a'\nhost='h'\nbogus=1\n",
                "unknown field `bogus`",
            ),
            ("[[servers]]\nname='a'\nport='x'\n", "line 3"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains("test.toml"), "{err}");
        }
    }

    #[test]
    fn server_selection() {
        let two = "[[servers]]\nname='a'\nhost='/r'\nsslmode='disable'\n[[servers]]\nname='b'\nhost='/r'\nsslmode='disable'\n";
        let cfg = parse(two).unwrap();
        assert!(
            cfg.server(None)
                .unwrap_err()
                .to_string()
                .contains("--server")
        );
        assert_eq!(cfg.server(Some("b")).unwrap().name, "b");
        let err = cfg.server(Some("c")).unwrap_err().to_string();
        assert!(err.contains("known: a, b"), "{err}");
    }

    #[test]
    fn naming_extracts_customers() {
        let n = NamingPolicy::default();
        assert_eq!(n.customer_of_database("acme_db").as_deref(), Some("acme"));
        assert_eq!(n.customer_of_role("acme_user").as_deref(), Some("acme"));
        assert_eq!(n.customer_of_database("postgres"), None);
        assert_eq!(n.customer_of_database("_db"), None);
        let p = NamingPolicy {
            database: "cust_{name}".into(),
            role: "{name}".into(),
        };
        assert_eq!(p.customer_of_database("cust_x").as_deref(), Some("x"));
    }

    #[test]
    fn pgpass_matching_follows_libpq() {
        let text = "# comment\nother:5432:*:*:nope\ndb.example.com:5433:*:postgres:pa\\:ss\\\\w\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "db.example.com", 5433, "postgres", "postgres").as_deref(),
            Some("pa:ss\\w")
        );
        assert_eq!(
            pgpass_lookup(text, "db.example.com", 5432, "postgres", "postgres").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("h:1:d:u:p\n", "h", 2, "d", "u"), None);
    }

    #[test]
    fn round_trips() {
        let cfg =
            parse("[[servers]]\nname='a'\nhost='h'\nsslrootcert='/ca'\npassword_file='/pw'\n")
                .unwrap();
        let again = parse(&cfg.to_toml()).unwrap();
        assert_eq!(cfg, again);
    }
}
