//! Assignment: for every attachment that changed, decide (without I/O) whether it gets a GUID
//! and which membership it should hold, or why not. Never steals a GUID: a GUID the ledger
//! gives another attachment, or still listed by the fabric without an owner, is refused. What
//! an element's annotation claims is checked against the ledger, never adopted (but once, at
//! migration: ledger.rs).

use super::fabrics::Unrouted;
use super::model::{AttachmentId, AttachmentRequest, ObjectKey};
use super::outcome::{Reason, Refusal};
use super::per_fabric::FabricId;
use super::policy::PolicyMode;
use super::ports::{EventObject, EventRecord, EventType};
use super::state::{Desired, Effective, Standing, State};
use crate::ib::{Guid, PKey};
use crate::netdef::IbNetwork;

impl State {
    /// Decides every dirty attachment. Only a leader that has synced caches and listed the
    /// fabric assigns: before that, a GUID could be handed out that a pod or UFM still holds
    /// (per fabric: an attachment whose fabric was not listed yet waits for that listing).
    pub fn assign(&mut self) {
        if !self.caches_synced || !self.any_listed() {
            return;
        }
        self.load_ledger();
        if std::mem::take(&mut self.recheck_waiting) {
            let waiting: Vec<AttachmentId> = self
                .standing
                .iter()
                .filter(|(_, s)| matches!(s, Standing::Refused(r) if r.reason.waits_for_resources()))
                .map(|(id, _)| id.clone())
                .collect();
            self.dirty_attachments.extend(waiting);
        }
        // Sorted, so that who wins a contested resource is reproducible.
        let mut dirty: Vec<AttachmentId> = self.dirty_attachments.drain().collect();
        dirty.sort_unstable();
        for id in dirty {
            self.evaluate(&id);
        }
        let pods: Vec<_> = self.dirty_status.iter().cloned().collect();
        for uid in pods {
            if let Some(pod) = self.pods.get(&uid) {
                if let Err(msg) = &pod.attachments {
                    let record = pod_event(pod, Reason::InvalidAnnotation, msg);
                    self.events.push(record);
                }
            }
        }
    }

