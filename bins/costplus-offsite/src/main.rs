//! `costplus-offsite`: the Wasabi/S3 offsite (verify repo2, ship, cost).

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::offsite::Args>(
        "costplus-offsite",
        "The Wasabi/S3 offsite: verify pgBackRest's repo2, ship artefacts, the monthly cost.",
        costplus_cli::offsite::run,
    )
}
