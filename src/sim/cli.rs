//! `fabric-sync simulate`: runs a scenario, prints progress on stderr, a summary on stdout
//! and, with `--json`, the report as the last line. Exit 0 only if every invariant holds.

use std::io::Write;
use std::process::ExitCode;

use super::report::Report;
use super::scenario::{Progress, Scenario, run};

#[derive(clap::Args, Debug)]
pub struct SimulateCmd {
    #[command(flatten)]
    pub scenario: Scenario,
    /// Print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn main(cmd: SimulateCmd) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simulate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut phase = "";
    let mut last_print = std::time::Instant::now();
    let mut progress = |p: Progress| match p {
        Progress::Phase(name) => {
            phase = name;
            eprintln!("simulate: {name}");
        }
        Progress::Count(done, total) => {
            if last_print.elapsed().as_millis() >= 1000 {
                last_print = std::time::Instant::now();
                eprintln!("simulate: {phase}: {done}/{total} pods settled");
            }
        }
    };
    let report = match rt.block_on(run(&cmd.scenario, &mut progress)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    print_summary(&report);
    if cmd.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("simulate: cannot encode the report: {e}"),
        }
    }
    let _ = std::io::stdout().flush();
    if report.invariants.all_zero() && report.converged { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn print_summary(r: &Report) {
    let i = &r.invariants;
    println!(
        "pods {} attachments {} configured {} refused {}/{}/{} (pkey limit/policy/invalid)",
        r.pods, r.attachments, r.configured, r.refused.pkey_limit, r.refused.policy, r.refused.invalid
    );
    println!(
        "latency ms p50 {} p90 {} p99 {} max {}; wall {} ms; peak RSS {} MB",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max, r.wall_ms, r.peak_rss_mb
    );
    println!(
        "UFM requests add {} remove {} list {} other {} failed {}; API patch {} event {}",
        r.ufm_requests.add,
        r.ufm_requests.remove,
        r.ufm_requests.list,
        r.ufm_requests.other,
        r.ufm_requests.failed,
        r.api_requests.patch,
        r.api_requests.event
    );
    println!(
        "invariants: duplicate {} stale {} missing {} configured-before-fabric {} over-pkey-limit {} foreign-touched {} unresolved {} → {}",
        i.duplicate_guids,
        i.stale_in_fabric,
        i.missing_in_fabric,
        i.configured_before_fabric,
        i.nodes_over_pkey_limit,
        i.foreign_guids_touched,
        i.unresolved_attachments,
        if i.all_zero() && r.converged { "all hold" } else { "VIOLATED" }
    );
    if r.fabrics.len() > 1 {
        for f in &r.fabrics {
            println!(
                "fabric {}: nodes {} attachments {} configured {} UFM members {} requests add {} remove {} list {} failed {}",
                f.name,
                f.nodes,
                f.attachments,
                f.configured,
                f.ufm_members,
                f.ufm_requests.add,
                f.ufm_requests.remove,
                f.ufm_requests.list,
                f.ufm_requests.failed
            );
        }
        println!("invariants: GUIDs in the wrong fabric's UFM {}", i.guids_in_wrong_fabric);
    }
}
