//! An in-memory cluster: pods, NADs, nodes, namespaces and the ownership ledger, delivered to the
//! engine as the same `ClusterEvent`s the Kubernetes adapter produces, and changed by the engine
//! through the same `ClusterWriter` port (with a configurable API latency). Like Kubernetes'
//! garbage collector, deleting a pod marks its claim deleted, with or without a controller. It also records what the simulator
//! measures: configure latency, API requests, and writes that broke an invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::recording::Accepted;
use crate::engine::{
    Claim, ClaimOutcome, ClusterEvent, ClusterWriter, EventRecord, NetworkKind, PatchOutcome, PodMeta, PodPatch,
    PodPhase, PodUid, PodView, WriteError, apply_writes,
};
use crate::netdef::{NetworkKey, parse_nad};

/// A pod as the in-memory API server stores it.
#[derive(Clone, Debug)]
pub struct SimPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: PodPhase,
    pub networks: String,
    /// `fabric-sync.io/status`, as last written.
    pub status: Option<String>,
    /// When the pod became actionable, and when it was first written configured.
    pub created: Instant,
    pub configured_at: Option<Instant>,
    /// The status annotation holds a refusal.
    pub refused: bool,
}

#[derive(Clone, Debug)]
struct SimNad {
    annotations: BTreeMap<String, String>,
    config: String,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<String, SimPod>,
    nads: BTreeMap<NetworkKey, SimNad>,
    nodes: BTreeMap<String, Option<u16>>,
    /// Node labels (they route attachments to fabrics: `--fabrics N`).
    node_labels: BTreeMap<String, BTreeMap<String, String>>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The ledger: pod UID → claim.
    claims: BTreeMap<String, Claim>,
    events: Vec<EventRecord>,
    /// Pods written configured for a (GUID, pkey) UFM had not accepted.
    configured_before_fabric: u64,
}

struct Watcher {
    id: u64,
    sender: mpsc::Sender<ClusterEvent>,
    /// While the connection is down: what the watcher knew when it dropped.
    paused: Option<Known>,
}

#[derive(Clone, Default)]
struct Known {
    pods: BTreeSet<String>,
    nads: BTreeSet<NetworkKey>,
    claims: BTreeSet<String>,
}

/// API requests the engine made, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApiCounts {
    pub patch: u64,
    pub event: u64,
    /// Ledger writes (claim creates and updates, releases).
    pub ledger: u64,
    pub other: u64,
}

pub struct SimCluster {
    inner: Mutex<Inner>,
    counts: Mutex<ApiCounts>,
    api_latency: Duration,
    /// Watch streams, one per controller. Held while sending, so a controller's initial list
    /// and later changes arrive in order.
    watchers: tokio::sync::Mutex<Vec<Watcher>>,
    next_watcher: std::sync::atomic::AtomicU64,
    accepted: Arc<Accepted>,
    /// A write fails with a conflict this often (0..1), like a 409 under concurrent writers.
    conflict_rate: f64,
}

