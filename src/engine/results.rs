//! How the outcome of work changes the state: a committed plan, UFM answers, patch answers and
//! fabric listings. Synchronous, so tests drive exactly what the engine task does.

use std::collections::HashSet;

use super::fabric::{FabricError, FabricListing};
use super::ledger::Claim;
use super::outcome::{Reason, Refusal};
use super::per_fabric::FabricId;
use super::plan::Plan;
use super::ports::{ClaimOutcome, EventObject, EventRecord, EventType, NetworkKind, PatchOutcome, PodPatch};
use super::state::{Standing, State};
use crate::ib::{Guid, PKey, PartitionSpec};
use crate::netdef::NetworkKey;

impl State {
    /// Books a plan as launched: GUIDs handled leave the dirty set, retired GUIDs are released
    /// or quarantined, sent adds become possible memberships.
    pub fn commit(&mut self, plan: &Plan) {
        for g in &plan.done {
            self.dirty_guids.remove(g);
        }
        for uid in &plan.write_pods {
            // The patch carries the pod's status, whenever it is built.
            self.dirty_status.remove(uid);
        }
        for uid in &plan.claims_done {
            self.dirty_claims.remove(uid);
        }
        for &g in &plan.release {
            let f = self.fabric_of(g);
            if let Err(e) = self.fabric_mut(f).pool.release(g) {
                tracing::debug!(guid = %g, error = %e, "released GUID was not allocated in the pool");
            }
            self.drop_assignment(g);
            self.recheck_waiting = true;
        }
        for &g in &plan.quarantine {
            let f = self.fabric_of(g);
            if let Err(e) = self.fabric_mut(f).pool.quarantine(g) {
                tracing::debug!(guid = %g, error = %e, "removed GUID could not be quarantined");
            }
            self.drop_assignment(g);
        }
        for (&(f, _), job) in &plan.jobs {
            for (spec, guids) in &job.add {
                for &g in guids {
                    self.fabrics[f.index()].knowledge.add_sent(g, spec);
                    if let Some(a) = self.ledger.get_mut(&g) {
                        a.ever_in_fabric = true;
                        a.removed_from.retain(|p| *p != spec.pkey);
                        a.removals.retain(|(p, _)| *p != spec.pkey);
                    }
                }
            }
        }
        for trip in &plan.breaker {
            let message = format!(
                "refused to remove {} stale GUIDs (no claim explains them) from pkey {}{} ({} members known): more than FABRIC_SYNC_MASS_REMOVAL_SHARE at once; check GUID_POOL_RANGE_* and the cluster, then raise the share to let it through",
                trip.stale,
                trip.pkey,
                self.on_fabric(trip.fabric),
                trip.members
            );
            self.report_networks_naming(trip.pkey, Reason::MassRemovalRefused, &message);
        }
    }

    /// Accepted removals that a listing started after them confirms: the GUID is not in the
    /// pkey. Where the listing still shows it, the removal is due again.
    fn confirm_removals(&mut self, fabric: FabricId, started: u64, listing: &FabricListing) {
        let guids: Vec<Guid> = self.unconfirmed_removals.iter().copied().collect();
        for g in guids {
            let Some(a) = self.ledger.get_mut(&g) else {
                self.unconfirmed_removals.remove(&g);
                continue;
            };
            if a.fabric != fabric {
                // Another UFM's listing says nothing about this GUID.
                continue;
            }
            let mut confirmed = Vec::new();
            a.removals.retain(|&(p, generation)| {
                if started < generation {
                    return true;
                }
                if !listing.get(&p).is_some_and(|m| m.iter().any(|m| m.guid == g)) {
                    confirmed.push(p);
                }
                false
            });
            for p in confirmed {
                if !a.removed_from.contains(&p) {
                    a.removed_from.push(p);
                }
            }
            if a.removals.is_empty() {
                self.unconfirmed_removals.remove(&g);
            }
            if let Some(id) = &a.claimed {
                self.dirty_claims.insert(id.pod.clone());
            }
            self.dirty_guids.insert(g);
        }
    }

    /// A GUID leaves the in-memory ledger; its claim drops it next.
    fn drop_assignment(&mut self, g: Guid) {
        if let Some(a) = self.ledger.remove(&g) {
            if let Some(id) = &a.claimed {
                self.untrack_claim(g, id);
            }
        }
    }

