//! Scenario tests with two fabrics (issue 17): attachments land in their fabric's UFM and pool
//! only, routing refusals are shown and re-decided on change, one fabric down does not hold the
//! other back, and a network moved to another fabric moves its members.

use std::collections::BTreeMap;

use super::super::*;
use super::world::*;
use crate::alloc::GuidRange;
use crate::ib::Guid;
use crate::netdef::{NetworkKey, parse_nad};

const COMPUTE: FabricId = FabricId(0);
const STORAGE: FabricId = FabricId(1);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn spec(name: &str, label: &str, from: u64, to: u64) -> FabricSpec {
    FabricSpec {
        route: resolve_route(name, label),
        guid_range: GuidRange::new(g(from), g(to)).unwrap(),
        hcas: Vec::new(),
    }
}

fn resolve_route(name: &str, label: &str) -> FabricRoute {
    FabricRoute { name: name.into(), node_selector: labels(&[(label, "true")]), resource_names: Vec::new() }
}

/// compute: nodes labelled `ib.compute=true`, GUIDs 1..=999; storage: `ib.storage=true`,
/// GUIDs 1000..=1999. Node c1 is on compute, s1 on storage, both on both.
fn two_fabrics() -> World {
    let cfg = EngineConfig {
        fabrics: vec![spec("compute", "ib.compute", 1, 999), spec("storage", "ib.storage", 1000, 1999)],
        ..EngineConfig::default()
    };
    let mut w = World::new(cfg);
    w.node("c1", &[("ib.compute", "true")]);
    w.node("s1", &[("ib.storage", "true")]);
    w.node("both", &[("ib.compute", "true"), ("ib.storage", "true")]);
    w
}

impl World {
    fn node(&mut self, name: &str, l: &[(&str, &str)]) {
        self.state.apply(ClusterEvent::NodeApplied {
            name: name.into(),
            labels: labels(l),
            pkey_capacity: None,
            hca_capacities: Default::default(),
        });
    }

