//! Benchmark: a full probe (protocol versions, cipher suites, certificate) of one real
//! PostgreSQL endpoint against `testssl.sh --starttls postgres` and `sslscan --starttls-psql`
//! on the same server, in one run, with the protocol verdicts compared; then 1 vs 10 vs 100
//! endpoints probed concurrently.
//!
//! Run: `cargo bench -p costplus-tls --bench probe` (as root: installs testssl.sh with apt-get
//! when it is missing). Prints ratios; exits non-zero when the verdicts disagree.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a bench reports on stdout and fails loudly

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use costplus_testsupport::{TestCluster, block_on};
use costplus_tls::probe::{ProbeOptions, Verdict, probe, probe_many};
use costplus_tls::wire::ProtocolVersion;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ensure_testssl() -> std::path::PathBuf {
    for name in ["testssl", "testssl.sh"] {
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let p = std::path::Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    eprintln!("testssl.sh is missing: apt-get install -y testssl.sh");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "testssl.sh"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-q", "testssl.sh"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap();
        assert!(ok.success(), "apt-get install testssl.sh failed");
    }
    std::path::PathBuf::from("/usr/bin/testssl")
}

fn ours(port: u16) -> (Duration, BTreeMap<String, bool>, usize) {
    let mut o = ProbeOptions::new("127.0.0.1", port);
    o.ca = None;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..15 {
        let t = Instant::now();
        let r = block_on(probe(&o)).unwrap();
        times.push(t.elapsed());
        last = Some(r);
    }
    let r = last.unwrap();
    let verdicts = ProtocolVersion::ALL
        .into_iter()
        .map(|v| {
            (
                v.name().to_string(),
                r.protocols.get(v) == Verdict::Accepted,
            )
        })
        .collect();
    let ciphers = r.ciphers.values().map(Vec::len).sum();
    (median(times), verdicts, ciphers)
}