impl SimCluster {
    pub fn new(api_latency: Duration, accepted: Arc<Accepted>, conflict_rate: f64) -> SimCluster {
        SimCluster {
            inner: Mutex::new(Inner::default()),
            counts: Mutex::new(ApiCounts::default()),
            api_latency,
            watchers: tokio::sync::Mutex::new(Vec::new()),
            next_watcher: std::sync::atomic::AtomicU64::new(1),
            accepted,
            conflict_rate,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a watch stream for a (new) controller and delivers the initial list to it
    /// (namespaces, nodes, NADs, pods, then caches-synced), as a fresh informer would.
    /// Returns the stream's id for [`SimCluster::disconnect`].
    pub async fn connect(&self, sender: mpsc::Sender<ClusterEvent>) -> u64 {
        let id = self.next_watcher.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut watchers = self.watchers.lock().await;
        for ev in self.initial_list(&Known::default()) {
            if sender.send(ev).await.is_err() {
                break;
            }
        }
        watchers.push(Watcher { id, sender, paused: None });
        id
    }

    /// Closes a controller's watch stream (the controller is gone).
    pub async fn disconnect(&self, id: u64) {
        self.watchers.lock().await.retain(|w| w.id != id);
    }

    /// Every watch connection drops: nothing is delivered until [`SimCluster::resume_watches`].
    pub async fn drop_watches(&self) {
        let known = {
            let inner = self.lock();
            Known {
                pods: inner.pods.keys().cloned().collect(),
                nads: inner.nads.keys().cloned().collect(),
                claims: inner.claims.keys().cloned().collect(),
            }
        };
        for w in self.watchers.lock().await.iter_mut() {
            if w.paused.is_none() {
                w.paused = Some(known.clone());
            }
        }
    }

    /// Watches come back with a relist (their resource version expired: 410 Gone): deletions of
    /// what vanished meanwhile, the full list, then caches-synced — what the kube adapter emits.
    pub async fn resume_watches(&self) {
        let mut watchers = self.watchers.lock().await;
        for w in watchers.iter_mut() {
            let Some(known) = w.paused.take() else { continue };
            for ev in self.initial_list(&known) {
                if w.sender.send(ev).await.is_err() {
                    break;
                }
            }
        }
    }

    /// The full list, preceded by deletions of known objects that no longer exist.
    fn initial_list(&self, known: &Known) -> Vec<ClusterEvent> {
        let inner = self.lock();
        let mut out =
            Vec::with_capacity(inner.pods.len() + inner.claims.len() + inner.nads.len() + inner.nodes.len() + 8);
        for uid in known.pods.iter().filter(|u| !inner.pods.contains_key(*u)) {
            out.push(ClusterEvent::PodDeleted { uid: PodUid::new(uid) });
        }
        for uid in known.claims.iter().filter(|u| !inner.claims.contains_key(*u)) {
            out.push(ClusterEvent::ClaimDeleted { pod_uid: PodUid::new(uid) });
        }
        for key in known.nads.iter().filter(|k| !inner.nads.contains_key(*k)) {
            out.push(ClusterEvent::NetworkDeleted { key: key.clone(), kind: NetworkKind::Nad });
        }
        for claim in inner.claims.values() {
            out.push(ClusterEvent::ClaimApplied(claim.clone()));
        }
        for (name, labels) in &inner.namespaces {
            out.push(ClusterEvent::NamespaceApplied { name: name.clone(), labels: labels.clone() });
        }
        for (name, cap) in &inner.nodes {
            let labels = inner.node_labels.get(name).cloned().unwrap_or_default();
            out.push(ClusterEvent::NodeApplied {
                name: name.clone(),
                labels,
                pkey_capacity: *cap,
                hca_capacities: BTreeMap::new(),
            });
        }
        for (key, nad) in &inner.nads {
            out.push(nad_event(key, nad));
        }
        for pod in inner.pods.values() {
            out.push(ClusterEvent::PodApplied(view(pod)));
        }
        out.push(ClusterEvent::CachesSynced);
        out
    }

    async fn send(&self, ev: ClusterEvent) {
        let watchers = self.watchers.lock().await;
        for w in watchers.iter().filter(|w| w.paused.is_none()) {
            let _ = w.sender.send(ev.clone()).await;
        }
    }

    pub async fn set_namespace(&self, name: &str, labels: BTreeMap<String, String>) {
        self.lock().namespaces.insert(name.to_string(), labels.clone());
        self.send(ClusterEvent::NamespaceApplied { name: name.to_string(), labels }).await;
    }

    pub async fn set_node(&self, name: &str, pkey_capacity: Option<u16>) {
        self.set_node_labeled(name, BTreeMap::new(), pkey_capacity).await;
    }

    pub async fn set_node_labeled(&self, name: &str, labels: BTreeMap<String, String>, pkey_capacity: Option<u16>) {
        {
            let mut inner = self.lock();
            inner.nodes.insert(name.to_string(), pkey_capacity);
            inner.node_labels.insert(name.to_string(), labels.clone());
        }
        self.send(ClusterEvent::NodeApplied {
            name: name.to_string(),
            labels,
            pkey_capacity,
            hca_capacities: BTreeMap::new(),
        })
        .await;
    }

    pub async fn apply_nad(&self, namespace: &str, name: &str, annotations: BTreeMap<String, String>, config: &str) {
        let key = NetworkKey::new(namespace, name);
        let nad = SimNad { annotations, config: config.to_string() };
        let ev = nad_event(&key, &nad);
        self.lock().nads.insert(key, nad);
        self.send(ev).await;
    }

    pub async fn delete_nad(&self, namespace: &str, name: &str) {
        let key = NetworkKey::new(namespace, name);
        self.lock().nads.remove(&key);
        self.send(ClusterEvent::NetworkDeleted { key, kind: NetworkKind::Nad }).await;
    }

    pub async fn create_pod(&self, uid: &str, namespace: &str, name: &str, node: &str, networks: &str) {
        let pod = SimPod {
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: Some(node.to_string()),
            phase: PodPhase::Pending,
            networks: networks.to_string(),
            status: None,
            created: Instant::now(),
            configured_at: None,
            refused: false,
        };
        let ev = ClusterEvent::PodApplied(view(&pod));
        self.lock().pods.insert(uid.to_string(), pod);
        self.send(ev).await;
    }

    /// Creates many pods at once (uid, namespace, name, node, networks): their events go out
    /// back to back, as a watch streams a burst; built a chunk at a time to bound memory.
    pub async fn create_pods(&self, pods: &[(String, String, String, String, String)]) {
        let now = Instant::now();
        let watchers = self.watchers.lock().await;
        for chunk in pods.chunks(1024) {
            let events: Vec<ClusterEvent> = {
                let mut inner = self.lock();
                chunk
                    .iter()
                    .map(|(uid, namespace, name, node, networks)| {
                        let pod = SimPod {
                            uid: uid.clone(),
                            namespace: namespace.clone(),
                            name: name.clone(),
                            node: Some(node.clone()),
                            phase: PodPhase::Pending,
                            networks: networks.clone(),
                            status: None,
                            created: now,
                            configured_at: None,
                            refused: false,
                        };
                        let ev = ClusterEvent::PodApplied(view(&pod));
                        inner.pods.insert(uid.clone(), pod);
                        ev
                    })
                    .collect()
            };
            for w in watchers.iter().filter(|w| w.paused.is_none()) {
                for ev in &events {
                    let _ = w.sender.send(ev.clone()).await;
                }
            }
        }
    }

    /// Deletes a pod; its claim, held by the finalizer, is marked deleted (garbage collection).
    pub async fn delete_pod(&self, uid: &str) {
        let (gone, claim) = {
            let mut inner = self.lock();
            let gone = inner.pods.remove(uid).is_some();
            let claim = inner.claims.get_mut(uid).filter(|c| !c.deleting).map(|c| {
                c.deleting = true;
                c.clone()
            });
            (gone, claim)
        };
        if gone {
            self.send(ClusterEvent::PodDeleted { uid: PodUid::new(uid) }).await;
        }
        if let Some(c) = claim {
            self.send(ClusterEvent::ClaimApplied(c)).await;
        }
    }

    /// Every claim (the ledger as the API server holds it).
    pub fn claims(&self) -> Vec<Claim> {
        self.lock().claims.values().cloned().collect()
    }

    /// A tenant's pod created with any annotation it likes.
    pub async fn create_pod_with(&self, uid: &str, namespace: &str, name: &str, node: &str, networks: &str) {
        self.create_pod(uid, namespace, name, node, networks).await;
    }

    /// The claim of a pod (by UID).
    pub fn claim(&self, uid: &str) -> Option<Claim> {
        self.lock().claims.get(uid).cloned()
    }

    /// Rewrites a pod's networks annotation as a tenant would (an edit after creation).
    pub async fn edit_pod_networks(&self, uid: &str, networks: &str) {
        let ev = {
            let mut inner = self.lock();
            let Some(pod) = inner.pods.get_mut(uid) else { return };
            pod.networks = networks.to_string();
            ClusterEvent::PodApplied(view(pod))
        };
        self.send(ev).await;
    }

    /// The pod's containers exited (phase Succeeded).
    pub async fn finish_pod(&self, uid: &str) {
        let ev = {
            let mut inner = self.lock();
            let Some(pod) = inner.pods.get_mut(uid) else { return };
            pod.phase = PodPhase::Succeeded;
            ClusterEvent::PodApplied(view(pod))
        };
        self.send(ev).await;
    }

    /// Live (not finished) pods: (count, written configured at least once, status holds a refusal).
    /// (live, configured, refused) pods, in one pass under the lock (writers wait for it).
    pub fn progress(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        inner.pods.values().filter(|p| !p.phase.is_finished()).fold((0, 0, 0), |(n, c, r), p| {
            (n + 1, c + usize::from(p.configured_at.is_some()), r + usize::from(p.refused))
        })
    }

    /// Runs `f` over the pods without copying them (a 100k-pod cluster is large).
    pub fn with_pods<T>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &SimPod>) -> T) -> T {
        let inner = self.lock();
        f(&mut inner.pods.values())
    }

