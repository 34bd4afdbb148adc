//! The controller's mirror of the node agents' reports: it watches NodeFabricStatus objects
//! (`fabric-sync.io/v1alpha1`, one per node, written only by that node's agent) and turns what
//! users need into Events on their pods: a VF carrying another GUID than the pod's claim
//! (`VfGuidMismatch`), a pkey that did not reach the pkey table in time (`FabricReadyTimeout`),
//! and fabric readiness (`FabricReady`). A state is mirrored once, when it appears; Events go
//! through the fenced writer (only the leader writes); an entry about a pod that is not on the
//! reporting node is ignored (an agent speaks for its own node only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::watch;

use crate::agent::status_resource;
use crate::engine::{ClusterWriter, EventObject, EventRecord, EventType, ObjectKey, ObjectKind, Reason};

/// (pod UID, attachment label, reason): one mirrored state.
pub type MirrorKey = (String, String, Reason);

/// What one NodeFabricStatus asks to be mirrored, by key.
pub fn mirror_records(node: &str, status: &Value) -> BTreeMap<MirrorKey, EventRecord> {
    let mut out = BTreeMap::new();
    for a in status["attachments"].as_array().into_iter().flatten() {
        let (Some(pod), Some(uid), Some(label)) = (a["pod"].as_str(), a["podUid"].as_str(), a["attachment"].as_str())
        else {
            continue;
        };
        let Some((namespace, name)) = pod.split_once('/') else { continue };
        let mut found = Vec::new();
        if a["verdict"] == "mismatch" {
            found.push((Reason::VfGuidMismatch, EventType::Warning, a["message"].as_str().unwrap_or_default()));
        }
        let ready = &a["fabricReady"];
        match ready["reason"].as_str() {
            Some("FabricReadyTimeout") => found.push((
                Reason::FabricReadyTimeout,
                EventType::Warning,
                ready["message"].as_str().unwrap_or_default(),
            )),
            Some("FabricReady") => {
                found.push((Reason::FabricReady, EventType::Normal, ready["message"].as_str().unwrap_or_default()))
            }
            _ => {}
        }
        for (reason, event_type, message) in found {
            let record = EventRecord {
                object: EventObject {
                    kind: ObjectKind::Pod,
                    key: ObjectKey { namespace: namespace.to_string(), name: name.to_string() },
                    uid: Some(uid.to_string()),
                },
                event_type,
                reason,
                message: format!("{label}: node {node}: {message}"),
            };
            out.insert((uid.to_string(), label.to_string(), reason), record);
        }
    }
    // Another VF carries a pod's GUID (a copy to join its partition): told to the owner.
    for f in status["foreignVfs"].as_array().into_iter().flatten() {
        let (Some(owner), Some(uid), Some(vf)) = (f["ownerPod"].as_str(), f["ownerPodUid"].as_str(), f["vf"].as_str())
        else {
            continue;
        };
        let Some((namespace, name)) = owner.split_once('/') else { continue };
        let record = EventRecord {
            object: EventObject {
                kind: ObjectKind::Pod,
                key: ObjectKey { namespace: namespace.to_string(), name: name.to_string() },
                uid: Some(uid.to_string()),
            },
            event_type: EventType::Warning,
            reason: Reason::VfGuidMismatch,
            message: format!(
                "node {node}: {} ({})",
                f["message"].as_str().unwrap_or_default(),
                f["action"].as_str().unwrap_or("reported")
            ),
        };
        out.insert((uid.to_string(), format!("vf {vf}"), Reason::VfGuidMismatch), record);
    }
    out
}

/// The states already mirrored, per node.
#[derive(Default)]
pub struct Mirror {
    seen: HashMap<String, BTreeSet<MirrorKey>>,
}

impl Mirror {
    /// The records of states that are new in this status (a state that went away and comes
    /// back is new again).
    pub fn apply(&mut self, node: &str, status: &Value) -> Vec<EventRecord> {
        let now = mirror_records(node, status);
        let before = self.seen.insert(node.to_string(), now.keys().cloned().collect()).unwrap_or_default();
        now.into_iter().filter(|(k, _)| !before.contains(k)).map(|(_, r)| r).collect()
    }

    pub fn remove(&mut self, node: &str) {
        self.seen.remove(node);
    }
}