fn sslscan(port: u16) -> (Duration, BTreeMap<String, bool>) {
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new("sslscan")
            .args([
                "--starttls-psql",
                "--no-colour",
                &format!("127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        times.push(t.elapsed());
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(name), Some(state)) = (it.next(), it.next())
            && matches!(
                name,
                "SSLv3" | "TLSv1.0" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"
            )
            && matches!(state, "enabled" | "disabled")
        {
            m.insert(name.to_string(), state == "enabled");
        }
    }
    (median(times), m)
}

fn testssl(bin: &std::path::Path, port: u16, scope: &[&str]) -> (Duration, BTreeMap<String, bool>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let t = Instant::now();
    let out = Command::new(bin)
        .args([
            "--starttls",
            "postgres",
            "--color",
            "0",
            "--warnings",
            "off",
            "--quiet",
        ])
        .args(scope)
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "testssl.sh wrote no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut m = BTreeMap::new();
    for item in v.as_array().unwrap() {
        let id = item["id"].as_str().unwrap_or("");
        let finding = item["finding"].as_str().unwrap_or("");
        let name = match id {
            "SSLv3" => "SSLv3",
            "TLS1" => "TLSv1.0",
            "TLS1_1" => "TLSv1.1",
            "TLS1_2" => "TLSv1.2",
            "TLS1_3" => "TLSv1.3",
            _ => continue,
        };
        m.insert(name.to_string(), finding.starts_with("offered"));
    }
    (elapsed, m)
}

/// A TCP relay on a new loopback port to `upstream` that delays every chunk by `delay` in
/// each direction: one "remote" endpoint with a round-trip time of 2 x `delay`.
async fn relay(upstream: u16, delay: Duration) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await; // the TCP handshake's share of the RTT
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pipe(cr, sw, delay), pipe(sr, cw, delay));
            });
        }
    });
    port
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run anyway,
    // quickly, when asked to (COSTPLUS_BENCH_QUICK=1 skips testssl.sh's minutes-long scan).
    let quick = std::env::var_os("COSTPLUS_BENCH_QUICK").is_some();
    let cluster = TestCluster::builder()
        .setting("max_connections", "400")
        .start();
    let port = cluster.port();
    println!("== full probe of one PostgreSQL 15 endpoint (127.0.0.1:{port}, TLS 1.2 + 1.3)");
    let (t_ours, v_ours, n_ciphers) = ours(port);
    println!(
        "costplus-tls   median {:>9.1} ms  ({n_ciphers} accepted suites found)  {v_ours:?}",
        ms(t_ours)
    );
    let (t_scan, v_scan) = sslscan(port);
    println!("sslscan        median {:>9.1} ms  {v_scan:?}", ms(t_scan));
    let mut failed = false;
    if v_scan != v_ours {
        println!("VERDICTS DIFFER: sslscan {v_scan:?} vs costplus-tls {v_ours:?}");
        failed = true;
    }
    println!(
        "ratio sslscan / costplus-tls = {:.1}x",
        ratio(t_scan, t_ours)
    );
    if !quick {
        let bin = ensure_testssl();
        // The default run (everything testssl.sh checks), then the same scope as ours:
        // protocols (-p), cipher suites per protocol (-E), server defaults/certificate (-S).
        for (label, scope) in [
            ("testssl.sh (default run)", &[][..]),
            ("testssl.sh -p -E -S", &["-p", "-E", "-S"][..]),
        ] {
            let (t_ts, v_ts) = testssl(&bin, port, scope);
            println!("{label:<26} once {:>9.1} ms  {v_ts:?}", ms(t_ts));
            if v_ts != v_ours {
                println!("VERDICTS DIFFER: {label} {v_ts:?} vs costplus-tls {v_ours:?}");
                failed = true;
            }
            println!(
                "ratio {label} / costplus-tls = {:.0}x (target >= 50x)",
                ratio(t_ts, t_ours)
            );
        }
    }

    // Concurrency: endpoints are latency relays (20 ms each way: a 40 ms RTT network) in front
    // of two real clusters (one per core); a probe is dominated by round trips, so N endpoints
    // should take about as long as one until the servers' CPUs saturate.
    let second = TestCluster::builder()
        .setting("max_connections", "400")
        .start();
    let upstreams = [cluster.port(), second.port()];
    for delay_ms in [0u64, 20] {
        let delay = Duration::from_millis(delay_ms);
        println!("== 1 vs 10 vs 100 endpoints, {} ms RTT added", 2 * delay_ms);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut base = None;
        for n in [1usize, 10, 100] {
            let ports: Vec<u16> = rt.block_on(async {
                let mut v = Vec::new();
                for i in 0..n {
                    v.push(if delay_ms == 0 {
                        upstreams[i % 2]
                    } else {
                        relay(upstreams[i % 2], delay).await
                    });
                }
                v
            });
            let targets: Vec<ProbeOptions> = ports
                .iter()
                .map(|p| ProbeOptions::new("127.0.0.1", *p))
                .collect();
            let t = Instant::now();
            let cpu = cpu_time();
            let results = rt.block_on(probe_many(targets, 256));
            let took = t.elapsed();
            let client_cpu = cpu_time().saturating_sub(cpu);
            let ok = results
                .iter()
                .filter(|r| {
                    r.as_ref().is_ok_and(|r| {
                        ProtocolVersion::ALL
                            .into_iter()
                            .all(|v| (r.protocols.get(v) == Verdict::Accepted) == v_ours[v.name()])
                    })
                })
                .count();
            let conns: usize = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|r| r.connections)
                .sum();
            let b = *base.get_or_insert(took);
            println!(
                "{n:>3} endpoints: {:>8.1} ms wall, {conns} connections, {ok}/{n} with the same verdicts; {:.2}x the time of 1 endpoint for {n}x the work; CPU of this process (probes{}): {:.0} ms",
                ms(took),
                ratio(took, b),
                if delay_ms == 0 { "" } else { " and relays" },
                ms(client_cpu)
            );
            if ok != n {
                failed = true;
                for r in results.iter().filter_map(|r| r.as_ref().err()) {
                    println!("  error: {r}");
                }
            }
        }
    }
    drop(second);
    drop(cluster);
    if failed {
        std::process::exit(1);
    }
}

/// CPU time (user + system) of this process so far, from /proc/self/stat (100 ticks/s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the command name: state (not a number, skipped), ppid, ... utime is the 14th field
    // of the line, i.e. the 11th number after the state; stime the 12th.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
