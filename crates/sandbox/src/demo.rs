//! `costplus sandbox demo`: the whole product on the sandbox, as an operator would run it.
//!
//! Every step is a real costplus command (run through the `costplus` binary given in
//! [`DemoOptions::exe`], with `--format json`), so the demo shows exactly what an operator
//! types; only the customer's own connection is made here, as a customer's application would.
//! Running it again works: customers that exist are left as they are, new rows and a new backup
//! are added.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use secrecy::SecretString;
use serde::Serialize;

use crate::{Error, Layout, Result};

/// The demo customers.
pub const CUSTOMERS: &[&str] = &["acme", "globex", "initech"];

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Sandbox directory.
    pub dir: PathBuf,
    /// The `costplus` binary to run each step with.
    pub exe: PathBuf,
}

/// One step of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct DemoStep {
    /// What it does.
    pub title: String,
    /// The command an operator would type for it.
    pub command: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// One line of result.
    pub result: String,
}

/// The demo's summary.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Every step passed.
    pub ok: bool,
    /// Steps in order.
    pub steps: Vec<DemoStep>,
    /// Total seconds.
    pub total_seconds: f64,
    /// Where things are (label, path or value).
    pub places: Vec<(String, String)>,
}

struct Runner<'a> {
    exe: PathBuf,
    env: Vec<(String, String)>,
    steps: Vec<DemoStep>,
    progress: &'a mut dyn FnMut(&DemoStep),
}

