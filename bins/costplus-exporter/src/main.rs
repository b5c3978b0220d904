//! `costplus-exporter`: Prometheus metrics and a health endpoint.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::exporter::Args>(
        "costplus-exporter",
        "Serve /metrics (Prometheus text) and /healthz for the external monitor.",
        costplus_cli::exporter::run,
    )
}
