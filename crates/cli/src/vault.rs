//! `costplus-vault`: the encrypted credential vault.
//!
//! The vault is chosen with `--dir DIR` (plus `--key-file FILE` for a key-file vault; without
//! it the vault is protected by a passphrase) or with the `[vault]` section of the
//! configuration (`--config FILE`, else `$COSTPLUS_CONFIG`). A passphrase comes from
//! `--passphrase-fd N`, `--passphrase-file FILE` (or the section's `passphrase_file`), a prompt on
//! the terminal, or, last, `$COSTPLUS_VAULT_PASSPHRASE`. Secrets are read from stdin, never from
//! the command line, and printed only by `get --reveal`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use costplus_vault::{
    ArchiveKey, KdfParams, KeySource, Kind, NewKey, NewRecord, Status, Summary, Vault, VaultConfig,
    Which,
};

use crate::output::{Format, print_json};

/// Environment variable holding the passphrase (the last resort).
pub const PASSPHRASE_ENV: &str = "COSTPLUS_VAULT_PASSPHRASE";

/// Arguments of `costplus-vault`.
#[derive(Debug, ClapArgs)]
#[command(
    about = "An encrypted, tamper-evident vault for customer credentials and service secrets.",
    long_about = None
)]
pub struct Args {
    #[command(flatten)]
    pub(crate) global: crate::GlobalArgs,
    /// Configuration file whose `[vault]` section names the vault (default: $COSTPLUS_CONFIG
    /// when --dir is not given).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "dir")]
    pub config: Option<PathBuf>,
    /// The vault directory.
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// Key file of a key-file vault (`init` creates it, 0600, when missing).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Read the passphrase from this open file descriptor.
    #[arg(long, global = true, value_name = "FD")]
    pub passphrase_fd: Option<i32>,
    /// Read the passphrase from this file (0600).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Customer,
    Service,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Pending,
    Active,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Status {
        match s {
            StatusArg::Pending => Status::Pending,
            StatusArg::Active => Status::Active,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new, empty vault (and the key file, when it does not exist).
    Init {
        /// Target time of the passphrase key derivation, in milliseconds.
        #[arg(long, default_value_t = 500)]
        kdf_ms: u64,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Store a secret read from stdin (a new record, or the next generation of one).
    Put {
        /// Record name: the customer name, or `<service>/<item>` for a service secret.
        name: String,
        /// Read the secret from standard input (required: secrets never go on the command line).
        #[arg(long, required = true)]
        stdin: bool,
        /// Kind (default: from the name: with `/` a service, without a customer).
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// The customer's login role.
        #[arg(long)]
        role: Option<String>,
        /// The customer's database.
        #[arg(long)]
        database: Option<String>,
        /// The server (name in costplus.toml).
        #[arg(long)]
        server: Option<String>,
        /// Status (default: kept on update, active on create).
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Metadata `key=value` (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_kv)]
        meta: Vec<(String, String)>,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Show a record (metadata only, unless --reveal).
    Get {
        /// Record name.
        name: String,
        /// Print the secret.
        #[arg(long)]
        reveal: bool,
        /// The latest archived record of that name.
        #[arg(long)]
        archived: bool,
        /// Archive key file, for archived records wrapped to it.
        #[arg(long)]
        archive_key_file: Option<PathBuf>,
    },
    /// List records (no secrets).
    List {
        /// Include archived and shredded records.
        #[arg(long)]
        all: bool,
    },
    /// Set a live record's status (pending or active).
    SetStatus {
        /// Record name.
        name: String,
        /// New status.
        #[arg(value_enum)]
        status: StatusArg,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Remove a record entirely.
    Remove {
        /// Record name.
        name: String,
        /// The latest archived record of that name.
        #[arg(long)]
        archived: bool,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Move a live record to the archive section.
    Archive {
        /// Record name.
        name: String,
        /// Re-wrap its data key to this archive key file (created 0600 when missing).
        #[arg(long)]
        archive_key_file: Option<PathBuf>,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Destroy a record's data key (a tombstone stays).
    Shred {
        /// Record name.
        name: String,
        /// The latest archived record of that name.
        #[arg(long)]
        archived: bool,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Rotate the key-encryption key (re-wraps data keys only).
    RotateKey {
        /// New key file (created with a fresh key when missing).
        #[arg(long, conflicts_with_all = ["new_passphrase_file", "new_passphrase_fd"])]
        new_key_file: Option<PathBuf>,
        /// Read the new passphrase from this file.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Read the new passphrase from this file descriptor.
        #[arg(long)]
        new_passphrase_fd: Option<i32>,
        /// Target time of the passphrase key derivation, in milliseconds.
        #[arg(long, default_value_t = 500)]
        kdf_ms: u64,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Change the passphrase (a key rotation to a new passphrase; prompts when no source given).
    ChangePassphrase {
        /// Read the new passphrase from this file.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Read the new passphrase from this file descriptor.
        #[arg(long)]
        new_passphrase_fd: Option<i32>,
        /// Target time of the key derivation, in milliseconds.
        #[arg(long, default_value_t = 500)]
        kdf_ms: u64,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Write a customer's connection URI, .pgpass line and pg_service.conf section (0600).
    Export {
        /// Record name.
        name: String,
        /// Directory to write into (created 0700).
        #[arg(long)]
        out_dir: PathBuf,
        /// Server host (default: from the configuration's server).
        #[arg(long)]
        host: Option<String>,
        /// Server port (default: from the configuration's server).
        #[arg(long)]
        port: Option<u16>,
        /// CA certificate path on the customer's machine (default: the configured sslrootcert).
        #[arg(long)]
        sslrootcert: Option<String>,
        /// Service name in pg_service.conf (default: the record name).
        #[arg(long)]
        service: Option<String>,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Import the legacy plaintext credentials folder (one file per customer).
    Import {
        /// The folder.
        folder: PathBuf,
        /// Server name to record for the imported customers.
        #[arg(long)]
        server: Option<String>,
        /// Show what would be done, change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Check every record and look for leftovers of interrupted writes.
    Verify {
        /// Archive key file, to check archive-wrapped records fully.
        #[arg(long)]
        archive_key_file: Option<PathBuf>,
        /// Remove leftovers of interrupted writes.
        #[arg(long)]
        gc: bool,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Where the vault is and how it is unlocked, after reading flags and configuration.
struct Target {
    cfg: VaultConfig,
    /// The loaded configuration, when one was used (servers for `export`).
    core: Option<costplus_core::config::Config>,
}

fn target(args: &Args) -> anyhow::Result<Target> {
    if let Some(dir) = &args.dir {
        return Ok(Target {
            cfg: VaultConfig {
                dir: dir.clone(),
                key_file: args.key_file.clone(),
                passphrase_file: args.passphrase_file.clone(),
            },
            core: None,
        });
    }
    let path = match &args.config {
        Some(p) => p.clone(),
        None => std::env::var_os(costplus_core::config::CONFIG_ENV)
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow!(
                    "which vault? give --dir DIR (and --key-file FILE), or --config FILE (or set ${})",
                    costplus_core::config::CONFIG_ENV
                )
            })?,
    };
    let core = costplus_core::config::Config::load(&path)?;
    let mut cfg = core
        .vault
        .clone()
        .ok_or_else(|| anyhow!("{} has no [vault] section", path.display()))?;
    if args.key_file.is_some() {
        cfg.key_file = args.key_file.clone();
    }
    if args.passphrase_file.is_some() {
        cfg.passphrase_file = args.passphrase_file.clone();
    }
    Ok(Target {
        cfg,
        core: Some(core),
    })
}

/// The passphrase for opening: fd, file, terminal prompt, then the environment.
fn passphrase(args: &Args, cfg: &VaultConfig, prompt: &str) -> anyhow::Result<SecretString> {
    if let Some(fd) = args.passphrase_fd {
        return Ok(costplus_vault::keys::passphrase_from_fd(fd)?);
    }
    if let Some(f) = &cfg.passphrase_file {
        return Ok(costplus_vault::keys::passphrase_from_file(f)?);
    }
    if let Some(p) = prompt_tty(prompt)? {
        return Ok(p);
    }
    if let Some(p) = costplus_vault::keys::passphrase_from_env(PASSPHRASE_ENV)? {
        tracing::warn!(
            "using the passphrase from ${PASSPHRASE_ENV}; the environment leaks to child processes, prefer --passphrase-fd or --passphrase-file"
        );
        return Ok(p);
    }
    bail!(
        "the vault needs a passphrase: give --passphrase-fd, --passphrase-file, run on a terminal, or set ${PASSPHRASE_ENV}"
    )
}

/// Ask on the controlling terminal with echo off. `None` when there is no terminal.
fn prompt_tty(prompt: &str) -> anyhow::Result<Option<SecretString>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let Ok(mut tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(None);
    };
    let Ok(saved) = tcgetattr(&tty) else {
        return Ok(None);
    };
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    silent.local_flags.insert(LocalFlags::ECHONL);
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    tcsetattr(&tty, SetArg::TCSAFLUSH, &silent)?;
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    let result = loop {
        match tty.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) => line.push(byte[0]),
            Err(e) => break Err(e),
        }
    };
    let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, &saved);
    result?;
    let text = std::str::from_utf8(&line).context("the passphrase is not UTF-8")?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        bail!("empty passphrase");
    }
    Ok(Some(SecretString::from(text.to_string())))
}

fn key_source(args: &Args, t: &Target) -> anyhow::Result<KeySource> {
    Ok(match &t.cfg.key_file {
        Some(k) => KeySource::KeyFile(k.clone()),
        None => KeySource::Passphrase(passphrase(args, &t.cfg, "vault passphrase: ")?),
    })
}

fn open(args: &Args, t: &Target) -> anyhow::Result<Vault> {
    let source = key_source(args, t)?;
    Vault::open(&t.cfg.dir, &source)
        .with_context(|| format!("opening the vault {}", t.cfg.dir.display()))
}

fn new_passphrase(file: Option<&Path>, fd: Option<i32>) -> anyhow::Result<SecretString> {
    if let Some(fd) = fd {
        return Ok(costplus_vault::keys::passphrase_from_fd(fd)?);
    }
    if let Some(f) = file {
        return Ok(costplus_vault::keys::passphrase_from_file(f)?);
    }
    let Some(p) = prompt_tty("new vault passphrase: ")? else {
        bail!(
            "give the new passphrase with --new-passphrase-file or --new-passphrase-fd (no terminal to ask on)"
        );
    };
    let Some(again) = prompt_tty("repeat it: ")? else {
        bail!("no terminal");
    };
    if p.expose_secret() != again.expose_secret() {
        bail!("the two passphrases differ");
    }
    Ok(p)
}

fn kdf_for(ms: u64) -> anyhow::Result<KdfParams> {
    Ok(KdfParams::calibrate(Duration::from_millis(ms.max(1)))?)
}

fn read_secret_stdin() -> anyhow::Result<SecretString> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading the secret from stdin")?;
    let text = std::str::from_utf8(&buf).context("the secret on stdin is not UTF-8")?;
    // One trailing newline (from `echo`) is not part of the secret.
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        bail!("the secret on stdin is empty");
    }
    Ok(SecretString::from(text.to_string()))
}

fn print_plan(format: Format, actions: &[String]) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&json!({ "plan": true, "actions": actions })),
        Format::Human => {
            println!("plan (nothing changed):");
            for a in actions {
                println!("  - {a}");
            }
            Ok(())
        }
    }
}

fn which<'a>(name: &'a str, archived: bool) -> Which<'a> {
    if archived {
        Which::Archived(name)
    } else {
        Which::Live(name)
    }
}

