//! The partition reconciler (leader only): gives every NetworkAttachmentDefinition annotated
//! `fabric-sync.io/pkey: auto` a pkey from the managed range, creates its partition in UFM, and
//! deletes it when the network goes. The record is the `PartitionClaim` (written before UFM is
//! asked, named by pkey so that a race for a pkey is lost by one side with a 409); the NAD's
//! `fabric-sync.io/assigned-pkey` annotation is output only. The engine reads the claims itself
//! (watch.rs) and resolves the pkey of every automatic network (engine/partitions.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::lease::Fence;
use super::partition_book::{Memory, Store, covering, duplicate, in_scope};
use super::partition_claims::{
    ASSIGNED_PKEY_ANNOTATION, IB_KUBERNETES_PKEY_ANNOTATION, NAD_FINALIZER, PartitionFabric, StoredClaim,
    UfmPartitionInfo, claim_object, partition_claim_resource, stored_claim,
};
use super::resources::{nad_network, nad_resource, network_key};
use crate::alloc::{PkeyRange, namespace_partition_name, partition_name};
use crate::engine::{
    ClusterEvent, ClusterWriter, EventObject, EventRecord, EventType, ObjectKey, ObjectKind, PartitionPhase,
    PartitionScope, Policy, Reason,
};
use crate::ib::{Guid, PKey};
use crate::netdef::{AutoPkey, NetworkKey};
use crate::ops::Metrics;

/// What the reconciler needs besides its ports.
#[derive(Clone, Debug)]
pub struct PartitionSettings {
    pub range: PkeyRange,
    /// The tenant policy, for its `autoPkey: namespace` rules.
    pub policy: Option<Policy>,
    /// A pass also runs this often (retries after UFM or API failures, exhaustion re-checks).
    pub resync: Duration,
}

/// The reconciler's ports: every write passes the leader fence first.
pub struct PartitionReconciler {
    client: Client,
    fabric: Arc<dyn PartitionFabric>,
    writer: Arc<dyn ClusterWriter>,
    fence: Fence,
    tx: mpsc::Sender<ClusterEvent>,
    settings: PartitionSettings,
    metrics: Arc<Metrics>,
}

/// An automatic NAD (or one that still holds our finalizer).
struct AutoNad {
    key: NetworkKey,
    obj: DynamicObject,
    /// `Some` while it asks for an automatic pkey.
    auto: Option<AutoPkey>,
    deleting: bool,
    holds_finalizer: bool,
}

impl AutoNad {
    fn live(&self) -> bool {
        self.auto.is_some() && !self.deleting
    }
}

impl PartitionReconciler {
    pub fn new(
        client: Client,
        fabric: Arc<dyn PartitionFabric>,
        writer: Arc<dyn ClusterWriter>,
        fence: Fence,
        tx: mpsc::Sender<ClusterEvent>,
        settings: PartitionSettings,
        metrics: Arc<Metrics>,
    ) -> PartitionReconciler {
        PartitionReconciler { client, fabric, writer, fence, tx, settings, metrics }
    }