    fn nad_on(&mut self, name: &str, pkey: &str, fabric: Option<&str>) {
        let annotations: BTreeMap<String, String> =
            fabric.map(|f| (FABRIC_ANNOTATION.to_string(), f.to_string())).into_iter().collect();
        let config = format!(r#"{{"type":"ib-sriov","pkey":"{pkey}"}}"#);
        let network = parse_nad("t", name, &annotations, &config);
        self.state.apply(ClusterEvent::NetworkApplied {
            key: NetworkKey::new("t", name),
            kind: NetworkKind::Nad,
            network,
        });
    }

    fn ufm_members(&self, f: FabricId, p: &str) -> Vec<Guid> {
        self.ufm(f).and_then(|u| u.get(&pk(p))).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    fn claimed_fabric(&self, uid: &str) -> Vec<Option<String>> {
        self.claims.get(uid).map(|c| c.attachments.iter().map(|a| a.fabric.clone()).collect()).unwrap_or_default()
    }
}

#[test]
fn pods_land_in_their_nodes_fabric_and_never_the_other() {
    let mut w = two_fabrics();
    w.ib_nad("ib", "0x10");
    w.pod("a", "c1", "ib");
    w.pod("b", "s1", "ib");
    w.converge();
    let (ga, gb) = (w.guid_of("a", 0), w.guid_of("b", 0));
    assert_eq!(w.ufm_members(COMPUTE, "0x10"), vec![ga]);
    assert_eq!(w.ufm_members(STORAGE, "0x10"), vec![gb]);
    assert!(w.state.fabric(COMPUTE).range.contains(ga), "a's GUID comes from the compute pool");
    assert!(w.state.fabric(STORAGE).range.contains(gb), "b's GUID comes from the storage pool");
    assert_eq!(w.claimed_fabric("a"), vec![Some("compute".to_string())]);
    assert_eq!(w.claimed_fabric("b"), vec![Some("storage".to_string())]);
    assert_eq!(w.annotation("a")[0]["cni-args"]["mellanox.infiniband.app"], "configured");
}

#[test]
fn a_nad_naming_a_fabric_the_node_is_not_on_is_refused_and_decided_again_when_the_node_changes() {
    let mut w = two_fabrics();
    w.nad_on("ib", "0x10", Some("storage"));
    w.pod("a", "c1", "ib");
    w.converge();
    assert_eq!(w.standing("a", "ib"), Some(Reason::FabricNotOnNode));
    assert!(w.ufm_members(COMPUTE, "0x10").is_empty() && w.ufm_members(STORAGE, "0x10").is_empty());
    assert!(w.events.iter().any(|e| e.reason == Reason::FabricNotOnNode && e.object.key.name == "pod-a"));
    // The NAD's author sees it too: one Event on the NAD, naming the pod, not one per decision.
    let on_nad = |w: &World| {
        w.events
            .iter()
            .filter(|e| e.reason == Reason::FabricNotOnNode && e.object.kind == ObjectKind::NetworkAttachmentDefinition)
            .count()
    };
    assert_eq!(on_nad(&w), 1);
    assert!(
        w.events
            .iter()
            .any(|e| e.object.kind == ObjectKind::NetworkAttachmentDefinition && e.message.contains("pod-a"))
    );
    w.pod("b", "c1", "ib");
    w.converge();
    assert_eq!(on_nad(&w), 1, "a second pod of the same NAD and reason: on its own pod only");
    // A relist delivers the NAD again unchanged: no second Event on it.
    w.nad_on("ib", "0x10", Some("storage"));
    w.converge();
    assert_eq!(on_nad(&w), 1, "an unchanged NAD is not reported again");
    let status = build_patch(&w.state, &PodUid::new("a")).unwrap().status;
    assert!(status.values().any(|v| v.starts_with("refused: FabricNotOnNode")), "{status:?}");
    // Not retried hot: another round plans nothing for it.
    let p = w.step();
    assert!(p.jobs.is_empty() && p.write_claims.is_empty());
    // The operator cables the node to storage: decided again, configured there.
    w.node("c1", &[("ib.storage", "true")]);
    w.converge();
    assert_eq!(w.standing("a", "ib"), None);
    assert_eq!(w.standing("b", "ib"), None);
    let mut both = vec![w.guid_of("a", 0), w.guid_of("b", 0)];
    both.sort();
    assert_eq!(w.ufm_members(STORAGE, "0x10"), both);
    assert!(w.ufm_members(COMPUTE, "0x10").is_empty());
}

#[test]
fn unknown_none_and_ambiguous_fabrics_are_refused_with_their_reasons() {
    let mut w = two_fabrics();
    w.nad_on("named", "0x10", Some("nowhere"));
    w.ib_nad("plain", "0x20");
    w.node("bare", &[]);
    w.pod("u", "c1", "named");
    w.pod("n", "bare", "plain");
    w.pod("m", "both", "plain");
    w.converge();
    assert_eq!(w.standing("u", "named"), Some(Reason::FabricUnknown));
    assert_eq!(w.standing("n", "plain"), Some(Reason::FabricNone));
    assert_eq!(w.standing("m", "plain"), Some(Reason::FabricAmbiguous));
    let nad_event = |name: &str, reason: Reason| {
        w.events.iter().any(|e| {
            e.object.kind == ObjectKind::NetworkAttachmentDefinition && e.object.key.name == name && e.reason == reason
        })
    };
    assert!(nad_event("named", Reason::FabricUnknown) && nad_event("plain", Reason::FabricNone));
    assert!(nad_event("plain", Reason::FabricAmbiguous));
    assert_eq!(w.state.fabrics.iter().map(|f| f.pool.in_use()).sum::<u64>(), 0, "no GUID taken");
    // A pod on a node not seen yet waits (not a refusal, nothing written).
    w.pod("x", "unseen", "plain");
    w.converge();
    assert_eq!(w.standing("x", "plain"), Some(Reason::FabricWaitingForNode));
    w.node("unseen", &[("ib.compute", "true")]);
    w.converge();
    assert_eq!(w.standing("x", "plain"), None);
    assert_eq!(w.ufm_members(COMPUTE, "0x20"), vec![w.guid_of("x", 0)]);
}

#[test]
fn one_fabric_down_does_not_hold_the_other_back() {
    let mut w = two_fabrics();
    w.down.insert(STORAGE);
    w.ib_nad("ib", "0x10");
    w.pod("a", "c1", "ib");
    w.pod("b", "s1", "ib");
    w.converge();
    assert_eq!(w.annotation("a")[0]["cni-args"]["mellanox.infiniband.app"], "configured");
    assert_eq!(w.ufm_members(COMPUTE, "0x10"), vec![w.guid_of("a", 0)]);
    assert_eq!(w.standing("b", "ib"), Some(Reason::FabricUnavailable), "waits for its UFM");
    assert!(w.state.fabric(STORAGE).pool.in_use() == 0, "no storage GUID before storage is listed");
    w.down.clear();
    w.list();
    w.converge();
    assert_eq!(w.ufm_members(STORAGE, "0x10"), vec![w.guid_of("b", 0)]);
    assert_eq!(w.ufm_members(COMPUTE, "0x10"), vec![w.guid_of("a", 0)]);
}

#[test]
fn a_nad_moved_to_another_fabric_moves_its_members() {
    let mut w = two_fabrics();
    w.nad_on("ib", "0x10", Some("compute"));
    w.pod("a", "both", "ib");
    w.converge();
    let old = w.guid_of("a", 0);
    assert_eq!(w.ufm_members(COMPUTE, "0x10"), vec![old]);
    w.nad_on("ib", "0x10", Some("storage"));
    w.converge();
    let new = w.guid_of("a", 0);
    assert_ne!(old, new, "a GUID of the storage pool replaces the compute one");
    assert!(w.state.fabric(STORAGE).range.contains(new));
    assert!(w.ufm_members(COMPUTE, "0x10").is_empty(), "removed from the old UFM");
    assert_eq!(w.ufm_members(STORAGE, "0x10"), vec![new], "added to the new one");
    // The old GUID goes back to the compute pool only after compute's listing confirms it.
    assert!(w.state.fabric(COMPUTE).pool.is_quarantined(old));
    w.list();
    w.converge();
    assert!(!w.state.fabric(COMPUTE).pool.is_quarantined(old));
    assert!(!w.state.fabric(COMPUTE).pool.is_allocated(old));
    assert_eq!(w.claimed_fabric("a"), vec![Some("storage".to_string())], "the claim dropped the old GUID");
}

#[test]
fn a_removal_waits_for_its_own_fabrics_listing_before_the_guid_is_reused() {
    let mut w = two_fabrics();
    w.ib_nad("ib", "0x10");
    w.pod("a", "c1", "ib");
    w.converge();
    let g1 = w.guid_of("a", 0);
    w.delete("a");
    w.converge();
    assert!(w.state.fabric(COMPUTE).pool.is_quarantined(g1), "quarantined in its own pool");
    // Storage's listing says nothing about a compute GUID.
    let started = w.state.fabric(STORAGE).knowledge.list_started();
    let listing = w.listing_of(STORAGE);
    w.state.list_result(STORAGE, started, &listing);
    assert!(w.state.fabric(COMPUTE).pool.is_quarantined(g1));
    w.list();
    assert!(!w.state.fabric(COMPUTE).pool.is_quarantined(g1), "compute's listing confirms it");
}

#[test]
fn a_nodes_pkey_budget_is_per_fabric() {
    let mut w = two_fabrics();
    // Capacity 2 minus 1 reserved slot: one pkey per table, and "both" has one table per fabric.
    w.state.apply(ClusterEvent::NodeApplied {
        name: "both".into(),
        labels: labels(&[("ib.compute", "true"), ("ib.storage", "true")]),
        pkey_capacity: Some(2),
        hca_capacities: Default::default(),
    });
    w.nad_on("c-a", "0x10", Some("compute"));
    w.nad_on("c-b", "0x11", Some("compute"));
    w.nad_on("s-a", "0x20", Some("storage"));
    w.pod("p1", "both", "c-a");
    w.pod("p2", "both", "s-a");
    w.pod("p3", "both", "c-b");
    w.converge();
    assert_eq!(w.standing("p1", "c-a"), None, "compute's table has room");
    assert_eq!(w.standing("p2", "s-a"), None, "storage's table is another table");
    assert_eq!(w.standing("p3", "c-b"), Some(Reason::PKeyLimitExceeded), "compute's table is full");
    assert_eq!(w.ufm_members(COMPUTE, "0x10").len(), 1);
    assert_eq!(w.ufm_members(STORAGE, "0x20").len(), 1);
    assert!(w.ufm_members(COMPUTE, "0x11").is_empty());
}

#[test]
fn a_fabric_naming_its_hcas_gets_their_pkey_table_not_the_nodes_smallest() {
    let mut cfg = EngineConfig {
        fabrics: vec![spec("compute", "ib.compute", 1, 999), spec("storage", "ib.storage", 1000, 1999)],
        ..EngineConfig::default()
    };
    cfg.fabrics[0].hcas = vec!["mlx5_0".into(), "mlx5_1".into()];
    cfg.fabrics[1].hcas = vec!["mlx5_4".into()];
    let mut w = World::new(cfg);
    // The agent reports the storage HCA with a small table (2 entries: one pkey after the
    // reserved slot), the compute HCAs with 128; the node's smallest port is 2.
    let per_hca: BTreeMap<String, u16> =
        [("mlx5_0", 128), ("mlx5_1", 128), ("mlx5_4", 2)].into_iter().map(|(h, c)| (h.to_string(), c)).collect();
    w.state.apply(ClusterEvent::NodeApplied {
        name: "both".into(),
        labels: labels(&[("ib.compute", "true"), ("ib.storage", "true")]),
        pkey_capacity: Some(2),
        hca_capacities: per_hca,
    });
    for (nad, pkey, fabric) in
        [("c-a", "0x10", "compute"), ("c-b", "0x11", "compute"), ("s-a", "0x20", "storage"), ("s-b", "0x21", "storage")]
    {
        w.nad_on(nad, pkey, Some(fabric));
    }
    for (pod, nad) in [("p1", "c-a"), ("p2", "c-b"), ("p3", "s-a"), ("p4", "s-b")] {
        w.pod(pod, "both", nad);
    }
    w.converge();
    assert_eq!(w.standing("p1", "c-a"), None);
    assert_eq!(w.standing("p2", "c-b"), None, "compute's HCAs have 128 entries, not the node's smallest 2");
    assert_eq!(w.standing("p3", "s-a"), None);
    assert_eq!(w.standing("p4", "s-b"), Some(Reason::PKeyLimitExceeded), "storage's HCA holds one pkey");
    assert_eq!(w.ufm_members(COMPUTE, "0x11").len(), 1);
    assert!(w.ufm_members(STORAGE, "0x21").is_empty());
}

#[test]
fn a_new_leader_rebuilds_each_attachment_on_its_recorded_fabric_even_with_one_ufm_down() {
    let mut w = two_fabrics();
    w.ib_nad("ib", "0x10");
    w.pod("a", "c1", "ib");
    w.pod("b", "s1", "ib");
    w.converge();
    let (ga, gb) = (w.guid_of("a", 0), w.guid_of("b", 0));
    // A new leader term: everything only a leader holds is gone; storage's UFM is down.
    w.state.reset_leader_state();
    w.down.insert(STORAGE);
    let (adds, patches, claim_writes) = (w.adds, w.patches, w.claim_writes);
    w.converge();
    assert_eq!((w.adds, w.patches, w.claim_writes), (adds, patches, claim_writes), "nothing re-sent or rewritten");
    assert_eq!(w.state.fabric_of(ga), COMPUTE);
    assert_eq!(w.state.fabric_of(gb), STORAGE, "from the claim, while storage is not listed yet");
    assert!(w.state.fabric(STORAGE).pool.is_allocated(gb), "reserved in its own pool before any new GUID");
    assert_eq!(w.ufm_members(STORAGE, "0x10"), vec![gb], "storage's member untouched while it is down");
    w.down.clear();
    w.list();
    w.converge();
    assert_eq!((w.adds, w.patches), (adds, patches), "still nothing to do");
    assert_eq!(w.ufm_members(COMPUTE, "0x10"), vec![ga]);
    assert_eq!(w.ufm_members(STORAGE, "0x10"), vec![gb]);
}