    /// The API server answered a claim write or release.
    pub fn claim_result(&mut self, claim: &Claim, result: Result<ClaimOutcome, ()>) {
        let uid = &claim.pod_uid;
        match result {
            Ok(ClaimOutcome::Written) => {
                let deleting = self.claims.get(uid).is_some_and(|c| c.deleting);
                self.claims.insert(uid.clone(), Claim { deleting, ..claim.clone() });
                // Its GUIDs may go to the fabric and into the pod now.
                self.dirty_guids.extend(claim.attachments.iter().map(|a| a.guid));
            }
            Ok(ClaimOutcome::Released) => {
                self.claims.remove(uid);
                self.recheck_waiting = true;
                // A pod that waited for its old claim to go may be configured now.
                if let Some(pod) = self.pods.get(uid) {
                    let ids = super::state::attachment_ids(pod);
                    self.dirty_attachments.extend(ids);
                }
            }
            Err(()) => {}
        }
        // Whatever happened, look again (a failed write is retried after its back-off).
        self.dirty_claims.insert(uid.clone());
    }

    /// UFM answered a removal.
    pub fn remove_result(&mut self, fabric: FabricId, pkey: PKey, guids: &[Guid], result: Result<(), &FabricError>) {
        for &g in guids {
            let knowledge = &mut self.fabrics[fabric.index()].knowledge;
            match result {
                Ok(()) => {
                    knowledge.remove_accepted(g, pkey);
                    let generation = knowledge.list_started();
                    if let Some(a) = self.ledger.get_mut(&g) {
                        a.removals.retain(|(p, _)| *p != pkey);
                        a.removals.push((pkey, generation));
                        self.unconfirmed_removals.insert(g);
                    }
                }
                Err(_) => knowledge.remove_failed(g, pkey),
            }
            self.dirty_guids.insert(g);
        }
    }

    /// UFM answered an add.
    pub fn add_result(
        &mut self,
        fabric: FabricId,
        spec: &PartitionSpec,
        guids: &[Guid],
        result: Result<(), &FabricError>,
    ) {
        let on = self.on_fabric(fabric);
        for &g in guids {
            let owner = self.ledger.get(&g).and_then(|a| a.owner.clone());
            match result {
                Ok(()) => {
                    self.fabrics[fabric.index()].knowledge.add_accepted(g, spec);
                    if let Some(id) = owner {
                        let cleared = matches!(self.standing.get(&id),
                            Some(Standing::Quiet(r) | Standing::Refused(r)) if matches!(r.reason, Reason::FabricUnavailable | Reason::FabricRejected));
                        if cleared {
                            self.set_standing(&id, None);
                        }
                    }
                }
                Err(e) => {
                    if let Some(id) = owner {
                        // A permanent refusal is shown (status, Event) and waits for the network
                        // to change; a passing failure is retried quietly.
                        let standing = if e.is_permanent() {
                            Standing::Refused(Refusal::new(
                                Reason::FabricRejected,
                                format!("UFM refused to add the GUID to pkey {}{on}: {}", spec.pkey, e.message),
                            ))
                        } else {
                            Standing::Quiet(Refusal::new(Reason::FabricUnavailable, e.message.clone()))
                        };
                        self.set_standing(&id, Some(standing));
                    }
                }
            }
            self.dirty_guids.insert(g);
        }
        if let Err(e) = result
            && e.is_permanent()
        {
            let message = format!(
                "UFM refused to add {} GUIDs to pkey {}{on} for good ({}): {}; fix the network's partition attributes",
                guids.len(),
                spec.pkey,
                e.reason,
                e.message
            );
            self.report_networks_naming(spec.pkey, Reason::FabricRejected, &message);
        }
    }

    /// One Warning Event on every network (NAD or SMC) that names `pkey`.
    pub(super) fn report_networks_naming(&mut self, pkey: PKey, reason: Reason, message: &str) {
        let mut named: Vec<(NetworkKey, super::ports::ObjectKind)> = Vec::new();
        for (key, defs) in &self.networks {
            for (kind, def) in [(NetworkKind::Nad, &defs.nad), (NetworkKind::SpiderMultusConfig, &defs.smc)] {
                if matches!(def, Some(Ok(Some(n))) if n.pkey() == Some(pkey)) {
                    named.push((key.clone(), super::ports::ObjectKind::of_network(kind)));
                }
            }
        }
        named.sort();
        for (key, kind) in named {
            self.events.push(EventRecord {
                object: EventObject {
                    kind,
                    key: super::model::ObjectKey { namespace: key.namespace.to_string(), name: key.name.to_string() },
                    uid: None,
                },
                event_type: EventType::Warning,
                reason,
                message: message.to_string(),
            });
        }
    }

