//! The engine's state, owned by one task: network definitions, pods, the ownership ledger,
//! fabric knowledge, the GUID pool and the pkey budget. Cluster events change it here;
//! `assign` (in assign.rs) and `plan` (in plan.rs) decide what to do with it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::knowledge::Knowledge;
use super::ledger::{Claim, Migration};
use super::model::{AttachmentId, PodUid, PodView};
use super::partitions::{PartitionClaim, resolve};
use super::per_fabric::{FabricId, FabricSpec, FabricState, range_fabric};
use super::policy::{Policy, PolicyMode};
use super::ports::{ClusterEvent, EventObject, EventRecord, EventType, NetworkKind};
use crate::alloc::GuidRange;
use crate::ib::{Guid, PKey};
use crate::netdef::{IbNetwork, NetdefError, NetworkKey};

/// Settings the decision logic needs (no I/O, no timing).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The pool of the `default` fabric, when `fabrics` is empty.
    pub guid_range: GuidRange,
    /// The fabrics (issue 17); empty: one fabric named `default` with `guid_range`, every node.
    pub fabrics: Vec<FabricSpec>,
    pub pkey_capacity: u16,
    pub pkey_reserved_slots: u16,
    pub mass_removal_share: f64,
    pub mass_removal_min: usize,
    pub batch_max_guids: usize,
    pub policy: Option<Policy>,
    pub policy_mode: PolicyMode,
    /// Adopt ib-kubernetes' `configured` annotations when the ledger is empty (migration).
    pub adopt_annotations: bool,
    /// Most IB attachments one pod may ask for.
    pub max_attachments_per_pod: usize,
    /// The managed pkey range for automatic partitions (`None`: the feature is off).
    pub pkey_range: Option<crate::alloc::PkeyRange>,
}

impl EngineConfig {
    /// The fabrics in force: the configured ones, or the one `default` fabric.
    pub fn fabric_specs(&self) -> Vec<FabricSpec> {
        if self.fabrics.is_empty() { vec![FabricSpec::default_fabric(self.guid_range)] } else { self.fabrics.clone() }
    }
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            guid_range: GuidRange::DEFAULT,
            fabrics: Vec::new(),
            pkey_capacity: crate::alloc::DEFAULT_PKEY_CAPACITY,
            pkey_reserved_slots: crate::alloc::DEFAULT_RESERVED_SLOTS,
            mass_removal_share: 0.5,
            mass_removal_min: 32,
            batch_max_guids: 2000,
            policy: None,
            policy_mode: PolicyMode::Off,
            adopt_annotations: true,
            max_attachments_per_pod: 32,
            pkey_range: None,
        }
    }
}

pub use super::records::{Assignment, Desired, Effective, NetworkDefs, Standing};

pub struct State {
    pub(super) cfg: EngineConfig,
    pub(super) networks: HashMap<NetworkKey, NetworkDefs>,
    /// Valid networks naming each pkey.
    pub(super) named_pkeys: HashMap<PKey, u32>,
    pub(super) pods: HashMap<PodUid, PodView>,
    pub(super) namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Node labels as last seen (which fabrics reach a node).
    pub(super) node_labels: HashMap<String, BTreeMap<String, String>>,
    /// The durable ledger as last seen (watched, and updated by our own writes).
    pub(super) claims: HashMap<PodUid, Claim>,
    /// GUIDs each pod's claim records or is to record (in-memory ledger by pod).
    pub(super) claim_guids: HashMap<PodUid, BTreeSet<Guid>>,
    /// Pods whose claim may need a write or a release.
    pub(super) dirty_claims: HashSet<PodUid>,
    /// The in-memory ledger was rebuilt from the claims in this leader term.
    pub(super) ledger_loaded: bool,
    /// Pods adopted by the migration pass (their claims say `migrated`).
    pub(super) migrated_pods: HashSet<PodUid>,
    /// What the migration pass did, if it ran in this term.
    pub(super) migration: Option<Migration>,
    /// Attachments whose element claims a `configured` marker the ledger does not back.
    pub(super) forged: HashSet<AttachmentId>,
    pub(super) ledger: HashMap<Guid, Assignment>,
    /// GUIDs with accepted removals a listing has not confirmed yet.
    pub(super) unconfirmed_removals: HashSet<Guid>,
    pub(super) by_attachment: HashMap<AttachmentId, Guid>,
    pub(super) standing: HashMap<AttachmentId, Standing>,
    /// Per fabric: pool, UFM knowledge, pkey budgets (index = `FabricId`).
    pub(super) fabrics: Vec<FabricState>,
    /// The fabrics' routing rules, in the same order.
    pub(super) routes: Vec<super::fabrics::FabricRoute>,
    pub(super) dirty_attachments: HashSet<AttachmentId>,
    pub(super) dirty_guids: HashSet<Guid>,
    /// Pods whose status annotation should be rewritten.
    pub(super) dirty_status: HashSet<PodUid>,
    /// Something freed a resource: re-evaluate attachments waiting for one.
    pub(super) recheck_waiting: bool,
    pub(super) caches_synced: bool,
    /// Events to emit, de-duplicated by the caller's standing changes.
    pub(super) events: Vec<EventRecord>,
    /// Last Event reason emitted per network object, so network problems are reported once.
    network_reported: HashMap<(NetworkKey, NetworkKind), String>,
    /// The partition ledger (`PartitionClaim`s) by object name.
    pub(super) partition_claims: HashMap<String, PartitionClaim>,
    /// Automatic networks the adapter could not give a pkey (range exhausted), with why.
    pub(super) partition_refusals: HashMap<NetworkKey, String>,
    /// Last automatic-partition refusal reported on each network object (reported once).
    pub(super) auto_reported: HashMap<NetworkKey, String>,
    /// Routing refusals (issue 17) reported on a network object: once per network and reason
    /// until the network changes.
    pub(super) route_reported: HashSet<(NetworkKey, super::outcome::Reason)>,
}

