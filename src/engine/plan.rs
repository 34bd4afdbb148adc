//! The planner: a pure function from the engine's state to the next batch of work — ledger
//! writes first (no GUID goes to UFM or into a pod before its claim records it), one UFM add
//! per (pkey, partition attributes), one remove per pkey, pod write-backs only for GUIDs UFM has
//! accepted, forged markers stripped, and the mass-removal breaker for GUIDs no claim explains.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use tokio::time::Instant;

use super::ledger::Claim;
use super::model::PodUid;
use super::outcome::{STATUS_CONFIGURED, STATUS_PENDING};
use super::per_fabric::FabricId;
use super::ports::{AttachmentWrite, PodPatch};
use super::retry::Backoffs;
use super::state::{Desired, Effective, Standing, State};
use crate::ib::{Guid, PKey, PartitionSpec};
use crate::netdef::GuidVia;

/// One pkey's change: removals first, then adds (one request per partition attributes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PkeyJob {
    pub remove: Vec<Guid>,
    pub add: Vec<(PartitionSpec, Vec<Guid>)>,
    /// Why the removals are made, for the audit trail.
    pub why: RemovalWhy,
}

/// Counts of a job's removals by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemovalWhy {
    /// The ledger owner is gone (pod deleted or finished, attachment removed).
    pub owner_gone: usize,
    /// The owner lives but wants another membership (network moved, refused, invalid).
    pub moved: usize,
    /// No claim explains the GUID (drift repair, through the breaker).
    pub stale: usize,
}

impl PkeyJob {
    pub fn guids(&self) -> usize {
        self.remove.len() + self.add.iter().map(|(_, g)| g.len()).sum::<usize>()
    }
}

/// Stale removals refused because they would take too large a share of a pkey at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerTrip {
    pub fabric: FabricId,
    pub pkey: PKey,
    pub stale: usize,
    pub members: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// One job per (fabric, pkey): the same pkey on two fabrics is two partitions.
    pub jobs: BTreeMap<(FabricId, PKey), PkeyJob>,
    /// Pods to patch (write-backs and/or status); the patch is built when it is sent, from the
    /// state then, with [`build_patch`].
    pub write_pods: Vec<PodUid>,
    /// Retired GUIDs that never reached the fabric: free at once.
    pub release: Vec<Guid>,
    /// Retired GUIDs whose removal UFM accepted: blocked until a list confirms they are gone.
    pub quarantine: Vec<Guid>,
    /// Dirty GUIDs this plan handles (the rest stay dirty).
    pub done: Vec<Guid>,
    pub breaker: Vec<BreakerTrip>,
    /// Stale GUIDs (no owner) this plan removes, per fabric: drift repair.
    pub stale_removals: BTreeMap<FabricId, usize>,
    /// Claims to create or update (before their GUIDs go anywhere).
    pub write_claims: Vec<Claim>,
    /// Claims whose every GUID left the fabric: deleted and their finalizer dropped.
    pub release_claims: Vec<Claim>,
    /// Dirty claims this plan handles (the rest stay dirty).
    pub claims_done: Vec<PodUid>,
}

/// Items with work in flight or in back-off, looked up where they are kept (a burst holds
/// 100,000 claim writes in flight: copying them into one set per flush cost most of the CPU).
pub struct Blocked<'a, K> {
    pub busy: &'a HashSet<K>,
    pub backoff: Option<&'a Backoffs<K>>,
    pub now: Instant,
}

