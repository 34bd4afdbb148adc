//! The scenario tests' world: real `State`, `assign`, `plan` and result handling, driven step by
//! step against an in-memory fabric, in-memory pod annotations and an in-memory ledger.

use std::collections::{BTreeMap, BTreeSet};

use super::super::*;
use crate::ib::{Guid, Membership, PKey};
use crate::netdef::{NetworkKey, parse_nad};

const RANGE_START: u64 = 0x0200_0000_0000_0000;

/// A pod as the in-memory API server holds it.
#[derive(Clone, Debug)]
pub(super) struct TestPod {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) node: Option<String>,
    /// The networks annotation, as the engine's patches leave it.
    pub(super) annotation: String,
    pub(super) phase: PodPhase,
    /// The status annotation the engine's last patch wrote: attachment label → state.
    pub(super) status: BTreeMap<String, String>,
}

pub(super) struct World {
    pub(super) state: State,
    /// The "UFM" (of the first fabric): pkey → members.
    pub(super) fabric: BTreeMap<PKey, BTreeSet<Guid>>,
    /// The other fabrics' "UFMs" (multi-fabric tests).
    pub(super) other_ufms: BTreeMap<FabricId, BTreeMap<PKey, BTreeSet<Guid>>>,
    /// Fabrics whose UFM is down (besides `fabric_down` for all).
    pub(super) down: BTreeSet<FabricId>,
    /// The "API server": uid → pod.
    pub(super) pods: BTreeMap<String, TestPod>,
    /// The "API server"'s ledger: pod uid → claim (garbage-collected with the pod).
    pub(super) claims: BTreeMap<String, Claim>,
    pub(super) claim_writes: usize,
    pub(super) fabric_down: bool,
    pub(super) adds: usize,
    pub(super) removes: usize,
    pub(super) patches: usize,
    pub(super) events: Vec<EventRecord>,
}

pub(super) fn g(v: u64) -> Guid {
    Guid::new(RANGE_START + v).unwrap()
}

pub(super) fn pk(s: &str) -> PKey {
    s.parse().unwrap()
}

