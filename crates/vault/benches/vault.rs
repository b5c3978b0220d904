//! The vault's performance targets, with 10,000 customers in the vault:
//!
//! - open + one lookup under 20 ms beyond the key derivation (key-file vault: its KDF is one
//!   HKDF, negligible);
//! - a put (next generation of a record, both fsyncs included) under 20 ms;
//! - the Argon2id derivation of a passphrase vault, calibrated on this machine, reported on its
//!   own (its target is ~500 ms by design).
//!
//! Run: `cargo bench -p costplus-vault --bench vault`. The vault lives on the same disk as
//! `$TMPDIR` (real fsyncs).

#![allow(missing_docs)] // criterion_main! generates the undocumented `main`
#![allow(clippy::unwrap_used)] // a benchmark fails by panicking
#![allow(clippy::print_stderr)] // the benchmark reports its setup (sizes, calibrated parameters)

use std::time::Duration;

use costplus_vault::{KdfParams, KeySource, NewKey, NewRecord, Vault};
use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::ExposeSecret;

const CUSTOMERS: usize = 10_000;

fn customer(i: usize, pw: &str) -> NewRecord {
    let name = format!("cust{i:05}");
    NewRecord::customer(
        &name,
        &format!("{name}_user"),
        &format!("{name}_db"),
        "main",
        pw.to_string().into(),
    )
}

fn vault_10k(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let key = tmp.path().join("vault.key");
    let (mut v, _) = Vault::init(&dir, &NewKey::key_file(&key)).unwrap();
    let recs = (0..CUSTOMERS)
        .map(|i| customer(i, &format!("password-{i:05}-xxxxxxxxxxxxxxxx")))
        .collect();
    v.put_many(recs, false).unwrap();
    drop(v);
    let manifest_size = std::fs::metadata(dir.join("manifest")).unwrap().len();
    eprintln!("vault with {CUSTOMERS} customers; manifest {manifest_size} bytes");

    let source = KeySource::KeyFile(key.clone());
    let mut g = c.benchmark_group("vault_10k_customers");
    g.sample_size(30);
    g.bench_function("open", |b| {
        b.iter(|| Vault::open(&dir, &source).unwrap());
    });
    g.bench_function("open_plus_one_lookup", |b| {
        b.iter(|| {
            let v = Vault::open(&dir, &source).unwrap();
            let r = v.get("cust05000").unwrap();
            assert_eq!(r.secret.expose_secret().len(), 31);
        });
    });
    let mut v = Vault::open(&dir, &source).unwrap();
    let mut n = 0u64;
    g.bench_function("put_next_generation_with_fsync", |b| {
        b.iter(|| {
            n += 1;
            v.put(customer(4242, &format!("rotated-{n}"))).unwrap();
        });
    });
    g.finish();
}

fn kdf(c: &mut Criterion) {
    let params = KdfParams::calibrate(Duration::from_millis(500)).unwrap();
    eprintln!("calibrated Argon2id parameters on this machine: {params:?}");
    let mut g = c.benchmark_group("kdf");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("argon2id_calibrated", |b| {
        b.iter(|| params.time_once().unwrap());
    });
    g.finish();
}

criterion_group!(benches, vault_10k, kdf);
criterion_main!(benches);
