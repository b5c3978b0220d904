//! Running `pgbackrest` as the server's OS user, with typed results.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::failure::Failure;
use crate::info::{self, Stanza};
use crate::{BackupConfig, Error, Result};
use costplus_fs::OsUser;

/// `--type` of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackupType {
    /// Everything.
    Full,
    /// Changes since the last full backup.
    Diff,
    /// Changes since the last backup.
    Incr,
}

impl BackupType {
    /// `full`, `diff` or `incr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

impl std::str::FromStr for BackupType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(Self::Full),
            "diff" => Ok(Self::Diff),
            "incr" => Ok(Self::Incr),
            other => Err(Error::Config(format!(
                "backup type {other:?}: one of full, diff, incr"
            ))),
        }
    }
}

/// What `restore` should do (the scratch data directory always comes from the caller: a
/// restore never touches the live data directory through this API).
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The (empty) directory to restore into (`--pg1-path`).
    pub pg_path: PathBuf,
    /// Repository to restore from; default: pgBackRest's choice (repo1 first).
    pub repo: Option<u32>,
    /// Backup set label; default: the latest (or the one before `target`).
    pub set: Option<String>,
    /// Recovery target time (`--type=time --target=...`); default: end of the backup
    /// (`--type=immediate`).
    pub target: Option<String>,
    /// Only these databases (`--db-include`); the others are restored as sparse zeroed files.
    pub db_include: Vec<String>,
    /// Where tablespaces go (`--tablespace-map-all`), so a restore never writes into the live
    /// server's tablespace directories.
    pub tablespace_dir: Option<PathBuf>,
    /// pgBackRest's spool for this restore (`--spool-path`): a restore clears the archive-get
    /// queue in the spool, which must not be the live cluster's (its asynchronous archiving
    /// writes there at the same time).
    pub spool_dir: Option<PathBuf>,
    /// Parallel processes.
    pub process_max: Option<u32>,
}

impl RestoreOptions {
    /// A restore into scratch directory `scratch` as `drill::prepare_scratch` lays it out:
    /// `data/`, `tablespaces/`, its own `spool/`; the rest default.
    pub fn into_scratch(scratch: &std::path::Path) -> Self {
        RestoreOptions {
            pg_path: scratch.join("data"),
            tablespace_dir: Some(scratch.join("tablespaces")),
            spool_dir: Some(scratch.join("spool")),
            ..Default::default()
        }
    }

    /// The command-line arguments after `restore`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--pg1-path={}", self.pg_path.display()),
            "--archive-mode=off".into(),
            "--target-action=promote".into(),
        ];
        match &self.target {
            Some(t) => {
                a.push("--type=time".into());
                a.push(format!("--target={t}"));
            }
            None => a.push("--type=immediate".into()),
        }
        if let Some(r) = self.repo {
            a.push(format!("--repo={r}"));
        }
        if let Some(s) = &self.set {
            a.push(format!("--set={s}"));
        }
        for db in &self.db_include {
            a.push(format!("--db-include={db}"));
        }
        if let Some(t) = &self.tablespace_dir {
            a.push(format!("--tablespace-map-all={}", t.display()));
        }
        if let Some(s) = &self.spool_dir {
            a.push(format!("--spool-path={}", s.display()));
        }
        if let Some(p) = self.process_max {
            a.push(format!("--process-max={p}"));
        }
        a
    }
}

/// A handle on pgBackRest for one stanza and configuration file.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    exe: PathBuf,
    config_file: PathBuf,
    stanza: String,
    os_user: OsUser,
    io_timeout: Option<u32>,
}