impl World {
    pub(super) fn new(cfg: EngineConfig) -> World {
        let mut state = State::new(cfg);
        state.apply(ClusterEvent::CachesSynced);
        World {
            state,
            fabric: BTreeMap::new(),
            other_ufms: BTreeMap::new(),
            down: BTreeSet::new(),
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

    pub(super) fn default() -> World {
        World::new(EngineConfig::default())
    }

    pub(super) fn nad(&mut self, ns: &str, name: &str, config: &str) {
        let network = parse_nad(ns, name, &BTreeMap::new(), config);
        self.state.apply(ClusterEvent::NetworkApplied {
            key: NetworkKey::new(ns, name),
            kind: NetworkKind::Nad,
            network,
        });
    }

    pub(super) fn ib_nad(&mut self, name: &str, pkey: &str) {
        self.nad("t", name, &format!(r#"{{"type":"ib-sriov","pkey":"{pkey}"}}"#));
    }

    pub(super) fn pod(&mut self, uid: &str, node: &str, annotation: &str) {
        self.pod_in("t", uid, node, annotation);
    }

    pub(super) fn pod_in(&mut self, ns: &str, uid: &str, node: &str, annotation: &str) {
        self.pods.insert(
            uid.into(),
            TestPod {
                namespace: ns.into(),
                name: format!("pod-{uid}"),
                node: Some(node.into()),
                annotation: annotation.into(),
                phase: PodPhase::Pending,
                status: BTreeMap::new(),
            },
        );
        self.echo(uid);
    }

    pub(super) fn echo(&mut self, uid: &str) {
        let Some(pod) = self.pods.get(uid).cloned() else { return };
        let meta = PodMeta {
            uid,
            namespace: &pod.namespace,
            name: &pod.name,
            node: pod.node.as_deref(),
            phase: pod.phase,
            deleting: false,
            host_network: false,
            created: 0,
        };
        let view = PodView::new(meta, Some(&pod.annotation));
        self.state.apply(ClusterEvent::PodApplied(view));
    }

    pub(super) fn delete(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.state.apply(ClusterEvent::PodDeleted { uid: PodUid::new(uid) });
        self.collect(uid);
    }

    /// Kubernetes' garbage collector: the pod's claim is marked deleted (its finalizer holds it).
    pub(super) fn collect(&mut self, uid: &str) {
        if let Some(c) = self.claims.get_mut(uid) {
            c.deleting = true;
            let c = c.clone();
            self.state.apply(ClusterEvent::ClaimApplied(c));
        }
    }

    pub(super) fn finish(&mut self, uid: &str) {
        if let Some(p) = self.pods.get_mut(uid) {
            p.phase = PodPhase::Succeeded;
        }
        self.echo(uid);
    }

    pub(super) fn ufm(&self, f: FabricId) -> Option<&BTreeMap<PKey, BTreeSet<Guid>>> {
        if f == FabricId::default() { Some(&self.fabric) } else { self.other_ufms.get(&f) }
    }

    pub(super) fn ufm_mut(&mut self, f: FabricId) -> &mut BTreeMap<PKey, BTreeSet<Guid>> {
        if f == FabricId::default() { &mut self.fabric } else { self.other_ufms.entry(f).or_default() }
    }

    pub(super) fn listing_of(&self, f: FabricId) -> FabricListing {
        self.ufm(f)
            .into_iter()
            .flatten()
            .map(|(p, gs)| {
                (*p, gs.iter().map(|&guid| FabricMember { guid, membership: Membership::Full, index0: true }).collect())
            })
            .collect()
    }

    /// Every fabric whose UFM is up answers a listing.
    pub(super) fn list(&mut self) {
        for f in self.state.fabric_ids() {
            if self.fabric_down || self.down.contains(&f) {
                continue;
            }
            let started = self.state.fabric(f).knowledge.list_started();
            let listing = self.listing_of(f);
            self.state.list_result(f, started, &listing);
        }
    }

    /// One flush: assign, plan, commit, run jobs and patches. Returns the plan.
    pub(super) fn step(&mut self) -> Plan {
        self.state.assign();
        let candidates: Vec<Guid> = self.state.dirty_guids.iter().copied().collect();
        let none_p = Default::default();
        let none_u = Default::default();
        let none_f = Default::default();
        let plan = plan(
            &self.state,
            &candidates,
            &Limits {
                blocked_pkeys: &none_p,
                paused_fabrics: &none_f,
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
        for (&(f, pkey), job) in &plan.jobs {
            let down = self.fabric_down || self.down.contains(&f);
            if !job.remove.is_empty() {
                self.removes += 1;
                if down {
                    self.state.remove_result(f, pkey, &job.remove, Err(&err));
                } else {
                    let ufm = self.ufm_mut(f);
                    let set = ufm.entry(pkey).or_default();
                    for x in &job.remove {
                        set.remove(x);
                    }
                    if set.is_empty() {
                        ufm.remove(&pkey);
                    }
                    self.state.remove_result(f, pkey, &job.remove, Ok(()));
                }
            }
            for (spec, guids) in &job.add {
                self.adds += 1;
                if down {
                    self.state.add_result(f, spec, guids, Err(&err));
                } else {
                    self.ufm_mut(f).entry(pkey).or_default().extend(guids.iter().copied());
                    self.state.add_result(f, spec, guids, Ok(()));
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

    pub(super) fn apply_patch(&mut self, patch: &PodPatch) -> PatchOutcome {
        let Some(pod) = self.pods.get_mut(patch.uid.as_str()) else { return PatchOutcome::PodGone };
        match apply_writes(&pod.namespace, &pod.annotation, &patch.writes).unwrap() {
            Ok(text) => {
                pod.annotation = text;
                pod.status = patch.status.clone();
                PatchOutcome::Patched
            }
            Err(o) => o,
        }
    }

    /// Steps until a plan does nothing (bounded).
    pub(super) fn converge(&mut self) {
        if !self.state.all_listed() {
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

    pub(super) fn annotation(&self, uid: &str) -> serde_json::Value {
        serde_json::from_str(&self.pods[uid].annotation).unwrap()
    }

    pub(super) fn guid_of(&self, uid: &str, i: usize) -> Guid {
        let v = self.annotation(uid);
        let e = &v[i];
        let s = e.get("infiniband-guid").or_else(|| e["cni-args"].get("guid")).and_then(|x| x.as_str()).unwrap();
        s.parse().unwrap()
    }

    pub(super) fn members(&self, p: &str) -> BTreeSet<Guid> {
        self.fabric.get(&pk(p)).cloned().unwrap_or_default()
    }

    pub(super) fn standing(&self, uid: &str, net: &str) -> Option<Reason> {
        let id = AttachmentId { pod: PodUid::new(uid), network: NetworkKey::new("t", net), slot: Slot::Occurrence(0) };
        self.state.standing.get(&id).map(|s| s.refusal().reason)
    }
}
