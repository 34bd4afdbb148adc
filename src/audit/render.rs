//! The audit report as text tables for a person (JSON is the `Report` serialised).

use std::fmt::Write;

use super::Report;

/// Examples shown per reason before "and N more".
const EXAMPLES: usize = 5;

/// The report as text; `owners` adds the GUID → pod table.
pub fn render_text(r: &Report, owners: bool) -> String {
    let mut o = String::new();
    let c = &r.counts;
    let _ = writeln!(
        o,
        "cluster: {} pods with networks ({} attachments), {} networks, {} nodes, {} GuidClaims; UFM: {} partitions",
        c.pods, c.attachments, c.networks, c.nodes, c.claims, c.ufm_partitions
    );
    if let Some(m) = &r.migration {
        let _ = writeln!(
            o,
            "ledger: empty, so the controller's first start adopts ib-kubernetes' configured annotations: {} adopted, {} left alone (network unreadable), {} conflicts",
            m.adopted, m.left_alone, m.conflicts
        );
    }

    section(&mut o, "Partitions (managed GUID range only)");
    let mut rows = vec![row(&["PKEY", "NETWORKS", "EXPECTED", "IN UFM", "STALE", "MISSING", "FOREIGN"])];
    let several = r.pkeys.iter().any(|p| p.fabric != r.pkeys[0].fabric);
    for p in &r.pkeys {
        let nets = if p.networks.is_empty() { "-".to_string() } else { p.networks.join(",") };
        rows.push(vec![
            // With several fabrics the pkey is shown as fabric/pkey (one partition per fabric).
            if several { format!("{}/{}", p.fabric, p.pkey) } else { p.pkey.clone() },
            nets,
            p.expected.to_string(),
            p.in_ufm.to_string(),
            p.stale.to_string(),
            p.missing.to_string(),
            p.foreign_in_range.to_string(),
        ]);
    }
    if r.pkeys.is_empty() {
        o.push_str("(none)\n");
    } else {
        table(&mut o, &rows);
    }

    section(&mut o, "Attachments refused or waiting");
    if r.not_configured.is_empty() {
        o.push_str("(none)\n");
    }
    for (reason, list) in &r.not_configured {
        let _ = writeln!(o, "{reason}: {}", list.len());
        for i in list.iter().take(EXAMPLES) {
            let _ = writeln!(o, "  {} {}: {}", i.pod, i.attachment, i.message);
        }
        if list.len() > EXAMPLES {
            let _ = writeln!(o, "  and {} more", list.len() - EXAMPLES);
        }
    }

    section(&mut o, "Forged or conflicting markers");
    if r.markers.is_empty() {
        o.push_str("(none)\n");
    }
    for m in &r.markers {
        let _ = writeln!(o, "{} {}: {}: {}", m.pod, m.attachment, m.reason, m.message);
    }

    section(&mut o, "Nodes by pkey use (fullest first)");
    let mut rows = vec![row(&["NODE", "WANTED", "GRANTED", "LIMIT", "CAPACITY", ""])];
    for n in &r.nodes {
        rows.push(vec![
            n.node.clone(),
            n.pkeys_wanted.to_string(),
            n.pkeys_granted.to_string(),
            n.limit.to_string(),
            n.capacity.to_string(),
            if n.over { "OVER".into() } else { String::new() },
        ]);
    }
    if r.nodes.is_empty() {
        o.push_str("(none)\n");
    } else {
        table(&mut o, &rows);
    }

    section(&mut o, "GUID pool");
    let p = &r.pool;
    let _ = writeln!(
        o,
        "range {}: {} in use of {}, {} quarantined; UFM lists {} GUIDs of the range",
        p.range, p.in_use, p.capacity, p.quarantined, p.in_ufm
    );

    if let Some(m) = &r.pkey_range {
        section(&mut o, "Managed pkey range");
        let _ = writeln!(
            o,
            "range {}: {} pkeys, {} claimed ({} created in UFM), {} free; UFM has {} of the range without a claim{}",
            m.range,
            m.size,
            m.claimed,
            m.created,
            m.free,
            m.in_ufm_unclaimed.len(),
            if m.in_ufm_unclaimed.is_empty() {
                String::new()
            } else {
                format!(" (never taken: {})", m.in_ufm_unclaimed.join(", "))
            }
        );
        for (network, why) in m.waiting.iter().take(EXAMPLES) {
            let _ = writeln!(o, "  {network}: {why}");
        }
        more(&mut o, m.waiting.len(), EXAMPLES.min(m.waiting.len()));
    }

    section(&mut o, "What the controller would change");
    let pl = &r.plan;
    let _ = writeln!(o, "UFM adds: {}", pl.adds.len());
    for (pkey, guid) in pl.adds.iter().take(EXAMPLES * 2) {
        let _ = writeln!(o, "  + {pkey} {guid}");
    }
    more(&mut o, pl.adds.len(), EXAMPLES * 2);
    let _ = writeln!(o, "UFM removals: {}", pl.removes.len());
    for (pkey, guid, cause) in pl.removes.iter().take(EXAMPLES * 2) {
        let _ = writeln!(o, "  - {pkey} {guid} ({})", cause.as_str());
    }
    more(&mut o, pl.removes.len(), EXAMPLES * 2);
    let _ = writeln!(o, "ledger writes: {}, releases: {}", pl.ledger_writes.len(), pl.ledger_releases.len());
    let _ =
        writeln!(o, "pod annotation rewrites: {} (status-only updates: {})", pl.pod_rewrites.len(), pl.status_updates);
    for (pod, n) in pl.pod_rewrites.iter().take(EXAMPLES) {
        let _ = writeln!(o, "  {pod}: {n} element(s)");
    }
    more(&mut o, pl.pod_rewrites.len(), EXAMPLES);
    if !pl.events.is_empty() {
        let list: Vec<String> = pl.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "Events: {}", list.join(", "));
    }
    if !pl.settled {
        o.push_str("(the plan had not settled after the round limit; a real run continues from here)\n");
    }

    section(&mut o, "Hazards (migration preflight)");
    if r.hazards.is_empty() {
        o.push_str("(none)\n");
    }
    for h in &r.hazards {
        let _ = writeln!(o, "[{}] {}: {}", h.kind, h.object, h.message);
        let _ = writeln!(o, "  fix: {}", h.fix);
    }

    if owners {
        section(&mut o, "Owners");
        let mut rows = vec![row(&["GUID", "POD", "NETWORK", "PKEY", "NODE", "STATE"])];
        for w in &r.owners {
            rows.push(vec![
                w.guid.clone(),
                w.pod.clone(),
                w.network.clone(),
                w.pkey.clone().unwrap_or_else(|| "-".into()),
                w.node.clone(),
                w.state.clone(),
            ]);
        }
        table(&mut o, &rows);
    }
    o.push('\n');
    if r.clean {
        o.push_str("result: clean\n");
    } else {
        let _ = writeln!(
            o,
            "result: drift or hazards ({} UFM changes, {} ledger writes, {} pod rewrites, {} refused or waiting, {} markers, {} hazards)",
            pl.adds.len() + pl.removes.len(),
            pl.ledger_writes.len() + pl.ledger_releases.len(),
            pl.pod_rewrites.len(),
            r.not_configured.values().map(Vec::len).sum::<usize>(),
            r.markers.len(),
            r.hazards.len()
        );
    }
    o
}

fn section(o: &mut String, title: &str) {
    let _ = writeln!(o, "\n== {title}");
}

fn more(o: &mut String, total: usize, shown: usize) {
    if total > shown {
        let _ = writeln!(o, "  and {} more", total - shown);
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart.
fn table(o: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
}
