//! Backup schedules: a plan of full/diff/incr backups, rendered as systemd service + timer
//! units or as a cron.d file, and installed on request.
//!
//! A slot is written `<days> <HH:MM>[,<HH:MM>...]` where `<days>` is `daily`, one day (`sun`),
//! a range (`mon-sat`) or a list (`mon,wed,fri`). The default plan is a full backup daily at
//! 02:00.
//!
//! ```
//! use costplus_pgbackrest::schedule::Slot;
//! let s: Slot = "mon-sat 02:00,14:30".parse().unwrap();
//! assert_eq!(
//!     s.on_calendar(),
//!     ["Mon,Tue,Wed,Thu,Fri,Sat *-*-* 02:00:00", "Mon,Tue,Wed,Thu,Fri,Sat *-*-* 14:30:00"]
//! );
//! assert_eq!(s.cron_lines(), ["0 2 * * 1,2,3,4,5,6", "30 14 * * 1,2,3,4,5,6"]);
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{BackupConfig, BackupType, Error, Result};

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// When one kind of backup runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// Days of the week (0 = Sunday); all seven for `daily`.
    pub days: Vec<u8>,
    /// Times of day (hour, minute).
    pub times: Vec<(u8, u8)>,
}

impl std::str::FromStr for Slot {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "schedule {s:?}: {why} (expected `<days> <HH:MM>[,<HH:MM>]`, days = daily, sun, mon-sat or mon,wed,fri)"
            ))
        };
        let mut parts = s.split_whitespace();
        let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("two words needed"));
        };
        let day = |d: &str| {
            DAYS.iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .map(|i| i as u8)
                .ok_or_else(|| bad(&format!("unknown day {d:?}")))
        };
        let mut list = Vec::new();
        if days.eq_ignore_ascii_case("daily") {
            list = (0..7).collect();
        } else {
            for part in days.split(',') {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a)?, day(b)?);
                        if a > b {
                            return Err(bad(
                                "a day range must run from an earlier to a later day of the week (sun..sat)",
                            ));
                        }
                        list.extend(a..=b);
                    }
                    None => list.push(day(part)?),
                }
            }
        }
        list.sort_unstable();
        list.dedup();
        let mut t = Vec::new();
        for hm in times.split(',') {
            let (h, m) = hm.split_once(':').ok_or_else(|| bad("time without ':'"))?;
            let (h, m): (u8, u8) = (
                h.parse().map_err(|_| bad("bad hour"))?,
                m.parse().map_err(|_| bad("bad minute"))?,
            );
            if h > 23 || m > 59 {
                return Err(bad("time out of range"));
            }
            t.push((h, m));
        }
        t.sort_unstable();
        t.dedup();
        Ok(Slot {
            days: list,
            times: t,
        })
    }
}

impl Slot {
    /// systemd `OnCalendar=` values, one per time of day (systemd accepts a list of hours
    /// only for a shared minute, so each time gets its own line).
    pub fn on_calendar(&self) -> Vec<String> {
        let days = if self.days.len() == 7 {
            String::new()
        } else {
            let list = self
                .days
                .iter()
                .map(|d| {
                    let n = DAYS[*d as usize];
                    format!("{}{}", n[..1].to_uppercase(), &n[1..])
                })
                .collect::<Vec<_>>()
                .join(",");
            format!("{list} ")
        };
        self.times
            .iter()
            .map(|(h, m)| format!("{days}*-*-* {h:02}:{m:02}:00"))
            .collect()
    }

    /// cron time fields (`minute hour * * weekdays`), one line per time.
    pub fn cron_lines(&self) -> Vec<String> {
        let dow = if self.days.len() == 7 {
            "*".to_string()
        } else {
            self.days
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        self.times
            .iter()
            .map(|(h, m)| format!("{m} {h} * * {dow}"))
            .collect()
    }
}

/// The whole plan: which kinds run when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// (kind, when), full first.
    pub entries: Vec<(BackupType, Slot)>,
}

