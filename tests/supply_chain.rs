//! The supply-chain policy of deny.toml, enforced on every test run: no banned crate in the build
//! (for any target platform), every dependency from crates.io, every license allowed.
//!
//! `cargo metadata` and `cargo tree --target all` need the manifests of every platform's
//! packages, which a Linux build never downloads; they are fetched here from crates.io as usual
//! (no `--offline`), so the test passes from an empty cargo cache. `.ci/run` proves it by pointing
//! `FABRIC_SYNC_SUPPLY_CHAIN_CARGO_HOME` at a new, empty directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn policy() -> toml::Table {
    let text = std::fs::read_to_string(root().join("deny.toml")).expect("deny.toml is committed");
    text.parse().expect("deny.toml parses")
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn lock() -> Vec<toml::Table> {
    let text = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock is committed");
    let lock: toml::Table = text.parse().expect("Cargo.lock parses");
    lock["package"].as_array().expect("packages").iter().filter_map(|p| p.as_table().cloned()).collect()
}

/// A cargo command in the workspace; `FABRIC_SYNC_SUPPLY_CHAIN_CARGO_HOME` runs it on another
/// (for instance empty) cargo home, to prove nothing depends on a warm cache.
fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args).current_dir(root());
    if let Some(home) = std::env::var_os("FABRIC_SYNC_SUPPLY_CHAIN_CARGO_HOME") {
        cmd.env("CARGO_HOME", home);
    }
    cmd
}

/// `cargo metadata` of the workspace: the dependency graph, every platform's packages included.
fn metadata() -> serde_json::Value {
    let out = cargo(&["metadata", "--format-version", "1", "--locked"]).output().expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("metadata is JSON")
}

#[test]
fn no_banned_crate_is_built() {
    let banned: BTreeSet<String> = policy()["bans"]["deny"]
        .as_array()
        .expect("bans.deny")
        .iter()
        .filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect();
    assert!(banned.contains("backoff") && banned.contains("ring"));
    // What is built (cargo's feature resolver, all targets), not Cargo.lock: the lockfile also
    // lists optional dependencies no enabled feature activates (ring, as an option of rustls-webpki).
    let out = cargo(&["tree", "--locked", "--workspace", "--target", "all", "-e", "normal,build,dev"])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("tokio ")) && tree.lines().any(|l| l.starts_with("rustls ")));
    let found = banned_in(&tree, &banned);
    assert!(found.is_empty(), "banned crates in the build: {found:?}");
}

/// The banned crates among the packages of `cargo tree --prefix none --format {p}` output.
fn banned_in(tree: &str, banned: &BTreeSet<String>) -> BTreeSet<String> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| banned.contains(*n))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_ban_check_finds_a_banned_crate_in_a_tree() {
    let banned: BTreeSet<String> = ["ring".to_string(), "backoff".to_string()].into();
    let tree = "tokio v1.48.0\nring v0.17.14\nrustls v0.23.35 (*)\nring-compat v0.8.0\n";
    assert_eq!(banned_in(tree, &banned), BTreeSet::from(["ring".to_string()]));
    assert!(banned_in("tokio v1.48.0\n", &banned).is_empty());
}

#[test]
fn every_dependency_comes_from_crates_io() {
    let odd: Vec<String> = lock()
        .iter()
        .filter_map(|p| {
            let source = p.get("source")?.as_str()?;
            (source != "registry+https://github.com/rust-lang/crates.io-index")
                .then(|| format!("{} from {source}", p["name"].as_str().unwrap_or("?")))
        })
        .collect();
    assert!(odd.is_empty(), "dependencies from unknown sources: {odd:?}");
}

/// An SPDX expression is allowed when one of its OR-alternatives has only allowed terms.
fn allowed(expr: &str, allow: &BTreeSet<String>) -> bool {
    let expr = expr.replace(['(', ')'], " ").replace('/', " OR ");
    expr.split(" OR ").any(|alt| {
        alt.split(" AND ").all(|term| {
            let term = term.trim();
            allow.contains(term) || allow.contains(term.split(" WITH ").next().unwrap_or(term).trim())
        })
    })
}

#[test]
fn every_license_is_allowed() {
    let allow: BTreeSet<String> = strings(policy()["licenses"].get("allow")).into_iter().collect();
    let meta = metadata();
    let mut refused = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().unwrap_or("?");
        match p["license"].as_str() {
            Some(l) if allowed(l, &allow) => {}
            Some(l) => refused.push(format!("{name}: {l}")),
            None => refused.push(format!("{name}: no license field")),
        }
    }
    assert!(refused.is_empty(), "licenses outside deny.toml's allow list: {refused:#?}");
}

#[test]
fn the_license_check_refuses_what_it_should() {
    let allow: BTreeSet<String> = ["MIT".to_string(), "Apache-2.0".to_string()].into();
    assert!(allowed("MIT OR Apache-2.0", &allow));
    assert!(allowed("Apache-2.0 WITH LLVM-exception", &allow));
    assert!(!allowed("GPL-3.0", &allow));
    assert!(!allowed("MIT AND GPL-3.0", &allow));
}

#[test]
fn the_license_files_match_the_declared_license() {
    let manifest: toml::Table =
        std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml").parse().expect("Cargo.toml parses");
    let declared = manifest["workspace"]["package"]["license"].as_str().expect("workspace.package.license");
    assert_eq!(declared, "Apache-2.0", "LICENSE holds the Apache License 2.0; change both together");
    for file in ["LICENSE", "mock-ufm/LICENSE"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let words: Vec<&str> = text.split_whitespace().take(4).collect();
        assert_eq!(words, ["Apache", "License", "Version", "2.0,"], "{file} is not the Apache License 2.0");
    }
}