impl State {
    pub fn new(cfg: EngineConfig) -> State {
        let specs = cfg.fabric_specs();
        let fabrics = specs.iter().map(|s| FabricState::new(s, cfg.pkey_capacity, cfg.pkey_reserved_slots)).collect();
        let routes = specs.into_iter().map(|s| s.route).collect();
        State {
            cfg,
            networks: HashMap::new(),
            named_pkeys: HashMap::new(),
            pods: HashMap::new(),
            namespaces: HashMap::new(),
            node_labels: HashMap::new(),
            claims: HashMap::new(),
            claim_guids: HashMap::new(),
            dirty_claims: HashSet::new(),
            ledger_loaded: false,
            migrated_pods: HashSet::new(),
            migration: None,
            forged: HashSet::new(),
            ledger: HashMap::new(),
            unconfirmed_removals: HashSet::new(),
            by_attachment: HashMap::new(),
            standing: HashMap::new(),
            fabrics,
            routes,
            dirty_attachments: HashSet::new(),
            dirty_guids: HashSet::new(),
            dirty_status: HashSet::new(),
            recheck_waiting: false,
            caches_synced: false,
            events: Vec::new(),
            network_reported: HashMap::new(),
            partition_claims: HashMap::new(),
            partition_refusals: HashMap::new(),
            auto_reported: HashMap::new(),
            route_reported: HashSet::new(),
        }
    }

    /// Drops everything only a leader holds (in-memory ledger, pool, fabric knowledge), keeping
    /// the watched cluster state (claims included) warm; the next leader term rebuilds it from
    /// the claims and a UFM listing.
    pub fn reset_leader_state(&mut self) {
        self.ledger.clear();
        self.unconfirmed_removals.clear();
        self.claim_guids.clear();
        self.dirty_claims.clear();
        self.ledger_loaded = false;
        self.migrated_pods.clear();
        self.migration = None;
        self.forged.clear();
        self.by_attachment.clear();
        self.standing.clear();
        // Node capacities came from watched annotations and stay true across terms.
        for f in &mut self.fabrics {
            f.reset();
        }
        self.dirty_guids.clear();
        self.dirty_status.clear();
        self.events.clear();
        self.network_reported.clear();
        self.auto_reported.clear();
        self.route_reported.clear();
        self.dirty_all();
    }

    pub fn dirty_all(&mut self) {
        let ids: Vec<AttachmentId> = self.pods.values().flat_map(attachment_ids).collect();
        self.dirty_attachments.extend(ids);
        // A pod whose annotation does not parse has no attachment to evaluate: its status is due.
        let refused: Vec<PodUid> =
            self.pods.values().filter(|p| p.attachments.is_err()).map(|p| p.uid.clone()).collect();
        self.dirty_status.extend(refused);
    }