    fn evaluate(&mut self, id: &AttachmentId) {
        let Some(pod) = self.pods.get(&id.pod) else {
            self.retire(id);
            return;
        };
        let request = match &pod.attachments {
            Ok(list) => list.iter().find(|r| r.network == id.network && r.slot == id.slot).cloned(),
            Err(_) => return,
        };
        let Some(request) = request else {
            self.retire(id);
            return;
        };
        if pod.phase.is_finished() || pod.host_network {
            self.retire(id);
            self.standing.remove(id);
            return;
        }
        let existing = self.by_attachment.get(id).copied();
        let (namespace, deleting, node) = (pod.key.namespace.clone(), pod.deleting, pod.node.clone());
        let running = pod.phase == super::model::PodPhase::Running;
        let refused_forged = pod.was_refused_forged(id);
        self.check_marker(id, &request, existing);
        if existing.is_none() && (self.forged.contains(id) || refused_forged) {
            if !matches!(self.standing.get(id), Some(Standing::Refused(_))) {
                let refusal = Refusal::new(
                    Reason::ForgedAnnotation,
                    "the element claims a configured GUID the ledger does not give it; recreate the pod without the mellanox.infiniband.app marker",
                );
                self.set_standing(id, Some(Standing::Refused(refusal)));
            }
            return;
        }
        let network = match self.networks.get(&id.network).map(|d| d.effective()) {
            None | Some(Effective::Missing) => {
                self.hold(
                    id,
                    existing,
                    Standing::Waiting(Refusal::new(
                        Reason::NetworkNotFound,
                        format!("NetworkAttachmentDefinition {} does not exist (yet)", id.network),
                    )),
                    false,
                );
                return;
            }
            Some(Effective::NotOurs) => {
                self.retire(id);
                self.set_standing(id, None);
                return;
            }
            Some(Effective::Invalid(e)) => {
                // Nobody can tell which pkey the network means now: memberships stay as UFM has
                // them (a typo in a NAD must not cut running pods off), reported on the pod.
                let refusal = Refusal::new(Reason::InvalidNetwork, e.to_string());
                self.hold(id, existing, Standing::Refused(refusal), true);
                return;
            }
            Some(Effective::Waiting(r)) => {
                let r = r.clone();
                self.hold(id, existing, Standing::Waiting(r), false);
                return;
            }
            Some(Effective::Refused(r)) => {
                // A fixed pkey that was in use before the range covered it keeps its members.
                let (r, leave_alone) = (r.clone(), r.reason == Reason::PkeyReserved);
                self.hold(id, existing, Standing::Refused(r), leave_alone);
                return;
            }
            Some(Effective::Ours(n)) => n.clone(),
        };
        let Some(node) = node else {
            self.set_standing(id, Some(Standing::Quiet(Refusal::new(Reason::NotScheduled, "not scheduled yet"))));
            return;
        };
        let fabric = match self.route(&network, &node) {
            Ok(f) => f,
            Err(Unrouted::Wait) => {
                // Not a refusal: decided when the node is seen. A GUID it holds stays as it is.
                let wait = Refusal::new(Reason::FabricWaitingForNode, Unrouted::Wait.to_string());
                self.set_standing(id, Some(Standing::Quiet(wait)));
                return;
            }
            Err(unrouted) => {
                // Decided again when the pod, the NAD or the node changes (never retried hot).
                self.report_route(id, &unrouted);
                let refusal = Refusal::new(unrouted.reason(), unrouted.to_string());
                self.hold(id, existing, Standing::Refused(refusal), false);
                return;
            }
        };
        if !self.fabric(fabric).listed {
            // Its UFM has not answered a listing in this term: nothing of it is decided yet
            // (the first listing re-decides every attachment).
            let wait = Refusal::new(
                Reason::FabricUnavailable,
                format!("fabric {}'s UFM has not been listed yet", self.fabric(fabric).name),
            );
            self.set_standing(id, Some(Standing::Quiet(wait)));
            return;
        }
        let mut existing = existing;
        let mut moved = false;
        if let Some(g) = existing.filter(|g| self.ledger.get(g).is_some_and(|a| a.fabric != fabric)) {
            // The network moved to another fabric: the old GUID leaves the old UFM (and goes back
            // to its pool once that UFM confirms); a GUID of the new fabric's pool replaces it.
            tracing::info!(attachment = %id.label(), guid = %g, fabric = %self.fabric(fabric).name,
                "attachment moved to another fabric; its GUID is replaced");
            self.retire(id);
            existing = None;
            moved = true;
        }
        let mut request = request;
        let own_retired =
            |g: &Guid| self.ledger.get(g).is_some_and(|a| a.owner.is_none() && a.claimed.as_ref() == Some(id));
        if existing.is_none() && matches!(&request.guid, Some(Ok(rg)) if own_retired(rg)) {
            // The element carries the GUID we wrote for its old fabric (a move): our own output,
            // not a request for that GUID.
            request.guid = None;
        }
        if existing.is_none() && deleting {
            return;
        }
        if existing.is_none() && self.claims.get(&id.pod).is_some_and(|c| c.deleting) {
            let wait =
                Refusal::new(Reason::NetworkNotFound, "waiting for the pod's previous ledger claim to be released");
            self.set_standing(id, Some(Standing::Quiet(wait)));
            return;
        }
        if existing.is_none() && running && !moved {
            // Its VF was set up long ago without this GUID: configuring it now would put a GUID
            // in UFM that no VF carries (ib-kubernetes skips such pods too).
            let refusal = Refusal::new(
                Reason::StartedUnconfigured,
                "the pod was running before its fabric configuration; recreate the pod",
            );
            self.set_standing(id, Some(Standing::Refused(refusal)));
            return;
        }
        // An automatic pkey is fabric-sync's choice from its own range, not the tenant's.
        if let Some(p) = network.pkey().filter(|_| network.auto.is_none()) {
            if let Err(msg) = self.policy_allows(&namespace, p) {
                if self.cfg.policy_mode == PolicyMode::Enforce {
                    self.hold(id, existing, Standing::Refused(Refusal::new(Reason::PKeyNotAllowed, msg)), false);
                    return;
                }
                self.warn_policy(id, &msg);
            }
        }
        let g = match existing {
            Some(g) => g,
            None => {
                if let Some(p) = network.pkey() {
                    if let Err(r) = self.fabric(fabric).budget.admit(&node, p) {
                        self.set_standing(
                            id,
                            Some(Standing::Refused(Refusal::new(Reason::PKeyLimitExceeded, r.to_string()))),
                        );
                        return;
                    }
                }
                match self.obtain_guid(&request, fabric) {
                    Ok(g) => {
                        self.insert_assignment(g, id, node.clone(), network.guid_via, true, fabric);
                        g
                    }
                    Err(refusal) => {
                        self.set_standing(id, Some(Standing::Refused(refusal)));
                        return;
                    }
                }
            }
        };
        // What the element says now (a restart, or a tenant's edit): a write follows if it is not
        // what the ledger and the fabric say.
        let written = match (&request.guid, request.configured) {
            (Some(Ok(rg)), true) if *rg == g => Some(request.pkey.as_deref().and_then(|p| p.parse::<PKey>().ok())),
            _ => None,
        };
        if let Err(refusal) = self.set_desired(g, &network, &node, written) {
            self.set_standing(id, Some(Standing::Refused(refusal)));
            return;
        }
        // UFM's permanent refusal stands until an add succeeds (after the network changed).
        if !matches!(self.standing.get(id), Some(Standing::Refused(r)) if r.reason == Reason::FabricRejected) {
            self.set_standing(id, None);
        }
    }

