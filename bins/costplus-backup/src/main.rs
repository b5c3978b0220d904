//! `costplus-backup`: encrypted pgBackRest backups, status, schedules and restore drills.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::backup::Args>(
        "costplus-backup",
        "Encrypted pgBackRest backups (repo1 local, repo2 offsite), status, schedules and restore drills.",
        costplus_cli::backup::run,
    )
}