    /// Runs until the engine's channel closes: watches NADs and claims, and while this replica
    /// leads, runs a pass after every change and every `resync`.
    pub async fn run(self, mut leader: watch::Receiver<bool>) {
        let cfg = watcher::Config::default;
        let nads = watcher(Api::<DynamicObject>::all_with(self.client.clone(), &nad_resource()), cfg());
        let claims = watcher(Api::<DynamicObject>::all_with(self.client.clone(), &partition_claim_resource()), cfg());
        let mut nads = pin!(nads.default_backoff());
        let mut claims = pin!(claims.default_backoff());
        let (mut nad_store, mut claim_store) = (Store::default(), Store::default());
        let mut memory = Memory::default();
        let mut leading = *leader.borrow();
        let mut tick = tokio::time::interval(self.settings.resync);
        self.metrics.pkey_range(self.settings.range.len(), 0);
        tracing::info!(range = %self.settings.range, "automatic partitions on");
        loop {
            tokio::select! {
                Some(ev) = nads.next() => match ev {
                    Ok(ev) => nad_store.apply(ev),
                    Err(e) => tracing::debug!(error = %e, "partition reconciler: NAD watch failed; retrying"),
                },
                Some(ev) = claims.next() => match ev {
                    Ok(ev) => claim_store.apply(ev),
                    Err(e) => tracing::warn!(error = %e, "partition reconciler: PartitionClaim watch failed (CRD installed?); retrying"),
                },
                _ = tick.tick() => {}
                changed = leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new term starts from what the watches say (the channel also repeats
                    // `true` on every renewal: only a change of leadership counts).
                    let now = *leader.borrow_and_update();
                    if now != leading {
                        leading = now;
                        memory = Memory::default();
                    }
                }
            }
            if self.tx.is_closed() {
                return;
            }
            if !*leader.borrow() || !nad_store.synced || !claim_store.synced {
                continue;
            }
            if let Err(e) = self.pass(&nad_store, &claim_store, &mut memory).await {
                tracing::warn!(error = %e, "partition pass incomplete; retried on the next change or resync");
            }
        }
    }

