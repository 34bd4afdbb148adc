//! Watchers (kube-runtime `watcher`) for pods, NADs, SpiderMultusConfigs, nodes, namespaces and
//! the ownership ledger (GuidClaims), turned into `ClusterEvent`s. Each resource remembers which keys it has reported, so that a
//! relist (after `410 Gone` or a restart) reports what disappeared in the gap as deletions.
//! `CachesSynced` is sent once, after every resource delivered its first complete list.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::cache::WatchCache;
use super::ledger::{claim_from_object, claim_resource};
use super::partition_claims::{partition_claim_resource, stored_claim};
use super::resources::{
    SlimPod, nad_resource, namespace_event, network_event, network_key, node_event, pod_view, smc_resource,
};
use crate::engine::{ClusterEvent, NetworkKind, PodUid};
use crate::netdef::NetworkKey;
use crate::ops::Metrics;

/// How watch failures are retried.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// First pause after a failure; doubles up to `backoff_max`, reset by any success.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often to look again for an optional resource the API server does not serve
    /// (SpiderMultusConfig without Spiderpool's CRD).
    pub absent_retry: Duration,
    /// Watch the partition ledger (PartitionClaims): on when automatic partitions are.
    pub partition_claims: bool,
}

impl Default for WatchSettings {
    fn default() -> WatchSettings {
        WatchSettings {
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            absent_retry: Duration::from_secs(60),
            partition_claims: false,
        }
    }
}

/// NAD and SMC UIDs by kind and key, for the `regarding` reference of network Events.
#[derive(Default)]
pub struct NetworkUids(Mutex<HashMap<(&'static str, NetworkKey), String>>);

impl NetworkUids {
    /// The UID of the `kind` (`NetworkAttachmentDefinition` or `SpiderMultusConfig`) at `key`.
    pub fn get(&self, kind: &str, key: &NetworkKey) -> Option<String> {
        let kind = [NetworkKind::Nad, NetworkKind::SpiderMultusConfig]
            .into_iter()
            .map(network_kind_name)
            .find(|k| *k == kind)?;
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(kind, key.clone())).cloned()
    }

    fn set(&self, kind: &'static str, key: NetworkKey, uid: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match uid {
            Some(uid) => map.insert((kind, key), uid),
            None => map.remove(&(kind, key)),
        };
    }
}

/// The Event `kind` of a network definition.
pub fn network_kind_name(kind: NetworkKind) -> &'static str {
    match kind {
        NetworkKind::Nad => "NetworkAttachmentDefinition",
        NetworkKind::SpiderMultusConfig => "SpiderMultusConfig",
    }
}

struct Context {
    tx: mpsc::Sender<ClusterEvent>,
    metrics: Arc<Metrics>,
    settings: WatchSettings,
    /// Resources that have not delivered their first complete list yet.
    unsynced: AtomicUsize,
}

impl Context {
    /// This resource's first list is in; the last one to arrive tells the engine.
    async fn synced(&self) -> bool {
        if self.unsynced.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::info!("initial lists delivered: caches synced");
            return self.tx.send(ClusterEvent::CachesSynced).await.is_ok();
        }
        true
    }
}

/// Starts one watcher task per resource into `tasks`; they run until aborted or until the
/// engine's channel closes. Pods with networks and GuidClaims are also kept in `cache` (what
/// the writer computes its writes from).
pub fn spawn_watchers(
    tasks: &mut JoinSet<()>,
    client: &Client,
    tx: mpsc::Sender<ClusterEvent>,
    metrics: Arc<Metrics>,
    settings: WatchSettings,
    uids: Arc<NetworkUids>,
    cache: Arc<WatchCache>,
) {
    let partition_claims = settings.partition_claims;
    let unsynced = AtomicUsize::new(if partition_claims { 7 } else { 6 });
    let ctx = Arc::new(Context { tx, metrics, settings, unsynced });
    let cfg = watcher::Config::default;
    let pods = watcher(Api::<SlimPod>::all(client.clone()), cfg());
    tasks.spawn(drive(PodTracker { keys: Keys::default(), cache: cache.clone() }, pods, ctx.clone()));
    let nads = watcher(Api::<DynamicObject>::all_with(client.clone(), &nad_resource()), cfg());
    tasks.spawn(drive(NetworkTracker::new(NetworkKind::Nad, uids.clone()), nads, ctx.clone()));
    let smcs = watcher(Api::<DynamicObject>::all_with(client.clone(), &smc_resource()), cfg());
    tasks.spawn(drive(NetworkTracker::new(NetworkKind::SpiderMultusConfig, uids), smcs, ctx.clone()));
    let nodes = watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), cfg());
    tasks.spawn(drive(nodes_tracker(), nodes, ctx.clone()));
    let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), cfg());
    tasks.spawn(drive(namespaces_tracker(), namespaces, ctx.clone()));
    if partition_claims {
        let api = Api::<DynamicObject>::all_with(client.clone(), &partition_claim_resource());
        tasks.spawn(drive(PartitionClaimTracker { keys: Keys::default() }, watcher(api, cfg()), ctx.clone()));
    }
    let claims = watcher(Api::<DynamicObject>::all_with(client.clone(), &claim_resource()), cfg());
    tasks.spawn(drive(ClaimTracker { keys: Keys::default(), cache }, claims, ctx));
}

