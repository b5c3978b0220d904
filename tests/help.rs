//! Snapshots of every binary's `--help` (and the umbrella's), so a change of the interface is
//! always a reviewed change; completions and man pages are generated from the same definitions.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::process::Command;

use costplus_testsupport::workspace_bin;

/// Every binary of the workspace.
fn binaries() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("bins");
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .arg("--help")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_binary_help_is_snapshotted() {
    let bins = binaries();
    assert!(bins.len() >= 13, "{bins:?}");
    for bin in &bins {
        insta::assert_snapshot!(format!("help-{bin}"), help(bin, &[]));
    }
}

#[test]
fn the_umbrella_has_every_task_with_the_same_arguments() {
    let top = help("costplus", &[]);
    for bin in binaries()
        .iter()
        .filter_map(|b| b.strip_prefix("costplus-"))
    {
        assert!(
            top.contains(&format!("  {bin} ")),
            "costplus has no `{bin}` subcommand:\n{top}"
        );
        // Same arguments: the subcommand's help equals the binary's, but for the usage line.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("Usage:"))
                .map(str::trim_end)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let sub = help("costplus", &[bin]);
        let own = help(&format!("costplus-{bin}"), &[]);
        // The binaries also have -V/--version (the subcommands share the umbrella's).
        let own: String = own
            .lines()
            .filter(|l| !l.contains("-V, --version") && l.trim() != "Print version")
            .collect::<Vec<_>>()
            .join("\n");
        let (sub, own) = (strip(&sub), strip(&own));
        // The binaries carry their own one-line about; compare from the first option on.
        let tail = |s: &str| {
            s[s.find("Options:")
                .or_else(|| s.find("Commands:"))
                .unwrap_or(0)..]
                .to_string()
        };
        assert_eq!(
            tail(&sub),
            tail(&own),
            "costplus {bin} and costplus-{bin} differ"
        );
    }
}

#[test]
fn completions_and_man_pages_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(workspace_bin("costplus"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("provision") && text.contains("sandbox"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_bin("costplus"))
        .args(["man", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    for bin in binaries() {
        let page = std::fs::read_to_string(dir.path().join(format!("{bin}.1")))
            .unwrap_or_else(|_| panic!("no man page for {bin}"));
        assert!(
            page.starts_with(".ie") || page.contains(".TH"),
            "{bin}.1 is not a man page"
        );
    }
}