impl Plan {
    /// The plan of the `[backup]` section.
    pub fn from_config(cfg: &BackupConfig) -> Result<Self> {
        Self::new(
            &cfg.schedule_full,
            cfg.schedule_diff.as_deref(),
            cfg.schedule_incr.as_deref(),
        )
    }

    /// A plan from slot texts; two kinds may not share a day and time.
    pub fn new(full: &str, diff: Option<&str>, incr: Option<&str>) -> Result<Self> {
        let mut entries = vec![(BackupType::Full, full.parse::<Slot>()?)];
        if let Some(d) = diff {
            entries.push((BackupType::Diff, d.parse()?));
        }
        if let Some(i) = incr {
            entries.push((BackupType::Incr, i.parse()?));
        }
        let mut seen = std::collections::BTreeMap::new();
        for (kind, slot) in &entries {
            for d in &slot.days {
                for t in &slot.times {
                    if let Some(other) = seen.insert((*d, *t), *kind) {
                        return Err(Error::Config(format!(
                            "schedule: {} and {} backups both at {} {:02}:{:02}; give them different times",
                            other.as_str(),
                            kind.as_str(),
                            DAYS[*d as usize],
                            t.0,
                            t.1
                        )));
                    }
                }
            }
        }
        Ok(Self { entries })
    }
}

/// A file to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitFile {
    /// File name (`costplus-backup-full.timer`, `costplus-backup`).
    pub name: String,
    /// Contents.
    pub contents: String,
}

/// How the units call us.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The `costplus-backup` executable.
    pub exe: PathBuf,
    /// The costplus.toml to pass with `--config`.
    pub config: PathBuf,
    /// `--server` to pass, if any.
    pub server: Option<String>,
}

impl Invocation {
    fn command(&self, kind: BackupType) -> String {
        let mut s = format!(
            "{} run --type {} --config {}",
            self.exe.display(),
            kind.as_str(),
            self.config.display()
        );
        if let Some(server) = &self.server {
            s.push_str(&format!(" --server {server}"));
        }
        s
    }
}

/// systemd units: one oneshot service and one timer per kind.
pub fn systemd_units(plan: &Plan, how: &Invocation) -> Vec<UnitFile> {
    let mut files = Vec::new();
    for (kind, slot) in &plan.entries {
        let k = kind.as_str();
        files.push(UnitFile {
            name: format!("costplus-backup-{k}.service"),
            contents: format!(
                "# Written by costplus-backup schedule.\n\
                 [Unit]\n\
                 Description=costplus {k} backup (pgBackRest, every repository)\n\
                 After=network-online.target postgresql.service\n\
                 Wants=network-online.target\n\n\
                 [Service]\n\
                 Type=oneshot\n\
                 ExecStart={}\n\
                 Nice=10\n\
                 IOSchedulingClass=best-effort\n\
                 IOSchedulingPriority=7\n",
                how.command(*kind)
            ),
        });
        files.push(UnitFile {
            name: format!("costplus-backup-{k}.timer"),
            contents: format!(
                "# Written by costplus-backup schedule.\n\
                 [Unit]\n\
                 Description=costplus {k} backup schedule\n\n\
                 [Timer]\n\
                 {}\
                 Persistent=true\n\
                 Unit=costplus-backup-{k}.service\n\n\
                 [Install]\n\
                 WantedBy=timers.target\n",
                slot.on_calendar()
                    .iter()
                    .map(|c| format!("OnCalendar={c}\n"))
                    .collect::<String>()
            ),
        });
    }
    files
}

/// The cron alternative: one `/etc/cron.d/costplus-backup` file.
pub fn crontab(plan: &Plan, how: &Invocation) -> UnitFile {
    let mut s = String::from(
        "# Written by costplus-backup schedule. m h dom mon dow user command\n\
         SHELL=/bin/sh\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
    );
    for (kind, slot) in &plan.entries {
        for line in slot.cron_lines() {
            s.push_str(&format!("{line} root {}\n", how.command(*kind)));
        }
    }
    UnitFile {
        name: "costplus-backup".into(),
        contents: s,
    }
}

/// Where systemd looks for the units an administrator installs.
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";
/// Where cron looks for system crontab files.
pub const CRON_DIR: &str = "/etc/cron.d";