/// The partition ledger: one claim per managed pkey, keyed by object name. Delivered before
/// `CachesSynced`, so that after a restart an automatic network is never seen without its pkey.
struct PartitionClaimTracker {
    keys: Keys<String>,
}

impl Tracker for PartitionClaimTracker {
    type Obj = DynamicObject;

    fn resource(&self) -> &'static str {
        "partitionclaims"
    }

    fn apply(&mut self, obj: DynamicObject, out: &mut Vec<ClusterEvent>) {
        let Some(stored) = stored_claim(&obj) else { return };
        let name = stored.claim.name.clone();
        self.keys.saw(&name);
        self.keys.known.insert(name);
        out.push(ClusterEvent::PartitionClaimApplied(stored.claim));
    }

    fn delete(&mut self, obj: DynamicObject, out: &mut Vec<ClusterEvent>) {
        let Some(name) = obj.metadata.name else { return };
        if self.keys.known.remove(&name) {
            out.push(ClusterEvent::PartitionClaimDeleted { name });
        }
    }

    fn list_started(&mut self) {
        self.keys.list_started();
    }

    fn list_done(&mut self, out: &mut Vec<ClusterEvent>) {
        for name in self.keys.list_done() {
            out.push(ClusterEvent::PartitionClaimDeleted { name });
        }
    }
}

/// Turns one resource's watch events into cluster events.
trait Tracker: Send + 'static {
    type Obj: Send + 'static;
    /// Metric label and log field.
    fn resource(&self) -> &'static str;
    /// A 404 on list means "not installed here": treated as empty and looked for again slowly.
    fn optional(&self) -> bool {
        false
    }
    fn apply(&mut self, obj: Self::Obj, out: &mut Vec<ClusterEvent>);
    fn delete(&mut self, obj: Self::Obj, out: &mut Vec<ClusterEvent>);
    fn list_started(&mut self);
    /// The list is complete: report what was known before and is not there any more.
    fn list_done(&mut self, out: &mut Vec<ClusterEvent>);
}

async fn drive<T, S>(mut tracker: T, stream: S, ctx: Arc<Context>)
where
    T: Tracker,
    S: Stream<Item = Result<watcher::Event<T::Obj>, watcher::Error>> + Send,
{
    let mut stream = pin!(stream);
    let mut backoff = Backoff::new(ctx.settings.backoff_min, ctx.settings.backoff_max);
    let mut synced = false;
    let mut absent = false;
    let mut out = Vec::new();
    let resource = tracker.resource();
    ctx.metrics.watch_started(resource);
    while let Some(item) = stream.next().await {
        let mut first_sync = false;
        let pause = match item {
            Ok(event) => {
                backoff.reset();
                match event {
                    watcher::Event::Init => {
                        if synced {
                            ctx.metrics.watch_relist(resource);
                            tracing::info!(resource = resource, "relisting");
                        }
                        tracker.list_started();
                    }
                    watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => tracker.apply(obj, &mut out),
                    watcher::Event::Delete(obj) => tracker.delete(obj, &mut out),
                    watcher::Event::InitDone => {
                        if absent {
                            absent = false;
                            tracing::info!(resource = resource, "the API server serves this resource now");
                        }
                        tracker.list_done(&mut out);
                        first_sync = !synced;
                    }
                }
                None
            }
            Err(e) => {
                ctx.metrics.watch_error(resource);
                if tracker.optional() && is_not_found(&e) {
                    if !absent {
                        absent = true;
                        tracing::info!(
                            resource = resource,
                            retry_s = ctx.settings.absent_retry.as_secs_f64(),
                            "the API server does not serve this resource (CRD not installed?); treating it as empty"
                        );
                    }
                    // Whatever was known is gone with the CRD.
                    tracker.list_started();
                    tracker.list_done(&mut out);
                    first_sync = !synced;
                    Some(ctx.settings.absent_retry)
                } else if is_gone(&e) {
                    tracing::info!(resource = resource, "resource version expired (410 Gone); relisting");
                    Some(Duration::ZERO)
                } else {
                    let pause = backoff.next_pause();
                    tracing::warn!(resource = resource, error = %e, retry_ms = pause.as_millis() as u64,
                        "watch failed; backing off");
                    Some(pause)
                }
            }
        };
        for ev in out.drain(..) {
            if ctx.tx.send(ev).await.is_err() {
                return;
            }
        }
        if first_sync {
            synced = true;
            if !ctx.synced().await {
                return;
            }
        }
        if let Some(p) = pause.filter(|p| !p.is_zero()) {
            tokio::time::sleep(p).await;
        }
    }
}

