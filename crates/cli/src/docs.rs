//! Shell completions and man pages, generated from the clap definitions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

/// Print the completion script for `shell` (for the umbrella `costplus`).
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Umbrella::command();
    clap_complete::generate(shell, &mut cmd, "costplus", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Write `costplus.1` and one `costplus-<task>.1` per task (the per-task binaries' names) into
/// `out`. Returns the files written.
pub fn write_man_pages(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let root = crate::Umbrella::command();
    let mut written = Vec::new();
    let mut render = |cmd: clap::Command, name: String| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone())).render(&mut buf)?;
        let path = out.join(format!("{name}.1"));
        costplus_fs::write_atomic(&path, &buf, &costplus_fs::WriteOptions::public())?;
        written.push(path);
        Ok(())
    };
    render(root.clone(), "costplus".into())?;
    for sub in root.get_subcommands() {
        if sub.is_hide_set() || matches!(sub.get_name(), "completions" | "man" | "help") {
            continue;
        }
        render(sub.clone(), format!("costplus-{}", sub.get_name()))?;
    }
    Ok(written)
}

/// `costplus man --out DIR`.
pub fn man(out: &Path) -> anyhow::Result<ExitCode> {
    for p in write_man_pages(out)? {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
