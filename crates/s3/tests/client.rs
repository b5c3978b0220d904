//! The client against the real S3-compatible server of costplus-testsupport (HTTPS, SigV4).
#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use costplus_s3::{
    ClientOptions, Credentials, Error, Offsite, OffsiteConfig, Progress, Provider, UploadOptions,
};
use costplus_testsupport::TestS3;

fn config(s3: &TestS3, bucket: &str) -> OffsiteConfig {
    OffsiteConfig {
        provider: Provider::S3Compatible,
        endpoint: Some(s3.endpoint()),
        ca_file: Some(s3.ca_file()),
        ..OffsiteConfig::wasabi("us-east-1", bucket)
    }
}

fn creds(s3: &TestS3) -> Credentials {
    Credentials::new(s3.access_key(), s3.secret_key().to_string().into())
}

fn client(s3: &TestS3, bucket: &str, opts: ClientOptions) -> Offsite {
    Offsite::new(&config(s3, bucket), &creds(s3), opts).unwrap()
}

fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn md5_of_file(path: &Path) -> String {
    use md5::Digest;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_round_trip() {
    let s3 = TestS3::start();
    s3.create_bucket("roundtrip");
    let c = client(&s3, "roundtrip", quick());
    c.check().await.unwrap();

    // From memory.
    let data = pattern(1000, 1);
    let up = c.put_bytes("a/one", data.clone()).await.unwrap();
    assert_eq!(up.size, 1000);
    assert!(up.checksum_verified);
    assert_eq!(c.get_bytes("a/one").await.unwrap(), data);
    assert_eq!(c.read_head("a/one", 10).await.unwrap(), data[..10]);

    // From a file, including an empty one.
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("empty", 0usize), ("small", 70_000)] {
        let src = dir.path().join(name);
        std::fs::write(&src, pattern(len, 2)).unwrap();
        let key = format!("files/{name}");
        let up = c
            .upload_file(&src, &key, &UploadOptions::default())
            .await
            .unwrap();
        assert_eq!(up.parts, 0);
        assert!(up.checksum_verified);
        let back = dir.path().join(format!("{name}.back"));
        let down = c.download_file(&key, &back, None).await.unwrap();
        assert!(down.checksum_verified);
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
    }
    let listed = c.list("files/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["files/empty", "files/small"]);
    assert_eq!(listed[1].size, 70_000);

    // Head and delete.
    assert!(c.head("files/small").await.unwrap().is_some());
    c.delete("files/small").await.unwrap();
    assert!(c.head("files/small").await.unwrap().is_none());
    assert!(matches!(
        c.get_bytes("files/small").await,
        Err(Error::NotFound { .. })
    ));

    // The test server implements neither versioning nor object lock: reported, not fatal.
    let p = c.protection().await.unwrap();
    assert_ne!(p.versioning, costplus_s3::FeatureState::Enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_is_named() {
    let s3 = TestS3::start();
    s3.create_bucket("keys");
    let bad = Credentials::new(s3.access_key(), "not-the-secret".to_string().into());
    let c = Offsite::new(&config(&s3, "keys"), &bad, quick()).unwrap();
    let err = c.check().await.unwrap_err();
    assert!(matches!(err, Error::WrongKeys { .. }), "{err:?}");
    assert!(err.to_string().contains("secret key"), "{err}");
    // And a wrong access key id.
    let bad = Credentials::new("AKNOBODY", s3.secret_key().to_string().into());
    let c = Offsite::new(&config(&s3, "keys"), &bad, quick()).unwrap();
    let err = c.check().await.unwrap_err();
    assert!(matches!(err, Error::WrongKeys { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_named() {
    let s3 = TestS3::start();
    let c = client(&s3, "nobucket", quick());
    let err = c.check().await.unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
    assert!(err.to_string().contains("nobucket"), "{err}");
    let err = c.list("").await.unwrap_err();
    assert!(matches!(err, Error::NoSuchBucket { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_network_failures_are_named() {
    let s3 = TestS3::start();
    s3.create_bucket("tls");
    // Without our CA, the public roots do not trust the test server.
    let mut cfg = config(&s3, "tls");
    cfg.ca_file = None;
    let c = Offsite::new(&cfg, &creds(&s3), quick()).unwrap();
    let err = c.check().await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(&s3, "tls");
    cfg.endpoint = Some(format!("https://localhost:{port}"));
    let c = Offsite::new(&cfg, &creds(&s3), quick()).unwrap();
    let err = c.check().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_past_1000_keys() {
    let s3 = TestS3::start();
    s3.create_bucket("many");
    let c = client(&s3, "many", ClientOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..1234 {
        let p = dir.path().join(format!("f{i:04}"));
        std::fs::write(&p, format!("object {i}")).unwrap();
        files.push((p, format!("many/{i:04}")));
    }
    let results = c.upload_many(&files, &UploadOptions::default()).await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    let listed = c.list("many/").await.unwrap();
    assert_eq!(listed.len(), 1234);
    assert_eq!(listed[0].key, "many/0000");
    assert_eq!(listed[1233].key, "many/1233");
    // Sorted and unique across pages.
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gb_sparse_object_round_trip() {
    let s3 = TestS3::start();
    s3.create_bucket("big");
    let c = client(&s3, "big", ClientOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse");
    // 2 GiB + 12345 bytes, mostly holes, with data at a few offsets (part boundaries too).
    let size: u64 = (2 << 30) + 12_345;
    {
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(size).unwrap();
        for (i, off) in [0u64, 16 << 20, (1 << 30) - 100, size - 5000]
            .iter()
            .enumerate()
        {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(&pattern(4000, i as u64 + 10)).unwrap();
        }
    }
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let opts = UploadOptions {
        state_dir: Some(dir.path().join("state")),
        progress: Some(Arc::new(move |p: &Progress| {
            if let Progress::Transferred { bytes, .. } = p {
                counter.fetch_add(*bytes, Ordering::Relaxed);
            }
        })),
    };
    let up = c.upload_file(&src, "big/sparse", &opts).await.unwrap();
    assert_eq!(up.size, size);
    assert_eq!(up.parts, 129); // 2 GiB / 16 MiB = 128 full parts + the rest
    assert!(up.checksum_verified);
    assert!(up.etag.ends_with("-129"), "{}", up.etag);
    assert_eq!(sent.load(Ordering::Relaxed), size);
    // The state file is gone once the upload is complete.
    assert_eq!(
        std::fs::read_dir(dir.path().join("state")).unwrap().count(),
        0
    );

    let back = dir.path().join("back");
    let down = c.download_file("big/sparse", &back, None).await.unwrap();
    assert_eq!(down.size, size);
    assert!(
        down.checksum_verified,
        "the multipart ETag is recomputed from the part size"
    );
    assert_eq!(md5_of_file(&back), md5_of_file(&src));
}

#[test]
fn multipart_upload_resumes_after_the_server_stops() {
    let mut s3 = TestS3::start();
    s3.create_bucket("resume");
    let port = s3.port();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data");
    let size = 24 * 5 * 1024 * 1024 + 777; // 25 parts of 5 MiB (the last one short)
    std::fs::write(&src, pattern(size, 7)).unwrap();
    let state = dir.path().join("state");
    let opts = ClientOptions {
        part_size: 5 << 20,
        multipart_threshold: 5 << 20,
        concurrency: 2,
        max_attempts: 1,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };

    // First attempt: stop the server once 6 parts are done.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let parts_done = Arc::new(AtomicU64::new(0));
    let upload = {
        let cfg = config(&s3, "resume");
        let creds = creds(&s3);
        let opts = opts.clone();
        let src = src.clone();
        let state = state.clone();
        let parts_done = parts_done.clone();
        std::thread::spawn(move || {
            costplus_testsupport::block_on(async move {
                let c = Offsite::new(&cfg, &creds, opts).unwrap();
                let tx = std::sync::Mutex::new(Some(tx));
                let up = UploadOptions {
                    state_dir: Some(state),
                    progress: Some(Arc::new(move |p: &Progress| {
                        if let Progress::Transferred { .. } = p
                            && parts_done.fetch_add(1, Ordering::SeqCst) + 1 == 6
                            && let Some(tx) = tx.lock().unwrap().take()
                        {
                            tx.send(()).unwrap();
                            // Give the test thread time to stop the server before more parts go.
                            std::thread::sleep(Duration::from_millis(300));
                        }
                    })),
                };
                c.upload_file(&src, "resume/data", &up).await
            })
        })
    };
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    s3.pause();
    let first = upload.join().unwrap();
    let err = first.expect_err("the upload cannot finish while the server is down");
    assert!(err.is_transient(), "{err:?}");
    let done_first = parts_done.load(Ordering::SeqCst);
    assert!((6..25).contains(&done_first), "{done_first} parts done");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        1,
        "the state file stays"
    );

    // Second attempt after the server is back: only the missing parts are sent.
    s3.resume(port);
    let sent = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let (s, r) = (sent.clone(), resumed.clone());
    let c = client(&s3, "resume", opts);
    let up = costplus_testsupport::block_on(c.upload_file(
        &src,
        "resume/data",
        &UploadOptions {
            state_dir: Some(state.clone()),
            progress: Some(Arc::new(move |p: &Progress| match p {
                Progress::Transferred { bytes, .. } => {
                    s.fetch_add(*bytes, Ordering::SeqCst);
                }
                Progress::Resumed { bytes, .. } => {
                    r.fetch_add(*bytes, Ordering::SeqCst);
                }
                _ => {}
            })),
        },
    ))
    .unwrap();
    assert_eq!(up.parts, 25);
    assert!(up.resumed_parts >= 6, "{} parts resumed", up.resumed_parts);
    assert!(up.checksum_verified);
    let (sent, resumed) = (sent.load(Ordering::SeqCst), resumed.load(Ordering::SeqCst));
    assert_eq!(sent + resumed, size as u64);
    assert!(resumed >= 6 * (5 << 20), "{resumed} bytes resumed");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    let back = dir.path().join("back");
    costplus_testsupport::block_on(c.download_file("resume/data", &back, None)).unwrap();
    assert_eq!(md5_of_file(&back), md5_of_file(&src));
}
