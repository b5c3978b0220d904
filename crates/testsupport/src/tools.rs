use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The Debian package that provides a tool, for the install hint.
fn package_of(tool: &str) -> &str {
    match tool {
        "pgbackrest" => "pgbackrest",
        "fail2ban-regex" | "fail2ban-client" | "fail2ban-server" => "fail2ban",
        "openssl" => "openssl",
        "sslscan" => "sslscan",
        "curl" => "curl",
        "rclone" => "rclone",
        "psql" | "pg_dump" | "pg_amcheck" | "pgbench" => "postgresql-client",
        other => other,
    }
}

/// Find an executable on `PATH` (and the sbin directories), or fail the test with the command
/// that installs it. Tests never skip because a tool is missing.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];
    let dirs = std::env::split_paths(&path).chain(extra.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "required tool `{name}` not found; install it with: apt-get install -y {} (scripts/test does this when run as root)",
        package_of(name)
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Path of one of this workspace's binaries (`costplus`, `costplus-hba`, ...), for end-to-end
/// tests of another package. Uses `$COSTPLUS_BIN_DIR` when set (scripts/test builds every
/// binary first and sets it); otherwise builds the workspace's binaries once per process.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("COSTPLUS_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // target/<profile>/deps/<test binary> -> target/<profile>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build --bins failed");
        assert!(status.success(), "cargo build --workspace --bins failed");
        profile_dir
    });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary {} not found (looked in {})",
        name,
        dir.display()
    );
    path
}