impl<'a, K: Hash + Eq + Clone> Blocked<'a, K> {
    /// Only what is in `busy` (no back-off).
    pub fn only(busy: &'a HashSet<K>) -> Blocked<'a, K> {
        Blocked { busy, backoff: None, now: Instant::now() }
    }

    pub fn contains(&self, key: &K) -> bool {
        self.busy.contains(key) || self.backoff.is_some_and(|b| b.blocks(key, self.now))
    }
}

/// What the planner may not touch right now.
pub struct Limits<'a> {
    /// (fabric, pkey)s with a change in flight or in back-off.
    pub blocked_pkeys: &'a HashSet<(FabricId, PKey)>,
    /// Fabrics whose UFM traffic is paused (it refused the credentials).
    pub paused_fabrics: &'a HashSet<FabricId>,
    /// Pods with a patch in flight or in back-off.
    pub blocked_pods: Blocked<'a, PodUid>,
    /// Pods with a claim write in flight or in back-off.
    pub blocked_claims: Blocked<'a, PodUid>,
    /// Only write-backs and status; fabric work waits for the batch window.
    pub writes_only: bool,
    /// Claims of this batch are still being written: adds wait for them, so that a burst
    /// makes one add per pkey (removals and writes go on).
    pub hold_adds: bool,
}

impl Limits<'_> {
    /// Whether no change may be sent to `p` on fabric `f` now: writes only, the fabric paused
    /// or not listed yet in this term, or the pkey busy or backing off.
    fn blocks(&self, state: &State, f: FabricId, p: PKey) -> bool {
        self.writes_only
            || !state.fabric(f).listed
            || self.paused_fabrics.contains(&f)
            || self.blocked_pkeys.contains(&(f, p))
    }
}

