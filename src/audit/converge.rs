//! The engine's own plan, run to its end on a copy of the state with every write answered
//! "accepted": what the controller would change, step by step (claims first, then UFM, then
//! pods), without a second implementation of any decision. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::{
    Blocked, ClaimOutcome, ClusterEvent, EventRecord, FabricId, FabricListing, FabricMember, Limits, ObjectKey,
    PatchOutcome, PodUid, State, build_patch, plan,
};
use crate::ib::{Guid, PKey};

/// Why a removal is made, as the planner classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalCause {
    /// No claim explains the GUID (drift repair).
    Stale,
    /// The ledger owner is gone.
    OwnerGone,
    /// The owner lives but wants another membership.
    Moved,
}

impl RemovalCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalCause::Stale => "stale",
            RemovalCause::OwnerGone => "owner_gone",
            RemovalCause::Moved => "moved",
        }
    }
}

/// Every change the plan makes until it has nothing left to do.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub adds: BTreeSet<(PKey, Guid)>,
    pub removes: BTreeMap<(PKey, Guid), RemovalCause>,
    /// Claims created or updated, by pod.
    pub claim_writes: BTreeMap<PodUid, ObjectKey>,
    pub claim_releases: BTreeMap<PodUid, ObjectKey>,
    /// Pods whose networks annotation would be rewritten (write-backs, stripped markers), with
    /// how many elements change.
    pub pod_writes: BTreeMap<PodUid, (ObjectKey, usize)>,
    /// Pods whose status annotation alone the plan rewrites (the writer skips it when the pod
    /// holds that status already, so these are not counted as drift).
    pub status_writes: BTreeMap<PodUid, ObjectKey>,
    /// Events the engine would emit (deduplicated as the engine does).
    pub events: Vec<EventRecord>,
    /// Stale removals the mass-removal breaker refuses: (pkey, stale, members).
    pub breaker: BTreeMap<PKey, (usize, usize)>,
    /// Whether the plan ran out of work within the round limit.
    pub settled: bool,
}

impl Changes {
    /// Whether the plan would change UFM, the ledger or a pod's networks annotation.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty()
            && self.removes.is_empty()
            && self.claim_writes.is_empty()
            && self.claim_releases.is_empty()
            && self.pod_writes.is_empty()
    }
}

/// Rounds of plan → answers; each round moves every pending item one stage on, so a handful
/// suffice (claim, add, write-back, removal confirmed, claim released).
const MAX_ROUNDS: usize = 24;

/// Feeds `listings` (one per fabric, in the state's order; a fabric without one is not listed)
/// to `state` as the first UFM listings of a leader term and runs the plan to its end. `state`
/// must have seen the cluster (`CachesSynced` included).
pub fn converge(state: &mut State, listings: &[FabricListing]) -> Changes {
    let mut fabrics: Vec<FabricListing> = listings.to_vec();
    let list_all = |state: &mut State, fabrics: &[FabricListing]| {
        for (i, listing) in fabrics.iter().enumerate() {
            let Ok(i) = u16::try_from(i) else { continue };
            let f = FabricId(i);
            if f.index() < state.fabrics().len() {
                let started = state.fabric(f).knowledge.list_started();
                state.list_result(f, started, listing);
            }
        }
    };
    list_all(state, &fabrics);
    let mut out = Changes::default();
    let none_p = Default::default();
    let none_u = Default::default();
    let none_f = Default::default();
    for _ in 0..MAX_ROUNDS {
        state.assign();
        let candidates: Vec<Guid> = state.dirty_guids().collect();
        let limits = Limits {
            blocked_pkeys: &none_p,
            paused_fabrics: &none_f,
            blocked_pods: Blocked::only(&none_u),
            blocked_claims: Blocked::only(&none_u),
            writes_only: false,
            hold_adds: false,
        };
        let p = plan(state, &candidates, &limits);
        for ((_, pkey), job) in &p.jobs {
            for &g in &job.remove {
                let cause = match state.ledger().get(&g) {
                    None => RemovalCause::Stale,
                    Some(a) if a.owner.is_none() => RemovalCause::OwnerGone,
                    Some(_) => RemovalCause::Moved,
                };
                out.removes.entry((*pkey, g)).or_insert(cause);
            }
        }
        for trip in &p.breaker {
            out.breaker.insert(trip.pkey, (trip.stale, trip.members));
        }
        state.commit(&p);
        let idle = p.jobs.is_empty()
            && p.write_pods.is_empty()
            && p.release.is_empty()
            && p.quarantine.is_empty()
            && p.write_claims.is_empty()
            && p.release_claims.is_empty();
        for claim in &p.write_claims {
            out.claim_writes.insert(claim.pod_uid.clone(), claim.pod.clone());
            state.claim_result(claim, Ok(ClaimOutcome::Written));
            let deleting = !state.pods().contains_key(&claim.pod_uid);
            state.apply(ClusterEvent::ClaimApplied(crate::engine::Claim { deleting, ..claim.clone() }));
        }
        for claim in &p.release_claims {
            out.claim_releases.insert(claim.pod_uid.clone(), claim.pod.clone());
            state.claim_result(claim, Ok(ClaimOutcome::Released));
            state.apply(ClusterEvent::ClaimDeleted { pod_uid: claim.pod_uid.clone() });
        }
        for (&(jf, pkey), job) in &p.jobs {
            let Some(fabric) = fabrics.get_mut(jf.index()) else { continue };
            if !job.remove.is_empty() {
                if let Some(members) = fabric.get_mut(&pkey) {
                    members.retain(|m| !job.remove.contains(&m.guid));
                }
                state.remove_result(jf, pkey, &job.remove, Ok(()));
            }
            for (spec, guids) in &job.add {
                let members = fabric.entry(pkey).or_default();
                for &g in guids {
                    out.adds.insert((pkey, g));
                    members.retain(|m| m.guid != g);
                    members.push(FabricMember { guid: g, membership: spec.membership, index0: spec.index0 });
                }
                state.add_result(jf, spec, guids, Ok(()));
            }
        }
        for uid in &p.write_pods {
            let Some(patch) = build_patch(state, uid) else { continue };
            if !patch.writes.is_empty() {
                let entry = out.pod_writes.entry(uid.clone()).or_insert((patch.pod.clone(), 0));
                entry.1 += patch.writes.len();
                out.status_writes.remove(uid);
            } else if !patch.status.is_empty() && !out.pod_writes.contains_key(uid) {
                out.status_writes.insert(uid.clone(), patch.pod.clone());
            }
            state.patch_result(&patch, Ok(PatchOutcome::Patched));
        }
        out.events.extend(state.take_events());
        // A listing after the round confirms its removals (quarantine, claims released next).
        list_all(state, &fabrics);
        if idle {
            out.settled = true;
            break;
        }
    }
    out
}
