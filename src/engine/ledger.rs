//! The ownership ledger as the engine sees it: one [`Claim`] per pod, the durable record (in the
//! API server, written only by the controller) of which GUID belongs to which attachment and
//! which pkeys it may be in. A leader rebuilds its in-memory assignments from the claims and a
//! UFM listing — never from pod annotations, except once, when the ledger is empty (migration
//! from ib-kubernetes). See docs/ledger.md.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::model::{AttachmentId, ObjectKey, PodUid, Slot};
use super::outcome::{Reason, Refusal};
use super::per_fabric::{DEFAULT_FABRIC, FabricId, range_fabric};
use super::state::{Assignment, Desired, Effective, Standing, State};
use crate::ib::{Guid, PKey};
use crate::netdef::{GuidVia, NetworkKey};

/// The finalizer on every claim: removed only after UFM confirmed its GUIDs' removal.
pub use crate::wire::keys::CLAIM_FINALIZER;

/// One attachment's record in a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedAttachment {
    pub network: NetworkKey,
    pub slot: Slot,
    pub guid: Guid,
    /// The pkey the GUID is (to be) a member of; `None`: no membership.
    pub pkey: Option<PKey>,
    /// pkeys it may still be in (the network moved): removed, then dropped from the record.
    pub former_pkeys: Vec<PKey>,
    /// The fabric whose UFM holds the GUID; `None` = `default` (claims written before
    /// issue 17, and every claim of a cluster without a fabrics file).
    pub fabric: Option<String>,
}

impl ClaimedAttachment {
    /// Every pkey this record lets the controller remove the GUID from.
    pub fn pkeys(&self) -> impl Iterator<Item = PKey> + '_ {
        self.pkey.into_iter().chain(self.former_pkeys.iter().copied())
    }
}

/// A pod's ledger object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub pod_uid: PodUid,
    pub pod: ObjectKey,
    pub node: Arc<str>,
    /// Adopted from an ib-kubernetes `configured` annotation.
    pub migrated: bool,
    /// Kubernetes is deleting it (its pod is gone): only the finalizer holds it.
    pub deleting: bool,
    pub attachments: Vec<ClaimedAttachment>,
}

impl Claim {
    pub fn find(&self, g: Guid) -> Option<&ClaimedAttachment> {
        self.attachments.iter().find(|a| a.guid == g)
    }

    /// Same content (attachments in any order), ignoring `deleting`.
    pub fn same_record(&self, other: &Claim) -> bool {
        let key = |c: &Claim| -> BTreeSet<(Guid, String, Option<PKey>, Vec<PKey>)> {
            c.attachments
                .iter()
                .map(|a| {
                    let at = format!("{}{}@{}", a.network, a.slot, a.fabric.as_deref().unwrap_or(DEFAULT_FABRIC));
                    (a.guid, at, a.pkey, a.former_pkeys.clone())
                })
                .collect()
        };
        self.node == other.node && self.migrated == other.migrated && key(self) == key(other)
    }
}

/// What the migration pass did, for the summary line and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migration {
    pub adopted: usize,
    /// Adopted on networks fabric-sync cannot read: memberships left alone.
    pub left_alone: usize,
    /// Elements whose GUID another element won.
    pub conflicts: usize,
}

impl State {
    /// The durable claim of `uid` as last seen (watch or our own write).
    pub fn claim(&self, uid: &PodUid) -> Option<&Claim> {
        self.claims.get(uid)
    }

    /// Whether the ledger lets `g` be a member of `p`: its claim records exactly that.
    pub fn is_recorded(&self, g: Guid, p: Option<PKey>) -> bool {
        let Some(a) = self.ledger.get(&g) else { return false };
        let Some(id) = &a.claimed else { return false };
        self.claims.get(&id.pod).and_then(|c| c.find(g)).is_some_and(|r| r.pkey == p && !self.claim_deleting(&id.pod))
    }

    fn claim_deleting(&self, uid: &PodUid) -> bool {
        self.claims.get(uid).is_some_and(|c| c.deleting)
    }

    /// pkeys the ledger recorded for `g` (its current one and former ones).
    pub fn recorded_pkeys(&self, g: Guid) -> Vec<PKey> {
        let Some(id) = self.ledger.get(&g).and_then(|a| a.claimed.as_ref()) else { return Vec::new() };
        self.claims.get(&id.pod).and_then(|c| c.find(g)).map(|r| r.pkeys().collect()).unwrap_or_default()
    }