impl Runner<'_> {
    /// Run `costplus ARGS --format json`, returning its JSON (and whether it exited 0).
    fn costplus(&self, args: &[&str]) -> Result<(bool, serde_json::Value, String)> {
        let out = Command::new(&self.exe)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .map_err(|e| Error::Io {
                path: self.exe.clone(),
                source: e,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        Ok((out.status.success(), json, stderr))
    }

    fn step(
        &mut self,
        title: &str,
        shown: &str,
        f: impl FnOnce(&Self) -> Result<(bool, String)>,
    ) -> bool {
        let t = Instant::now();
        let (ok, result) = match f(self) {
            Ok(r) => r,
            Err(e) => (false, e.to_string()),
        };
        let step = DemoStep {
            title: title.into(),
            command: shown.into(),
            ok,
            seconds: t.elapsed().as_secs_f64(),
            result,
        };
        (self.progress)(&step);
        self.steps.push(step);
        ok
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or("").chars().take(300).collect()
}

/// Run the demo; `progress` sees each step as it finishes.
pub fn run(opts: &DemoOptions, progress: &mut dyn FnMut(&DemoStep)) -> Result<DemoReport> {
    let started = Instant::now();
    let dir = opts.dir.display().to_string();
    let mut r = Runner {
        exe: opts.exe.clone(),
        env: Vec::new(),
        steps: Vec::new(),
        progress,
    };

    // 1. The sandbox itself.
    let up_ok = r.step(
        "bring up the sandbox (TLS cluster, S3 offsite, vault, encrypted backup repositories)",
        "costplus sandbox up",
        |r| {
            let (ok, json, err) =
                r.costplus(&["sandbox", "up", "--dir", &dir, "--format", "json"])?;
            if !ok {
                return Ok((false, first_line(&err)));
            }
            let created = if json["created"] == true {
                "created"
            } else {
                "reused"
            };
            Ok((
                true,
                format!(
                    "{created}: PostgreSQL on localhost:{}, S3 on https://localhost:{}",
                    json["state"]["pg_port"], json["state"]["s3_port"]
                ),
            ))
        },
    );
    if !up_ok {
        return Ok(finish(r.steps, started, Vec::new()));
    }
    r.env = crate::env(&opts.dir)?;

    // 2. Three customers.
    for name in CUSTOMERS {
        r.step(&format!("provision customer {name}"), &format!("costplus provision {name}"), |r| {
            let (ok, json, err) = r.costplus(&["provision", name, "--format", "json"])?;
            if !ok {
                return Ok((false, first_line(&err)));
            }
            let what = if json["already_provisioned"] == true { "already there" } else { "created" };
            Ok((true, format!("{what}: database {}, role {}, hostssl + scram-sha-256 only, password in the vault", json["database"].as_str().unwrap_or("?"), json["role"].as_str().unwrap_or("?"))))
        });
    }

    // 3. A customer connects over TLS with its own credentials and writes data.
    r.step("connect as acme over TLS (verify-full) and write rows", "psql \"host=localhost sslmode=verify-full user=acme_user dbname=acme_db\"", |r| {
        let out = Command::new(&r.exe)
            .args(["vault", "get", "acme", "--reveal"])
            .envs(r.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .map_err(|e| Error::Io { path: r.exe.clone(), source: e })?;
        if !out.status.success() {
            return Ok((false, "could not read acme's password from the vault".into()));
        }
        let password = SecretString::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let get = |k: &str| r.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let port: u16 = get("PGPORT").parse().unwrap_or(0);
        let mut o = costplus_pgcluster::connect::ConnectOptions::new("localhost", port, "acme_user", "acme_db");
        o.password = Some(password);
        o.ssl = costplus_pgcluster::connect::SslMode::VerifyFull { ca_file: get("PGSSLROOTCERT").into(), server_name: None };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Io { path: "tokio".into(), source: e })?;
        rt.block_on(async {
            let c = costplus_pgcluster::connect::connect(&o).await?;
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, item text NOT NULL, placed_at timestamptz DEFAULT now()); \
                 INSERT INTO orders (item) SELECT 'widget ' || g FROM generate_series(1, 100) g",
            )
            .await
            .map_err(costplus_pgcluster::Error::from)?;
            let row = c
                .query_one("SELECT count(*), (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()) FROM orders", &[])
                .await
                .map_err(costplus_pgcluster::Error::from)?;
            let (n, tls): (i64, Option<String>) = (row.get(0), row.get(1));
            Ok::<_, Error>((true, format!("{n} rows in acme_db.orders, connection encrypted with {}", tls.unwrap_or_else(|| "?".into()))))
        })
    });

    // 4. Isolation.
    r.step("prove isolation (catalog, pg_hba.conf, live logins between customers)", "costplus isolation check", |r| {
        let (_, json, err) = r.costplus(&["isolation", "check", "--format", "json", "--live-pairs", "6"])?;
        let Some(v) = json["violations"].as_array() else { return Ok((false, first_line(&err))) };
        Ok((
            v.is_empty(),
            format!(
                "{} customers, {} pairs: {} violations; live {}/{} cross logins and {}/{} plaintext logins refused",
                json["customers"], json["pairs"], v.len(), json["live"]["pairs_refused"], json["live"]["pairs_tried"], json["live"]["plaintext_refused"], json["live"]["plaintext_tried"]
            ),
        ))
    });

    // 5. Audit.
    r.step("audit the security posture", "costplus audit", |r| {
        let (ok, json, err) = r.costplus(&["audit", "--format", "json"])?;
        if !ok || json.is_null() {
            return Ok((false, first_line(&err)));
        }
        let failing: Vec<String> = json["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "fail")
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect();
        Ok((
            true,
            format!(
                "score {}/100 ({}); failing: {}",
                json["score"],
                json["rating"].as_str().unwrap_or("?"),
                if failing.is_empty() {
                    "none".into()
                } else {
                    failing.join(", ")
                }
            ),
        ))
    });

    // 6. Backups to both repositories.
    r.step(
        "full backup to repo1 (local) and repo2 (S3 offsite), both aes-256-cbc",
        "costplus backup run --type full",
        |r| {
            let (ok, json, err) =
                r.costplus(&["backup", "run", "--type", "full", "--format", "json"])?;
            if !ok {
                return Ok((false, first_line(&err)));
            }
            let parts: Vec<String> = json["backups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    format!(
                        "repo{} {} in {:.1}s",
                        b["repo"],
                        b["label"].as_str().unwrap_or("?"),
                        b["seconds"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            Ok((parts.len() == 2, parts.join(", ")))
        },
    );

    // 7. The offsite copy is complete and encrypted.
    r.step(
        "verify the offsite copy (every object present, WAL complete, encrypted)",
        "costplus offsite verify",
        |r| {
            let (_, json, err) = r.costplus(&["offsite", "verify", "--format", "json"])?;
            if json.is_null() {
                return Ok((false, first_line(&err)));
            }
            let problems = json["problems"].as_array().map_or(0, Vec::len);
            Ok((json["ok"] == true, format!("{} problems", problems)))
        },
    );

    // 8. A restore drill from the offsite repository.
    r.step(
        "restore drill from repo2 into a scratch cluster, checked against the backup",
        "costplus backup drill --repo 2",
        |r| {
            let (_, json, err) =
                r.costplus(&["backup", "drill", "--repo", "2", "--format", "json"])?;
            if json.is_null() {
                return Ok((false, first_line(&err)));
            }
            let checks = json["checks"].as_array().map_or(0, Vec::len);
            let passed = json["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["ok"] == true)
                .count();
            Ok((
                json["ok"] == true,
                format!(
                    "{}: {passed}/{checks} checks, restore {:.1}s, start {:.1}s, RTO {:.1}s{}",
                    if json["ok"] == true {
                        "passed"
                    } else {
                        "FAILED"
                    },
                    json["timings"]["restore_seconds"].as_f64().unwrap_or(0.0),
                    json["timings"]["start_seconds"].as_f64().unwrap_or(0.0),
                    json["timings"]["rto_seconds"].as_f64().unwrap_or(0.0),
                    json["reason"]
                        .as_str()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                ),
            ))
        },
    );

    let layout = Layout::new(&opts.dir)?;
    let get = |k: &str| {
        r.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let places = vec![
        ("sandbox".to_string(), layout.dir().display().to_string()),
        ("configuration".to_string(), get("COSTPLUS_CONFIG")),
        ("server log".to_string(), get("COSTPLUS_SERVER_LOG")),
        ("data directory".to_string(), get("COSTPLUS_DATA_DIR")),
        ("backup repo1".to_string(), get("COSTPLUS_REPO1_PATH")),
        (
            "offsite".to_string(),
            format!(
                "{}/{}",
                get("COSTPLUS_S3_ENDPOINT"),
                get("COSTPLUS_S3_BUCKET")
            ),
        ),
        (
            "vault".to_string(),
            layout.dir().join("vault").display().to_string(),
        ),
        (
            "use it".to_string(),
            format!(
                "eval \"$(costplus sandbox env --dir {})\" && psql",
                layout.dir().display()
            ),
        ),
    ];
    Ok(finish(r.steps, started, places))
}

fn finish(steps: Vec<DemoStep>, started: Instant, places: Vec<(String, String)>) -> DemoReport {
    DemoReport {
        ok: !steps.is_empty() && steps.iter().all(|s| s.ok),
        steps,
        total_seconds: started.elapsed().as_secs_f64(),
        places,
    }
}
