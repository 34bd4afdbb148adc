//! End-to-end scenarios: the real engine and UFM client against the in-process mock UFM over
//! TLS and the in-memory cluster. They assert counts and invariants, never wall-clock times.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::report::check_invariants;
use super::scenario::{FaultProfile, Scenario, World, network_of, pkey_of, run};
use crate::engine::EngineConfig;
use crate::netdef::parse_networks;

const WAIT: Duration = Duration::from_secs(60);

fn quiet(pods: usize) -> Scenario {
    Scenario { pods, nodes: 50, pkeys: 4, ufm_latency_ms: 0, api_latency_ms: 0, timeout_s: 60, ..Scenario::default() }
}

async fn world(s: &Scenario) -> World {
    let mut w = World::new(s, EngineConfig::default(), 0.0).await.expect("mock UFM starts");
    w.seed_foreign(pkey_of(0)).expect("seed");
    for i in 0..s.pkeys {
        let (ns, name) = network_of(i);
        let config = format!(r#"{{"type":"ib-sriov","pkey":"{}"}}"#, pkey_of(i));
        w.cluster.apply_nad(&ns, &name, BTreeMap::new(), &config).await;
    }
    for n in 0..s.nodes {
        w.add_node(n, None).await;
    }
    w
}

async fn create(w: &World, s: &Scenario, from: usize, count: usize) {
    for i in from..from + count {
        let (ns, name) = network_of(i % s.pkeys);
        w.cluster
            .create_pod(&format!("uid-{i:06}"), &ns, &format!("p{i}"), &format!("node-{}", i % s.nodes), &name)
            .await;
    }
}

/// GUID of every configured pod, by UID.
fn guids(w: &World) -> HashMap<String, String> {
    w.cluster
        .pods()
        .into_iter()
        .filter_map(|p| {
            let els = parse_networks(&p.networks).ok()?;
            let e = els.first()?;
            e.is_configured().then(|| (p.uid, e.cni_arg("guid").unwrap_or_default().to_string()))
        })
        .collect()
}

/// Waits until `cond` holds (polled; the scenarios' own clock, no fixed pause).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn settle(w: &World) -> bool {
    w.converge(WAIT, &mut |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_2000_pods_on_16_pkeys_takes_at_most_two_adds_per_pkey() {
    let s = Scenario { pods: 2000, nodes: 250, pkeys: 16, ufm_latency_ms: 0, api_latency_ms: 0, ..Scenario::default() };
    let report = run(&s, &mut |_| {}).await.expect("runs");
    assert!(report.converged);
    assert_eq!(report.configured, 2000);
    assert!(report.ufm_requests.add <= 32, "{} add requests", report.ufm_requests.add);
    assert!(report.invariants.all_zero(), "{:?}", report.invariants);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ufm_down_during_adds_then_back_configures_everything_and_nothing_early() {
    let s = quiet(200);
    let w = world(&s).await;
    w.ufm().add_fault(mock_ufm::FaultRule::outage(Duration::from_secs(3600)));
    let c = w.controller().await;
    create(&w, &s, 0, 200).await;
    // While UFM is down nothing may be written configured: wait until every pkey's add was
    // tried and refused at least twice, then look.
    until("two refused adds per pkey", || w.fabrics[0].counters.snapshot().failed >= 2 * s.pkeys as u64).await;
    assert_eq!(w.cluster.progress().1, 0, "no pod configured while UFM refuses");
    w.ufm().clear_faults();
    assert!(settle(&w).await, "{:?}", check_invariants(&w));
    assert_eq!(w.cluster.progress(), (200, 200, 0));
    assert!(check_invariants(&w).all_zero());
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ufm_down_during_removes_holds_guids_until_removal_is_confirmed() {
    let s = quiet(100);
    let w = world(&s).await;
    let c = w.controller().await;
    create(&w, &s, 0, 100).await;
    assert!(settle(&w).await);
    let before = guids(&w);
    w.ufm().add_fault(mock_ufm::FaultRule::outage(Duration::from_secs(3600)));
    let gone: Vec<String> = before.keys().take(50).cloned().collect();
    for uid in &gone {
        w.cluster.delete_pod(uid).await;
    }
    let failed = w.fabrics[0].counters.snapshot().failed;
    create(&w, &s, 100, 50).await;
    // The removals (and the new pods' adds) were tried against the outage and refused.
    until("refused UFM calls after the deletions", || w.fabrics[0].counters.snapshot().failed >= failed + 2).await;
    w.ufm().clear_faults();
    assert!(settle(&w).await, "{:?}", check_invariants(&w));
    let after = guids(&w);
    for uid in &gone {
        let old = &before[uid];
        assert!(!after.values().any(|g| g == old), "GUID {old} of a deleted pod was handed out again");
    }
    assert!(check_invariants(&w).all_zero());
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_in_the_middle_of_a_burst_loses_and_reallocates_nothing() {
    let s = Scenario { ufm_latency_ms: 2, api_latency_ms: 1, ..quiet(600) };
    let w = world(&s).await;
    let mut c = w.controller().await;
    create(&w, &s, 0, 600).await;
    // Kill it once some, but not all, pods are configured.
    until("a first pod configured", || w.cluster.progress().1 > 0).await;
    c.kill(&w.cluster).await;
    let before = guids(&w);
    assert!(before.len() < 600, "the kill came mid-burst ({} configured)", before.len());
    let c2 = w.controller().await;
    assert!(settle(&w).await, "{:?}", check_invariants(&w));
    let after = guids(&w);
    for (uid, g) in &before {
        assert_eq!(after.get(uid), Some(g), "pod {uid} kept its GUID across the restart");
    }
    assert!(check_invariants(&w).all_zero(), "{:?}", check_invariants(&w));
    drop(c2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_deleted_before_its_add_completed_ends_clean() {
    let s = Scenario { ufm_latency_ms: 300, ..quiet(1) };
    let w = world(&s).await;
    let c = w.controller().await;
    create(&w, &s, 0, 1).await;
    // The ledger is written before UFM is asked; UFM takes 300 ms to answer the add.
    until("the pod's claim", || w.cluster.claim("uid-000000").is_some()).await;
    assert_eq!(w.cluster.progress().1, 0, "deleted while its add is still in flight");
    w.cluster.delete_pod("uid-000000").await;
    create(&w, &s, 1, 1).await;
    assert!(settle(&w).await, "{:?}", check_invariants(&w));
    let inv = check_invariants(&w);
    assert!(inv.all_zero(), "{inv:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_churn_with_three_controller_kills_keeps_every_invariant() {
    let s = Scenario {
        pods: 400,
        nodes: 40,
        pkeys: 8,
        ufm_latency_ms: 1,
        api_latency_ms: 1,
        delete_share: 0.3,
        restarts: 3,
        faults: FaultProfile::Chaos,
        outage_ms: 1500,
        seed: 42,
        timeout_s: 60,
        ..Scenario::default()
    };
    let report = run(&s, &mut |_| {}).await.expect("runs");
    assert!(report.converged, "{:?}", report.invariants);
    assert!(report.invariants.all_zero(), "{:?}", report.invariants);
    assert_eq!(report.restarts, 3);
    assert!(report.ufm_requests.failed > 0, "the faults fired");
    assert!(report.refused.forged > 0, "hostile tenants forged markers");
    assert_eq!(report.configured + report.refused.forged, report.attachments, "{:?}", report.refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_fabrics_each_node_s_pods_land_in_its_fabric_s_ufm_only() {
    let s = Scenario { fabrics: 4, ..quiet(400) };
    let w = world(&s).await;
    let _c = w.controller().await;
    create(&w, &s, 0, s.pods).await;
    assert!(settle(&w).await, "converged: {:?}", check_invariants(&w));
    let inv = check_invariants(&w);
    assert!(inv.all_zero(), "{inv:?}");
    // Every fabric's UFM holds exactly the GUIDs of its nodes' pods, from its own slice.
    let labels = w.cluster.node_labels();
    for (i, f) in w.fabrics.iter().enumerate() {
        let held: Vec<u64> = f.ufm.snapshot().values().flat_map(|p| p.members.keys().map(|g| g.value())).collect();
        let want = w
            .cluster
            .pods()
            .iter()
            .filter(|p| p.node.as_ref().and_then(|n| labels.get(n)).and_then(|l| l.values().next()) == Some(&f.name))
            .count();
        let managed: Vec<u64> = held
            .iter()
            .copied()
            .filter(|v| crate::ib::Guid::new(*v).is_some_and(|g| w.cfg.guid_range.contains(g)))
            .filter(|v| *v != super::scenario::FOREIGN_INSIDE)
            .collect();
        assert_eq!(managed.len(), want, "fabric {i} holds its own pods' GUIDs");
        assert!(
            managed.iter().all(|v| crate::ib::Guid::new(*v).is_some_and(|g| f.range.contains(g))),
            "fabric {i} holds only GUIDs of its slice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fabrics_one_ufm_in_outage_does_not_hold_the_others_back() {
    let s = Scenario { fabrics: 2, ..quiet(200) };
    let w = world(&s).await;
    w.fabrics[1].ufm.add_fault(mock_ufm::FaultRule::outage(Duration::from_secs(3600)));
    let _c = w.controller().await;
    create(&w, &s, 0, s.pods).await;
    // Fabric 0's half is configured while fabric 1's UFM is down.
    let half = s.pods / 2;
    until("fabric 0's pods configured", || guids(&w).len() >= half).await;
    assert_eq!(guids(&w).len(), half, "none of fabric 1's pods is configured while its UFM is down");
    w.fabrics[1].ufm.clear_faults();
    assert!(settle(&w).await, "converged: {:?}", check_invariants(&w));
    assert_eq!(guids(&w).len(), s.pods);
}
