//! `costplus`: every costplus task under one binary.

fn main() -> std::process::ExitCode {
    costplus_cli::main_umbrella()
}