/// Output of a successful command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl PgBackRest {
    /// pgBackRest (`pgbackrest` on PATH, or `$COSTPLUS_PGBACKREST`) for `cfg`'s stanza and
    /// configuration file, run as `os_user`.
    pub fn new(cfg: &BackupConfig, os_user: OsUser) -> Self {
        let exe = std::env::var_os("COSTPLUS_PGBACKREST")
            .map(PathBuf::from)
            .unwrap_or_else(|| find_on_path("pgbackrest"));
        Self {
            exe,
            config_file: cfg.config_file.clone(),
            stanza: cfg.stanza.clone(),
            os_user,
            io_timeout: None,
        }
    }

    /// The same handle with a shorter `--io-timeout` (seconds): for status queries, where an
    /// unreachable S3 endpoint would otherwise cost pgBackRest's default of 60 seconds per file
    /// and attempt.
    pub fn with_io_timeout(mut self, seconds: u32) -> Self {
        self.io_timeout = Some(seconds);
        self
    }

    /// The same handle with another configuration file (a drill with other secrets).
    pub fn with_config_file(mut self, path: &Path) -> Self {
        self.config_file = path.to_path_buf();
        self
    }

    /// The `--io-timeout` given to every command, if set.
    pub fn io_timeout(&self) -> Option<u32> {
        self.io_timeout
    }
    /// The stanza.
    pub fn stanza(&self) -> &str {
        &self.stanza
    }
    /// The configuration file.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }
    /// The OS user the commands run as.
    pub fn os_user(&self) -> &OsUser {
        &self.os_user
    }

    /// The command line (no secrets are ever in it), for plans and messages.
    pub fn command_line(&self, command: &str, args: &[String]) -> String {
        let mut s = format!(
            "{} --config={} --stanza={} {command}",
            self.exe.display(),
            self.config_file.display(),
            self.stanza
        );
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Run `pgbackrest <command> <args>`; a non-zero exit becomes a typed [`Failure`].
    pub fn run(&self, command: &str, args: &[String]) -> Result<Output> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(format!("--config={}", self.config_file.display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(self.io_timeout.map(|t| format!("--io-timeout={t}")))
            .arg(command)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            )
            .env("LC_ALL", "C")
            .env("HOME", &self.os_user.home)
            .env("USER", &self.os_user.name)
            .current_dir("/")
            .stdin(Stdio::null());
        if !self.os_user.is_current() {
            cmd.uid(self.os_user.uid).gid(self.os_user.gid);
        }
        let what = format!("{command} {}", args.join(" ")).trim().to_string();
        tracing::info!("running pgbackrest {what}");
        let out = cmd.output().map_err(|e| Error::NotInstalled {
            exe: self.exe.clone(),
            source: e,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(Output { stdout, stderr })
        } else {
            let text = format!("{stderr}{stdout}");
            Err(Failure::from_output(&what, out.status.code(), &text).into())
        }
    }

    /// `stanza-create` (idempotent).
    pub fn stanza_create(&self) -> Result<()> {
        self.run("stanza-create", &[]).map(drop)
    }

    /// `check`: the configuration works and WAL reaches every repository.
    pub fn check(&self) -> Result<()> {
        self.run("check", &[]).map(drop)
    }

    /// `backup --type=T --repo=N` (expire runs after it).
    pub fn backup(&self, kind: BackupType, repo: u32) -> Result<()> {
        self.run(
            "backup",
            &[
                format!("--type={}", kind.as_str()),
                format!("--repo={repo}"),
            ],
        )
        .map(drop)
    }

    /// `expire` (for one repository, or all).
    pub fn expire(&self, repo: Option<u32>) -> Result<()> {
        let args: Vec<String> = repo.map(|r| format!("--repo={r}")).into_iter().collect();
        self.run("expire", &args).map(drop)
    }

    /// `verify`: repository consistency (checksums of every file of the backups and WAL).
    /// Returns pgBackRest's text report.
    pub fn verify(&self, repo: Option<u32>) -> Result<String> {
        let mut args = vec!["--output=text".to_string(), "--verbose".to_string()];
        if let Some(r) = repo {
            args.push(format!("--repo={r}"));
        }
        self.run("verify", &args).map(|o| o.stdout)
    }

    /// `info --output=json` for this stanza (one repository, or all).
    pub fn info(&self, repo: Option<u32>) -> Result<Stanza> {
        let mut args = vec!["--output=json".to_string()];
        if let Some(r) = repo {
            args.push(format!("--repo={r}"));
        }
        self.info_with(&args)
    }

    /// `info --output=json --set=LABEL --repo=N`: adds the databases of the set.
    pub fn info_set(&self, repo: u32, label: &str) -> Result<Stanza> {
        self.info_with(&[
            "--output=json".into(),
            format!("--repo={repo}"),
            format!("--set={label}"),
        ])
    }

    fn info_with(&self, args: &[String]) -> Result<Stanza> {
        let out = self.run("info", args)?;
        let mut all = info::parse(&out.stdout)?;
        match all.iter().position(|s| s.name == self.stanza) {
            Some(i) => Ok(all.swap_remove(i)),
            None => Err(Error::Parse {
                command: "info --output=json".into(),
                message: format!("no stanza {:?} in the output", self.stanza),
            }),
        }
    }

    /// `restore` into `opts.pg_path`.
    pub fn restore(&self, opts: &RestoreOptions) -> Result<()> {
        self.run("restore", &opts.args()).map(drop)
    }

    /// `repo-ls --recurse --output=json` of `path` in `repo`: (relative name, size) of files.
    pub fn repo_files(&self, repo: u32, path: &str) -> Result<Vec<(String, u64)>> {
        let out = self.run(
            "repo-ls",
            &[
                "--recurse".into(),
                "--output=json".into(),
                format!("--repo={repo}"),
                path.to_string(),
            ],
        )?;
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out.stdout)
            .map_err(|e| Error::Parse {
                command: "repo-ls --output=json".into(),
                message: e.to_string(),
            })?;
        Ok(v.into_iter()
            .filter(|(_, e)| e["type"] == "file")
            .map(|(name, e)| (name, e["size"].as_u64().unwrap_or(0)))
            .collect())
    }
}

fn find_on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_arguments() {
        let o = RestoreOptions {
            pg_path: "/s/data".into(),
            repo: Some(2),
            set: Some("L".into()),
            ..Default::default()
        };
        assert_eq!(
            o.args(),
            [
                "--pg1-path=/s/data",
                "--archive-mode=off",
                "--target-action=promote",
                "--type=immediate",
                "--repo=2",
                "--set=L"
            ]
        );
        let o = RestoreOptions {
            pg_path: "/s".into(),
            target: Some("2026-01-01 10:00:00+00".into()),
            db_include: vec!["acme_db".into()],
            spool_dir: Some("/s/spool".into()),
            ..Default::default()
        };
        let a = o.args();
        assert!(a.contains(&"--spool-path=/s/spool".to_string()));
        assert!(a.contains(&"--type=time".to_string()));
        assert!(a.contains(&"--target=2026-01-01 10:00:00+00".to_string()));
        assert!(a.contains(&"--db-include=acme_db".to_string()));
    }

    #[test]
    fn backup_types_parse() {
        assert_eq!("incr".parse::<BackupType>().unwrap(), BackupType::Incr);
        assert!("weekly".parse::<BackupType>().is_err());
    }
}
