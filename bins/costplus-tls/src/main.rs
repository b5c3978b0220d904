//! `costplus-tls`: server certificates and the live server's TLS.

fn main() -> std::process::ExitCode {
    costplus_cli::task_main::<costplus_cli::tls::Args>(
        "costplus-tls",
        "Issue, renew and inspect PostgreSQL server certificates; probe a live server's TLS like testssl.sh, in milliseconds.",
        costplus_cli::tls::run,
    )
}