    /// The levels published as metrics.
    pub fn gauges(&self) -> super::stats::Gauges {
        let mut g = super::stats::Gauges {
            fabrics: self
                .fabrics
                .iter()
                .map(|f| super::stats::FabricGauges {
                    name: f.name.to_string(),
                    pool_in_use: f.pool.in_use(),
                    pool_quarantined: f.pool.quarantined() as u64,
                    pool_capacity: f.range.size(),
                    nodes_at_pkey_limit: f.budget.nodes_at_limit() as u64,
                })
                .collect(),
            claims: self.claims.len() as u64,
            claims_terminating: self.claims.values().filter(|c| c.deleting).count() as u64,
            ..Default::default()
        };
        for a in self.ledger.values().filter(|a| a.owner.is_some()) {
            if a.written.is_some() {
                g.configured += 1;
            } else if !matches!(a.desired, Desired::Nothing | Desired::LeaveAlone) {
                g.pending += 1;
            }
        }
        for s in self.standing.values() {
            *g.not_configured.entry(s.refusal().reason.as_str()).or_insert(0) += 1;
        }
        g
    }

    /// Whether an attachment waits for a GUID to come free (pool exhausted, or its GUID still
    /// being removed).
    pub fn waits_for_guids(&self) -> bool {
        self.standing.values().any(|s| {
            matches!(s, Standing::Refused(r) if matches!(r.reason, super::outcome::Reason::PoolExhausted | super::outcome::Reason::GuidConflict))
        })
    }

    pub fn fabric(&self, f: FabricId) -> &FabricState {
        &self.fabrics[f.index()]
    }

    pub fn fabric_mut(&mut self, f: FabricId) -> &mut FabricState {
        &mut self.fabrics[f.index()]
    }

    pub fn fabric_ids(&self) -> impl Iterator<Item = FabricId> + use<> {
        (0..self.fabrics.len()).filter_map(|i| u16::try_from(i).ok()).map(FabricId)
    }

    pub fn fabric_named(&self, name: &str) -> Option<FabricId> {
        self.fabric_ids().find(|f| &*self.fabric(*f).name == name)
    }

    /// The fabric a GUID belongs to: its assignment's, else the one whose pool holds it, else
    /// the first.
    pub fn fabric_of(&self, g: Guid) -> FabricId {
        match self.ledger.get(&g) {
            Some(a) => a.fabric,
            None => range_fabric(&self.fabrics, g).unwrap_or_default(),
        }
    }

    /// What the fabric of `g` last listed for it.
    pub fn knowledge_of(&self, g: Guid) -> &Knowledge {
        &self.fabric(self.fabric_of(g)).knowledge
    }

    /// Every fabric was listed in this term.
    pub fn all_listed(&self) -> bool {
        self.fabrics.iter().all(|f| f.listed)
    }

    /// Some fabric was listed in this term (the ledger can be loaded).
    pub fn any_listed(&self) -> bool {
        self.fabrics.iter().any(|f| f.listed)
    }

    /// " on fabric X" for messages, empty for the one `default` fabric (messages unchanged).
    pub fn on_fabric(&self, f: FabricId) -> String {
        if self.fabrics.len() == 1 && &*self.fabric(f).name == super::per_fabric::DEFAULT_FABRIC {
            String::new()
        } else {
            format!(" on fabric {}", self.fabric(f).name)
        }
    }

    /// Whether a pkey may be touched for GUIDs nobody owns: only pkeys a network names.
    pub fn is_named(&self, p: PKey) -> bool {
        self.named_pkeys.contains_key(&p)
    }