    /// Keeps an existing GUID without membership (or, `leave_alone`, with whatever membership UFM
    /// holds), and records why.
    fn hold(&mut self, id: &AttachmentId, existing: Option<Guid>, standing: Standing, leave_alone: bool) {
        if let Some(g) = existing {
            if let Some(a) = self.ledger.get_mut(&g) {
                // A membership left alone still takes its slot in the node's pkey table.
                if let Some(p) = a.budget_pkey.take_if(|_| !leave_alone) {
                    self.fabrics[a.fabric.index()].budget.release(&a.node, p);
                    self.recheck_waiting = true;
                }
                let desired = if leave_alone { Desired::LeaveAlone } else { Desired::Nothing };
                if a.desired != desired {
                    a.desired = desired;
                    if let Some(c) = &a.claimed {
                        self.dirty_claims.insert(c.pod.clone());
                    }
                }
                self.dirty_guids.insert(g);
            }
        }
        self.set_standing(id, Some(standing));
    }

    fn set_desired(
        &mut self,
        g: Guid,
        network: &IbNetwork,
        node: &std::sync::Arc<str>,
        written_now: Option<Option<PKey>>,
    ) -> Result<(), Refusal> {
        let Some(a) = self.ledger.get_mut(&g) else {
            return Ok(());
        };
        let desired = match network.partition {
            Some(spec) => Desired::Member(spec),
            None => Desired::NoPartition,
        };
        let want = desired.pkey();
        if a.budget_pkey != want {
            let budget = &mut self.fabrics[a.fabric.index()].budget;
            if let Some(old) = a.budget_pkey.take() {
                budget.release(&a.node, old);
                self.recheck_waiting = true;
            }
            if let Some(p) = want {
                if let Err(r) = budget.acquire(node, p) {
                    a.desired = Desired::Nothing;
                    self.dirty_guids.insert(g);
                    return Err(Refusal::new(Reason::PKeyLimitExceeded, r.to_string()));
                }
                a.budget_pkey = Some(p);
            }
        }
        if a.node != *node {
            a.node = node.clone();
        }
        a.guid_via = network.guid_via;
        a.written = written_now;
        if a.desired != desired {
            a.desired = desired;
            // The claim records the membership before it is sent.
            if let Some(id) = &a.claimed {
                self.dirty_claims.insert(id.pod.clone());
            }
        }
        self.dirty_guids.insert(g);
        Ok(())
    }

