//! `costplus-incident`: incident evidence in one report.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::incident::Args>(
        "costplus-incident",
        "Incident evidence in one report: server state, FATALs, failed logins, bans, sessions, disk.",
        costplus_cli::incident::run,
    )
}
