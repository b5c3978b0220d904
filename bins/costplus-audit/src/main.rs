//! `costplus-audit`: the whole security posture in one report.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::audit::Args>(
        "costplus-audit",
        "The whole security posture in one report: TLS, authentication, roles, isolation, logging, backups, host.",
        costplus_cli::audit::run,
    )
}