    /// The fabric of an attachment on `network` from a pod on `node` (docs/fabrics.md).
    pub(super) fn route(&self, network: &IbNetwork, node: &str) -> Result<FabricId, Unrouted> {
        let name = super::fabrics::resolve(&self.routes, &network.fabric_hints, node, self.node_labels.get(node))?;
        self.fabric_named(name).ok_or_else(|| Unrouted::Unknown { fabric: name.to_string() })
    }

    fn obtain_guid(&mut self, request: &AttachmentRequest, fabric: FabricId) -> Result<Guid, Refusal> {
        let range = self.fabric(fabric).range;
        let on = self.on_fabric(fabric);
        match &request.guid {
            Some(Err(msg)) => Err(Refusal::new(Reason::InvalidAnnotation, msg.clone())),
            Some(Ok(g)) => {
                let g = *g;
                if let Some(a) = self.ledger.get(&g) {
                    return Err(match &a.owner {
                        Some(other) => Refusal::new(
                            Reason::GuidConflict,
                            format!(
                                "GUID {g} belongs to pod {} ({}); it is never taken from a live pod",
                                self.pods.get(&other.pod).map_or_else(|| other.pod.to_string(), |p| p.key.to_string()),
                                other.label()
                            ),
                        ),
                        None => Refusal::new(
                            Reason::GuidConflict,
                            format!(
                                "GUID {g} is being removed from the fabric; it is retried once removal is confirmed"
                            ),
                        ),
                    });
                }
                if !range.contains(g) {
                    return Err(Refusal::new(
                        Reason::GuidOutOfRange,
                        format!("GUID {g} is outside the managed range {range}{on}"),
                    ));
                }
                let pool = &mut self.fabrics[fabric.index()].pool;
                if pool.is_quarantined(g) {
                    // Listed by UFM with no ledger owner: whatever the element says, it is not
                    // this pod's (a `configured` marker is no proof of ownership).
                    return Err(Refusal::new(
                        Reason::GuidConflict,
                        format!("GUID {g} is still listed by the fabric without an owner; retried once UFM removes it"),
                    ));
                }
                pool.reserve(g).map_err(|e| Refusal::new(Reason::GuidConflict, e.to_string()))?;
                Ok(g)
            }
            None => self.fabrics[fabric.index()]
                .pool
                .allocate()
                .map_err(|e| Refusal::new(Reason::PoolExhausted, format!("{e}{on}"))),
        }
    }

    /// An element that says `configured` with a GUID the ledger does not give it is forged
    /// (or left by another controller): reported once, and rewritten by the next patch.
    fn check_marker(&mut self, id: &AttachmentId, request: &AttachmentRequest, existing: Option<Guid>) {
        let claimed = match &request.guid {
            Some(Ok(g)) => Some(*g),
            _ => None,
        };
        if !request.configured || (existing.is_some() && claimed == existing) {
            return;
        }
        let message = match (existing, claimed) {
            (Some(ours), Some(theirs)) => format!(
                "{}: the element says GUID {theirs} is configured, but the ledger gives this attachment {ours}; it is restored",
                id.label()
            ),
            (Some(ours), None) => {
                format!("{}: configured marker without a GUID; the ledger's GUID {ours} is restored", id.label())
            }
            (None, _) => format!(
                "{}: the element claims a configured GUID the ledger does not back; the marker is removed",
                id.label()
            ),
        };
        if existing.is_none() && !self.forged.insert(id.clone()) {
            // Reported already; the rewrite is pending or refused.
            self.dirty_status.insert(id.pod.clone());
            return;
        }
        tracing::info!(attachment = %id.label(), pod = %self.pod_name(&id.pod), "{message}");
        self.report_pod(id, Reason::ForgedAnnotation, &message);
        self.dirty_status.insert(id.pod.clone());
    }

