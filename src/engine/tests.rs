//! Scenario tests of the decision logic: real `State`, `assign`, `plan` and result handling,
//! driven step by step against an in-memory fabric and in-memory pod annotations.

use std::collections::{BTreeMap, BTreeSet};

use super::policy::PolicyMode;
use super::*;
use crate::alloc::GuidRange;
use crate::ib::{Guid, Membership, PKey};
use crate::netdef::{NetworkKey, parse_nad};

const RANGE_START: u64 = 0x0200_0000_0000_0000;

struct World {
    state: State,
    /// The "UFM": pkey → members.
    fabric: BTreeMap<PKey, BTreeSet<Guid>>,
    /// The "API server": uid → (namespace, name, node, annotation, phase).
    pods: BTreeMap<String, (String, String, Option<String>, String, PodPhase)>,
    /// The "API server"'s ledger: pod uid → claim (garbage-collected with the pod).
    claims: BTreeMap<String, Claim>,
    claim_writes: usize,
    fabric_down: bool,
    adds: usize,
    removes: usize,
    patches: usize,
    events: Vec<EventRecord>,
}

fn g(v: u64) -> Guid {
    Guid::new(RANGE_START + v).unwrap()
}

fn pk(s: &str) -> PKey {
    s.parse().unwrap()
}

impl World {
    fn new(cfg: EngineConfig) -> World {
        let mut state = State::new(cfg);
        state.apply(ClusterEvent::CachesSynced);
        World {
            state,
            fabric: BTreeMap::new(),
            pods: BTreeMap::new(),
            claims: BTreeMap::new(),
            claim_writes: 0,
            fabric_down: false,
            adds: 0,
            removes: 0,
            patches: 0,
            events: Vec::new(),
        }
    }

    fn default() -> World {
        World::new(EngineConfig::default())
    }

    fn nad(&mut self, ns: &str, name: &str, config: &str) {
        let network = parse_nad(ns, name, &BTreeMap::new(), config);
        self.state.apply(ClusterEvent::NetworkApplied {
            key: NetworkKey::new(ns, name),
            kind: NetworkKind::Nad,
            network,
        });
    }

