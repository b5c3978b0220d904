//! `costplus-fail2ban`: fail2ban for the PostgreSQL port.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::fail2ban::Args>(
        "costplus-fail2ban",
        "fail2ban for the PostgreSQL port: render, install, check, attackers.",
        costplus_cli::fail2ban::run,
    )
}
