//! `costplus-deprovision`: remove a customer, crash-safely.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::deprovision::Args>(
        "costplus-deprovision",
        "Remove a customer: NOLOGIN, terminate sessions, optional final dump, drop, pg_hba rules, archive credentials.",
        costplus_cli::deprovision::run,
    )
}
