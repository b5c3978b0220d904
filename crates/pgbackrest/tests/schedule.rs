//! Generated timers are valid for the real systemd calendar parser.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::process::Command;

use costplus_pgbackrest::schedule::{Invocation, Plan, systemd_units};
use costplus_testsupport::require_tool;

fn check(full: &str, diff: Option<&str>, incr: Option<&str>, next_has: &str) {
    let plan = Plan::new(full, diff, incr).unwrap();
    let how = Invocation {
        exe: "/usr/local/bin/costplus-backup".into(),
        config: "/etc/costplus/costplus.toml".into(),
        server: Some("main".into()),
    };
    let units = systemd_units(&plan, &how);
    assert_eq!(units.len(), plan.entries.len() * 2);
    for (kind, slot) in &plan.entries {
        for expr in slot.on_calendar() {
            check_one(&units, *kind, &expr, next_has);
        }
    }
}

fn check_one(
    units: &[costplus_pgbackrest::schedule::UnitFile],
    kind: costplus_pgbackrest::BackupType,
    expr: &str,
    next_has: &str,
) {
    {
        let timer = units
            .iter()
            .find(|u| u.name == format!("costplus-backup-{}.timer", kind.as_str()))
            .unwrap();
        assert!(timer.contents.contains(&format!("OnCalendar={expr}\n")));
        let out = Command::new(require_tool("systemd-analyze"))
            .args(["calendar", expr])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{expr}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Next elapse:"), "{text}");
        if kind == costplus_pgbackrest::BackupType::Full {
            assert!(text.contains(next_has), "{expr}: {text}");
        }
    }
}

#[test]
fn calendars_parse_with_systemd() {
    check("daily 02:00", None, None, "02:00:00");
    check(
        "sun 02:00",
        Some("mon-sat 02:00"),
        Some("daily 08:00,14:00,20:00"),
        "Sun",
    );
    check("mon,wed,fri 23:59", None, Some("tue 01:05"), "23:59:00");
}
