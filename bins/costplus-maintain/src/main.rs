//! `costplus-maintain`: the maintenance calendar as commands (daily, weekly, monthly, install).

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::maintain::Args>(
        "costplus-maintain",
        "Scheduled maintenance: daily (backup, status, offsite, disk), weekly (log review, audit), monthly (restore drill, certificate expiry, audit); heartbeat on success; install timers.",
        costplus_cli::maintain::run,
    )
}
