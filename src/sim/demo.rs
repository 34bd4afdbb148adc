//! `fabric-sync demo`: a fixed, friendly scenario on the embedded mock UFM over TLS — three
//! tenants, a burst, one invalid network, one node at its pkey limit, one policy violation,
//! deletions — with a progress bar and a summary a person can read. Exit 0 when everything
//! happened as it should. With `--fabrics N` the nodes are split over N fabrics, each with its
//! own mock UFM, and a tenant naming a fabric its node is not cabled to is refused too.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::fabrics::node_labels;
use super::report::check_invariants;
use super::scenario::{Scenario, World};
use crate::config::PolicyMode;
use crate::engine::{EngineConfig, FABRIC_ANNOTATION, Policy};
use crate::ib::PKey;
use crate::netdef::{ANNOTATION_MEMBERSHIP, parse_networks};

const POLICY: &str = r#"
rules:
  - {name: tenant-a, namespaces: [tenant-a], pkeys: ["0x1000"]}
  - {name: tenant-b, namespaces: [tenant-b], pkeys: ["0x2000"]}
  - {name: tenant-c, namespaces: [tenant-c], pkeys: ["0x3000"]}
"#;

const BURST: usize = 300;
const NODES: usize = 24;

/// One tenant network of the demo.
struct DemoNet {
    namespace: &'static str,
    nad: &'static str,
    pkey: &'static str,
    config: &'static str,
    annotations: BTreeMap<String, String>,
    /// How the GUID travels, for the printout.
    via: &'static str,
}

fn networks() -> Vec<DemoNet> {
    vec![
        DemoNet {
            namespace: "tenant-a",
            nad: "ib-a",
            pkey: "0x1000",
            config: r#"{"cniVersion":"0.3.1","type":"ib-sriov","pkey":"0x1000","ibKubernetesEnabled":true}"#,
            annotations: BTreeMap::new(),
            via: "cni-args.guid",
        },
        DemoNet {
            namespace: "tenant-b",
            nad: "ib-b",
            pkey: "0x2000",
            config: r#"{"cniVersion":"0.3.1","type":"ib-sriov","pkey":"0x2000","capabilities":{"infinibandGUID":true}}"#,
            annotations: [(ANNOTATION_MEMBERSHIP.to_string(), "limited".to_string())].into(),
            via: "infiniband-guid, limited membership",
        },
        DemoNet {
            namespace: "tenant-c",
            nad: "ib-c",
            pkey: "0x3000",
            config: r#"{"cniVersion":"0.3.1","name":"ib-c","plugins":[{"type":"ib-sriov","pkey":"0x3000","link_state":"enable","rdmaIsolation":true,"ibKubernetesEnabled":true,"ipam":{"type":"spiderpool"}},{"type":"coordinator","mode":"auto"}]}"#,
            annotations: BTreeMap::new(),
            via: "Spiderpool conflist, cni-args.guid",
        },
    ]
}

#[derive(clap::Args, Debug, Clone)]
pub struct DemoCmd {
    /// InfiniBand fabrics, each with its own in-process mock UFM over TLS (1..=8); nodes are
    /// split among them by the `fabric-sync.io/fabric` label.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub fabrics: u16,
}

pub fn main(cmd: DemoCmd) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cmd.fabrics)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn bar(label: &str, done: usize, total: usize) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
    eprint!("\r  {label} [{}{}] {done}/{total}", "#".repeat(filled), ".".repeat(width - filled));
    let _ = std::io::stderr().flush();
}

fn bar_end() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