/// Plans work for `candidates` (dirty GUIDs) and the pods whose status changed.
pub fn plan(state: &State, candidates: &[Guid], limits: &Limits<'_>) -> Plan {
    let mut out = Plan::default();
    let mut stale: BTreeMap<(FabricId, PKey), Vec<Guid>> = BTreeMap::new();
    let mut adds: BTreeMap<(FabricId, PKey), BTreeMap<PartitionSpec, Vec<Guid>>> = BTreeMap::new();
    let mut write_pods: HashSet<PodUid> = HashSet::new();
    let mut sorted: Vec<Guid> = candidates.to_vec();
    sorted.sort_unstable();
    for g in sorted {
        let entry = state.ledger.get(&g);
        let desired = entry.filter(|a| a.owner.is_some()).map_or(Desired::Nothing, |a| a.desired);
        let mut keep_dirty = false;
        let mut removable_left = false;
        let recorded = if entry.is_some() { state.recorded_pkeys(g) } else { Vec::new() };
        let f = state.fabric_of(g);
        let knowledge = &state.fabric(f).knowledge;
        for m in knowledge.members(g) {
            if desired.pkey() == Some(m.pkey) || desired == Desired::LeaveAlone {
                continue;
            }
            // Ours to remove: any pkey of a GUID the ledger holds (its network may be gone, or
            // an add sent long ago may have landed late), and any pkey a network names.
            let removable = state.is_named(m.pkey) || entry.is_some();
            if !removable {
                continue;
            }
            removable_left = true;
            if limits.blocks(state, f, m.pkey) {
                keep_dirty = true;
                continue;
            }
            match entry {
                None => stale.entry((f, m.pkey)).or_default().push(g),
                Some(a) => {
                    let job = out.jobs.entry((f, m.pkey)).or_default();
                    job.remove.push(g);
                    if a.owner.is_some() {
                        job.why.moved += 1;
                    } else {
                        job.why.owner_gone += 1;
                    }
                }
            }
        }
        let Some(a) = entry else {
            if !keep_dirty {
                out.done.push(g);
            }
            continue;
        };
        // pkeys the claim records that no listing shows: a listing may lag behind an add, so
        // the removal is sent anyway (removing a non-member is no error) until UFM accepts it.
        if desired != Desired::LeaveAlone {
            for &p in &recorded {
                let listed = knowledge.members(g).iter().any(|m| m.pkey == p);
                let removing = a.removed_from.contains(&p) || a.removals.iter().any(|(q, _)| *q == p);
                if listed || desired.pkey() == Some(p) || removing {
                    continue;
                }
                removable_left = true;
                if limits.blocks(state, f, p) {
                    keep_dirty = true;
                    continue;
                }
                let job = out.jobs.entry((f, p)).or_default();
                job.remove.push(g);
                if a.owner.is_some() {
                    job.why.moved += 1;
                } else {
                    job.why.owner_gone += 1;
                }
            }
        }
        let ready = match desired {
            Desired::Member(spec) => {
                if !state.is_recorded(g, Some(spec.pkey)) {
                    // The claim is written first; the add follows its success.
                    None
                } else if knowledge.members(g).iter().any(|m| m.satisfies(&spec)) {
                    Some(Some(spec.pkey))
                } else {
                    if limits.hold_adds || limits.blocks(state, f, spec.pkey) {
                        keep_dirty = true;
                    } else {
                        adds.entry((f, spec.pkey)).or_default().entry(spec).or_default().push(g);
                    }
                    None
                }
            }
            Desired::NoPartition => state.is_recorded(g, None).then_some(None),
            Desired::Nothing | Desired::LeaveAlone => None,
        };
        if let (Some(pkey), Some(owner)) = (ready, &a.owner) {
            if a.written != Some(pkey) {
                if limits.blocked_pods.contains(&owner.pod) {
                    keep_dirty = true;
                } else {
                    write_pods.insert(owner.pod.clone());
                }
            }
        }
        if a.owner.is_none() && !removable_left && !keep_dirty {
            if a.ever_in_fabric || knowledge.is_listed(g) {
                out.quarantine.push(g);
            } else {
                out.release.push(g);
            }
        }
        if !keep_dirty {
            out.done.push(g);
        }
    }
    // Stale GUIDs (no owner) go through the breaker: a whole partition never vanishes at once
    // because of a bug, a wrong range or an empty cache.
    for ((f, p), guids) in stale {
        // The partition as it will be after this round's adds: replacements count as members.
        let adding: usize = adds.get(&(f, p)).map_or(0, |by_spec| by_spec.values().map(Vec::len).sum());
        let members = state.fabric(f).knowledge.pkey_members(p) + adding;
        let share = guids.len() as f64 / members.max(1) as f64;
        if guids.len() > state.cfg.mass_removal_min && share > state.cfg.mass_removal_share {
            out.breaker.push(BreakerTrip { fabric: f, pkey: p, stale: guids.len(), members });
        } else {
            *out.stale_removals.entry(f).or_default() += guids.len();
            let job = out.jobs.entry((f, p)).or_default();
            job.why.stale += guids.len();
            job.remove.extend(guids);
        }
    }
    for (p, by_spec) in adds {
        out.jobs.entry(p).or_default().add.extend(by_spec);
    }
    write_pods.extend(state.dirty_status.iter().filter(|u| !limits.blocked_pods.contains(*u)).cloned());
    out.write_pods = write_pods.into_iter().collect();
    out.write_pods.sort_unstable();
    plan_claims(state, limits, &mut out);
    out
}

/// Claim writes and releases for the pods whose claim may have changed.
fn plan_claims(state: &State, limits: &Limits<'_>, out: &mut Plan) {
    // Until this term rebuilt its ledger from the claims, every claim would look unexplained.
    if !state.ledger_loaded {
        return;
    }
    let mut dirty: Vec<&PodUid> = state.dirty_claims.iter().collect();
    dirty.sort_unstable();
    for uid in dirty {
        // A write in flight looks again when it is answered (`claim_result` dirties it), so it
        // is done here; one in back-off stays dirty for when its pause ends.
        if limits.blocked_claims.busy.contains(uid) {
            out.claims_done.push(uid.clone());
            continue;
        }
        if limits.blocked_claims.contains(uid) {
            continue;
        }
        out.claims_done.push(uid.clone());
        let current = state.claims.get(uid);
        match (state.desired_claim(uid), current) {
            (None, Some(c)) => out.release_claims.push(c.clone()),
            (None, None) => {}
            (Some(want), current) => {
                let alive = state.pods.contains_key(uid) && !current.is_some_and(|c| c.deleting);
                if alive && !current.is_some_and(|c| c.same_record(&want)) {
                    out.write_claims.push(want);
                }
            }
        }
    }
}