fn api_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(_)) && api_code(e) == Some(404)
}

fn is_gone(e: &watcher::Error) -> bool {
    api_code(e) == Some(410)
}

/// Doubling pauses with a little jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), next: min }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter_ms = (pause.as_millis() as u64 / 10).max(1);
        pause + Duration::from_millis(rand::random::<u64>() % jitter_ms)
    }
}

/// Keys reported to the engine, and the keys seen by a list in progress.
struct Keys<K> {
    known: HashSet<K>,
    seen: Option<HashSet<K>>,
}

impl<K> Default for Keys<K> {
    fn default() -> Keys<K> {
        Keys { known: HashSet::new(), seen: None }
    }
}

impl<K: Hash + Eq + Clone> Keys<K> {
    fn list_started(&mut self) {
        self.seen = Some(HashSet::new());
    }

    fn saw(&mut self, k: &K) {
        if let Some(seen) = &mut self.seen {
            seen.insert(k.clone());
        }
    }

    /// Keys known before the list that it did not contain; they are forgotten.
    fn list_done(&mut self) -> Vec<K> {
        let seen = self.seen.take().unwrap_or_default();
        let gone: Vec<K> = self.known.iter().filter(|k| !seen.contains(*k)).cloned().collect();
        for k in &gone {
            self.known.remove(k);
        }
        gone
    }
}

/// Pods are reported only while they name networks (or were reported before): the engine
/// forgets the rest, and 100k plain pods should cost neither events nor memory.
#[derive(Default)]
struct PodTracker {
    keys: Keys<PodUid>,
    cache: Arc<WatchCache>,
}

impl Tracker for PodTracker {
    type Obj = SlimPod;

    fn resource(&self) -> &'static str {
        "pods"
    }

    fn apply(&mut self, pod: SlimPod, out: &mut Vec<ClusterEvent>) {
        let Some(view) = pod_view(&pod) else {
            tracing::debug!(pod = %pod.name_any(), "pod without uid, name or namespace ignored");
            return;
        };
        if view.has_networks() {
            self.cache.pod_seen(&pod.metadata);
        }
        drop(pod);
        if view.has_networks() {
            self.keys.saw(&view.uid);
            self.keys.known.insert(view.uid.clone());
            out.push(ClusterEvent::PodApplied(view));
        } else if self.keys.known.remove(&view.uid) {
            self.cache.pod_gone(&view.uid);
            out.push(ClusterEvent::PodApplied(view));
        }
    }

    fn delete(&mut self, pod: SlimPod, out: &mut Vec<ClusterEvent>) {
        let Some(uid) = pod.metadata.uid.as_deref() else { return };
        let uid = PodUid::new(uid);
        self.cache.pod_gone(&uid);
        if self.keys.known.remove(&uid) {
            out.push(ClusterEvent::PodDeleted { uid });
        }
    }

    fn list_started(&mut self) {
        self.keys.list_started();
    }

    fn list_done(&mut self, out: &mut Vec<ClusterEvent>) {
        for uid in self.keys.list_done() {
            self.cache.pod_gone(&uid);
            out.push(ClusterEvent::PodDeleted { uid });
        }
    }
}

struct NetworkTracker {
    kind: NetworkKind,
    keys: Keys<NetworkKey>,
    uids: Arc<NetworkUids>,
}

impl NetworkTracker {
    fn new(kind: NetworkKind, uids: Arc<NetworkUids>) -> NetworkTracker {
        NetworkTracker { kind, keys: Keys::default(), uids }
    }

    fn deleted(&mut self, key: NetworkKey, out: &mut Vec<ClusterEvent>) {
        self.uids.set(network_kind_name(self.kind), key.clone(), None);
        out.push(ClusterEvent::NetworkDeleted { key, kind: self.kind });
    }
}

impl Tracker for NetworkTracker {
    type Obj = DynamicObject;

