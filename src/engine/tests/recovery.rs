//! Scenario tests: restarts and leadership, drift repair and its breaker, and the attacks
//! (forged annotations, cross-namespace NADs, crafted GUIDs, the tenant policy).

use std::collections::BTreeSet;

use super::super::policy::PolicyMode;
use super::super::*;
use super::world::*;
use crate::ib::Guid;
use crate::netdef::NetworkKey;

#[test]
fn restart_rebuilds_from_annotations_without_reallocating_and_cleans_up_deletions() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    for i in 0..4 {
        w.pod(&format!("u{i}"), "n1", "a");
    }
    w.converge();
    let before: Vec<Guid> = (0..4).map(|i| w.guid_of(&format!("u{i}"), 0)).collect();
    // The controller goes away; u3 is deleted meanwhile; a new controller starts.
    w.pods.remove("u3");
    let mut fresh = World::default();
    fresh.fabric = w.fabric.clone();
    fresh.pods = w.pods.clone();
    fresh.ib_nad("a", "0x10");
    for uid in ["u0", "u1", "u2"] {
        fresh.echo(uid);
    }
    fresh.converge();
    assert_eq!(fresh.adds, 0, "nothing re-added");
    assert_eq!(fresh.patches, 0, "nothing re-written");
    assert_eq!(fresh.members("0x10"), before[..3].iter().copied().collect());
    // u3's GUID, found in UFM with no pod, was removed and waits out its quarantine: not free,
    // not anyone's.
    assert!(fresh.state.fabrics[0].pool.is_quarantined(before[3]));
    assert!(!fresh.state.fabrics[0].pool.is_allocated(before[3]) && !fresh.state.ledger.contains_key(&before[3]));
    assert_eq!((0..3).map(|i| fresh.guid_of(&format!("u{i}"), 0)).collect::<Vec<_>>(), before[..3]);
}

#[test]
fn duplicate_guids_found_at_start_are_reported_not_fatal() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    let ann = r#"[{"name":"a","cni-args":{"guid":"02:00:00:00:00:00:00:07","mellanox.infiniband.app":"configured","pkey":"0x10"}}]"#;
    w.pod("u1", "n1", ann);
    w.pod("u2", "n1", ann);
    w.converge();
    let conflicts =
        [w.standing("u1", "a"), w.standing("u2", "a")].iter().filter(|s| **s == Some(Reason::GuidConflict)).count();
    assert_eq!(conflicts, 1);
    assert_eq!(w.members("0x10").len(), 1);
}

#[test]
fn foreign_guids_and_unnamed_pkeys_are_never_touched() {
    let mut w = World::default();
    let outside = Guid::new(0x0300_0000_0000_0001).unwrap();
    w.fabric.entry(pk("0x10")).or_default().insert(outside);
    w.fabric.entry(pk("0x99")).or_default().insert(g(5)); // in range, pkey no network names
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.converge();
    assert!(w.members("0x10").contains(&outside));
    assert!(w.members("0x99").contains(&g(5)));
    assert_ne!(w.guid_of("u1", 0), g(5), "a GUID UFM lists is never handed out");
    assert!(w.state.fabrics[0].pool.is_quarantined(g(5)));
    // Kept from the pool, but nothing of ours waits on it: no fast relisting for it.
    assert_eq!(w.state.awaiting_confirmation(), 0);
}

#[test]
fn stale_guids_are_repaired_but_a_mass_removal_is_refused() {
    let cfg = EngineConfig { mass_removal_min: 2, mass_removal_share: 0.5, ..EngineConfig::default() };
    let mut w = World::new(cfg);
    w.ib_nad("a", "0x10");
    w.ib_nad("b", "0x20");
    // pkey 0x10: 1 stale of 4 known; pkey 0x20: 5 stale of 5.
    for i in 1..=1 {
        w.fabric.entry(pk("0x10")).or_default().insert(g(100 + i));
    }
    for i in 1..=5 {
        w.fabric.entry(pk("0x20")).or_default().insert(g(200 + i));
    }
    for i in 0..3 {
        w.pod(&format!("u{i}"), "n1", "a");
    }
    w.converge();
    assert!(!w.members("0x10").contains(&g(101)), "small drift is repaired");
    assert_eq!(w.members("0x20").len(), 5, "the breaker keeps the partition");
    assert!(w.events.iter().any(|e| e.reason == Reason::MassRemovalRefused && e.object.key.name == "b"));
}

#[test]
fn missing_membership_is_re_added_by_drift_repair() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.converge();
    let g1 = w.guid_of("u1", 0);
    w.fabric.clear(); // UFM lost it (e.g. a node reboot)
    w.list();
    w.converge();
    assert_eq!(w.members("0x10"), [g1].into());
}

