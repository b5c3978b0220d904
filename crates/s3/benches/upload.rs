//! Upload a 1 GiB tree (1,000 small files and 4 large ones) to the same local S3 server with
//! costplus, `rclone copy` and `aws s3 cp --recursive`, verification on for all three, and a
//! raw parallel PUT loop (no file reads, no checksums, no verification) as the server's
//! ceiling. Run it with `crates/s3/benches/upload.sh` (installs the peers when missing).
//!
//! Environment: `BENCH_RCLONE`, `BENCH_AWS` (paths of the peers; default from PATH),
//! `BENCH_MB` (tree size in MiB, default 1024), `BENCH_CONCURRENCY` (default 16).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a bench reports on stdout and fails loudly

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use costplus_s3::{ClientOptions, Credentials, Offsite, OffsiteConfig, Provider, UploadOptions};
use costplus_testsupport::TestS3;
use futures_util::StreamExt as _;

const SMALL: usize = 1000;
const LARGE: usize = 4;

fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The tree: 1,000 files of 1-64 KiB and 4 files sharing the rest of the total.
fn make_tree(root: &Path, total: u64) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut small_total = 0u64;
    for i in 0..SMALL {
        let size = 1024 + (i as u64 * 7919) % (63 * 1024);
        let dir = root.join(format!("small/{:02}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("f{i:04}"));
        let mut buf = vec![0u8; size as usize];
        fill(&mut buf, i as u64);
        std::fs::write(&p, &buf).unwrap();
        small_total += size;
        files.push((p, size));
    }
    let large = (total - small_total) / LARGE as u64;
    std::fs::create_dir_all(root.join("large")).unwrap();
    for i in 0..LARGE {
        let p = root.join(format!("large/big{i}"));
        let mut f = std::fs::File::create(&p).unwrap();
        let mut buf = vec![0u8; 8 << 20];
        let mut left = large;
        let mut seed = 10_000 + i as u64 * 1000;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], seed);
            seed += 1;
            std::io::Write::write_all(&mut f, &buf[..n]).unwrap();
            left -= n as u64;
        }
        files.push((p, large));
    }
    files
}