    pub(super) fn claim_applied(&mut self, claim: Claim) {
        let uid = claim.pod_uid.clone();
        let newly_deleting = claim.deleting && !self.claim_deleting(&uid);
        self.claims.insert(uid.clone(), claim);
        if self.ledger_loaded && newly_deleting {
            // Kubernetes collected the claim (its pod is gone): every GUID leaves the fabric.
            let ids: Vec<AttachmentId> = self
                .claim_guids
                .get(&uid)
                .into_iter()
                .flatten()
                .filter_map(|g| self.ledger.get(g)?.owner.clone())
                .collect();
            for id in ids {
                self.standing.remove(&id);
                self.retire(&id);
            }
        }
        self.dirty_claims.insert(uid);
    }

    pub(super) fn claim_deleted(&mut self, uid: &PodUid) {
        if self.claims.remove(uid).is_some() && self.ledger_loaded {
            // Deleted behind our back (or released by us): whatever we still hold is rewritten.
            self.dirty_claims.insert(uid.clone());
            let guids: Vec<Guid> = self.claim_guids.get(uid).into_iter().flatten().copied().collect();
            self.dirty_guids.extend(guids);
        }
    }

    /// Registers `g` as recorded (or to be recorded) in the claim of `id.pod`.
    pub(super) fn track_claim(&mut self, g: Guid, id: &AttachmentId) {
        self.claim_guids.entry(id.pod.clone()).or_default().insert(g);
        self.dirty_claims.insert(id.pod.clone());
    }

    /// `g` left the ledger (released or quarantined): its claim drops it.
    pub(super) fn untrack_claim(&mut self, g: Guid, id: &AttachmentId) {
        if let Some(set) = self.claim_guids.get_mut(&id.pod) {
            set.remove(&g);
            if set.is_empty() {
                self.claim_guids.remove(&id.pod);
            }
        }
        self.dirty_claims.insert(id.pod.clone());
    }

    /// The claim the pod should have now, from the in-memory ledger; `None`: no GUID left.
    /// Live memberships are recorded with their pkey; every other GUID keeps its record as it
    /// was until the fabric confirmed its removal.
    pub fn desired_claim(&self, uid: &PodUid) -> Option<Claim> {
        let guids = self.claim_guids.get(uid)?;
        let current = self.claims.get(uid);
        let pod = self.pods.get(uid);
        let mut attachments = Vec::with_capacity(guids.len());
        let mut node: Option<Arc<str>> = None;
        for &g in guids {
            let Some(a) = self.ledger.get(&g) else { continue };
            let Some(id) = &a.claimed else { continue };
            node.get_or_insert_with(|| a.node.clone());
            let previous = current.and_then(|c| c.find(g));
            let live = a.owner.is_some();
            let wanted = match a.desired {
                Desired::Member(spec) if live => Some(Some(spec.pkey)),
                Desired::NoPartition if live => Some(None),
                _ => None,
            };
            let fabric = self.claim_fabric(a.fabric);
            let record = match (wanted, previous) {
                // Kept as UFM has it (a network fabric-sync cannot read): recorded, pkey unknown.
                (None, None) if live && a.desired == Desired::LeaveAlone => ClaimedAttachment {
                    network: id.network.clone(),
                    slot: id.slot.clone(),
                    guid: g,
                    pkey: None,
                    former_pkeys: Vec::new(),
                    fabric,
                },
                (Some(pkey), prev) => {
                    // A former pkey is dropped once UFM accepted the GUID's removal from it.
                    let mut former: Vec<PKey> = prev
                        .map(|r| r.pkeys().filter(|p| Some(*p) != pkey && !a.removed_from.contains(p)).collect())
                        .unwrap_or_default();
                    former.sort_unstable();
                    former.dedup();
                    ClaimedAttachment {
                        network: id.network.clone(),
                        slot: id.slot.clone(),
                        guid: g,
                        pkey,
                        former_pkeys: former,
                        fabric,
                    }
                }
                (None, Some(prev)) => prev.clone(),
                // Never recorded and not to be written anywhere: nothing to keep.
                (None, None) => continue,
            };
            attachments.push(record);
        }
        if attachments.is_empty() {
            return None;
        }
        attachments.sort_by_key(|a| a.guid);
        Some(Claim {
            pod_uid: uid.clone(),
            pod: pod.map(|p| p.key.clone()).or_else(|| current.map(|c| c.pod.clone()))?,
            node: current.map(|c| c.node.clone()).filter(|_| node.is_none()).or(node)?,
            migrated: current.is_some_and(|c| c.migrated) || self.migrated_pods.contains(uid),
            deleting: current.is_some_and(|c| c.deleting),
            attachments,
        })
    }