#[test]
fn invalid_network_is_refused_with_an_event_on_the_nad() {
    let mut w = World::default();
    w.nad("t", "bad", r#"{"type":"ib-sriov","pkey":"1000"}"#);
    w.pod("u1", "n1", "bad");
    w.converge();
    assert_eq!(w.standing("u1", "bad"), Some(Reason::InvalidNetwork));
    assert!(
        w.events
            .iter()
            .any(|e| e.object.kind == ObjectKind::NetworkAttachmentDefinition && e.reason == Reason::InvalidNetwork)
    );
    // The pod is told why, and gets no GUID for a network it cannot use.
    let status = w.pods["u1"].status.get("t/bad").cloned().unwrap_or_default();
    assert!(status.starts_with("refused: InvalidNetwork"), "{status:?}");
    assert!(!w.pods["u1"].annotation.contains("guid"), "{}", w.pods["u1"].annotation);
}

#[test]
fn non_ib_networks_and_host_network_pods_are_ignored() {
    let mut w = World::default();
    w.nad("t", "mv", r#"{"type":"macvlan"}"#);
    w.pod("u1", "n1", "mv");
    w.converge();
    assert!(w.state.ledger.is_empty() && w.state.standing.is_empty());
    assert_eq!(w.patches, 0);
}

#[test]
fn a_burst_of_many_pods_on_16_pkeys_takes_16_adds() {
    let mut w = World::default();
    for p in 0..16 {
        w.ib_nad(&format!("n{p}"), &format!("0x{:x}", 0x100 + p));
    }
    w.list();
    for i in 0..2000 {
        w.pod(&format!("u{i}"), &format!("node{}", i % 250), &format!("n{}", i % 16));
    }
    w.converge();
    assert!(w.adds <= 16, "{} adds", w.adds);
    assert_eq!(w.fabric.values().map(BTreeSet::len).sum::<usize>(), 2000);
}

#[test]
fn a_refused_mass_removal_is_reconsidered_once_replacements_join() {
    let cfg = EngineConfig { mass_removal_min: 2, mass_removal_share: 0.5, ..EngineConfig::default() };
    let mut w = World::new(cfg);
    w.ib_nad("b", "0x20");
    for i in 1..=4 {
        w.fabric.entry(pk("0x20")).or_default().insert(g(200 + i)); // orphans of a crashed controller
    }
    w.converge();
    assert_eq!(w.members("0x20").len(), 4, "4 of 4 stale: refused");
    for i in 0..6 {
        w.pod(&format!("u{i}"), "n1", "b");
    }
    w.converge();
    w.list();
    w.converge();
    assert_eq!(w.members("0x20").len(), 6, "4 stale of 10 after the adds: removed");
    assert!((1..=4).all(|i| !w.members("0x20").contains(&g(200 + i))));
}

#[test]
fn security_a_nad_in_one_namespace_cannot_move_another_namespaces_pods() {
    let mut w = World::default();
    w.nad("team-a", "ib", r#"{"type":"ib-sriov","pkey":"0x10"}"#);
    w.nad("team-b", "ib", r#"{"type":"ib-sriov","pkey":"0x20"}"#);
    w.pod_in("team-a", "a1", "n1", "ib");
    w.converge();
    let ga = w.guid_of("a1", 0);
    // Team B repoints its own network called "ib"; team A's pod references team-a/ib.
    w.nad("team-b", "ib", r#"{"type":"ib-sriov","pkey":"0x30"}"#);
    w.state.apply(ClusterEvent::NetworkDeleted { key: NetworkKey::new("team-b", "ib"), kind: NetworkKind::Nad });
    w.converge();
    assert_eq!(w.members("0x10"), [ga].into());
    assert!(w.members("0x30").is_empty() && w.members("0x20").is_empty());
    assert_eq!(w.annotation("a1")[0]["cni-args"]["pkey"], "0x10");
}

#[test]
fn security_crafted_infiniband_guid_cannot_join_a_guid_listed_in_another_partition() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    // A GUID inside the managed range that UFM lists in another tenant's partition, owned by
    // no pod we know (e.g. a pod deleted while we were down): it is not handed to a new pod.
    w.fabric.entry(pk("0x20")).or_default().insert(g(9));
    w.ib_nad("other", "0x20");
    w.pod("u1", "n1", &format!(r#"[{{"name":"a","infiniband-guid":"{}"}}]"#, g(9)));
    w.step();
    w.list();
    w.step();
    assert_eq!(w.standing("u1", "a"), Some(Reason::GuidConflict));
    assert!(!w.members("0x10").contains(&g(9)));
}

#[test]
fn security_policy_warn_mode_configures_but_reports() {
    let policy = Policy::parse("p", "rules:\n  - namespaces: [t]\n    pkeys: ['0x10']\n").unwrap();
    let cfg = EngineConfig { policy: Some(policy), policy_mode: PolicyMode::Warn, ..EngineConfig::default() };
    let mut w = World::new(cfg);
    w.ib_nad("theirs", "0x20");
    w.pod("u1", "n1", "theirs");
    w.converge();
    assert_eq!(w.members("0x20").len(), 1);
    assert!(w.events.iter().any(|e| e.reason == Reason::PKeyNotAllowed && e.message.contains("policy mode warn")));
}

#[test]
fn node_capacity_learned_as_a_follower_survives_becoming_leader() {
    let mut w = World::default();
    w.state.apply(ClusterEvent::NodeApplied {
        name: "n1".into(),
        labels: Default::default(),
        pkey_capacity: Some(2),
        hca_capacities: Default::default(),
    });
    w.state.reset_leader_state(); // a new leader term
    w.ib_nad("a", "0x1");
    w.ib_nad("b", "0x2");
    w.pod("u1", "n1", "a");
    w.pod("u2", "n1", "b");
    w.converge();
    assert_eq!(w.state.fabrics[0].budget.capacity("n1"), 2);
    assert_eq!(w.standing("u2", "b"), Some(Reason::PKeyLimitExceeded));
}
