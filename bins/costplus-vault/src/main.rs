//! `costplus-vault`: the encrypted, tamper-evident credential vault.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::vault::Args>(
        "costplus-vault",
        "An encrypted, tamper-evident vault for customer credentials and service secrets.",
        costplus_cli::vault::run,
    )
}
