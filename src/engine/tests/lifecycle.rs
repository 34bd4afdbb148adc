//! Scenario tests: a pod's way from creation to configured and out again, networks changing
//! under their pods, the pool and the node budgets.

use super::super::policy::PolicyMode;
use super::super::*;
use super::world::*;
use crate::alloc::GuidRange;
use crate::netdef::NetworkKey;

#[test]
fn pods_are_configured_after_one_add_per_pkey_and_written_only_after_acceptance() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.ib_nad("b", "0x20");
    w.list();
    for i in 0..10 {
        w.pod(&format!("u{i}"), "n1", if i % 2 == 0 { "a" } else { "b" });
    }
    let first = w.step();
    assert!(first.jobs.is_empty(), "nothing goes to UFM before the ledger records it");
    assert_eq!(first.write_claims.len(), 10, "one claim per pod");
    let second = w.step();
    assert_eq!(second.jobs.len(), 2, "one job per pkey");
    assert!(second.write_pods.is_empty(), "nothing is written before UFM accepted");
    assert_eq!(w.adds, 2);
    w.converge();
    assert_eq!(w.adds, 2, "no further adds");
    let v = w.annotation("u0");
    assert_eq!(v[0]["cni-args"]["mellanox.infiniband.app"], "configured");
    assert_eq!(v[0]["cni-args"]["pkey"], "0x10");
    assert_eq!(w.members("0x10").len(), 5);
    assert!(w.members("0x10").contains(&w.guid_of("u0", 0)));
}

#[test]
fn same_network_twice_gets_two_guids() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a,a");
    w.converge();
    let (g0, g1) = (w.guid_of("u1", 0), w.guid_of("u1", 1));
    assert_ne!(g0, g1);
    assert_eq!(w.members("0x10"), [g0, g1].into());
}

#[test]
fn user_guid_owned_by_live_pod_is_refused_never_stolen() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.converge();
    let owned = w.guid_of("u1", 0);
    w.pod("u2", "n1", &format!(r#"[{{"name":"a","cni-args":{{"guid":"{owned}"}}}}]"#));
    w.converge();
    assert_eq!(w.standing("u2", "a"), Some(Reason::GuidConflict));
    assert_eq!(w.guid_of("u1", 0), owned);
    assert_eq!(w.members("0x10"), [owned].into());
    assert!(w.events.iter().any(|e| e.reason == Reason::GuidConflict && e.object.key.name == "pod-u2"));
}

#[test]
fn free_user_guid_in_range_is_honoured_and_out_of_range_is_refused() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", r#"[{"name":"a","infiniband-guid":"02:00:00:00:00:00:0a:0b"}]"#);
    w.pod("u2", "n1", r#"[{"name":"a","cni-args":{"guid":"04:00:00:00:00:00:00:01"}}]"#);
    w.converge();
    assert_eq!(w.guid_of("u1", 0), "02:00:00:00:00:00:0a:0b".parse().unwrap());
    assert_eq!(w.standing("u2", "a"), Some(Reason::GuidOutOfRange));
}

#[test]
fn pod_deleted_before_its_add_ends_clean_without_a_fabric_call() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.list();
    w.pod("u1", "n1", "a");
    w.state.assign();
    w.delete("u1");
    w.converge();
    assert_eq!((w.adds, w.removes), (0, 0));
    assert!(w.state.ledger.is_empty());
    assert_eq!(w.state.fabrics[0].pool.in_use(), 0);
}

#[test]
fn finished_and_deleted_pods_leave_the_fabric_and_guids_wait_for_confirmation() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.pod("u2", "n1", "a");
    w.converge();
    let g1 = w.guid_of("u1", 0);
    w.finish("u1");
    w.delete("u2");
    w.converge();
    assert!(w.members("0x10").is_empty());
    assert!(w.state.fabrics[0].pool.is_quarantined(g1), "quarantined until a list confirms");
    assert_eq!(w.state.awaiting_confirmation(), 2, "both removals wait for a listing");
    w.list();
    assert!(!w.state.fabrics[0].pool.is_quarantined(g1));
    assert_eq!(w.state.awaiting_confirmation(), 0);
    assert_eq!(w.state.fabrics[0].pool.in_use(), 0);
}

#[test]
fn ufm_down_during_removes_keeps_guids_out_of_reach_until_confirmed() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.converge();
    let g1 = w.guid_of("u1", 0);
    w.fabric_down = true;
    w.delete("u1");
    w.step();
    assert!(w.members("0x10").contains(&g1));
    // A new pod must not get g1 while UFM may still hold it.
    w.pod("u2", "n1", "a");
    w.step();
    assert!(
        w.state.fabrics[0].pool.is_allocated(g1) && w.state.ledger.contains_key(&g1),
        "g1 is held until UFM confirms"
    );
    let u2: Vec<_> =
        w.state.by_attachment.iter().filter(|(id, _)| id.pod == PodUid::new("u2")).map(|(_, g)| *g).collect();
    assert_eq!(u2.len(), 1, "u2 got a GUID");
    assert_ne!(u2[0], g1, "and not the one UFM may still hold");
    w.fabric_down = false;
    w.converge();
    w.list();
    assert!(!w.members("0x10").contains(&g1));
    assert_ne!(w.guid_of("u2", 0), g1);
}

