//! fail2ban for the PostgreSQL port: the filter, the jail, the PostgreSQL logging settings they
//! need, and checks against the real `fail2ban-regex` and `fail2ban-client`.
//!
//! The filter reads costplus's `log_line_prefix` (see [`crate::pglog`]): every session line
//! names the client host, so one failed login is one matched line with the right address, and
//! nothing a successful login writes ever matches.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use costplus_fs::{WriteOptions, write_atomic};

/// Name of the filter and of the jail.
pub const NAME: &str = "costplus-postgresql";

/// The firewall action fail2ban uses to ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BanAction {
    /// `ufw` (hosts managed with ufw).
    Ufw,
    /// nftables, multiport.
    #[default]
    Nftables,
}

impl BanAction {
    fn jail_value(self) -> &'static str {
        match self {
            BanAction::Ufw => "ufw",
            BanAction::Nftables => "nftables-multiport",
        }
    }
}

/// The jail's settings (the `[fail2ban]` section of costplus.toml; defaults from the runbook:
/// 5 failures, 1 hour ban).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JailOptions {
    /// PostgreSQL ports to protect.
    pub ports: Vec<u16>,
    /// The PostgreSQL log file fail2ban reads.
    pub logpath: PathBuf,
    /// Failures before a ban.
    pub maxretry: u32,
    /// Window in which failures are counted (fail2ban time syntax: `10m`, `1h`).
    pub findtime: String,
    /// Ban duration.
    pub bantime: String,
    /// Firewall action.
    pub banaction: BanAction,
    /// Addresses never banned (the operator's own).
    pub ignoreip: Vec<String>,
}

impl Default for JailOptions {
    fn default() -> Self {
        Self {
            ports: vec![5432],
            logpath: PathBuf::from("/var/log/postgresql/postgresql.log"),
            maxretry: 5,
            findtime: "10m".into(),
            bantime: "1h".into(),
            banaction: BanAction::default(),
            ignoreip: vec!["127.0.0.1/8".into(), "::1".into()],
        }
    }
}

/// The PostgreSQL settings the filter relies on, as (name, value) for `ALTER SYSTEM`.
pub fn required_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("log_line_prefix", crate::pglog::LOG_LINE_PREFIX),
        ("lc_messages", "C"),
        ("log_timezone", "UTC"),
        ("log_connections", "on"),
    ]
}

/// The filter file (`filter.d/costplus-postgresql.conf`).
pub fn render_filter() -> String {
    // After fail2ban cuts the leading timestamp, a session line reads
    // " [PID] user@db HOST LEVEL:  message". Each failed attempt writes exactly one FATAL line.
    let session = r"^\s*\[\d+\] \S+@\S+ <HOST> FATAL:  ";
    format!(
        "# fail2ban filter for PostgreSQL login failures, written by costplus.\n\
         # It needs, in postgresql.conf: log_line_prefix = '{prefix}', lc_messages = 'C',\n\
         # log_timezone = 'UTC' (`costplus-fail2ban install` sets them).\n\
         [INCLUDES]\n\
         before = common.conf\n\n\
         [Definition]\n\
         failregex = {session}password authentication failed for user\n\
         \x20           {session}\\S+ authentication failed for user\n\
         \x20           {session}no pg_hba\\.conf entry for host\n\
         \x20           {session}pg_hba\\.conf rejects connection for host\n\
         \x20           {session}role \".*\" does not exist\n\
         ignoreregex =\n\
         datepattern = ^%%Y-%%m-%%d %%H:%%M:%%S(?:\\.%%f)? %%Z\n",
        prefix = crate::pglog::LOG_LINE_PREFIX,
    )
}

/// The jail file (`jail.d/costplus-postgresql.conf`).
pub fn render_jail(opts: &JailOptions) -> String {
    let ports = opts
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "# fail2ban jail for the PostgreSQL port, written by costplus.\n\
         [{NAME}]\n\
         enabled  = true\n\
         filter   = {NAME}\n\
         port     = {ports}\n\
         protocol = tcp\n\
         logpath  = {logpath}\n\
         backend  = auto\n\
         maxretry = {maxretry}\n\
         findtime = {findtime}\n\
         bantime  = {bantime}\n\
         banaction = {banaction}\n\
         ignoreip = {ignoreip}\n",
        logpath = opts.logpath.display(),
        maxretry = opts.maxretry,
        findtime = opts.findtime,
        bantime = opts.bantime,
        banaction = opts.banaction.jail_value(),
        ignoreip = opts.ignoreip.join(" "),
    )
}

/// Files written by [`render_to`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// The filter file.
    pub filter: PathBuf,
    /// The jail file.
    pub jail: PathBuf,
}

impl Rendered {
    /// Where the two files go under a fail2ban configuration directory.
    pub fn paths(dir: &Path) -> Self {
        Self {
            filter: dir.join("filter.d").join(format!("{NAME}.conf")),
            jail: dir.join("jail.d").join(format!("{NAME}.conf")),
        }
    }
}

/// Write `filter.d/costplus-postgresql.conf` and `jail.d/costplus-postgresql.conf` under `dir`
/// (a fail2ban configuration directory such as `/etc/fail2ban`), atomically, mode 0644.
pub fn render_to(dir: &Path, opts: &JailOptions) -> Result<Rendered> {
    validate(opts)?;
    let paths = Rendered::paths(dir);
    for sub in ["filter.d", "jail.d"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::Io {
            path: d.clone(),
            source: e,
        })?;
    }
    write_atomic(
        &paths.filter,
        render_filter().as_bytes(),
        &WriteOptions::public(),
    )?;
    write_atomic(
        &paths.jail,
        render_jail(opts).as_bytes(),
        &WriteOptions::public(),
    )?;
    Ok(paths)
}