fn client(s3: &TestS3, bucket: &str, concurrency: usize) -> Offsite {
    let cfg = OffsiteConfig {
        provider: Provider::S3Compatible,
        endpoint: Some(s3.endpoint()),
        ca_file: Some(s3.ca_file()),
        ..OffsiteConfig::wasabi("us-east-1", bucket)
    };
    let creds = Credentials::new(s3.access_key(), s3.secret_key().to_string().into());
    Offsite::new(
        &cfg,
        &creds,
        ClientOptions {
            concurrency,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// Objects and bytes in a bucket (every tool must have uploaded the whole tree).
fn inventory(rt: &tokio::runtime::Runtime, s3: &TestS3, bucket: &str) -> (usize, u64) {
    let c = client(s3, bucket, 4);
    let l = rt.block_on(c.list("")).unwrap();
    (l.len(), l.iter().map(|o| o.size).sum())
}

fn tool(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Row {
    name: &'static str,
    secs: f64,
    note: String,
}

fn main() {
    let mb: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let conc: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let total = mb << 20;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    eprintln!("generating a {mb} MiB tree ({SMALL} small + {LARGE} large files)...");
    let files = make_tree(&tree, total);
    let bytes: u64 = files.iter().map(|f| f.1).sum();
    let count = files.len();
    let s3 = TestS3::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();

    // 1. The server's ceiling: raw parallel PUTs from memory, nothing read, nothing verified.
    s3.create_bucket("bench-raw");
    {
        let c = client(&s3, "bench-raw", conc);
        let mut objects: Vec<(String, usize)> = files
            .iter()
            .take(SMALL)
            .enumerate()
            .map(|(i, f)| (format!("small/{i}"), f.1 as usize))
            .collect();
        let large = files[SMALL].1 as usize;
        for i in 0..LARGE {
            let mut left = large;
            let mut n = 0;
            while left > 0 {
                let sz = left.min(16 << 20);
                objects.push((format!("large/{i}/{n}"), sz));
                left -= sz;
                n += 1;
            }
        }
        let mut blob = vec![0u8; 16 << 20];
        fill(&mut blob, 99);
        let blob = bytes::Bytes::from(blob);
        let t = Instant::now();
        rt.block_on(async {
            let sdk = c.sdk();
            let results: Vec<_> = futures_util::stream::iter(objects)
                .map(|(key, size)| {
                    let body = blob.slice(..size);
                    async move {
                        sdk.put_object()
                            .bucket("bench-raw")
                            .key(key)
                            .body(ByteStream::from(body))
                            .customize()
                            .disable_payload_signing()
                            .send()
                            .await
                    }
                })
                .buffer_unordered(conc)
                .collect()
                .await;
            assert!(results.iter().all(Result::is_ok));
        });
        rows.push(Row {
            name: "raw PUT loop (ceiling)",
            secs: t.elapsed().as_secs_f64(),
            note: "from memory, no checksums, no verification".into(),
        });
    }

    // 2. costplus.
    s3.create_bucket("bench-costplus");
    {
        let c = client(&s3, "bench-costplus", conc);
        let list = costplus_s3::transfer::collect_files(std::slice::from_ref(&tree), "").unwrap();
        let t = Instant::now();
        let results = rt.block_on(c.upload_many(&list, &UploadOptions::default()));
        let secs = t.elapsed().as_secs_f64();
        assert!(
            results
                .iter()
                .all(|(_, r)| r.as_ref().is_ok_and(|u| u.checksum_verified))
        );
        let inv = inventory(&rt, &s3, "bench-costplus");
        assert_eq!(inv, (count, bytes), "costplus uploaded everything");
        rows.push(Row {
            name: "costplus",
            secs,
            note: format!("Content-MD5 per request, HEAD size+ETag per file, {conc} in flight"),
        });
    }

    // 3. rclone copy (checksums on: the default).
    match tool("BENCH_RCLONE", "rclone") {
        Some(rclone) => {
            s3.create_bucket("bench-rclone");
            let conf = work.path().join("rclone.conf");
            private_file(
                &conf,
                &format!(
                    "[bench]\ntype = s3\nprovider = Other\naccess_key_id = {}\nsecret_access_key = {}\nendpoint = {}\nregion = us-east-1\nforce_path_style = true\n",
                    s3.access_key(),
                    s3.secret_key(),
                    s3.endpoint()
                ),
            );
            let t = Instant::now();
            let out = Command::new(&rclone)
                .arg("copy")
                .arg(&tree)
                .arg("bench:bench-rclone")
                .arg("--config")
                .arg(&conf)
                .arg("--ca-cert")
                .arg(s3.ca_file())
                .args([
                    "--transfers",
                    &conc.to_string(),
                    "--checkers",
                    &conc.to_string(),
                ])
                .args([
                    "--s3-chunk-size",
                    "16M",
                    "--s3-upload-concurrency",
                    "4",
                    "--s3-no-check-bucket",
                ])
                // The AWS SDK inside rclone fails on AWS_CA_BUNDLE with its custom transport.
                .env_remove("AWS_CA_BUNDLE")
                .output()
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "rclone: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let inv = inventory(&rt, &s3, "bench-rclone");
            assert_eq!(inv, (count, bytes), "rclone uploaded everything");
            rows.push(Row {
                name: "rclone copy",
                secs,
                note: format!("MD5 checks on (default), --transfers {conc}, 16M chunks x4"),
            });
        }
        None => eprintln!("rclone not found: run crates/s3/benches/upload.sh (it installs it)"),
    }

    // 4. aws s3 cp --recursive (the CLI's default checksums).
    match tool("BENCH_AWS", "aws") {
        Some(aws) => {
            s3.create_bucket("bench-aws");
            let creds = work.path().join("aws-credentials");
            private_file(
                &creds,
                &format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                    s3.access_key(),
                    s3.secret_key()
                ),
            );
            let cfg = work.path().join("aws-config");
            private_file(
                &cfg,
                &format!(
                    "[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {conc}\n  multipart_chunksize = 16MB\n  multipart_threshold = 16MB\n  addressing_style = path\n"
                ),
            );
            let t = Instant::now();
            let out = Command::new(&aws)
                .args(["s3", "cp", "--recursive", "--only-show-errors"])
                .arg(&tree)
                .arg("s3://bench-aws/")
                .arg("--endpoint-url")
                .arg(s3.endpoint())
                .arg("--ca-bundle")
                .arg(s3.ca_file())
                .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
                .env("AWS_CONFIG_FILE", &cfg)
                .env_remove("AWS_CA_BUNDLE")
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .output()
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "aws: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let inv = inventory(&rt, &s3, "bench-aws");
            assert_eq!(inv, (count, bytes), "aws uploaded everything");
            rows.push(Row {
                name: "aws s3 cp --recursive",
                secs,
                note: format!("default checksums, max_concurrent_requests {conc}, 16MB chunks"),
            });
        }
        None => eprintln!("aws not found: run crates/s3/benches/upload.sh (it installs it)"),
    }

    let ours = rows
        .iter()
        .find(|r| r.name == "costplus")
        .map(|r| r.secs)
        .unwrap();
    println!(
        "\nupload of {count} files, {:.1} MB, to the local S3 server (HTTPS, SigV4)\n",
        bytes as f64 / 1e6
    );
    println!(
        "{:<26} {:>8} {:>9} {:>16}  notes",
        "tool", "seconds", "MB/s", "t / t(costplus)"
    );
    for r in &rows {
        let ratio = if r.name == "costplus" {
            "-".to_string()
        } else {
            format!("{:.2}", r.secs / ours)
        };
        println!(
            "{:<26} {:>8.2} {:>9.1} {:>16}  {}",
            r.name,
            r.secs,
            bytes as f64 / 1e6 / r.secs,
            ratio,
            r.note
        );
    }
}
