//! Provision one customer from a configuration file: `provision_one CONFIG NAME`.
//!
//! The crash-safety test runs it with `FAILPOINTS=<step>=sleep(...)` and kills it with SIGKILL
//! at a step boundary.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // an example: fail loudly, print the result

use costplus_core::config::Config;
use costplus_core::customer::{self, Ctx, ProvisionOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let scenario = fail::FailScenario::setup();
    let args: Vec<String> = std::env::args().collect();
    let config = Config::load(std::path::Path::new(&args[1])).unwrap();
    let server = config.server(None).unwrap();
    let admin = costplus_pgcluster::connect::connect(&server.admin_connect_options().unwrap())
        .await
        .unwrap();
    let mut vault =
        costplus_vault::Vault::open_config(config.vault.as_ref().unwrap(), None).unwrap();
    let facts = customer::discover(&admin).await.unwrap();
    let mut ctx = Ctx {
        config: &config,
        server,
        admin: &admin,
        vault: &mut vault,
        facts,
    };
    let report = customer::provision(&mut ctx, &args[2], ProvisionOptions::default())
        .await
        .unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    scenario.teardown();
}
