//! The engine's `ClusterWriter` over the Kubernetes API: ledger claims (ledger.rs), pod patches
//! and Events. A pod patch is computed from the pod as the watcher last saw it (cache.rs),
//! rewrites only our keys (the networks annotation through `apply_writes`, and
//! `fabric-sync.io/status`), and is sent as one JSON merge patch carrying the `resourceVersion`
//! (and UID) it was computed from: no read on the happy path. A concurrent change answers 409
//! and the patch is recomputed from one fresh read; a pod the cache does not hold is read once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::core::ObjectMeta;
use serde_json::{Value, json};

use super::cache::{PodBase, WatchCache};
use super::events::EventPublisher;
use super::resources::SlimPod;
use crate::engine::{
    AttachmentRequest, Claim, ClaimOutcome, ClusterWriter, ErrorClass, EventRecord, PatchOutcome, PodPatch,
    STATUS_ANNOTATION, WriteError, apply_writes,
};
use crate::netdef::{NETWORKS_ANNOTATION, parse_networks};
use crate::ops::Metrics;

/// Reads and patches per pod write before giving up (the engine retries later).
pub const MAX_CONFLICT_RETRIES: usize = 5;

/// Pod patches, Events and node annotations through one `kube::Client`.
pub struct KubeWriter {
    client: Client,
    events: EventPublisher,
    metrics: Arc<Metrics>,
    /// Without one (tests of the writer alone), every write reads first.
    cache: Option<Arc<WatchCache>>,
}

impl KubeWriter {
    pub fn new(client: Client, events: EventPublisher, metrics: Arc<Metrics>) -> KubeWriter {
        KubeWriter { client, events, metrics, cache: None }
    }

    /// Writes are computed from what the watchers filling `cache` saw.
    pub fn with_cache(mut self, cache: Arc<WatchCache>) -> KubeWriter {
        self.cache = Some(cache);
        self
    }

    /// The pod as it is now (one GET); `None` when it is gone.
    async fn read_pod(&self, api: &Api<SlimPod>, name: &str) -> Result<Option<PodBase>, WriteError> {
        Ok(api.get_opt(name).await.map_err(write_error)?.map(|p| PodBase::from_meta(&p.metadata)))
    }
}

/// What a pod patch comes to, given the pod as read.
#[derive(Debug, PartialEq)]
pub enum PodChange {
    /// Our keys already hold these values.
    Unchanged,
    /// Not applicable: the attachment left the annotation.
    Outcome(PatchOutcome),
    /// The merge patch to send, and how many attachments it newly marks configured.
    Patch { body: Value, newly_configured: usize },
}

/// Computes the merge patch for `patch` against the pod's current metadata (pure).
pub fn pod_change(meta: &ObjectMeta, patch: &PodPatch) -> Result<PodChange, WriteError> {
    pod_change_from(&PodBase::from_meta(meta), patch)
}

/// Computes the merge patch for `patch` against `base` (pure): our keys only, with `base`'s
/// resourceVersion and the pod's UID as preconditions.
pub fn pod_change_from(base: &PodBase, patch: &PodPatch) -> Result<PodChange, WriteError> {
    let mut ours = serde_json::Map::new();
    let mut newly_configured = 0;
    if !patch.writes.is_empty() {
        let Some(current) = base.networks.as_ref() else {
            return Ok(PodChange::Outcome(PatchOutcome::AttachmentGone));
        };
        let text = match apply_writes(&patch.pod.namespace, current, &patch.writes) {
            Ok(Ok(text)) => text,
            Ok(Err(outcome)) => return Ok(PodChange::Outcome(outcome)),
            Err(e) => return Err(WriteError::permanent(format!("pod {}: {e}", patch.pod))),
        };
        if !same_json(&text, current) {
            newly_configured = newly_configured_count(&patch.pod.namespace, current, patch);
            ours.insert(NETWORKS_ANNOTATION.to_string(), Value::String(text));
        }
    }
    if !patch.status.is_empty() {
        let status =
            serde_json::to_string(&patch.status).map_err(|e| WriteError::permanent(format!("encoding status: {e}")))?;
        if base.status.as_ref() != Some(&status) {
            ours.insert(STATUS_ANNOTATION.to_string(), Value::String(status));
        }
    }
    if ours.is_empty() {
        return Ok(PodChange::Unchanged);
    }
    let body = json!({"metadata": {"uid": patch.uid.as_str(), "resourceVersion": base.resource_version,
                                   "annotations": ours}});
    Ok(PodChange::Patch { body, newly_configured })
}