    /// How a claim names a fabric: `None` for `default` (so that claims of clusters without a
    /// fabrics file stay as they were written before issue 17).
    fn claim_fabric(&self, f: FabricId) -> Option<String> {
        let name = &*self.fabric(f).name;
        (name != DEFAULT_FABRIC).then(|| name.to_string())
    }

    /// The fabric a claim's record names: by name (absent = `default`); a name no fabric has
    /// any more falls back to the fabric whose pool holds the GUID.
    fn recorded_fabric(&self, r: &ClaimedAttachment) -> FabricId {
        let name = r.fabric.as_deref().unwrap_or(DEFAULT_FABRIC);
        self.fabric_named(name).or_else(|| range_fabric(&self.fabrics, r.guid)).unwrap_or_else(|| {
            tracing::warn!(guid = %r.guid, fabric = name, "claimed GUID on a fabric the fabrics file does not list");
            FabricId::default()
        })
    }

    /// Rebuilds the in-memory ledger from the claims once per leader term (after caches are
    /// synced and the fabric was listed), and runs the one-time migration when the ledger is
    /// empty. Every claimed GUID is reserved before any new GUID is handed out.
    pub(super) fn load_ledger(&mut self) {
        if self.ledger_loaded {
            return;
        }
        self.ledger_loaded = true;
        let mut uids: Vec<PodUid> = self.claims.keys().cloned().collect();
        uids.sort_unstable();
        let migrate = uids.is_empty() && self.cfg.adopt_annotations;
        for uid in uids {
            let Some(claim) = self.claims.get(&uid).cloned() else { continue };
            for r in &claim.attachments {
                let id = AttachmentId { pod: uid.clone(), network: r.network.clone(), slot: r.slot.clone() };
                if self.ledger.contains_key(&r.guid) {
                    tracing::warn!(guid = %r.guid, pod = %claim.pod, "GUID recorded in two claims; the first keeps it");
                    continue;
                }
                let fabric = self.recorded_fabric(r);
                // A record of a fabric the attachment is no longer on (a move was under way) is
                // only to be removed; so is a second record of the same attachment.
                let live = !claim.deleting
                    && self.requests(&id)
                    && !self.by_attachment.contains_key(&id)
                    && self.routed(&id).is_none_or(|f| f == fabric);
                self.insert_assignment(r.guid, &id, claim.node.clone(), GuidVia::CniArgs, live, fabric);
                if let Some(a) = self.ledger.get_mut(&r.guid) {
                    a.ever_in_fabric = r.pkey.is_some() || !r.former_pkeys.is_empty();
                }
            }
        }
        // A new leader reports every invalid network it knows, also those it saw as a follower.
        self.report_invalid_networks();
        if migrate {
            let m = self.migrate_annotations();
            if m != Migration::default() {
                tracing::info!(
                    adopted = m.adopted,
                    left_alone = m.left_alone,
                    conflicts = m.conflicts,
                    "migration: the ledger was empty; configured annotations adopted once into it"
                );
            }
            self.migration = Some(m);
        }
        self.dirty_all();
    }

    /// The fabric the attachment routes to now, if that can be told.
    fn routed(&self, id: &AttachmentId) -> Option<FabricId> {
        let node = self.pods.get(&id.pod)?.node.clone()?;
        match self.networks.get(&id.network)?.effective() {
            Effective::Ours(n) => self.route(n, &node).ok(),
            _ => None,
        }
    }

    /// Whether the pod (alive, not finished) still asks for this attachment.
    fn requests(&self, id: &AttachmentId) -> bool {
        self.pods.get(&id.pod).is_some_and(|p| {
            !p.phase.is_finished()
                && !p.host_network
                && matches!(&p.attachments, Ok(list) if list.iter().any(|r| r.network == id.network && r.slot == id.slot))
        })
    }

    /// Puts `g` into the in-memory ledger for `id`, reserved in the pool; `live` makes `id` its
    /// owner (else it is only to be removed).
    pub(super) fn insert_assignment(
        &mut self,
        g: Guid,
        id: &AttachmentId,
        node: Arc<str>,
        via: GuidVia,
        live: bool,
        fabric: FabricId,
    ) {
        let f = &mut self.fabrics[fabric.index()];
        let ever_in_fabric = f.knowledge.is_listed(g);
        if f.range.contains(g) {
            if f.pool.is_quarantined(g) {
                // Listed by UFM: it is ours, recorded in the ledger.
                f.pool.confirm_removed(g);
            }
            if f.pool.is_allocated(g) {
                // Allocated for this very assignment (a new GUID).
            } else if let Err(e) = f.pool.reserve(g) {
                tracing::warn!(guid = %g, error = %e, "a claimed GUID could not be reserved in the pool");
            }
        }
        self.ledger.insert(
            g,
            Assignment {
                fabric,
                owner: live.then(|| id.clone()),
                claimed: Some(id.clone()),
                node,
                desired: Desired::Nothing,
                budget_pkey: None,
                guid_via: via,
                written: None,
                ever_in_fabric,
                removed_from: Vec::new(),
                removals: Vec::new(),
            },
        );
        if live {
            self.by_attachment.insert(id.clone(), g);
        }
        self.track_claim(g, id);
        self.dirty_guids.insert(g);
    }

