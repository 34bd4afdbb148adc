//! README's metrics table and its reasons table are the operator's reference: they list exactly
//! what the code declares (`ops::METRICS`, `engine::Reason::ALL` and `Reason::AGENT`), so adding
//! a metric or a reason without documenting it fails here (see CONTRIBUTING.md).

use std::collections::BTreeSet;

use fabric_sync::engine::Reason;
use fabric_sync::ops::METRICS;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The first cells (without backticks) of the table rows of `section` whose first cell starts
/// with `prefix`.
fn first_cells(text: &str, section: &str, prefix: &str) -> BTreeSet<String> {
    let start = text.find(section).unwrap_or_else(|| panic!("README has a {section:?} section"));
    let body = &text[start + section.len()..];
    let end = body.find("\n## ").unwrap_or(body.len());
    body[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|c| c.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_table_reader_finds_rows_of_its_section_only() {
    let text = "## A\n| `x_one` | a |\n| `y` | b |\n## B\n| `x_two` | c |\n";
    assert_eq!(first_cells(text, "## A", "x_"), BTreeSet::from(["x_one".to_string()]));
}

#[test]
fn readme_lists_every_controller_metric_and_no_other() {
    let documented = first_cells(&readme(), "\n## Metrics", "fabric_sync_");
    let declared: BTreeSet<String> = METRICS.iter().map(|m| m.0.to_string()).collect();
    let rows: Vec<String> = METRICS
        .iter()
        .filter(|m| !documented.contains(m.0))
        .map(|(name, kind, labels, meaning)| format!("| `{name}` | {kind} | {labels} | {meaning} |"))
        .collect();
    assert!(rows.is_empty(), "README's Metrics table misses these rows (add them):\n{}", rows.join("\n"));
    // The agent's metrics (fabric_sync_agent_*) share the section; every other row is declared.
    let unknown: Vec<_> = documented.difference(&declared).filter(|m| !m.starts_with("fabric_sync_agent_")).collect();
    assert!(unknown.is_empty(), "README lists metrics the controller does not declare: {unknown:?}");
}

#[test]
fn readme_explains_every_reason() {
    let documented = first_cells(&readme(), "\n## Events and status", "");
    let declared: BTreeSet<String> =
        Reason::ALL.iter().chain(Reason::AGENT.iter()).map(|r| r.as_str().to_string()).collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    assert!(missing.is_empty(), "reasons README's Events table does not explain: {missing:?}");
}

#[test]
fn readme_names_each_metrics_labels() {
    let text = readme();
    let start = text.find("\n## Metrics").expect("README has a Metrics section");
    let body = &text[start..];
    let body = &body[..body[1..].find("\n## ").map_or(body.len(), |i| i + 1)];
    let mut wrong = Vec::new();
    for (name, _, labels, _) in METRICS {
        let Some(row) = body.lines().find(|l| l.starts_with(&format!("| `{name}` |"))) else { continue };
        let cell = row.split('|').nth(3).unwrap_or("").trim();
        // The README may explain a label's values in parentheses: `operation (add, remove)`.
        let mut bare = String::new();
        let mut depth = 0u32;
        for ch in cell.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth == 0 => bare.push(ch),
                _ => {}
            }
        }
        let names: Vec<String> =
            bare.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty() && c != "–").collect();
        let declared: Vec<String> = labels.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        if names != declared {
            wrong.push(format!("{name}: README says {cell:?}, the code declares {labels:?}"));
        }
    }
    assert!(wrong.is_empty(), "README's label column disagrees with ops::METRICS:\n{}", wrong.join("\n"));
}