/// The patch for one pod from the current state: every attachment whose membership UFM has
/// accepted (or that needs none) and is not yet written, and the pod's whole status map.
pub fn build_patch(state: &State, uid: &PodUid) -> Option<PodPatch> {
    let pod = state.pods.get(uid)?;
    let mut writes = Vec::new();
    let mut written_now = HashMap::new();
    if let Ok(list) = &pod.attachments {
        for r in list {
            let id = pod.attachment_id(r);
            let assigned = state.by_attachment.get(&id).and_then(|g| Some((*g, state.ledger.get(g)?)));
            let ready = assigned.and_then(|(g, a)| match a.desired {
                Desired::Member(spec) => (state.is_recorded(g, Some(spec.pkey))
                    && state.knowledge_of(g).members(g).iter().any(|m| m.satisfies(&spec)))
                .then_some(Some(spec.pkey)),
                Desired::NoPartition => state.is_recorded(g, None).then_some(None),
                Desired::Nothing | Desired::LeaveAlone => None,
            });
            match (assigned, ready) {
                (Some((g, a)), Some(pkey)) if a.written != Some(pkey) => {
                    written_now.insert(g, ());
                    writes.push(AttachmentWrite {
                        network: id.network,
                        slot: id.slot,
                        guid: Some(g),
                        guid_via: a.guid_via,
                        configured: true,
                        pkey,
                    });
                }
                (Some(_), Some(_)) => {}
                // A marker the ledger does not back: stripped, the GUID restored or removed.
                (None, None)
                    if (state.forged.contains(&id) || r.configured)
                        && (r.configured || r.guid.is_some() || r.pkey.is_some()) =>
                {
                    writes.push(AttachmentWrite {
                        network: id.network,
                        slot: id.slot,
                        guid: None,
                        guid_via: GuidVia::CniArgs,
                        configured: false,
                        pkey: None,
                    });
                }
                (Some((g, a)), None) if r.configured && r.guid != Some(Ok(g)) => {
                    writes.push(AttachmentWrite {
                        network: id.network,
                        slot: id.slot,
                        guid: Some(g),
                        guid_via: a.guid_via,
                        configured: false,
                        pkey: None,
                    });
                }
                _ => {}
            }
        }
    }
    Some(PodPatch { uid: uid.clone(), pod: pod.key.clone(), status: status_of(state, uid, &written_now), writes })
}

/// The pod's `fabric-sync.io/status` map: every attachment on an ib-sriov network.
fn status_of(state: &State, uid: &PodUid, written_now: &HashMap<Guid, ()>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(pod) = state.pods.get(uid) else {
        return out;
    };
    let list = match &pod.attachments {
        Ok(list) => list,
        Err(msg) => {
            out.insert("networks".to_string(), format!("refused: InvalidAnnotation: {msg}"));
            return out;
        }
    };
    for r in list {
        let id = pod.attachment_id(r);
        let ours = state.networks.get(&id.network).is_some_and(|d| !matches!(d.effective(), Effective::NotOurs));
        let text = match (state.standing.get(&id), state.by_attachment.get(&id)) {
            (Some(Standing::Refused(r)), _) => r.status(),
            (Some(Standing::Waiting(r)), _) => format!("waiting: {}: {}", r.reason, r.message),
            (_, Some(g)) if written_now.contains_key(g) => STATUS_CONFIGURED.to_string(),
            (_, Some(g)) if state.ledger.get(g).is_some_and(|a| a.written.is_some()) => STATUS_CONFIGURED.to_string(),
            _ if !ours && state.networks.contains_key(&id.network) => continue,
            _ => STATUS_PENDING.to_string(),
        };
        out.insert(id.label(), text);
    }
    out
}
