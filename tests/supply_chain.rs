//! The supply-chain policy of deny.toml, enforced offline: no banned crate in Cargo.lock, every
//! dependency from crates.io, every license allowed.

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

/// `cargo metadata` of the workspace: the dependency graph as it is built.
fn metadata() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
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
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "--workspace", "--target", "all", "-e", "normal,build,dev"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(built.contains("tokio") && built.contains("rustls"), "cargo tree listed the build");
    let found: Vec<&String> = built.iter().filter(|n| banned.contains(*n)).collect();
    assert!(found.is_empty(), "banned crates in the build: {found:?}");
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