/// Equal as JSON (key order aside); text that is not JSON (the comma form) is never equal.
fn same_json(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes whose attachment was not configured in `before`.
fn newly_configured_count(namespace: &str, before: &str, patch: &PodPatch) -> usize {
    let Ok(elements) = parse_networks(before) else { return 0 };
    let requests = AttachmentRequest::from_selections(namespace, &elements);
    patch
        .writes
        .iter()
        .filter(|w| !requests.iter().any(|r| r.network == w.network && r.slot == w.slot && r.configured))
        .count()
}

/// Maps a client error to the engine's: server trouble and throttling are retryable,
/// refusals (403, 422…) are not.
pub(crate) fn write_error(e: kube::Error) -> WriteError {
    let class = match &e {
        kube::Error::Api(s) if s.code == 409 || s.code == 429 || s.code >= 500 => ErrorClass::Transient,
        kube::Error::Api(s) if s.code == 401 => ErrorClass::Auth,
        // 400, 403 (RBAC, an admission policy), 404 of a resource, 422 (too large, invalid).
        kube::Error::Api(_) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    };
    WriteError { class, message: e.to_string() }
}

fn age(base: &PodBase) -> Option<Duration> {
    let d = Timestamp::now().duration_since(base.created?);
    Duration::try_from(d).ok()
}

#[async_trait]
impl ClusterWriter for KubeWriter {
    async fn write_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        super::ledger::write_claim(&self.client, self.cache.as_deref(), claim).await
    }

    async fn release_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        super::ledger::release_claim(&self.client, claim).await
    }

    async fn patch_pod(&self, patch: &PodPatch) -> Result<PatchOutcome, WriteError> {
        let api: Api<SlimPod> = Api::namespaced(self.client.clone(), &patch.pod.namespace);
        let cached = self.cache.as_ref().and_then(|c| c.pod(&patch.uid));
        let mut base = match cached {
            Some(b) => b,
            None => match self.read_pod(&api, &patch.pod.name).await? {
                Some(b) => b,
                None => return Ok(PatchOutcome::PodGone),
            },
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            if base.uid.as_deref().is_some_and(|u| u != patch.uid.as_str()) {
                return Ok(PatchOutcome::PodGone);
            }
            let (body, newly_configured) = match pod_change_from(&base, patch)? {
                PodChange::Unchanged => return Ok(PatchOutcome::Patched),
                PodChange::Outcome(o) => return Ok(o),
                PodChange::Patch { body, newly_configured } => (body, newly_configured),
            };
            match api.patch(&patch.pod.name, &PatchParams::default(), &Patch::Merge(&body)).await {
                Ok(written) => {
                    if let Some(cache) = &self.cache {
                        cache.pod_written(PodBase::from_meta(&written.metadata));
                    }
                    if let Some(age) = age(&base) {
                        for _ in 0..newly_configured {
                            self.metrics.pod_configured(age);
                        }
                    }
                    return Ok(PatchOutcome::Patched);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.metrics.pod_patch_conflict();
                    tracing::debug!(pod = %patch.pod, "pod changed meanwhile (409); recomputing the patch from a fresh read");
                    base = match self.read_pod(&api, &patch.pod.name).await? {
                        Some(b) => b,
                        None => return Ok(PatchOutcome::PodGone),
                    };
                    if let Some(cache) = &self.cache {
                        cache.pod_written(base.clone());
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(PatchOutcome::PodGone),
                Err(e) => return Err(write_error(e)),
            }
        }
        Err(WriteError::transient(format!(
            "pod {}: still conflicting after {MAX_CONFLICT_RETRIES} attempts",
            patch.pod
        )))
    }

    async fn emit_event(&self, event: &EventRecord) -> Result<(), WriteError> {
        self.events.publish(event).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::{AttachmentWrite, ObjectKey, PodUid, Slot};
    use crate::netdef::{GuidVia, NetworkKey};

    fn meta(networks: Option<&str>, status: Option<&str>) -> ObjectMeta {
        let mut a = BTreeMap::from([("keep.example.com/x".to_string(), "1".to_string())]);
        if let Some(n) = networks {
            a.insert(NETWORKS_ANNOTATION.into(), n.into());
        }
        if let Some(s) = status {
            a.insert(STATUS_ANNOTATION.into(), s.into());
        }
        ObjectMeta { resource_version: Some("42".into()), annotations: Some(a), ..ObjectMeta::default() }
    }

    fn patch(writes: bool) -> PodPatch {
        let w = AttachmentWrite {
            network: NetworkKey::new("t", "ib"),
            slot: Slot::Occurrence(0),
            guid: Some("02:00:00:00:00:00:00:0a".parse().unwrap()),
            guid_via: GuidVia::CniArgs,
            configured: true,
            pkey: Some("0x10".parse().unwrap()),
        };
        PodPatch {
            uid: PodUid::new("u"),
            pod: ObjectKey { namespace: "t".into(), name: "p".into() },
            writes: if writes { vec![w] } else { vec![] },
            status: BTreeMap::from([("t/ib".to_string(), "configured".to_string())]),
        }
    }

    #[test]
    fn the_patch_carries_the_resource_version_and_only_our_keys() {
        let PodChange::Patch { body, newly_configured } =
            pod_change(&meta(Some(r#"[{"name":"ib"}]"#), None), &patch(true)).unwrap()
        else {
            panic!("expected a patch");
        };
        assert_eq!(newly_configured, 1);
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        let ann = body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(ann.len(), 2);
        let net: Value = serde_json::from_str(ann[NETWORKS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(net[0]["cni-args"]["guid"], "02:00:00:00:00:00:00:0a");
        assert_eq!(ann[STATUS_ANNOTATION], r#"{"t/ib":"configured"}"#);
    }

    #[test]
    fn nothing_to_change_sends_nothing() {
        let configured = r#"[{"name":"ib","cni-args":{"guid":"02:00:00:00:00:00:00:0a","mellanox.infiniband.app":"configured","pkey":"0x10"}}]"#;
        let m = meta(Some(configured), Some(r#"{"t/ib":"configured"}"#));
        assert_eq!(pod_change(&m, &patch(true)).unwrap(), PodChange::Unchanged);
    }

    #[test]
    fn a_status_only_patch_leaves_the_networks_annotation_alone() {
        let PodChange::Patch { body, newly_configured } = pod_change(&meta(None, None), &patch(false)).unwrap() else {
            panic!("expected a patch");
        };
        assert_eq!(newly_configured, 0);
        assert!(body["metadata"]["annotations"].get(NETWORKS_ANNOTATION).is_none());
    }

    #[test]
    fn a_missing_attachment_is_reported_not_written() {
        assert_eq!(
            pod_change(&meta(None, None), &patch(true)).unwrap(),
            PodChange::Outcome(PatchOutcome::AttachmentGone)
        );
        let other = meta(Some(r#"[{"name":"other"}]"#), None);
        assert_eq!(pod_change(&other, &patch(true)).unwrap(), PodChange::Outcome(PatchOutcome::AttachmentGone));
    }
}
