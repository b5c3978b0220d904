//! `costplus-status`: the one-screen morning summary.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::status::Args>(
        "costplus-status",
        "The one-screen morning summary: server, TLS, backups, offsite, customers, connections, bans.",
        costplus_cli::status::run,
    )
}
