//! `costplus-hba`: pg_hba.conf read exactly as PostgreSQL reads it, linted, explained, edited
//! and applied safely.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::hba::Args>(
        "costplus-hba",
        "Read, lint, explain, edit and apply pg_hba.conf exactly as PostgreSQL reads it.",
        costplus_cli::hba::run,
    )
}