    /// The one-time adoption of ib-kubernetes' `configured` annotations (the ledger is empty).
    /// Deterministic: elements in (pod creation, pod UID) order; a GUID claimed twice goes to
    /// the element whose network's pkey UFM lists it in, else to the first.
    fn migrate_annotations(&mut self) -> Migration {
        struct Candidate {
            id: AttachmentId,
            guid: Guid,
            node: Arc<str>,
            fabric: FabricId,
            in_fabric: bool,
            readable: bool,
            created: i64,
        }
        let mut by_guid: HashMap<Guid, Vec<Candidate>> = HashMap::new();
        for pod in self.pods.values() {
            let (Some(node), Ok(list)) = (&pod.node, &pod.attachments) else { continue };
            if pod.phase.is_finished() || pod.host_network || pod.deleting {
                continue;
            }
            for r in list.iter().filter(|r| r.configured) {
                let Some(Ok(g)) = r.guid else { continue };
                // ib-kubernetes knew one pool: a GUID belongs to the fabric whose pool holds it.
                let Some(fabric) = range_fabric(&self.fabrics, g) else {
                    continue;
                };
                let (readable, pkey) = match self.networks.get(&r.network).map(|d| d.effective()) {
                    Some(Effective::Ours(n)) => (true, n.pkey()),
                    Some(Effective::Invalid(_)) => (false, None),
                    _ => continue,
                };
                let in_fabric = self.fabric(fabric).knowledge.members(g).iter().any(|m| Some(m.pkey) == pkey);
                by_guid.entry(g).or_default().push(Candidate {
                    id: pod.attachment_id(r),
                    guid: g,
                    node: node.clone(),
                    fabric,
                    in_fabric,
                    readable,
                    created: pod.created,
                });
            }
        }
        let mut m = Migration::default();
        let mut guids: Vec<Guid> = by_guid.keys().copied().collect();
        guids.sort_unstable();
        for g in guids {
            let Some(mut list) = by_guid.remove(&g) else { continue };
            list.sort_by(|a, b| b.in_fabric.cmp(&a.in_fabric).then(a.created.cmp(&b.created)).then(a.id.cmp(&b.id)));
            let winner = list.remove(0);
            if self.by_attachment.contains_key(&winner.id) {
                continue;
            }
            let via = self.networks.get(&winner.id.network).and_then(|d| match d.effective() {
                Effective::Ours(n) => Some(n.guid_via),
                _ => None,
            });
            self.insert_assignment(
                winner.guid,
                &winner.id,
                winner.node,
                via.unwrap_or(GuidVia::CniArgs),
                true,
                winner.fabric,
            );
            self.migrated_pods.insert(winner.id.pod.clone());
            m.adopted += 1;
            if !winner.readable {
                m.left_alone += 1;
                if let Some(a) = self.ledger.get_mut(&g) {
                    a.desired = Desired::LeaveAlone;
                }
                let message = format!(
                    "GUID {g} was configured by ib-kubernetes on a network fabric-sync cannot read; its UFM memberships are left alone until the network is fixed"
                );
                tracing::info!(guid = %g, attachment = %winner.id.label(), "migration: {message}");
                self.report_pod(&winner.id, Reason::InvalidNetwork, &message);
            }
            for loser in list {
                m.conflicts += 1;
                let message = format!(
                    "GUID {g} is claimed by more than one pod's configured annotation; it stays with {} ({}); this element's marker is removed",
                    self.pod_name(&winner.id.pod),
                    winner.id.label()
                );
                tracing::info!(guid = %g, attachment = %loser.id.label(), "migration: {message}");
                self.forged.insert(loser.id.clone());
                self.set_standing(&loser.id, Some(Standing::Refused(Refusal::new(Reason::GuidConflict, message))));
            }
        }
        m
    }

    pub(super) fn pod_name(&self, uid: &PodUid) -> String {
        self.pods.get(uid).map_or_else(|| uid.to_string(), |p| p.key.to_string())
    }
}
