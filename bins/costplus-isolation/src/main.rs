//! `costplus-isolation`: prove customer isolation.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::isolation::Args>(
        "costplus-isolation",
        "Prove that no customer can reach another's database: catalog, pg_hba.conf and live logins.",
        costplus_cli::isolation::run,
    )
}