/// `systemctl daemon-reload`, then `enable --now` every timer among `files`, when `dir` is
/// [`SYSTEMD_DIR`] and systemd runs; otherwise nothing (the files are written for the operator
/// to enable). Returns the timers enabled.
pub fn enable_timers(dir: &Path, files: &[UnitFile]) -> Result<Vec<String>> {
    if dir != Path::new(SYSTEMD_DIR) || !Path::new("/run/systemd/system").is_dir() {
        return Ok(Vec::new());
    }
    let systemctl = costplus_fs::system_tool("systemctl")
        .ok_or_else(|| Error::Config("systemd runs but systemctl was not found".into()))?;
    let run = |args: &[&str]| -> Result<()> {
        let st = std::process::Command::new(&systemctl)
            .args(args)
            .status()
            .map_err(|source| Error::Io {
                path: systemctl.clone(),
                source,
            })?;
        if st.success() {
            Ok(())
        } else {
            Err(Error::Tool {
                command: format!("systemctl {}", args.join(" ")),
                status: st.to_string(),
                output: String::new(),
            })
        }
    };
    run(&["daemon-reload"])?;
    let mut enabled = Vec::new();
    for f in files.iter().filter(|f| f.name.ends_with(".timer")) {
        run(&["enable", "--now", &f.name])?;
        enabled.push(f.name.clone());
    }
    Ok(enabled)
}

/// Write unit files into `dir` (atomically, 0644). Returns the paths written.
pub fn install(files: &[UnitFile], dir: &Path) -> Result<Vec<PathBuf>> {
    costplus_fs::create_dir_with_mode(dir, 0o755)
        .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })?;
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        costplus_fs::write_atomic(
            &path,
            f.contents.as_bytes(),
            &costplus_fs::WriteOptions::public(),
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: std::result::Result<&str, &str>) {
        match (text.parse::<Slot>(), expect) {
            (Ok(s), Ok(cal)) => assert_eq!(s.on_calendar().join(" | "), cal, "{text}"),
            (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn slots() {
        check("daily 02:00", Ok("*-*-* 02:00:00"));
        check("sun 03:15", Ok("Sun *-*-* 03:15:00"));
        check("mon,wed,fri 1:05", Ok("Mon,Wed,Fri *-*-* 01:05:00"));
        check("daily 14:00,08:30", Ok("*-*-* 08:30:00 | *-*-* 14:00:00"));
        check("sat-sun 02:00", Err("earlier to a later"));
        check("daily 24:00", Err("out of range"));
        check("daily", Err("two words"));
        check("someday 02:00", Err("unknown day"));
    }

    #[test]
    fn default_plan_is_a_daily_full_at_two() {
        let plan = Plan::from_config(&BackupConfig::default()).unwrap();
        let how = Invocation {
            exe: "/usr/local/bin/costplus-backup".into(),
            config: "/etc/costplus/costplus.toml".into(),
            server: None,
        };
        let units = systemd_units(&plan, &how);
        assert_eq!(units.len(), 2);
        assert!(units[1].contents.contains("OnCalendar=*-*-* 02:00:00"));
        assert!(units[0].contents.contains(
            "ExecStart=/usr/local/bin/costplus-backup run --type full --config /etc/costplus/costplus.toml"
        ));
        let cron = crontab(&plan, &how);
        assert!(
            cron.contents
                .contains("0 2 * * * root /usr/local/bin/costplus-backup run --type full")
        );
    }

    #[test]
    fn mixes_and_clashes() {
        let p = Plan::new("sun 02:00", Some("mon-sat 02:00"), Some("daily 14:00")).unwrap();
        assert_eq!(p.entries.len(), 3);
        let e = Plan::new("daily 02:00", Some("mon 02:00"), None).unwrap_err();
        assert!(e.to_string().contains("both at mon 02:00"), "{e}");
    }

    #[test]
    fn install_writes_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![UnitFile {
            name: "x.timer".into(),
            contents: "[Timer]\n".into(),
        }];
        let written = install(&files, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&written[0]).unwrap(), "[Timer]\n");
    }
}