    fn ib_nad(&mut self, name: &str, pkey: &str) {
        self.nad("t", name, &format!(r#"{{"type":"ib-sriov","pkey":"{pkey}"}}"#));
    }

    fn pod(&mut self, uid: &str, node: &str, annotation: &str) {
        self.pod_in("t", uid, node, annotation);
    }

    fn pod_in(&mut self, ns: &str, uid: &str, node: &str, annotation: &str) {
        self.pods.insert(
            uid.into(),
            (ns.into(), format!("pod-{uid}"), Some(node.into()), annotation.into(), PodPhase::Pending),
        );
        self.echo(uid);
    }

    fn echo(&mut self, uid: &str) {
        let Some((ns, name, node, ann, phase)) = self.pods.get(uid).cloned() else { return };
        let meta = PodMeta {
            uid,
            namespace: &ns,
            name: &name,
            node: node.as_deref(),
            phase,
            deleting: false,
            host_network: false,
            created: 0,
        };
        let view = PodView::new(meta, Some(&ann));
        self.state.apply(ClusterEvent::PodApplied(view));
    }

    fn delete(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.state.apply(ClusterEvent::PodDeleted { uid: PodUid::new(uid) });
        self.collect(uid);
    }

    /// Kubernetes' garbage collector: the pod's claim is marked deleted (its finalizer holds it).
    fn collect(&mut self, uid: &str) {
        if let Some(c) = self.claims.get_mut(uid) {
            c.deleting = true;
            let c = c.clone();
            self.state.apply(ClusterEvent::ClaimApplied(c));
        }
    }

    fn finish(&mut self, uid: &str) {
        if let Some(p) = self.pods.get_mut(uid) {
            p.4 = PodPhase::Succeeded;
        }
        self.echo(uid);
    }

    fn listing(&self) -> FabricListing {
        self.fabric
            .iter()
            .map(|(p, gs)| {
                (*p, gs.iter().map(|&guid| FabricMember { guid, membership: Membership::Full, index0: true }).collect())
            })
            .collect()
    }

    fn list(&mut self) {
        let started = self.state.knowledge.list_started();
        let listing = self.listing();
        self.state.list_result(started, &listing);
    }

    /// One flush: assign, plan, commit, run jobs and patches. Returns the plan.
    fn step(&mut self) -> Plan {
        self.state.assign();
        let candidates: Vec<Guid> = self.state.dirty_guids.iter().copied().collect();
        let none_p = Default::default();
        let none_u = Default::default();
        let plan = plan(
            &self.state,
            &candidates,
            &Limits {
                blocked_pkeys: &none_p,
                blocked_pods: Blocked::only(&none_u),
                blocked_claims: Blocked::only(&none_u),
                writes_only: false,
                hold_adds: false,
            },
        );
        self.state.commit(&plan);
        for claim in &plan.write_claims {
            self.claim_writes += 1;
            let deleting = !self.pods.contains_key(claim.pod_uid.as_str());
            let stored = Claim { deleting, ..claim.clone() };
            self.claims.insert(claim.pod_uid.to_string(), stored.clone());
            self.state.claim_result(claim, Ok(ClaimOutcome::Written));
            self.state.apply(ClusterEvent::ClaimApplied(stored));
        }
        for claim in &plan.release_claims {
            self.claim_writes += 1;
            self.claims.remove(claim.pod_uid.as_str());
            self.state.claim_result(claim, Ok(ClaimOutcome::Released));
            self.state.apply(ClusterEvent::ClaimDeleted { pod_uid: claim.pod_uid.clone() });
        }
        self.events.append(&mut self.state.events);
        let err = FabricError::new(ErrorClass::Transient, FabricReason::UfmUnavailable, "UFM is down");
        for (&pkey, job) in &plan.jobs {
            if !job.remove.is_empty() {
                self.removes += 1;
                if self.fabric_down {
                    self.state.remove_result(pkey, &job.remove, Err(&err));
                } else {
                    let set = self.fabric.entry(pkey).or_default();
                    for x in &job.remove {
                        set.remove(x);
                    }
                    if set.is_empty() {
                        self.fabric.remove(&pkey);
                    }
                    self.state.remove_result(pkey, &job.remove, Ok(()));
                }
            }
            for (spec, guids) in &job.add {
                self.adds += 1;
                if self.fabric_down {
                    self.state.add_result(spec, guids, Err(&err));
                } else {
                    self.fabric.entry(pkey).or_default().extend(guids.iter().copied());
                    self.state.add_result(spec, guids, Ok(()));
                }
            }
        }
        for uid in &plan.write_pods {
            let Some(patch) = build_patch(&self.state, uid) else { continue };
            self.patches += 1;
            let outcome = self.apply_patch(&patch);
            self.state.patch_result(&patch, Ok(outcome));
            self.echo(patch.uid.as_str());
        }
        plan
    }

    fn apply_patch(&mut self, patch: &PodPatch) -> PatchOutcome {
        let Some(pod) = self.pods.get_mut(patch.uid.as_str()) else { return PatchOutcome::PodGone };
        match apply_writes(&pod.0, &pod.3, &patch.writes).unwrap() {
            Ok(text) => {
                pod.3 = text;
                PatchOutcome::Patched
            }
            Err(o) => o,
        }
    }

    /// Steps until a plan does nothing (bounded).
    fn converge(&mut self) {
        if !self.state.fabric_listed {
            self.list();
        }
        for _ in 0..20 {
            let p = self.step();
            if p.jobs.is_empty()
                && p.write_pods.is_empty()
                && p.release.is_empty()
                && p.quarantine.is_empty()
                && p.write_claims.is_empty()
                && p.release_claims.is_empty()
            {
                return;
            }
        }
        panic!("did not converge");
    }

    fn annotation(&self, uid: &str) -> serde_json::Value {
        serde_json::from_str(&self.pods[uid].3).unwrap()
    }

    fn guid_of(&self, uid: &str, i: usize) -> Guid {
        let v = self.annotation(uid);
        let e = &v[i];
        let s = e.get("infiniband-guid").or_else(|| e["cni-args"].get("guid")).and_then(|x| x.as_str()).unwrap();
        s.parse().unwrap()
    }

    fn members(&self, p: &str) -> BTreeSet<Guid> {
        self.fabric.get(&pk(p)).cloned().unwrap_or_default()
    }

    fn standing(&self, uid: &str, net: &str) -> Option<Reason> {
        let id = AttachmentId { pod: PodUid::new(uid), network: NetworkKey::new("t", net), slot: Slot::Occurrence(0) };
        self.state.standing.get(&id).map(|s| s.refusal().reason)
    }
}

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
    assert_eq!(w.state.pool.in_use(), 0);
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
    assert!(w.state.pool.is_quarantined(g1), "quarantined until a list confirms");
    assert_eq!(w.state.awaiting_confirmation(), 2, "both removals wait for a listing");
    w.list();
    assert!(!w.state.pool.is_quarantined(g1));
    assert_eq!(w.state.awaiting_confirmation(), 0);
    assert_eq!(w.state.pool.in_use(), 0);
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
    assert!(w.state.pool.is_allocated(g1) || w.state.ledger.contains_key(&g1));
    assert_ne!(w.state.by_attachment.values().find(|&&x| x != g1), None);
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
    assert_eq!(w.pods["u1"].3, "a", "not configured while UFM refuses");
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
    w.state.apply(ClusterEvent::NodeApplied { name: "n1".into(), pkey_capacity: Some(3) });
    for (i, p) in ["0x1", "0x2", "0x3"].iter().enumerate() {
        w.ib_nad(&format!("n{i}"), p);
        w.pod(&format!("u{i}"), "n1", &format!("n{i}"));
    }
    w.converge();
    assert_eq!(w.standing("u2", "n2"), Some(Reason::PKeyLimitExceeded));
    let ev = w.events.iter().find(|e| e.reason == Reason::PKeyLimitExceeded).unwrap();
    assert!(ev.message.contains("2 distinct pkeys"), "{}", ev.message);
    assert_eq!(w.state.budget.nodes_over_limit(), 0);
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
    assert!(fresh.state.pool.is_quarantined(before[3]) || fresh.state.pool.in_use() == 3);
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
    assert!(w.state.pool.is_quarantined(g(5)));
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
    let status = w.state.pods.values().next().map(|p| p.key.clone());
    assert!(status.is_some());
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
    w.state.apply(ClusterEvent::NodeApplied { name: "n1".into(), pkey_capacity: Some(2) });
    w.state.reset_leader_state(); // a new leader term
    w.ib_nad("a", "0x1");
    w.ib_nad("b", "0x2");
    w.pod("u1", "n1", "a");
    w.pod("u2", "n1", "b");
    w.converge();
    assert_eq!(w.state.budget.capacity("n1"), 2);
    assert_eq!(w.standing("u2", "b"), Some(Reason::PKeyLimitExceeded));
}