    fn resource(&self) -> &'static str {
        match self.kind {
            NetworkKind::Nad => "networkattachmentdefinitions",
            NetworkKind::SpiderMultusConfig => "spidermultusconfigs",
        }
    }

    /// Spiderpool is optional; Multus (and so the NAD CRD) is a prerequisite: without it the
    /// controller stays not-ready and says why.
    fn optional(&self) -> bool {
        self.kind == NetworkKind::SpiderMultusConfig
    }

    fn apply(&mut self, obj: DynamicObject, out: &mut Vec<ClusterEvent>) {
        let Some(key) = network_key(&obj.metadata) else { return };
        self.keys.saw(&key);
        self.keys.known.insert(key.clone());
        self.uids.set(network_kind_name(self.kind), key.clone(), obj.metadata.uid.clone());
        out.push(network_event(self.kind, key, &obj));
    }

    fn delete(&mut self, obj: DynamicObject, out: &mut Vec<ClusterEvent>) {
        let Some(key) = network_key(&obj.metadata) else { return };
        if self.keys.known.remove(&key) {
            self.deleted(key, out);
        }
    }

    fn list_started(&mut self) {
        self.keys.list_started();
    }

    fn list_done(&mut self, out: &mut Vec<ClusterEvent>) {
        for key in self.keys.list_done() {
            self.deleted(key, out);
        }
    }
}

/// The ownership ledger: one claim per pod, keyed by the pod's UID.
#[derive(Default)]
struct ClaimTracker {
    keys: Keys<PodUid>,
    /// Keyed by object name (the pod's UID), as the writer patches it.
    cache: Arc<WatchCache>,
}

impl Tracker for ClaimTracker {
    type Obj = DynamicObject;

    fn resource(&self) -> &'static str {
        "guidclaims"
    }

    fn apply(&mut self, obj: DynamicObject, out: &mut Vec<ClusterEvent>) {
        let Some(claim) = claim_from_object(&obj) else { return };
        self.cache.claim_seen(&obj.metadata);
        self.keys.saw(&claim.pod_uid);
        self.keys.known.insert(claim.pod_uid.clone());
        out.push(ClusterEvent::ClaimApplied(claim));
    }

    fn delete(&mut self, obj: DynamicObject, out: &mut Vec<ClusterEvent>) {
        if let Some(name) = obj.metadata.name.as_deref() {
            self.cache.claim_gone(&PodUid::new(name));
        }
        let Some(claim) = claim_from_object(&obj) else { return };
        if self.keys.known.remove(&claim.pod_uid) {
            out.push(ClusterEvent::ClaimDeleted { pod_uid: claim.pod_uid });
        }
    }

    fn list_started(&mut self) {
        self.keys.list_started();
    }

    fn list_done(&mut self, out: &mut Vec<ClusterEvent>) {
        for pod_uid in self.keys.list_done() {
            self.cache.claim_gone(&pod_uid);
            out.push(ClusterEvent::ClaimDeleted { pod_uid });
        }
    }
}

/// Cluster-scoped objects known by name (nodes, namespaces): the same bookkeeping, with the
/// events of their kind.
struct NamedTracker<K> {
    resource: &'static str,
    keys: Keys<String>,
    applied: fn(&PartialObjectMeta<K>) -> Option<ClusterEvent>,
    deleted: fn(String) -> ClusterEvent,
}

impl<K> NamedTracker<K> {
    fn new(
        resource: &'static str,
        applied: fn(&PartialObjectMeta<K>) -> Option<ClusterEvent>,
        deleted: fn(String) -> ClusterEvent,
    ) -> NamedTracker<K> {
        NamedTracker { resource, keys: Keys::default(), applied, deleted }
    }
}

fn nodes_tracker() -> NamedTracker<Node> {
    NamedTracker::new("nodes", node_event, |name| ClusterEvent::NodeDeleted { name })
}

fn namespaces_tracker() -> NamedTracker<Namespace> {
    NamedTracker::new("namespaces", namespace_event, |name| ClusterEvent::NamespaceDeleted { name })
}

impl<K: Send + 'static> Tracker for NamedTracker<K> {
    type Obj = PartialObjectMeta<K>;

    fn resource(&self) -> &'static str {
        self.resource
    }

    fn apply(&mut self, obj: PartialObjectMeta<K>, out: &mut Vec<ClusterEvent>) {
        if let (Some(ev), Some(name)) = ((self.applied)(&obj), obj.metadata.name.as_ref()) {
            self.keys.saw(name);
            self.keys.known.insert(name.clone());
            out.push(ev);
        }
    }

    fn delete(&mut self, obj: PartialObjectMeta<K>, out: &mut Vec<ClusterEvent>) {
        let Some(name) = obj.metadata.name else { return };
        if self.keys.known.remove(&name) {
            out.push((self.deleted)(name));
        }
    }

    fn list_started(&mut self) {
        self.keys.list_started();
    }

    fn list_done(&mut self, out: &mut Vec<ClusterEvent>) {
        out.extend(self.keys.list_done().into_iter().map(self.deleted));
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
