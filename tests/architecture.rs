//! The architecture invariants of ARCHITECTURE.md, checked against `cargo metadata`.

#![allow(clippy::unwrap_used)] // a test fails by panicking; helpers outside #[test] too

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Library crates that must never depend on `costplus-core` (directly or not).
const LEAVES: &[&str] = &[
    "costplus-hba",
    "costplus-tls",
    "costplus-vault",
    "costplus-s3",
    "costplus-pgbackrest",
    "costplus-fs",
    "costplus-pgcluster",
    "costplus-s3local",
];

struct Graph {
    /// package -> workspace packages it depends on (normal and build dependencies).
    deps: BTreeMap<String, BTreeSet<String>>,
    /// package -> (is it a binary-only package, its manifest dir)
    bins: BTreeSet<String>,
    members: BTreeSet<String>,
}

fn graph() -> Graph {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut deps = BTreeMap::new();
    let mut bins = BTreeSet::new();
    for p in packages {
        let name = p["name"].as_str().unwrap().to_string();
        let d: BTreeSet<String> = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null() || d["kind"] == "build")
            .map(|d| d["name"].as_str().unwrap().to_string())
            .filter(|n| members.contains(n))
            .collect();
        let targets = p["targets"].as_array().unwrap();
        let has_lib = targets
            .iter()
            .any(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "lib"));
        let has_bin = targets
            .iter()
            .any(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"));
        if has_bin && !has_lib {
            bins.insert(name.clone());
        }
        deps.insert(name, d);
    }
    Graph {
        deps,
        bins,
        members,
    }
}

fn reachable(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(p) = stack.pop() {
        for d in g.deps.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn leaves_never_depend_on_core() {
    let g = graph();
    for leaf in LEAVES.iter().filter(|l| g.members.contains(**l)) {
        let r = reachable(&g, leaf);
        assert!(
            !r.contains("costplus-core"),
            "{leaf} depends on costplus-core through {r:?}"
        );
        assert!(
            !r.contains("costplus-sandbox") && !r.contains("costplus-cli"),
            "{leaf} depends on an upper layer: {r:?}"
        );
    }
}

#[test]
fn binaries_depend_on_libraries_only() {
    let g = graph();
    assert!(
        g.bins.contains("costplus"),
        "the umbrella binary package is missing: {:?}",
        g.bins
    );
    for bin in &g.bins {
        for d in &g.deps[bin] {
            assert!(
                !g.bins.contains(d),
                "binary {bin} depends on binary package {d}"
            );
        }
        assert!(
            bin == "costplus" || bin.starts_with("costplus-"),
            "binary package {bin} lacks the costplus prefix"
        );
    }
    for (pkg, d) in &g.deps {
        for b in &g.bins {
            assert!(!d.contains(b), "{pkg} depends on binary package {b}");
        }
    }
}

#[test]
fn no_dependency_cycles() {
    let g = graph();
    for p in g.deps.keys() {
        assert!(
            !reachable(&g, p).contains(p),
            "{p} is part of a dependency cycle"
        );
    }
}

#[test]
fn test_support_is_only_a_dev_dependency() {
    let g = graph();
    for (pkg, d) in &g.deps {
        assert!(
            !d.contains("costplus-testsupport"),
            "{pkg} has costplus-testsupport as a normal dependency"
        );
    }
}

#[test]
fn every_member_uses_workspace_lints_and_prefix() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    for dir in ["crates", "bins"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let manifest = entry.unwrap().path().join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            assert!(
                text.contains("[lints]\nworkspace = true"),
                "{} does not use the workspace lints",
                manifest.display()
            );
            assert!(
                text.contains("name = \"costplus"),
                "{} lacks the costplus prefix",
                manifest.display()
            );
        }
    }
}