fn validate(opts: &JailOptions) -> Result<()> {
    let bad = |m: String| Error::Invalid(m);
    if opts.ports.is_empty() || opts.ports.contains(&0) {
        return Err(bad("fail2ban: at least one non-zero port is needed".into()));
    }
    if opts.maxretry == 0 {
        return Err(bad("fail2ban: maxretry must be at least 1".into()));
    }
    for (what, v) in [("findtime", &opts.findtime), ("bantime", &opts.bantime)] {
        let ok = !v.is_empty()
            && (v == "-1"
                || v.trim_end_matches(['s', 'm', 'h', 'd', 'w'])
                    .chars()
                    .all(|c| c.is_ascii_digit()))
            && v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(bad(format!(
                "fail2ban: {what} = {v:?} is not a fail2ban time (e.g. 10m, 1h, 1d)"
            )));
        }
    }
    let path = opts.logpath.to_string_lossy();
    if path.contains(['\n', '\r']) || !opts.logpath.is_absolute() {
        return Err(bad(format!(
            "fail2ban: logpath {path:?} must be an absolute path on one line"
        )));
    }
    Ok(())
}

/// The result of running the real `fail2ban-regex` over a log with our filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegexCheck {
    /// The client address of every matched line, in order.
    pub matched: Vec<IpAddr>,
}

/// Run `fail2ban-regex -o ip LOG FILTER` and return the matched addresses.
pub fn check_with_fail2ban_regex(
    fail2ban_regex: &Path,
    log: &Path,
    filter: &Path,
) -> Result<RegexCheck> {
    let filter = std::path::absolute(filter).map_err(|e| Error::Io {
        path: filter.into(),
        source: e,
    })?;
    let out = Command::new(fail2ban_regex)
        .args(["--raw", "-o", "ip"])
        .arg(log)
        .arg(&filter)
        .output()
        .map_err(|e| Error::Tool {
            tool: fail2ban_regex.display().to_string(),
            message: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.contains("ERROR") {
        return Err(Error::Tool {
            tool: "fail2ban-regex".into(),
            message: format!("{}{}", stdout, String::from_utf8_lossy(&out.stderr)),
        });
    }
    let mut matched = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ip = line.parse().map_err(|_| Error::Tool {
            tool: "fail2ban-regex".into(),
            message: format!("unexpected output line {line:?}"),
        })?;
        matched.push(ip);
    }
    Ok(RegexCheck { matched })
}

/// Current bans of the jail, from `fail2ban-client status costplus-postgresql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Bans {
    /// fail2ban answered; these addresses are banned.
    Active {
        /// Banned addresses.
        banned: Vec<String>,
        /// Failures currently counted.
        currently_failed: u64,
    },
    /// fail2ban is not installed or not running, or the jail is missing: why.
    Unknown {
        /// The reason.
        reason: String,
    },
}

/// Ask `fail2ban-client` for the jail's bans.
pub fn bans(fail2ban_client: Option<&Path>) -> Bans {
    let Some(client) = fail2ban_client else {
        return Bans::Unknown {
            reason: "fail2ban-client is not installed".into(),
        };
    };
    match Command::new(client).args(["status", NAME]).output() {
        Ok(out) if out.status.success() => parse_status(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => Bans::Unknown {
            reason: format!(
                "fail2ban-client status {NAME}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        },
        Err(e) => Bans::Unknown {
            reason: format!("{}: {e}", client.display()),
        },
    }
}

/// Parse the output of `fail2ban-client status <jail>`.
pub fn parse_status(text: &str) -> Bans {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.split_once(name)
                .map(|(_, v)| v.trim_start_matches(':').trim().to_string())
        })
    };
    let banned = field("Banned IP list")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let currently_failed = field("Currently failed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Bans::Active {
        banned,
        currently_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_has_the_runbook_defaults() {
        let jail = render_jail(&JailOptions {
            ports: vec![5433],
            ..JailOptions::default()
        });
        for line in [
            "[costplus-postgresql]",
            "port     = 5433",
            "maxretry = 5",
            "bantime  = 1h",
            "filter   = costplus-postgresql",
        ] {
            assert!(jail.contains(line), "{line} missing in\n{jail}");
        }
    }

    #[test]
    fn invalid_options_are_refused() {
        let cases = [
            (
                JailOptions {
                    ports: vec![],
                    ..JailOptions::default()
                },
                "port",
            ),
            (
                JailOptions {
                    maxretry: 0,
                    ..JailOptions::default()
                },
                "maxretry",
            ),
            (
                JailOptions {
                    bantime: "soon".into(),
                    ..JailOptions::default()
                },
                "bantime",
            ),
            (
                JailOptions {
                    logpath: "relative.log".into(),
                    ..JailOptions::default()
                },
                "logpath",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (opts, word) in cases {
            let err = render_to(dir.path(), &opts).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
        assert!(
            !dir.path().join("jail.d").exists(),
            "a refused render wrote files"
        );
    }

    #[test]
    fn status_output_is_parsed() {
        let text = "Status for the jail: costplus-postgresql\n|- Filter\n|  |- Currently failed:\t2\n|  |- Total failed:\t9\n|  `- File list:\t/x.log\n`- Actions\n   |- Currently banned:\t2\n   |- Total banned:\t2\n   `- Banned IP list:\t203.0.113.9 2001:db8::1\n";
        assert_eq!(
            parse_status(text),
            Bans::Active {
                banned: vec!["203.0.113.9".into(), "2001:db8::1".into()],
                currently_failed: 2
            }
        );
    }
}