    pub fn apply(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::PodApplied(view) => self.pod_applied(view),
            ClusterEvent::PodDeleted { uid } => {
                if let Some(old) = self.pods.remove(&uid) {
                    self.forget_attachments(&old, &HashSet::new());
                }
            }
            ClusterEvent::NetworkApplied { key, kind, network } => {
                // A relist re-delivers every network unchanged: report again only on a change.
                let held = self.networks.get(&key).and_then(|d| match kind {
                    NetworkKind::Nad => d.nad.as_ref(),
                    NetworkKind::SpiderMultusConfig => d.smc.as_ref(),
                });
                if held != Some(&network) {
                    self.route_reported.retain(|(k, _)| *k != key);
                }
                self.report_network(&key, kind, network.as_ref().err());
                self.set_network(key, kind, Some(network));
            }
            ClusterEvent::NetworkDeleted { key, kind } => {
                self.route_reported.retain(|(k, _)| *k != key);
                self.network_reported.remove(&(key.clone(), kind));
                self.set_network(key, kind, None);
            }
            ClusterEvent::NodeApplied { name, labels, pkey_capacity, hca_capacities } => {
                // A fabric that names its HCAs gets the smallest table among those the agent
                // reported on this node; any other fabric the node's smallest port.
                for f in &mut self.fabrics {
                    f.budget.set_capacity(&name, f.capacity_on(pkey_capacity, &hca_capacities));
                }
                self.recheck_waiting = true;
                self.set_node_labels(&name, Some(labels));
            }
            ClusterEvent::NodeDeleted { name } => {
                for f in &mut self.fabrics {
                    f.budget.set_capacity(&name, None);
                }
                self.set_node_labels(&name, None);
            }
            ClusterEvent::NamespaceApplied { name, labels } => {
                if self.namespaces.get(&name) != Some(&labels) {
                    self.namespaces.insert(name.clone(), labels);
                    self.dirty_namespace(&name);
                }
            }
            ClusterEvent::NamespaceDeleted { name } => {
                self.namespaces.remove(&name);
            }
            ClusterEvent::ClaimApplied(claim) => self.claim_applied(claim),
            ClusterEvent::ClaimDeleted { pod_uid } => self.claim_deleted(&pod_uid),
            ClusterEvent::PartitionClaimApplied(claim) => self.partition_claim_applied(claim),
            ClusterEvent::PartitionClaimDeleted { name } => self.partition_claim_deleted(&name),
            ClusterEvent::PartitionRefused { network, message } => self.partition_refused(network, message),
            ClusterEvent::CachesSynced => {
                self.caches_synced = true;
                self.dirty_all();
            }
        }
    }

    /// A node's labels decide which fabrics reach it: a change re-decides its attachments.
    fn set_node_labels(&mut self, name: &str, labels: Option<BTreeMap<String, String>>) {
        if self.node_labels.get(name) == labels.as_ref() {
            return;
        }
        match labels {
            Some(l) => self.node_labels.insert(name.to_string(), l),
            None => self.node_labels.remove(name),
        };
        // Before the caches are synced `CachesSynced` re-decides everything anyway, and with no
        // node selector (one `default` fabric) labels decide nothing: a scan of every pod per
        // node would cost nodes × pods at start.
        if !self.caches_synced || self.routes.iter().all(|r| r.node_selector.is_empty()) {
            return;
        }
        let ids: Vec<AttachmentId> =
            self.pods.values().filter(|p| p.node.as_deref() == Some(name)).flat_map(attachment_ids).collect();
        self.dirty_attachments.extend(ids);
    }

    fn dirty_namespace(&mut self, namespace: &str) {
        if self.cfg.policy_mode == PolicyMode::Off {
            return;
        }
        let ids: Vec<AttachmentId> = self
            .pods
            .values()
            .filter(|p| p.key.namespace == namespace)
            .flat_map(|p| match &p.attachments {
                Ok(a) => a.iter().map(|r| p.attachment_id(r)).collect(),
                Err(_) => Vec::new(),
            })
            .collect();
        self.dirty_attachments.extend(ids);
    }

    fn pod_applied(&mut self, mut view: PodView) {
        if let Ok(list) = &view.attachments {
            let cap = self.cfg.max_attachments_per_pod;
            if list.len() > cap {
                // Refused whole, before any GUID is taken: a node has a few dozen VFs at most.
                view.attachments = Err(format!(
                    "{} network elements, more than the {cap} one pod may ask for (FABRIC_SYNC_MAX_ATTACHMENTS_PER_POD)",
                    list.len()
                ));
            }
        }
        if self.pods.get(&view.uid) == Some(&view) {
            return;
        }
        let keep: HashSet<AttachmentId> = match &view.attachments {
            Ok(list) => list.iter().map(|r| view.attachment_id(r)).collect(),
            // An annotation that stops parsing keeps what was assigned; the pod gets a refusal.
            Err(_) => self.pods.get(&view.uid).map(attachment_ids).unwrap_or_default(),
        };
        if let Some(old) = self.pods.get(&view.uid).cloned() {
            self.forget_attachments(&old, &keep);
        }
        self.dirty_attachments.extend(keep.iter().cloned());
        if view.attachments.is_err() {
            self.dirty_status.insert(view.uid.clone());
        }
        if view.has_networks() {
            self.pods.insert(view.uid.clone(), view);
        } else {
            self.pods.remove(&view.uid);
        }
    }

    /// Retires the attachments of `old` that are not in `keep`.
    fn forget_attachments(&mut self, old: &PodView, keep: &HashSet<AttachmentId>) {
        for id in attachment_ids(old) {
            if keep.contains(&id) {
                continue;
            }
            self.dirty_attachments.remove(&id);
            self.standing.remove(&id);
            self.forged.remove(&id);
            self.retire(&id);
        }
    }

    fn set_network(
        &mut self,
        key: NetworkKey,
        kind: NetworkKind,
        value: Option<Result<Option<IbNetwork>, NetdefError>>,
    ) {
        let defs = self.networks.entry(key.clone()).or_default();
        let before = defs.named_pkey();
        match kind {
            NetworkKind::Nad => defs.nad = value,
            NetworkKind::SpiderMultusConfig => defs.smc = value,
        }
        if defs.nad.is_none() && defs.smc.is_none() {
            self.networks.remove(&key);
        }
        let resolved = self
            .networks
            .get(&key)
            .and_then(NetworkDefs::raw_ours)
            .and_then(|n| resolve(n, self.cfg.pkey_range, &self.partition_claims, &self.partition_refusals));
        if let Some(d) = self.networks.get_mut(&key) {
            d.auto = resolved;
        }
        let after = self.networks.get(&key).and_then(NetworkDefs::named_pkey);
        self.network_changed(&key, before, after);
        self.report_auto(&key);
    }

    /// The bookkeeping after a network changed: the pkeys networks name, and its attachments.
    pub(super) fn network_changed(&mut self, key: &NetworkKey, before: Option<PKey>, after: Option<PKey>) {
        if before != after {
            if let Some(p) = before {
                if let Some(n) = self.named_pkeys.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.named_pkeys.remove(&p);
                    }
                }
            }
            if let Some(p) = after {
                *self.named_pkeys.entry(p).or_insert(0) += 1;
            }
        }
        // A network change is rare: find its attachments by scanning pods, not by an index.
        let ids: Vec<AttachmentId> =
            self.pods.values().flat_map(attachment_ids).filter(|id| &id.network == key).collect();
        self.dirty_attachments.extend(ids);
    }

    /// Reports every invalid network object known (once per leader term).
    pub(super) fn report_invalid_networks(&mut self) {
        let mut invalid: Vec<(NetworkKey, NetworkKind, NetdefError)> = Vec::new();
        for (key, defs) in &self.networks {
            for (kind, def) in [(NetworkKind::Nad, &defs.nad), (NetworkKind::SpiderMultusConfig, &defs.smc)] {
                if let Some(Err(e)) = def {
                    invalid.push((key.clone(), kind, e.clone()));
                }
            }
        }
        invalid.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (key, kind, e) in invalid {
            self.report_network(&key, kind, Some(&e));
        }
        let mut keys: Vec<NetworkKey> = self.networks.keys().cloned().collect();
        keys.sort();
        for key in keys {
            self.report_auto(&key);
        }
    }

    /// One Warning Event per network object and problem (a changed message reports again).
    fn report_network(&mut self, key: &NetworkKey, kind: NetworkKind, error: Option<&NetdefError>) {
        let slot = (key.clone(), kind);
        match error {
            None => {
                self.network_reported.remove(&slot);
            }
            Some(e) => {
                let message = e.to_string();
                if self.network_reported.get(&slot) == Some(&message) {
                    return;
                }
                self.network_reported.insert(slot, message.clone());
                self.events.push(EventRecord {
                    object: EventObject {
                        kind: super::ports::ObjectKind::of_network(kind),
                        key: super::model::ObjectKey {
                            namespace: key.namespace.to_string(),
                            name: key.name.to_string(),
                        },
                        uid: None,
                    },
                    event_type: EventType::Warning,
                    reason: super::outcome::Reason::InvalidNetwork,
                    message,
                });
            }
        }
    }

    /// The owner of an assignment is gone: membership goes, the GUID waits for confirmation.
    pub fn retire(&mut self, id: &AttachmentId) {
        let Some(g) = self.by_attachment.remove(id) else {
            return;
        };
        if let Some(a) = self.ledger.get_mut(&g) {
            a.owner = None;
            a.desired = Desired::Nothing;
            a.written = None;
            if let Some(p) = a.budget_pkey.take() {
                self.fabrics[a.fabric.index()].budget.release(&a.node, p);
            }
        }
        self.recheck_waiting = true;
        self.dirty_guids.insert(g);
    }
}

pub(crate) fn attachment_ids(view: &PodView) -> HashSet<AttachmentId> {
    match &view.attachments {
        Ok(list) => list.iter().map(|r| view.attachment_id(r)).collect(),
        Err(_) => HashSet::new(),
    }
}