    /// The cluster answered a patch. Returns how many attachments it configured.
    pub fn patch_result(&mut self, patch: &PodPatch, result: Result<PatchOutcome, ()>) -> usize {
        let mut configured = 0;
        match result {
            Ok(PatchOutcome::Patched) => {
                for w in patch.writes.iter().filter(|w| w.configured) {
                    let Some(g) = w.guid else { continue };
                    let Some(a) = self.ledger.get_mut(&g) else { continue };
                    let same_owner = a
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.pod == patch.uid && o.network == w.network && o.slot == w.slot);
                    if same_owner {
                        a.written = Some(w.pkey);
                        configured += 1;
                    }
                    // The membership may have changed while the patch was in flight.
                    self.dirty_guids.insert(g);
                }
            }
            Ok(PatchOutcome::PodGone) | Ok(PatchOutcome::AttachmentGone) => {}
            Err(()) => {
                self.dirty_guids.extend(patch.writes.iter().filter_map(|w| w.guid));
                if !patch.status.is_empty() {
                    self.dirty_status.insert(patch.uid.clone());
                }
            }
        }
        configured
    }

    /// A fabric listing arrived (`started` from `knowledge.list_started()` when it was sent).
    /// Nothing UFM lists may be handed out; nothing it no longer lists stays blocked.
    /// Returns how many owned GUIDs UFM had lost (they are re-added: drift repair).
    pub fn list_result(&mut self, fabric: FabricId, started: u64, listing: &FabricListing) -> usize {
        let range = self.fabric(fabric).range;
        self.confirm_removals(fabric, started, listing);
        let changed = self.fabrics[fabric.index()].knowledge.merge_list(listing, range, started);
        let knowledge = &self.fabrics[fabric.index()].knowledge;
        let lost = changed
            .iter()
            .filter(|g| {
                self.ledger.get(g).is_some_and(|a| match a.desired {
                    super::state::Desired::Member(spec) if a.owner.is_some() && a.written.is_some() => {
                        a.fabric == fabric && !knowledge.members(**g).iter().any(|m| m.satisfies(&spec))
                    }
                    _ => false,
                })
            })
            .count();
        self.dirty_guids.extend(changed);
        // Unowned GUIDs are looked at again on every listing: a removal the breaker refused
        // is reconsidered once the partition has changed.
        let unowned: Vec<Guid> = knowledge.guids().filter(|g| !self.ledger.contains_key(g)).collect();
        self.dirty_guids.extend(unowned);
        let listed: HashSet<Guid> = listing.values().flatten().map(|m| m.guid).filter(|g| range.contains(*g)).collect();
        let pool = &mut self.fabrics[fabric.index()].pool;
        for &g in &listed {
            match self.ledger.get_mut(&g) {
                Some(a) => a.ever_in_fabric = true,
                None => {
                    if !pool.is_quarantined(g) {
                        if let Err(e) = pool.quarantine(g) {
                            tracing::warn!(guid = %g, error = %e, "a GUID UFM lists could not be kept from the pool");
                        }
                        self.dirty_guids.insert(g);
                    }
                }
            }
        }
        let f = &mut self.fabrics[fabric.index()];
        let confirmed: Vec<Guid> =
            f.pool.quarantined_guids().filter(|g| !listed.contains(g) && !f.knowledge.is_listed(*g)).collect();
        for g in confirmed {
            f.pool.confirm_removed(g);
            self.recheck_waiting = true;
        }
        if !f.listed {
            f.listed = true;
            self.dirty_all();
        }
        lost
    }

    /// Quarantined GUIDs whose removal a listing has yet to confirm (not those UFM still
    /// lists: an in-range GUID someone else keeps in UFM stays quarantined for as long).
    pub fn awaiting_confirmation(&self) -> usize {
        self.fabrics.iter().map(|f| f.awaiting_confirmation()).sum()
    }
}