    /// One reconciliation of every automatic NAD and every claim.
    async fn pass(&self, nads: &Store, claims: &Store, memory: &mut Memory) -> Result<(), String> {
        let watched = claims.objects.values().filter_map(stored_claim).map(|c| (c.claim.name.clone(), c)).collect();
        let mut book = memory.book(watched);
        let mut fixed = BTreeSet::new();
        let mut autos = Vec::new();
        for obj in nads.objects.values() {
            let Some(key) = network_key(&obj.metadata) else { continue };
            let holds_finalizer = obj.metadata.finalizers.iter().flatten().any(|f| f == NAD_FINALIZER);
            let auto = match nad_network(&key, obj) {
                Ok(Some(n)) => {
                    if let Some(p) = n.pkey() {
                        fixed.insert(p.value());
                    }
                    n.auto
                }
                _ => None,
            };
            if auto.is_some() || holds_finalizer {
                let deleting = obj.metadata.deletion_timestamp.is_some();
                autos.push(AutoNad { key, obj: obj.clone(), auto, deleting, holds_finalizer });
            }
        }
        let mut ufm: Option<BTreeMap<PKey, UfmPartitionInfo>> = None;
        let mut labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();

        // 1. A pkey for every live automatic NAD no claim covers.
        for nad in autos.iter().filter(|n| n.live()) {
            if covering(&book, &nad.key).is_some() {
                continue;
            }
            let scope = self.scope_for(&nad.key, &mut labels).await;
            // The finalizer first: a NAD deleted from now on waits for its partition's cleanup.
            if !self.ensure_finalizer(nad).await? {
                continue;
            }
            let listing = self.listing(&mut ufm).await?;
            let mut taken: BTreeSet<u16> = book.values().map(|c| c.claim.pkey.value()).collect();
            taken.extend(fixed.iter().copied());
            taken.extend(listing.keys().map(|p| p.value()));
            loop {
                let pkey = match self.settings.range.choose(&taken) {
                    Ok(p) => p,
                    Err(exhausted) => {
                        let message = format!("{}: {exhausted}", nad.key);
                        if self.refuse(memory, &nad.key, Some(message.clone())).await {
                            self.nad_event(nad, Reason::PkeyRangeExhausted, message).await;
                        }
                        break;
                    }
                };
                let name = match &scope {
                    PartitionScope::Network(k) => partition_name(&k.namespace, &k.name, pkey),
                    PartitionScope::Namespace(ns) => namespace_partition_name(ns, pkey),
                };
                match self.create_claim(pkey, &scope, &name).await? {
                    Some(stored) => {
                        tracing::info!(network = %nad.key, %pkey, partition = %name, "pkey allocated");
                        self.metrics.partition_op("allocate", "ok");
                        memory.wrote(&stored.claim.name, Some(stored.clone()));
                        book.insert(stored.claim.name.clone(), stored);
                        self.refuse(memory, &nad.key, None).await;
                        break;
                    }
                    // Another replica or an earlier pass took it first: pick again.
                    None => {
                        self.metrics.partition_op("allocate", "conflict");
                        taken.insert(pkey.value());
                    }
                }
            }
        }

        // A refusal told for a network that is no longer an automatic one is withdrawn.
        let gone: Vec<NetworkKey> =
            memory.refused.keys().filter(|k| !autos.iter().any(|n| n.live() && &n.key == *k)).cloned().collect();
        for key in gone {
            self.refuse(memory, &key, None).await;
        }

        // 2. Allocated claims get their partition in UFM (created, or adopted by its exact name).
        let allocated: Vec<StoredClaim> = book
            .values()
            .filter(|c| c.claim.phase == PartitionPhase::Allocated && !c.claim.deleting && !duplicate(&book, c))
            .cloned()
            .collect();
        for c in allocated {
            let Some(spec) = autos
                .iter()
                .find(|n| n.live() && in_scope(&c.claim.scope, &n.key))
                .and_then(|n| n.auto.as_ref().map(|a| a.spec(c.claim.pkey)))
            else {
                continue;
            };
            let pkey = c.claim.pkey;
            let existing = self.listing(&mut ufm).await?.get(&pkey).cloned();
            match existing {
                None => {
                    self.fence.check()?;
                    match self.fabric.create(&spec, &c.partition_name).await {
                        Ok(()) => self.metrics.partition_op("create", "ok"),
                        Err(e) => {
                            self.metrics.partition_op("create", "error");
                            return Err(format!("creating partition {} ({pkey}) in UFM: {e}", c.partition_name));
                        }
                    }
                    tracing::info!(%pkey, partition = %c.partition_name, "partition created in UFM");
                }
                Some(p) if p.name.as_deref() == Some(c.partition_name.as_str()) => {
                    tracing::info!(%pkey, partition = %c.partition_name, "partition already in UFM under our name: adopted");
                    self.metrics.partition_op("adopt", "ok");
                }
                Some(p) => {
                    // Someone made a partition at this pkey after we chose it: never take it.
                    tracing::warn!(%pkey, theirs = ?p.name, "a partition we did not create holds the allocated pkey; choosing another");
                    self.metrics.partition_op("create", "foreign");
                    self.drop_claim(&c).await?;
                    memory.wrote(&c.claim.name, None);
                    book.remove(&c.claim.name);
                    continue;
                }
            }
            let status = json!({"status": {"phase": PartitionPhase::Created.as_str(), "createdInUfm": true}});
            self.patch_claim(&c.claim.name, &status).await?;
            if let Some(b) = book.get_mut(&c.claim.name) {
                b.claim.phase = PartitionPhase::Created;
                b.created_in_ufm = true;
                memory.wrote(&b.claim.name, Some(b.clone()));
            }
        }

        // 3. Live NADs of created partitions carry the pkey (output) and the finalizer.
        for nad in autos.iter().filter(|n| n.live()) {
            if let Some(c) = covering(&book, &nad.key).filter(|c| c.claim.phase == PartitionPhase::Created) {
                self.annotate(nad, c.claim.pkey).await?;
            }
        }

        // 4. NADs that went: members first (the engine removes them), then the partition and
        //    the claim, then the NAD's finalizer.
        for nad in autos.iter().filter(|n| !n.live() && n.holds_finalizer) {
            let claim = book
                .values()
                .find(|c| c.claim.scope == PartitionScope::Network(nad.key.clone()))
                .or_else(|| covering(&book, &nad.key))
                .cloned();
            let Some(c) = claim else {
                self.release_nad(nad).await?;
                continue;
            };
            if self.members_left(&nad.key, c.claim.pkey, &mut ufm).await? {
                continue;
            }
            if matches!(c.claim.scope, PartitionScope::Network(_)) {
                if !self.release_claim(&c, &mut ufm).await? {
                    continue;
                }
                memory.wrote(&c.claim.name, None);
                book.remove(&c.claim.name);
            }
            self.release_nad(nad).await?;
        }
        // Claims nothing is in scope of any more (namespace emptied, NAD gone without us).
        // And a second claim for one scope (two writers in a leader handover): the engine and this
        // reconciler use the lowest-named one; the other is released like an orphan, as is a
        // claim someone deleted.
        let orphans: Vec<StoredClaim> = book
            .values()
            .filter(|c| {
                // Someone deleted it: the engine no longer uses it, the network gets another.
                c.claim.deleting
                    || duplicate(&book, c)
                    || !autos.iter().any(|n| (n.live() || n.holds_finalizer) && in_scope(&c.claim.scope, &n.key))
            })
            .cloned()
            .collect();
        for c in orphans {
            if self.release_claim(&c, &mut ufm).await? {
                memory.wrote(&c.claim.name, None);
                book.remove(&c.claim.name);
            }
        }
        let used = self.settings.range.used(&book.values().map(|c| c.claim.pkey.value()).collect());
        self.metrics.pkey_range(self.settings.range.len(), used);
        Ok(())
    }

