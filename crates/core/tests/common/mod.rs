//! A configured server for customer tests: a real cluster, a vault, a state directory.

#![allow(dead_code, clippy::unwrap_used)] // shared by several test binaries, each uses a part

use std::path::PathBuf;

use costplus_core::config::{Config, CustomerPolicy, NamingPolicy, ServerConfig};
use costplus_core::customer::{self, Ctx};
use costplus_testsupport::TestCluster;
use costplus_vault::{NewKey, Vault, VaultConfig};

pub struct Env {
    pub cluster: TestCluster,
    pub config: Config,
    pub dir: tempfile::TempDir,
}

pub const HBA: &str = "\
# operator's own rules
local   all   postgres   peer map=costplus_admin
local   all   all        scram-sha-256
hostssl all   postgres   127.0.0.1/32   scram-sha-256
# final rejects
host    all   all        0.0.0.0/0      reject
host    all   all        ::/0           reject
";

/// The configuration an operator would write for cluster `c`: server `t` over TLS with the
/// cluster's password file; no vault, state directory or [backup].
pub fn config_of(c: &TestCluster) -> (Config, ServerConfig) {
    let server = ServerConfig::for_cluster("t", c.cluster(), c.cluster().listen(), c.ca_file());
    let config = Config {
        servers: vec![server.clone()],
        naming: NamingPolicy::default(),
        customers: Default::default(),
        state_dir: None,
        vault: None,
        backup: None,
        offsite: None,
        fail2ban: None,
        maintenance: None,
        path: c.cluster().root().join("costplus.toml"),
    };
    (config, server)
}

pub fn env_with(builder: costplus_testsupport::TestClusterBuilder) -> Env {
    let cluster = builder.hba(HBA).start();
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let key = dir.path().join("vault.key");
    Vault::init(&vault_dir, &NewKey::key_file(&key)).unwrap();
    let (mut config, _) = config_of(&cluster);
    config.customers = CustomerPolicy {
        connection_limit: 5,
        allowed_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
    };
    config.state_dir = Some(dir.path().join("state"));
    config.vault = Some(VaultConfig {
        dir: vault_dir,
        key_file: Some(key),
        passphrase_file: None,
    });
    config.path = dir.path().join("costplus.toml");
    std::fs::write(&config.path, config.to_toml()).unwrap();
    Env {
        cluster,
        config,
        dir,
    }
}

pub fn env() -> Env {
    env_with(TestCluster::builder())
}

impl Env {
    pub fn vault(&self) -> Vault {
        Vault::open_config(self.config.vault.as_ref().unwrap(), None).unwrap()
    }

    pub async fn admin(&self) -> tokio_postgres::Client {
        self.cluster.connect().await
    }

    /// Run `f` with a fresh context (new admin connection, vault opened anew).
    pub async fn with_ctx<T>(&self, f: impl AsyncFnOnce(&mut Ctx<'_>) -> T) -> T {
        let admin = self.admin().await;
        let mut vault = self.vault();
        let facts = customer::discover(&admin).await.unwrap();
        let mut ctx = Ctx {
            config: &self.config,
            server: &self.config.servers[0],
            admin: &admin,
            vault: &mut vault,
            facts,
        };
        f(&mut ctx).await
    }

    pub fn hba(&self) -> String {
        std::fs::read_to_string(self.cluster.cluster().hba_file()).unwrap()
    }

    pub fn state(&self) -> PathBuf {
        self.config.state_dir()
    }

    /// Try logging in as a customer with its vault password.
    pub async fn login(
        &self,
        customer: &str,
        db: &str,
        tls: bool,
    ) -> Result<tokio_postgres::Client, String> {
        use secrecy::ExposeSecret;
        let pw = self
            .vault()
            .get(customer)
            .map_err(|e| e.to_string())?
            .secret;
        let mut o = self.cluster.connect_options(db);
        o.user = format!("{customer}_user");
        o.password = Some(pw.expose_secret().to_string().into());
        if !tls {
            o.ssl = costplus_pgcluster::connect::SslMode::Disable;
        }
        costplus_pgcluster::connect::connect(&o)
            .await
            .map_err(|e| e.to_string())
    }

    /// The first column of `sql`'s rows, as text.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        self.admin()
            .await
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Roles, databases, managed pg_hba customers and vault records: the footprint on the system.
    pub async fn footprint(&self) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
        let roles = self
            .texts("SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1")
            .await;
        let dbs = self
            .texts("SELECT datname FROM pg_database ORDER BY 1")
            .await;
        let hba = costplus_hba::Document::parse(self.hba().as_bytes()).customers();
        let vault = self
            .vault()
            .list()
            .into_iter()
            .map(|s| format!("{}:{}", s.name, s.status))
            .collect();
        (roles, dbs, hba, vault)
    }
}