fn summary_line(s: &Summary) -> String {
    format!(
        "{} ({} {}, generation {})",
        s.name, s.kind, s.status, s.generation
    )
}

/// Run `costplus-vault ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t = target(&args)?;
    let fmt = args.format;
    match &args.command {
        Command::Init { kdf_ms, plan } => {
            let key = match &t.cfg.key_file {
                Some(k) => NewKey::key_file(k),
                None => {
                    let p = match (&args.passphrase_fd, &t.cfg.passphrase_file) {
                        (None, None) => new_passphrase(None, None)
                            .or_else(|_| passphrase(&args, &t.cfg, "new vault passphrase: "))?,
                        _ => passphrase(&args, &t.cfg, "new vault passphrase: ")?,
                    };
                    NewKey {
                        source: KeySource::Passphrase(p),
                        kdf: if *plan { None } else { Some(kdf_for(*kdf_ms)?) },
                    }
                }
            };
            if *plan {
                let mut actions = vec![format!(
                    "create the vault {} (0700) with an empty manifest",
                    t.cfg.dir.display()
                )];
                if t.cfg.dir.join(costplus_vault::MANIFEST_NAME).exists() {
                    bail!("{} already holds a vault", t.cfg.dir.display());
                }
                match &t.cfg.key_file {
                    Some(k) if !k.exists() => actions.push(format!(
                        "create the key file {} (0600) with a new random key",
                        k.display()
                    )),
                    Some(k) => actions.push(format!("use the existing key file {}", k.display())),
                    None => actions.push(format!(
                        "derive the key from the passphrase with Argon2id calibrated to {kdf_ms} ms"
                    )),
                }
                print_plan(fmt, &actions)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (_, report) = Vault::init(&t.cfg.dir, &key)?;
            match fmt {
                Format::Json => print_json(&json!({
                    "dir": report.dir,
                    "vault_id": report.vault_id,
                    "key_source": report.key_source,
                    "key_file": t.cfg.key_file,
                    "key_file_created": report.key_file_created,
                    "kdf": report.kdf,
                }))?,
                Format::Human => {
                    println!("vault created: {}", report.dir.display());
                    match (&t.cfg.key_file, report.kdf) {
                        (Some(k), _) => println!(
                            "  key file {} ({}); keep a copy off this server",
                            k.display(),
                            if report.key_file_created {
                                "created, 0600"
                            } else {
                                "existing"
                            }
                        ),
                        (None, Some(kdf)) => println!(
                            "  passphrase, Argon2id {} KiB x {} passes x {} lanes",
                            kdf.m_cost_kib, kdf.t_cost, kdf.p_cost
                        ),
                        (None, None) => {}
                    }
                }
            }
        }
        Command::Put {
            name,
            stdin: _,
            kind,
            role,
            database,
            server,
            status,
            meta,
            plan,
        } => {
            let mut v = open(&args, &t)?;
            let existing = match v.get(name.as_str()) {
                Ok(r) => Some(r),
                Err(costplus_vault::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            if *plan {
                let action = match &existing {
                    Some(r) => format!(
                        "write generation {} of {} (read the secret from stdin)",
                        r.summary.generation + 1,
                        r.summary.name
                    ),
                    None => format!("create {name} (read the secret from stdin)"),
                };
                print_plan(fmt, &[action])?;
                return Ok(ExitCode::SUCCESS);
            }
            let secret = read_secret_stdin()?;
            let kind = match kind {
                Some(KindArg::Customer) => Kind::Customer,
                Some(KindArg::Service) => Kind::Service,
                None => Kind::of_name(name),
            };
            let mut metadata: BTreeMap<String, String> = existing
                .as_ref()
                .map(|r| r.metadata.clone())
                .unwrap_or_default();
            metadata.extend(meta.iter().cloned());
            let old = existing.as_ref().map(|r| &r.summary);
            let rec = NewRecord {
                name: name.clone(),
                kind,
                status: status
                    .map(Status::from)
                    .or(old.map(|s| s.status))
                    .unwrap_or(Status::Active),
                secret,
                role: role.clone().or_else(|| old.and_then(|s| s.role.clone())),
                database: database
                    .clone()
                    .or_else(|| old.and_then(|s| s.database.clone())),
                server: server
                    .clone()
                    .or_else(|| old.and_then(|s| s.server.clone())),
                metadata,
            };
            let s = v.put(rec)?;
            match fmt {
                Format::Json => print_json(&s)?,
                Format::Human => println!("stored {}", summary_line(&s)),
            }
        }
        Command::Get {
            name,
            reveal,
            archived,
            archive_key_file,
        } => {
            let v = open(&args, &t)?;
            let w = which(name, *archived);
            let rec = match archive_key_file {
                Some(f) => v.get_archived(w, &ArchiveKey::from_file(f, false)?)?,
                None => v.get(w)?,
            };
            match fmt {
                Format::Json => {
                    let mut j = serde_json::to_value(&rec.summary)?;
                    j["metadata"] = serde_json::to_value(&rec.metadata)?;
                    if *reveal {
                        j["secret"] = rec.secret.expose_secret().into();
                    }
                    print_json(&j)?;
                }
                Format::Human if *reveal => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(rec.secret.expose_secret().as_bytes())?;
                    if out.is_terminal() {
                        out.write_all(b"\n")?;
                    }
                    out.flush()?;
                }
                Format::Human => {
                    let s = &rec.summary;
                    println!("name        {}", s.name);
                    println!("kind        {}", s.kind);
                    println!("status      {}", s.status);
                    println!("generation  {}", s.generation);
                    println!("created     {}", s.created.to_rfc3339());
                    println!("updated     {}", s.updated.to_rfc3339());
                    for (k, v) in [
                        ("role", &s.role),
                        ("database", &s.database),
                        ("server", &s.server),
                    ] {
                        if let Some(v) = v {
                            println!("{k:<11} {v}");
                        }
                    }
                    for (k, v) in &rec.metadata {
                        println!("meta        {k}={v}");
                    }
                    println!("secret      (hidden; --reveal prints it)");
                }
            }
        }
        Command::List { all } => {
            let v = open(&args, &t)?;
            let list: Vec<Summary> = v
                .list()
                .into_iter()
                .filter(|s| *all || s.status.is_live())
                .collect();
            match fmt {
                Format::Json => print_json(&json!({ "records": list }))?,
                Format::Human => {
                    println!(
                        "{:<32} {:<8} {:<8} {:>4}  {:<20} {:<20} {:<20} SERVER",
                        "NAME", "KIND", "STATUS", "GEN", "UPDATED", "ROLE", "DATABASE"
                    );
                    for s in &list {
                        println!(
                            "{:<32} {:<8} {:<8} {:>4}  {:<20} {:<20} {:<20} {}",
                            s.name,
                            s.kind.to_string(),
                            s.status.to_string(),
                            s.generation,
                            s.updated.format("%Y-%m-%d %H:%M:%S"),
                            s.role.as_deref().unwrap_or("-"),
                            s.database.as_deref().unwrap_or("-"),
                            s.server.as_deref().unwrap_or("-"),
                        );
                    }
                }
            }
        }
        Command::SetStatus { name, status, plan } => {
            let mut v = open(&args, &t)?;
            let s = v.summary(name.as_str())?;
            let to = Status::from(*status);
            if *plan {
                print_plan(fmt, &[format!("set {} from {} to {to}", s.name, s.status)])?;
                return Ok(ExitCode::SUCCESS);
            }
            let s = v.set_status(name, to)?;
            report(fmt, "status set", &s)?;
        }
        Command::Remove {
            name,
            archived,
            plan,
        } => {
            let mut v = open(&args, &t)?;
            let w = which(name, *archived);
            let s = v.summary(w)?;
            if *plan {
                print_plan(fmt, &[format!("remove {} and its file", summary_line(&s))])?;
                return Ok(ExitCode::SUCCESS);
            }
            let s = v.remove(w)?;
            report(fmt, "removed", &s)?;
        }
        Command::Archive {
            name,
            archive_key_file,
            plan,
        } => {
            let mut v = open(&args, &t)?;
            let s = v.summary(name.as_str())?;
            if *plan {
                let to = match archive_key_file {
                    Some(f) => format!("re-wrapped to the archive key {}", f.display()),
                    None => "still wrapped to the vault key".into(),
                };
                print_plan(fmt, &[format!("archive {}, {to}", summary_line(&s))])?;
                return Ok(ExitCode::SUCCESS);
            }
            let key = archive_key_file
                .as_ref()
                .map(|f| ArchiveKey::from_file(f, true))
                .transpose()?;
            let s = v.archive(name, key.as_ref())?;
            report(fmt, "archived", &s)?;
        }
        Command::Shred {
            name,
            archived,
            plan,
        } => {
            let mut v = open(&args, &t)?;
            let w = which(name, *archived);
            let s = v.summary(w)?;
            if *plan {
                print_plan(
                    fmt,
                    &[format!(
                        "destroy the data key of {} (a tombstone stays)",
                        summary_line(&s)
                    )],
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let s = v.shred(w)?;
            report(fmt, "shredded", &s)?;
        }
        Command::RotateKey {
            new_key_file,
            new_passphrase_file,
            new_passphrase_fd,
            kdf_ms,
            plan,
        } => {
            let mut v = open(&args, &t)?;
            let count = v
                .list()
                .iter()
                .filter(|s| s.wrapped_to == "vault key")
                .count();
            if *plan {
                let to = match new_key_file {
                    Some(k) => format!("the key file {}", k.display()),
                    None => "a new passphrase".into(),
                };
                print_plan(
                    fmt,
                    &[format!(
                        "re-wrap {count} data keys to {to}; ciphertexts unchanged"
                    )],
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let new = match new_key_file {
                Some(k) => NewKey::key_file(k),
                None => NewKey {
                    source: KeySource::Passphrase(new_passphrase(
                        new_passphrase_file.as_deref(),
                        *new_passphrase_fd,
                    )?),
                    kdf: Some(kdf_for(*kdf_ms)?),
                },
            };
            rotated(fmt, v.rotate_key(&new)?)?;
        }
        Command::ChangePassphrase {
            new_passphrase_file,
            new_passphrase_fd,
            kdf_ms,
            plan,
        } => {
            let mut v = open(&args, &t)?;
            if *plan {
                print_plan(
                    fmt,
                    &["re-wrap every data key to a key derived from the new passphrase".into()],
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let new = NewKey {
                source: KeySource::Passphrase(new_passphrase(
                    new_passphrase_file.as_deref(),
                    *new_passphrase_fd,
                )?),
                kdf: Some(kdf_for(*kdf_ms)?),
            };
            rotated(fmt, v.rotate_key(&new)?)?;
        }
        Command::Export {
            name,
            out_dir,
            host,
            port,
            sslrootcert,
            service,
            plan,
        } => {
            let v = open(&args, &t)?;
            let rec = v.get(name.as_str())?;
            let server = match (&t.core, &rec.summary.server) {
                (Some(core), s) => core.server(s.as_deref()).ok().cloned(),
                (None, _) => None,
            };
            let host = host
                .clone()
                .or_else(|| server.as_ref().map(|s| s.host.clone()))
                .ok_or_else(|| anyhow!("give --host (no configured server for {name})"))?;
            let port = port
                .or_else(|| server.as_ref().map(|s| s.port))
                .ok_or_else(|| anyhow!("give --port (no configured server for {name})"))?;
            let ca = sslrootcert
                .clone()
                .or_else(|| {
                    server
                        .as_ref()
                        .and_then(|s| s.sslrootcert.as_ref())
                        .map(|p| p.display().to_string())
                })
                .ok_or_else(|| {
                    anyhow!(
                        "give --sslrootcert: the CA certificate's path on the customer's machine"
                    )
                })?;
            let conn = costplus_vault::export::Connection::from_record(&rec, &host, port, &ca)?;
            let service = service.clone().unwrap_or_else(|| name.clone());
            if *plan {
                print_plan(
                    fmt,
                    &[format!(
                        "write connection-uri.txt, pgpass and pg_service.conf (0600) for {name} at {host}:{port} into {}",
                        out_dir.display()
                    )],
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let files = costplus_vault::export::write_files(out_dir, &service, &conn)?;
            match fmt {
                Format::Json => print_json(&json!({ "name": name, "files": files }))?,
                Format::Human => {
                    println!("exported {name} (files 0600, they hold the password):");
                    println!("  {}", files.uri.display());
                    println!("  {}  (append to ~/.pgpass)", files.pgpass.display());
                    println!(
                        "  {}  (append to ~/.pg_service.conf)",
                        files.service.display()
                    );
                }
            }
        }
        Command::Import {
            folder,
            server,
            plan,
        } => {
            let items = costplus_vault::import::read_legacy_dir(folder, server.as_deref())?;
            let names: Vec<String> = items.iter().map(|l| l.record.name.clone()).collect();
            let warning = format!(
                "these {} passwords were stored in plaintext in {}: rotate them, then delete the folder",
                names.len(),
                folder.display()
            );
            if *plan {
                let actions: Vec<String> = items
                    .iter()
                    .map(|l| format!("import {} from {}", l.record.name, l.path.display()))
                    .collect();
                print_plan(fmt, &actions)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut v = open(&args, &t)?;
            v.put_many(items.into_iter().map(|l| l.record).collect(), false)?;
            eprintln!("warning: {warning}");
            match fmt {
                Format::Json => print_json(&json!({ "imported": names, "warning": warning }))?,
                Format::Human => {
                    println!("imported {} records:", names.len());
                    for n in &names {
                        println!("  {n}");
                    }
                }
            }
        }
        Command::Verify {
            archive_key_file,
            gc,
        } => {
            let mut v = open(&args, &t)?;
            let key = archive_key_file
                .as_ref()
                .map(|f| ArchiveKey::from_file(f, false))
                .transpose()?;
            let report = v.verify(key.as_ref());
            let removed = if *gc && report.problems.is_empty() {
                v.gc()?
            } else {
                vec![]
            };
            match fmt {
                Format::Json => print_json(&json!({
                    "ok": report.problems.is_empty(),
                    "checked": report.checked,
                    "structure_only": report.structure_only,
                    "problems": report.problems,
                    "leftovers": report.leftovers,
                    "removed": removed,
                }))?,
                Format::Human => {
                    println!(
                        "{} records checked, {} checked without the archive key",
                        report.checked, report.structure_only
                    );
                    for p in &report.problems {
                        println!("PROBLEM: {p}");
                    }
                    for l in &report.leftovers {
                        let what = if removed.contains(l) {
                            "removed"
                        } else {
                            "leftover"
                        };
                        println!("{what}: {}", l.display());
                    }
                }
            }
            if !report.problems.is_empty() {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(fmt: Format, verb: &str, s: &Summary) -> anyhow::Result<()> {
    match fmt {
        Format::Json => print_json(s),
        Format::Human => {
            println!("{verb}: {}", summary_line(s));
            Ok(())
        }
    }
}

fn rotated(fmt: Format, r: costplus_vault::RotateReport) -> anyhow::Result<()> {
    match fmt {
        Format::Json => print_json(&r),
        Format::Human => {
            println!(
                "key rotated to epoch {} ({}): {} data keys re-wrapped, {} archive-wrapped left alone",
                r.key_epoch, r.key_source, r.rewrapped, r.archive_wrapped
            );
            Ok(())
        }
    }
}