/// Whether `pod` (as read now) is the pod `uid` and runs on `node`.
pub fn pod_is_on(pod: &Pod, node: &str, uid: &str) -> bool {
    pod.metadata.uid.as_deref() == Some(uid) && pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Watches NodeFabricStatuses until the task is dropped. A cluster without the CRD only logs
/// (the watcher retries with back-off).
pub async fn run_mirror(client: kube::Client, writer: Arc<dyn ClusterWriter>, leader: watch::Receiver<bool>) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &status_resource());
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut mirror = Mirror::default();
    while let Some(event) = stream.next().await {
        let (obj, deleted) = match event {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => (o, false),
            Ok(watcher::Event::Delete(o)) => (o, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "watching NodeFabricStatuses");
                continue;
            }
        };
        let Some(node) = obj.metadata.name.clone() else { continue };
        if deleted {
            mirror.remove(&node);
            continue;
        }
        let records = mirror.apply(&node, &obj.data["status"]);
        if !*leader.borrow() {
            // The leader mirrors; a follower only keeps track.
            continue;
        }
        for r in records {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &r.object.key.namespace);
            let uid = r.object.uid.clone().unwrap_or_default();
            match pods.get_opt(&r.object.key.name).await {
                Ok(Some(p)) if pod_is_on(&p, &node, &uid) => {}
                Ok(_) => {
                    tracing::warn!(node = %node, pod = %format!("{}/{}", r.object.key.namespace, r.object.key.name),
                        "NodeFabricStatus names a pod that is not on that node; not mirrored");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a pod to mirror its node's report");
                    continue;
                }
            }
            if let Err(e) = writer.emit_event(&r).await {
                tracing::warn!(error = %e, reason = %r.reason, "mirroring a node agent finding");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(verdict: &str, ready: &str) -> Value {
        json!({"attachments": [{
            "pod": "t/trainer-0", "podUid": "uid-1", "attachment": "t/ib@net1", "verdict": verdict,
            "message": "mismatch: VF 0000:3b:00.2 has port GUID 02:00:00:00:00:00:00:01, assigned 02:00:00:00:00:00:00:09",
            "fabricReady": {"reason": ready, "message": "pkey 0x1000 is not in mlx5_4 port 1"},
        }]})
    }

    #[test]
    fn each_state_is_mirrored_once_when_it_appears_and_again_if_it_comes_back() {
        let mut m = Mirror::default();
        let first = m.apply("gpu-1", &status("mismatch", "FabricReadyTimeout"));
        let reasons: Vec<(Reason, EventType)> = first.iter().map(|r| (r.reason, r.event_type)).collect();
        assert_eq!(
            reasons,
            [(Reason::VfGuidMismatch, EventType::Warning), (Reason::FabricReadyTimeout, EventType::Warning)]
        );
        assert_eq!(first[0].object.key, ObjectKey { namespace: "t".into(), name: "trainer-0".into() });
        assert_eq!(first[0].object.uid.as_deref(), Some("uid-1"));
        assert!(first[1].message.starts_with("t/ib@net1: node gpu-1: pkey 0x1000 is not in"), "{}", first[1].message);
        assert!(m.apply("gpu-1", &status("mismatch", "FabricReadyTimeout")).is_empty(), "no repeat");
        let fixed = m.apply("gpu-1", &status("verified", "FabricReady"));
        assert_eq!(fixed.iter().map(|r| r.reason).collect::<Vec<_>>(), [Reason::FabricReady]);
        let again = m.apply("gpu-1", &status("mismatch", "FabricReady"));
        assert_eq!(again.iter().map(|r| r.reason).collect::<Vec<_>>(), [Reason::VfGuidMismatch]);
        assert!(m.apply("gpu-2", &json!({"attachments": [{"pod": "no-slash"}]})).is_empty());
        let copied = json!({"foreignVfs": [{"vf": "0000:5e:00.1", "guid": "02:00:00:00:00:00:00:01",
            "reason": "VfGuidOfAnotherPod", "message": "VF 0000:5e:00.1 carries 02:00:00:00:00:00:00:01", "action": "reset",
            "ownerPod": "t/trainer-0", "ownerPodUid": "uid-1"}]});
        let told = m.apply("gpu-1", &copied);
        assert_eq!(
            (told.len(), told[0].reason, told[0].object.uid.as_deref()),
            (1, Reason::VfGuidMismatch, Some("uid-1"))
        );
        assert_eq!(told[0].message, "node gpu-1: VF 0000:5e:00.1 carries 02:00:00:00:00:00:00:01 (reset)");
    }

    #[test]
    fn only_the_named_pod_on_the_reporting_node_is_mirrored() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "trainer-0", "namespace": "t", "uid": "uid-1"},
            "spec": {"nodeName": "gpu-1", "containers": []}}))
        .unwrap();
        assert!(pod_is_on(&pod, "gpu-1", "uid-1"));
        assert!(!pod_is_on(&pod, "gpu-2", "uid-1"), "another node's agent may not speak for it");
        assert!(!pod_is_on(&pod, "gpu-1", "uid-2"), "a recreated pod is another pod");
    }
}
