//! The sandbox S3 server as a background process.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, Layout, Result, io, load_state, wait_port};

/// Whether something accepts TCP connections on the S3 port.
pub(crate) fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Start the S3 server process detached from our terminal, and wait until it listens.
pub(crate) fn spawn(layout: &Layout, command: &[std::ffi::OsString], port: u16) -> Result<()> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::S3Process("no command given to start the S3 server".into()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.s3_log())
        .map_err(io(&layout.s3_log()))?;
    let log2 = log.try_clone().map_err(io(&layout.s3_log()))?;
    let child = Command::new(program)
        .args(args)
        .env("COSTPLUS_S3_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::S3Process(format!("{}: {e}", Path::new(program).display())))?;
    costplus_fs::write_atomic(
        &layout.s3_pid(),
        child.id().to_string().as_bytes(),
        &costplus_fs::WriteOptions::public(),
    )?;
    if !wait_port(port, Duration::from_secs(15)) {
        let tail = std::fs::read_to_string(layout.s3_log()).unwrap_or_default();
        return Err(Error::S3Process(format!(
            "nothing listens on port {port}; log {}:\n{tail}",
            layout.s3_log().display()
        )));
    }
    Ok(())
}

/// Stop the S3 server process, if it runs.
pub(crate) fn stop(layout: &Layout) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(layout.s3_pid()) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_ok() {
        for _ in 0..100 {
            if kill(pid, None).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(layout.s3_pid());
    Ok(())
}

/// Run the sandbox's S3 server in the foreground until SIGTERM or SIGINT (what
/// `costplus sandbox serve-s3` runs in the background process).
pub fn serve_s3_foreground(dir: &Path) -> Result<()> {
    let layout = Layout::new(dir)?;
    let port: u16 = match std::env::var("COSTPLUS_S3_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        Some(p) => p,
        None => load_state(&layout)?.s3_port,
    };
    let creds =
        std::fs::read_to_string(layout.s3_credentials()).map_err(io(&layout.s3_credentials()))?;
    let field = |name: &str| {
        creds
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
            })
            .unwrap_or_default()
    };
    let cert = layout.s3_dir().join("server.crt");
    let key = layout.s3_dir().join("server.key");
    let cfg = costplus_s3local::ServerConfig {
        root: layout.s3_dir().join("data"),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        access_key: field("aws_access_key_id"),
        secret_key: field("aws_secret_access_key").into(),
        cert_pem: std::fs::read_to_string(&cert).map_err(io(&cert))?,
        key_pem: std::fs::read_to_string(&key).map_err(io(&key))?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio runtime")))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::Io {
                path: cfg.listen.to_string().into(),
                source: e,
            })?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(io(Path::new("SIGTERM handler")))?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        tracing::info!("sandbox S3 server listening on https://localhost:{port}");
        costplus_s3local::serve(listener, &cfg, shutdown)
            .await
            .map_err(Error::from)
    })
}
