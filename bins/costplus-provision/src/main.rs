//! `costplus-provision`: create customers, crash-safely.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::provision::Args>(
        "costplus-provision",
        "Create a customer (database, role, TLS-only pg_hba rules, vault credentials), crash-safely; or a batch, rotate, limit, list.",
        costplus_cli::provision::run,
    )
}