async fn wait_for(world: &World, label: &str, want: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, configured, refused) = world.cluster.progress();
        bar(label, configured + refused, want);
        if configured + refused >= want && check_invariants(world).converged() {
            bar_end();
            return true;
        }
        if Instant::now() > deadline {
            bar_end();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn run(fabrics: u16) -> Result<bool, String> {
    let policy = Policy::parse("demo policy", POLICY).map_err(|e| e.to_string())?;
    let cfg = EngineConfig { policy: Some(policy), policy_mode: PolicyMode::Enforce, ..EngineConfig::default() };
    let scenario = Scenario { ufm_latency_ms: 2, api_latency_ms: 1, fabrics, ..Scenario::default() };
    let mut world = World::new(&scenario, cfg, 0.0).await.map_err(|e| e.to_string())?;
    let several = world.fabrics.len() > 1;
    let a = PKey::new(0x1000).ok_or("bad pkey")?;
    world.seed_foreign(a).map_err(|e| e.to_string())?;
    if several {
        println!("fabric-sync demo: the real engine and UFM clients against {} embedded mock UFMs (TLS)", fabrics);
        for f in &world.fabrics {
            println!("  fabric {:<9} UFM {}  GUIDs {}", f.name, f.ufm.url(), f.range);
        }
        println!();
    } else {
        println!(
            "fabric-sync demo: the real engine and UFM client against an embedded mock UFM at {} (TLS)\n",
            world.ufm().url()
        );
    }
    println!("Tenants (policy: enforce, each tenant may use only its own pkey)");
    for n in networks() {
        world.cluster.set_namespace(n.namespace, BTreeMap::new()).await;
        world.cluster.apply_nad(n.namespace, n.nad, n.annotations, n.config).await;
        println!("  {:<9} NAD {:<5} pkey {}  {}", n.namespace, n.nad, n.pkey, n.via);
    }
    // A network written the way Spiderpool's docs show it: a bare number.
    world.cluster.apply_nad("tenant-c", "ib-bad", BTreeMap::new(), r#"{"type":"ib-sriov","pkey":"1000"}"#).await;
    println!("  tenant-c  NAD ib-bad pkey \"1000\" (no 0x: ambiguous, refused)\n");
    // With several fabrics, a tenant writes a NAD naming a fabric (the annotation is theirs to
    // write) that the nodes its pods run on are not cabled to.
    let elsewhere = world.fabrics.last().map(|f| f.name.clone()).unwrap_or_default();
    if several {
        let ann = [(FABRIC_ANNOTATION.to_string(), elsewhere.clone())].into();
        world.cluster.apply_nad("tenant-a", "ib-other", ann, r#"{"type":"ib-sriov","pkey":"0x1000"}"#).await;
        println!("  tenant-a  NAD ib-other pkey 0x1000 annotated {FABRIC_ANNOTATION}: {elsewhere}\n");
    }
    for n in 0..NODES {
        let labels = node_labels(n, world.fabrics.len());
        world.cluster.set_node_labeled(&format!("gpu-node-{n:02}"), labels, None).await;
    }
    // The node agent reported a small pkey table here: 3 entries, 1 kept for the default partition.
    world.cluster.set_node_labeled("gpu-node-small", node_labels(0, world.fabrics.len()), Some(3)).await;
    let controller = world.controller().await;
    let started = Instant::now();

    println!("1. Burst: {BURST} pods across {NODES} nodes and 3 tenants");
    for i in 0..BURST {
        let (ns, nad) = [("tenant-a", "ib-a"), ("tenant-b", "ib-b"), ("tenant-c", "ib-c")][i % 3];
        world
            .cluster
            .create_pod(&format!("uid-{i:04}"), ns, &format!("trainer-{i}"), &format!("gpu-node-{:02}", i % NODES), nad)
            .await;
    }
    let burst_ok = wait_for(&world, "configured", BURST, Duration::from_secs(20)).await;
    let burst_time = started.elapsed();
    let pods = world.cluster.pods();
    let mut lat = super::cluster::latencies_ms(&pods);
    lat.sort_by(f64::total_cmp);
    let p99 = lat.get(((lat.len() as f64 - 1.0) * 0.99) as usize).copied().unwrap_or(0.0);
    let adds: u64 = world.fabrics.iter().map(|f| f.counters.snapshot().add).sum();
    println!(
        "   all {BURST} configured in {:.0} ms (p99 {:.0} ms per pod) with {adds} UFM add requests (one per pkey{})\n",
        burst_time.as_secs_f64() * 1000.0,
        p99,
        if several { " and fabric" } else { "" }
    );

    let refusing = if several { 4 } else { 3 };
    println!("2. {} pods that must be refused, each with its reason", if several { "Four" } else { "Three" });
    world.cluster.create_pod("uid-x1", "tenant-c", "intruder", "gpu-node-03", "tenant-a/ib-a").await;
    world.cluster.create_pod("uid-x2", "tenant-c", "bad-net", "gpu-node-04", "ib-bad").await;
    for (i, (ns, nad)) in [("tenant-a", "ib-a"), ("tenant-b", "ib-b"), ("tenant-c", "ib-c")].iter().enumerate() {
        world.cluster.create_pod(&format!("uid-y{i}"), ns, &format!("crowded-{i}"), "gpu-node-small", nad).await;
    }
    if several {
        // gpu-node-00 is on the first fabric, the NAD names the last.
        world.cluster.create_pod("uid-x3", "tenant-a", "wrong-fabric", "gpu-node-00", "ib-other").await;
    }
    let refusals_ok = wait_for(&world, "settled   ", BURST + 2 + refusing, Duration::from_secs(20)).await;
    let mut refused = Vec::new();
    for p in world.cluster.pods().iter().filter(|p| p.refused) {
        let status: BTreeMap<String, String> =
            p.status.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        for v in status.values().filter(|v| v.starts_with("refused:")) {
            println!("   {}/{:<12} {}", p.namespace, p.name, v.trim_start_matches("refused: "));
            refused.push(v.clone());
        }
    }
    let mut expected = vec!["PKeyNotAllowed", "InvalidNetwork", "PKeyLimitExceeded"];
    if several {
        expected.push("FabricNotOnNode");
    }
    let all_refused = expected.iter().all(|r| refused.iter().any(|v| v.contains(r))) && refused.len() == expected.len();
    println!();

    println!("3. Churn: 60 pods deleted, 20 finished");
    let live: Vec<String> =
        world.cluster.pods().iter().filter(|p| p.name.starts_with("trainer-")).map(|p| p.uid.clone()).collect();
    for uid in live.iter().take(60) {
        world.cluster.delete_pod(uid).await;
    }
    for uid in live.iter().skip(60).take(20) {
        world.cluster.finish_pod(uid).await;
    }
    let churn_ok = wait_for(&world, "settled   ", BURST + 2 + refusing - 80, Duration::from_secs(20)).await;
    println!("   their GUIDs left UFM; they stay quarantined until a UFM listing confirms it\n");

    let inv = check_invariants(&world);
    let sample = world.cluster.pods().into_iter().find(|p| p.namespace == "tenant-b" && p.configured_at.is_some());
    if let Some(p) = sample {
        let pretty = parse_networks(&p.networks).map(|els| crate::netdef::encode_networks(&els)).unwrap_or(p.networks);
        println!(
            "A configured pod's networks annotation (what ib-sriov-cni reads):\n   {}/{}: {pretty}\n",
            p.namespace, p.name
        );
    }
    for f in &world.fabrics {
        if several {
            println!("UFM of fabric {} now:", f.name);
        } else {
            println!("UFM now:");
        }
        for (pkey, part) in f.ufm.snapshot() {
            println!("   pkey 0x{pkey:x} {:<14} {} members", part.name, part.members.len());
        }
    }
    let api = world.cluster.counts();
    println!();
    for f in &world.fabrics {
        let c = f.counters.snapshot();
        let whose = if several { format!(" (fabric {})", f.name) } else { String::new() };
        println!("Traffic{whose}: UFM add {} remove {} list {} (failed {})", c.add, c.remove, c.list, c.failed);
    }
    println!("Traffic: Kubernetes patches {} events {}", api.patch, api.event);
    println!(
        "Invariants: duplicate GUIDs {}, stale in UFM {}, missing in UFM {}, configured before UFM accepted {}, nodes over pkey limit {}, foreign GUIDs touched {}{}",
        inv.duplicate_guids,
        inv.stale_in_fabric,
        inv.missing_in_fabric,
        inv.configured_before_fabric,
        inv.nodes_over_pkey_limit,
        inv.foreign_guids_touched,
        if several {
            format!(", GUIDs in the wrong fabric's UFM {}", inv.guids_in_wrong_fabric)
        } else {
            String::new()
        }
    );
    let ok = burst_ok && refusals_ok && churn_ok && all_refused && inv.all_zero();
    println!(
        "\n{} in {:.1} s. Next: `fabric-sync simulate --help` for larger runs, README for installing it in a cluster.",
        if ok { "Demo passed" } else { "Demo FAILED" },
        started.elapsed().as_secs_f64()
    );
    let mut controller = controller;
    controller.kill(&world.cluster).await;
    for f in world.fabrics {
        f.ufm.shutdown().await;
    }
    Ok(ok)
}