    /// The namespace's scope, or the network's own: a policy rule `autoPkey: namespace` shares.
    async fn scope_for(
        &self,
        key: &NetworkKey,
        cache: &mut BTreeMap<String, BTreeMap<String, String>>,
    ) -> PartitionScope {
        let own = PartitionScope::Network(key.clone());
        let Some(policy) = &self.settings.policy else { return own };
        let ns = key.namespace.to_string();
        if !cache.contains_key(&ns) {
            let api: Api<Namespace> = Api::all(self.client.clone());
            let l = match api.get_metadata_opt(&ns).await {
                Ok(n) => n.and_then(|n| n.metadata.labels).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "cannot read the namespace's labels for the policy; label rules do not match");
                    BTreeMap::new()
                }
            };
            cache.insert(ns.clone(), l);
        }
        let labels = cache.get(&ns).cloned().unwrap_or_default();
        if policy.shares_auto_pkey(&ns, &labels) { PartitionScope::Namespace(ns) } else { own }
    }

    async fn listing<'a>(
        &self,
        cache: &'a mut Option<BTreeMap<PKey, UfmPartitionInfo>>,
    ) -> Result<&'a BTreeMap<PKey, UfmPartitionInfo>, String> {
        if cache.is_none() {
            let l = self.fabric.partitions().await.map_err(|e| format!("listing UFM's partitions: {e}"))?;
            *cache = Some(l);
        }
        cache.as_ref().ok_or_else(|| "no listing".to_string())
    }

    /// `Some(claim)` when created; `None` when the pkey is taken (409).
    async fn create_claim(
        &self,
        pkey: PKey,
        scope: &PartitionScope,
        name: &str,
    ) -> Result<Option<StoredClaim>, String> {
        self.fence.check()?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &partition_claim_resource());
        match api.create(&PostParams::default(), &claim_object(pkey, scope, name)).await {
            Ok(obj) => Ok(stored_claim(&obj)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(format!("creating PartitionClaim for {pkey}: {e}")),
        }
    }

    async fn patch_claim(&self, name: &str, body: &Value) -> Result<(), String> {
        self.fence.check()?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &partition_claim_resource());
        match api.patch(name, &PatchParams::default(), &Patch::Merge(body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("updating PartitionClaim {name}: {e}")),
        }
    }

    /// Deletes the claim object and drops its finalizer (the partition is gone or not ours).
    async fn drop_claim(&self, c: &StoredClaim) -> Result<(), String> {
        self.fence.check()?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &partition_claim_resource());
        let name = &c.claim.name;
        if !c.claim.deleting {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(format!("deleting PartitionClaim {name}: {e}")),
            }
        }
        self.patch_claim(name, &json!({"metadata": {"finalizers": null}})).await
    }

    /// Once UFM lists no member of the claim's pkey: deletes the partition (only one we created,
    /// under our name or UFM's default for an API-created one), then the claim. `false`: wait.
    async fn release_claim(
        &self,
        c: &StoredClaim,
        ufm: &mut Option<BTreeMap<PKey, UfmPartitionInfo>>,
    ) -> Result<bool, String> {
        let pkey = c.claim.pkey;
        if c.claim.phase != PartitionPhase::Deleting && !c.claim.deleting {
            self.patch_claim(&c.claim.name, &json!({"status": {"phase": PartitionPhase::Deleting.as_str()}})).await?;
        }
        match self.listing(ufm).await?.get(&pkey).cloned() {
            None => {}
            Some(p) if !p.members.is_empty() => {
                tracing::info!(%pkey, members = p.members.len(), "partition still has members; deleting it once they are removed");
                return Ok(false);
            }
            Some(p) => {
                let ours = p.name.as_deref() == Some(c.partition_name.as_str())
                    || p.name.as_deref() == Some(format!("api_pkey_{pkey}").as_str());
                if c.created_in_ufm && ours {
                    self.fence.check()?;
                    if let Err(e) = self.fabric.delete(pkey).await {
                        self.metrics.partition_op("delete", "error");
                        return Err(format!("deleting partition {pkey} from UFM: {e}"));
                    }
                    self.metrics.partition_op("delete", "ok");
                    tracing::info!(%pkey, partition = %c.partition_name, "partition deleted from UFM");
                } else {
                    tracing::warn!(%pkey, theirs = ?p.name, "partition left in UFM: fabric-sync did not create it");
                    self.metrics.partition_op("delete", "not_ours");
                }
            }
        }
        self.drop_claim(c).await?;
        self.metrics.partition_op("release", "ok");
        Ok(true)
    }

    /// Whether UFM still lists in `pkey` a GUID the ownership ledger gives an attachment of
    /// `network` (the engine removes them once the network is being deleted).
    async fn members_left(
        &self,
        network: &NetworkKey,
        pkey: PKey,
        ufm: &mut Option<BTreeMap<PKey, UfmPartitionInfo>>,
    ) -> Result<bool, String> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &network.namespace, &super::claim_resource());
        let list = api.list(&Default::default()).await.map_err(|e| format!("listing GuidClaims: {e}"))?;
        let net = network.to_string();
        let guids: BTreeSet<Guid> = list
            .items
            .iter()
            .filter_map(|c| c.data.pointer("/spec/attachments").and_then(Value::as_array))
            .flatten()
            .filter(|a| a.get("network").and_then(Value::as_str) == Some(net.as_str()))
            .filter_map(|a| a.get("guid").and_then(Value::as_str).and_then(|g| g.parse::<Guid>().ok()))
            .collect();
        let left = self.listing(ufm).await?.get(&pkey).map_or(0, |p| p.members.intersection(&guids).count());
        if left > 0 {
            tracing::debug!(network = %net, %pkey, members = left, "the network still has members; its NAD waits");
        }
        Ok(left > 0)
    }

    /// `Ok(false)`: not applied (the NAD changed meanwhile, its watch event brings another pass, or it is gone).
    async fn nad_patch(&self, nad: &AutoNad, body: &Value) -> Result<bool, String> {
        self.fence.check()?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &nad.key.namespace, &nad_resource());
        match api.patch(&nad.key.name, &PatchParams::default(), &Patch::Merge(body)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
            Err(e) => Err(format!("updating NetworkAttachmentDefinition {}: {e}", nad.key)),
        }
    }

    fn finalizers_with(nad: &AutoNad, add: bool) -> Vec<String> {
        let mut f: Vec<String> =
            nad.obj.metadata.finalizers.iter().flatten().filter(|f| *f != NAD_FINALIZER).cloned().collect();
        if add {
            f.push(NAD_FINALIZER.to_string());
        }
        f
    }

    /// `Ok(false)`: not written (the NAD changed meanwhile): allocate in a later pass.
    async fn ensure_finalizer(&self, nad: &AutoNad) -> Result<bool, String> {
        if nad.holds_finalizer {
            return Ok(true);
        }
        let rv = &nad.obj.metadata.resource_version;
        self.nad_patch(
            nad,
            &json!({"metadata": {"resourceVersion": rv, "finalizers": Self::finalizers_with(nad, true)}}),
        )
        .await
    }

    async fn release_nad(&self, nad: &AutoNad) -> Result<(), String> {
        let rv = &nad.obj.metadata.resource_version;
        self.nad_patch(
            nad,
            &json!({"metadata": {"resourceVersion": rv, "finalizers": Self::finalizers_with(nad, false)}}),
        )
        .await?
        .then(|| tracing::info!(network = %nad.key, "NetworkAttachmentDefinition released"));
        Ok(())
    }

    /// Writes the assigned pkey onto the NAD; a tenant's edit of it is restored and reported.
    async fn annotate(&self, nad: &AutoNad, pkey: PKey) -> Result<(), String> {
        let want = format!("0x{:04x}", pkey.value());
        let ann = nad.obj.metadata.annotations.clone().unwrap_or_default();
        let assigned = ann.get(ASSIGNED_PKEY_ANNOTATION);
        let ok = assigned == Some(&want) && ann.get(IB_KUBERNETES_PKEY_ANNOTATION) == Some(&want);
        if ok && nad.holds_finalizer {
            return Ok(());
        }
        let rv = &nad.obj.metadata.resource_version;
        let body = json!({"metadata": {"resourceVersion": rv, "finalizers": Self::finalizers_with(nad, true),
            "annotations": {ASSIGNED_PKEY_ANNOTATION: want, IB_KUBERNETES_PKEY_ANNOTATION: want}}});
        if !self.nad_patch(nad, &body).await? {
            return Ok(());
        }
        let edited = [ASSIGNED_PKEY_ANNOTATION, IB_KUBERNETES_PKEY_ANNOTATION]
            .into_iter()
            .filter_map(|k| ann.get(k).filter(|v| **v != want).map(|v| format!("{k}={v:?}")))
            .collect::<Vec<_>>();
        if !edited.is_empty() {
            let message = format!(
                "{} edited; the partition ledger (PartitionClaim {}) says {want}: restored, and UFM keeps {want}",
                edited.join(", "),
                crate::alloc::claim_name(pkey)
            );
            tracing::warn!(network = %nad.key, "{message}");
            self.nad_event(nad, Reason::ForgedAnnotation, message).await;
        }
        Ok(())
    }

    async fn nad_event(&self, nad: &AutoNad, reason: Reason, message: String) {
        let record = EventRecord {
            object: EventObject {
                kind: ObjectKind::NetworkAttachmentDefinition,
                key: ObjectKey { namespace: nad.key.namespace.to_string(), name: nad.key.name.to_string() },
                uid: nad.obj.metadata.uid.clone(),
            },
            event_type: EventType::Warning,
            reason,
            message,
        };
        if let Err(e) = self.writer.emit_event(&record).await {
            tracing::debug!(error = %e, "partition Event not written");
        }
    }

    /// Tells the engine (once per change) that a network cannot get a pkey, or can again.
    async fn refuse(&self, memory: &mut Memory, key: &NetworkKey, message: Option<String>) -> bool {
        let changed = match &message {
            Some(m) => memory.refused.insert(key.clone(), m.clone()).as_ref() != Some(m),
            None => memory.refused.remove(key).is_some(),
        };
        if !changed {
            return false;
        }
        if let Some(m) = &message {
            self.metrics.partition_op("allocate", "exhausted");
            tracing::warn!(network = %key, "{m}");
        }
        let _ = self.tx.send(ClusterEvent::PartitionRefused { network: key.clone(), message }).await;
        true
    }
}