    /// The API server refused our write to the pod for good: one Warning Event on it.
    pub fn report_write_refused(&mut self, uid: &super::model::PodUid, message: &str) {
        if let Some(pod) = self.pods.get(uid) {
            let record = pod_event(
                pod,
                Reason::WriteRefused,
                &format!("the API server refused fabric-sync's update of this pod: {message}"),
            );
            self.events.push(record);
        }
    }

    /// A routing refusal also goes on the network object (NAD or SpiderMultusConfig) the
    /// attachment names, where the operator who wrote it looks: once per network and reason until
    /// the network changes (its pods each get their own Event and status).
    fn report_route(&mut self, id: &AttachmentId, unrouted: &Unrouted) {
        let Some(defs) = self.networks.get(&id.network) else { return };
        let kind = if defs.nad.is_some() {
            super::ports::NetworkKind::Nad
        } else {
            super::ports::NetworkKind::SpiderMultusConfig
        };
        if !self.route_reported.insert((id.network.clone(), unrouted.reason())) {
            return;
        }
        let message = match unrouted {
            Unrouted::Unknown { .. } => unrouted.to_string(),
            _ => format!("pod {} is refused: {unrouted}", self.pod_name(&id.pod)),
        };
        self.events.push(EventRecord {
            object: EventObject {
                kind: super::ports::ObjectKind::of_network(kind),
                key: ObjectKey { namespace: id.network.namespace.to_string(), name: id.network.name.to_string() },
                uid: None,
            },
            event_type: EventType::Warning,
            reason: unrouted.reason(),
            message,
        });
    }

    /// One Warning Event on the attachment's pod.
    pub(super) fn report_pod(&mut self, id: &AttachmentId, reason: Reason, message: &str) {
        if let Some(pod) = self.pods.get(&id.pod) {
            let record = pod_event(pod, reason, message);
            self.events.push(record);
        }
    }

    fn policy_allows(&self, namespace: &str, p: PKey) -> Result<(), String> {
        let (Some(policy), mode) = (&self.cfg.policy, self.cfg.policy_mode) else {
            return Ok(());
        };
        if mode == PolicyMode::Off {
            return Ok(());
        }
        let empty = Default::default();
        policy.check(namespace, self.namespaces.get(namespace).unwrap_or(&empty), p)
    }

    fn warn_policy(&mut self, id: &AttachmentId, msg: &str) {
        if let Some(pod) = self.pods.get(&id.pod) {
            let mut record = pod_event(pod, Reason::PKeyNotAllowed, msg);
            record.message = format!("{} (policy mode warn: configured anyway)", record.message);
            self.events.push(record);
        }
    }

    /// Records an attachment's standing; a changed refusal emits one Warning Event and
    /// rewrites the pod's status annotation.
    pub fn set_standing(&mut self, id: &AttachmentId, standing: Option<Standing>) {
        if self.standing.get(id) == standing.as_ref() {
            return;
        }
        match standing {
            None => {
                // A quiet standing was never written: its end changes no status annotation.
                if matches!(self.standing.remove(id), None | Some(Standing::Quiet(_))) {
                    return;
                }
            }
            Some(s) => {
                if let (Standing::Refused(r), Some(pod)) = (&s, self.pods.get(&id.pod)) {
                    let mut record = pod_event(pod, r.reason, &r.message);
                    record.message = format!("{}: {}", id.label(), record.message);
                    self.events.push(record);
                }
                let quiet = matches!(&s, Standing::Quiet(_));
                let was_quiet = matches!(self.standing.get(id), None | Some(Standing::Quiet(_)));
                self.standing.insert(id.clone(), s);
                if quiet && was_quiet {
                    return;
                }
            }
        }
        self.dirty_status.insert(id.pod.clone());
    }
}

fn pod_event(pod: &super::model::PodView, reason: Reason, message: &str) -> EventRecord {
    EventRecord {
        object: EventObject {
            kind: super::ports::ObjectKind::Pod,
            key: ObjectKey { namespace: pod.key.namespace.clone(), name: pod.key.name.clone() },
            uid: Some(pod.uid.to_string()),
        },
        event_type: EventType::Warning,
        reason,
        message: message.to_string(),
    }
}
