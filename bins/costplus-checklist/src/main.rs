//! `costplus-checklist`: the pre-launch checklist, each item checked live.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::checklist::Args>(
        "costplus-checklist",
        "The pre-launch checklist, each item checked live: ticked or not, with the command that fixes it.",
        costplus_cli::checklist::run,
    )
}