    pub fn pods(&self) -> Vec<SimPod> {
        self.lock().pods.values().cloned().collect()
    }

    pub fn nads(&self) -> Vec<(NetworkKey, BTreeMap<String, String>, String)> {
        self.lock().nads.iter().map(|(k, n)| (k.clone(), n.annotations.clone(), n.config.clone())).collect()
    }

    pub fn nodes(&self) -> BTreeMap<String, Option<u16>> {
        self.lock().nodes.clone()
    }

    pub fn node_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.lock().node_labels.clone()
    }

    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.clone()
    }

    pub fn counts(&self) -> ApiCounts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn configured_before_fabric(&self) -> u64 {
        self.lock().configured_before_fabric
    }

    fn count(&self, f: impl FnOnce(&mut ApiCounts)) {
        f(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn nad_event(key: &NetworkKey, nad: &SimNad) -> ClusterEvent {
    ClusterEvent::NetworkApplied {
        key: key.clone(),
        kind: NetworkKind::Nad,
        network: parse_nad(&key.namespace, &key.name, &nad.annotations, &nad.config),
    }
}

pub fn view(pod: &SimPod) -> PodView {
    PodView::new(
        PodMeta {
            uid: &pod.uid,
            namespace: &pod.namespace,
            name: &pod.name,
            node: pod.node.as_deref(),
            phase: pod.phase,
            deleting: false,
            host_network: false,
            created: 0,
        },
        Some(&pod.networks),
    )
    .with_status(pod.status.as_deref())
}

#[async_trait]
impl ClusterWriter for SimCluster {
    async fn patch_pod(&self, patch: &PodPatch) -> Result<PatchOutcome, WriteError> {
        self.count(|c| c.patch += 1);
        tokio::time::sleep(self.api_latency).await;
        if self.conflict_rate > 0.0 && rand::random::<f64>() < self.conflict_rate {
            return Err(WriteError::transient("409 Conflict: the object has been modified"));
        }
        let echo = {
            let mut inner = self.lock();
            let Some(pod) = inner.pods.get(patch.uid.as_str()) else {
                return Ok(PatchOutcome::PodGone);
            };
            let text = match apply_writes(&pod.namespace, &pod.networks, &patch.writes) {
                Ok(Ok(text)) => text,
                Ok(Err(outcome)) => return Ok(outcome),
                Err(e) => return Err(WriteError::permanent(e.to_string())),
            };
            let early: u64 = patch
                .writes
                .iter()
                .filter(|w| w.configured)
                .filter(|w| match (w.pkey, w.guid) {
                    (Some(p), Some(g)) => !self.accepted.contains(p, g),
                    _ => false,
                })
                .count() as u64;
            inner.configured_before_fabric += early;
            let Some(pod) = inner.pods.get_mut(patch.uid.as_str()) else {
                return Ok(PatchOutcome::PodGone);
            };
            pod.networks = text;
            if !patch.status.is_empty() {
                pod.status = serde_json::to_string(&patch.status).ok();
                pod.refused = patch.status.values().any(|v| v.starts_with("refused:"));
            }
            if patch.writes.iter().any(|w| w.configured) && pod.configured_at.is_none() {
                pod.configured_at = Some(Instant::now());
            }
            view(pod)
        };
        self.send(ClusterEvent::PodApplied(echo)).await;
        Ok(PatchOutcome::Patched)
    }

    async fn emit_event(&self, event: &EventRecord) -> Result<(), WriteError> {
        self.count(|c| c.event += 1);
        tokio::time::sleep(self.api_latency).await;
        self.lock().events.push(event.clone());
        Ok(())
    }

    async fn write_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        self.count(|c| c.ledger += 1);
        tokio::time::sleep(self.api_latency).await;
        let stored = {
            let mut inner = self.lock();
            let uid = claim.pod_uid.as_str();
            // Owned by a pod that is gone: the garbage collector marks it deleted at once.
            let deleting = !inner.pods.contains_key(uid) || inner.claims.get(uid).is_some_and(|c| c.deleting);
            let stored = Claim { deleting, ..claim.clone() };
            inner.claims.insert(uid.to_string(), stored.clone());
            stored
        };
        self.send(ClusterEvent::ClaimApplied(stored)).await;
        Ok(ClaimOutcome::Written)
    }

    async fn release_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        self.count(|c| c.ledger += 1);
        tokio::time::sleep(self.api_latency).await;
        if self.lock().claims.remove(claim.pod_uid.as_str()).is_some() {
            self.send(ClusterEvent::ClaimDeleted { pod_uid: claim.pod_uid.clone() }).await;
        }
        Ok(ClaimOutcome::Released)
    }
}

/// Latencies from actionable to configured, in milliseconds, for pods configured so far.
pub fn latencies_ms(pods: &[SimPod]) -> Vec<f64> {
    pods.iter().filter_map(|p| p.configured_at.map(|t| (t - p.created).as_secs_f64() * 1000.0)).collect()
}
