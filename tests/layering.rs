//! The pure core stays pure: nothing under src/engine, src/alloc, src/ib, src/netdef or src/wire reads the
//! file system, parses the command line or reaches for an adapter (config, kube, ufm, reqwest).
//! Settings come in as the engine's own structs and the policy file as data (src/config converts).

use std::path::Path;

const CORE: &[&str] = &["src/engine", "src/alloc", "src/ib", "src/netdef", "src/wire"];
const FORBIDDEN: &[&str] = &[
    "crate::config",
    "crate::kube",
    "crate::ufm",
    "crate::ops",
    "std::fs",
    "tokio::fs",
    "clap::",
    "reqwest",
    "kube::",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of `text` that name a forbidden path (comments aside).
fn violations(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| FORBIDDEN.iter().any(|f| l.contains(f)))
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect()
}

#[test]
fn the_detector_finds_an_adapter_import() {
    assert_eq!(violations("use crate::config::PolicyMode;\n// std::fs in a comment\nlet x = 1;").len(), 1);
    assert_eq!(violations("    let t = std::fs::read_to_string(p);").len(), 1);
    assert!(violations("use crate::ib::Guid;").is_empty());
}

#[test]
fn the_core_imports_no_adapter_and_touches_no_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in CORE {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found the core's files: {}", files.len());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (line, code) in violations(&text) {
            found.push(format!("{}:{line}: {code}", file.strip_prefix(root).unwrap_or(file).display()));
        }
    }
    assert!(found.is_empty(), "the pure core reaches out of itself:\n{}", found.join("\n"));
}