#[test]
fn ufm_down_during_adds_then_back_configures_everything() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.list();
    w.fabric_down = true;
    w.pod("u1", "n1", "a");
    w.step();
    w.step();
    assert_eq!(w.standing("u1", "a"), Some(Reason::FabricUnavailable));
    assert_eq!(w.pods["u1"].annotation, "a", "not configured while UFM refuses");
    w.fabric_down = false;
    w.converge();
    assert_eq!(w.annotation("u1")[0]["cni-args"]["mellanox.infiniband.app"], "configured");
    assert_eq!(w.standing("u1", "a"), None);
}

#[test]
fn nad_created_after_its_pods_configures_them() {
    let mut w = World::default();
    w.pod("u1", "n1", "late");
    w.converge();
    assert_eq!(w.standing("u1", "late"), Some(Reason::NetworkNotFound));
    w.ib_nad("late", "0x30");
    w.converge();
    assert_eq!(w.annotation("u1")[0]["cni-args"]["pkey"], "0x30");
}

#[test]
fn nad_pkey_change_moves_members_and_updates_annotations() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.converge();
    let g1 = w.guid_of("u1", 0);
    w.ib_nad("a", "0x11");
    w.converge();
    assert!(w.members("0x10").is_empty());
    assert_eq!(w.members("0x11"), [g1].into());
    assert_eq!(w.guid_of("u1", 0), g1, "the GUID stays");
    assert_eq!(w.annotation("u1")[0]["cni-args"]["pkey"], "0x11");
}

#[test]
fn nad_deleted_removes_its_members() {
    let mut w = World::default();
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.converge();
    w.state.apply(ClusterEvent::NetworkDeleted { key: NetworkKey::new("t", "a"), kind: NetworkKind::Nad });
    w.converge();
    assert!(w.members("0x10").is_empty());
    assert_eq!(w.standing("u1", "a"), Some(Reason::NetworkNotFound));
}

#[test]
fn pool_exhaustion_refuses_without_guid_zero_then_recovers() {
    let cfg = EngineConfig { guid_range: GuidRange::new(g(0), g(1)).unwrap(), ..EngineConfig::default() };
    let mut w = World::new(cfg);
    w.ib_nad("a", "0x10");
    w.pod("u1", "n1", "a");
    w.pod("u2", "n1", "a");
    w.pod("u3", "n1", "a");
    w.converge();
    assert_eq!(w.standing("u3", "a"), Some(Reason::PoolExhausted));
    assert_eq!(w.state.by_attachment.len(), 2);
    assert!(w.state.by_attachment.values().all(|x| x.value() != 0));
    w.delete("u1");
    w.converge();
    w.list(); // confirms the removal: the GUID is free again
    w.converge();
    assert_eq!(w.standing("u3", "a"), None);
    assert_eq!(w.annotation("u3")[0]["cni-args"]["mellanox.infiniband.app"], "configured");
}

#[test]
fn node_pkey_budget_is_enforced_with_the_numbers() {
    let mut w = World::default();
    w.state.apply(ClusterEvent::NodeApplied {
        name: "n1".into(),
        labels: Default::default(),
        pkey_capacity: Some(3),
        hca_capacities: Default::default(),
    });
    for (i, p) in ["0x1", "0x2", "0x3"].iter().enumerate() {
        w.ib_nad(&format!("n{i}"), p);
        w.pod(&format!("u{i}"), "n1", &format!("n{i}"));
    }
    w.converge();
    assert_eq!(w.standing("u2", "n2"), Some(Reason::PKeyLimitExceeded));
    let ev = w.events.iter().find(|e| e.reason == Reason::PKeyLimitExceeded).unwrap();
    assert!(ev.message.contains("2 distinct pkeys"), "{}", ev.message);
    assert_eq!(w.state.fabrics[0].budget.nodes_over_limit(), 0);
    // A pod on a pkey the node already holds still fits.
    w.pod("u9", "n1", "n0");
    w.converge();
    assert_eq!(w.standing("u9", "n0"), None);
}

#[test]
fn policy_enforce_refuses_other_tenants_pkeys_whatever_the_annotation_says() {
    let policy = Policy::parse("p", "rules:\n  - namespaces: [t]\n    pkeys: ['0x10']\n").unwrap();
    let cfg = EngineConfig { policy: Some(policy), policy_mode: PolicyMode::Enforce, ..EngineConfig::default() };
    let mut w = World::new(cfg);
    w.ib_nad("mine", "0x10");
    w.ib_nad("theirs", "0x20");
    // Crafted: claims configured with pkey 0x10 on the foreign network.
    w.pod("u1", "n1", r#"[{"name":"theirs","cni-args":{"mellanox.infiniband.app":"configured","pkey":"0x10"}}]"#);
    w.pod("u2", "n1", "mine");
    w.pod("u3", "n1", "theirs");
    w.converge();
    assert_eq!(w.standing("u1", "theirs"), Some(Reason::ForgedAnnotation));
    assert!(w.annotation("u1")[0]["cni-args"].get("mellanox.infiniband.app").is_none(), "forged marker stripped");
    assert_eq!(w.standing("u3", "theirs"), Some(Reason::PKeyNotAllowed));
    assert!(w.members("0x20").is_empty());
    assert_eq!(w.members("0x10").len(), 1);
}
