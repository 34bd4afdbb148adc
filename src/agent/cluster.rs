//! The agent's view of the cluster: the [`AgentCluster`] seam (list this node's pods, patch the
//! Node and pod annotations, publish Events) and its kube-rs implementation. Kept apart from the
//! controller's adapter on purpose: the agent needs four calls, and [`AGENT_API_CALLS`] lists
//! them for RBAC.

use std::path::Path;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Config};
use serde_json::json;

use super::AgentError;

/// (API group, resource, verb) of every call the agent makes; the DaemonSet's ClusterRole must
/// grant exactly these.
pub const AGENT_API_CALLS: &[(&str, &str, &str)] = &[
    ("", "pods", "list"),
    ("", "pods", "patch"),
    ("", "nodes", "patch"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

/// The parts of a pod the agent reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Phase `Succeeded` or `Failed`: its VFs are released.
    pub finished: bool,
    /// Has a deletion timestamp: its VFs are still held until the CNI's DEL.
    pub deleting: bool,
    /// `k8s.v1.cni.cncf.io/networks`.
    pub networks: Option<String>,
    /// `k8s.v1.cni.cncf.io/network-status`.
    pub network_status: Option<String>,
    /// `fabric-sync.io/agent-status`, as last written.
    pub agent_status: Option<String>,
}

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTarget {
    Pod { namespace: String, name: String, uid: String },
    Node { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEvent {
    pub target: EventTarget,
    pub warning: bool,
    /// PascalCase, stable: `VfGuidMismatch`, `VfGuidProgrammed`, `VfGuidReset`.
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

#[async_trait]
pub trait AgentCluster: Send + Sync {
    /// Pods with `spec.nodeName = node`.
    async fn list_pods(&self, node: &str) -> Result<Vec<AgentPod>, AgentError>;
    /// Merge-patches one annotation of the Node.
    async fn patch_node_annotation(&self, node: &str, key: &str, value: &str) -> Result<(), AgentError>;
    /// Merge-patches one annotation of a pod. A pod that is gone is not an error.
    async fn patch_pod_annotation(&self, namespace: &str, name: &str, key: &str, value: &str)
    -> Result<(), AgentError>;
    async fn publish_event(&self, event: &AgentEvent) -> Result<(), AgentError>;
}

/// [`AgentCluster`] on a kube-rs client.
pub struct KubeAgentCluster {
    client: Client,
    recorder: Recorder,
}

impl KubeAgentCluster {
    /// Builds the client from `kubeconfig`, or infers it (in-cluster service account, then
    /// `KUBECONFIG`, then `~/.kube/config`). Install the crypto provider first.
    pub async fn connect(kubeconfig: Option<&Path>, node: &str) -> Result<KubeAgentCluster, AgentError> {
        let err = |detail: String| AgentError::Kube { op: "connect", detail };
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| err(e.to_string()))?
            }
            None => Config::infer().await.map_err(|e| err(e.to_string()))?,
        };
        let client = Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(KubeAgentCluster::new(client, node))
    }

    pub fn new(client: Client, node: &str) -> KubeAgentCluster {
        let reporter = Reporter { controller: "fabric-sync-agent".into(), instance: Some(node.to_string()) };
        KubeAgentCluster { recorder: Recorder::new(client.clone(), reporter), client }
    }
}

fn annotation_patch(key: &str, value: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "metadata": { "annotations": { key: value } } }))
}

fn kube_err(op: &'static str, e: kube::Error) -> AgentError {
    AgentError::Kube { op, detail: e.to_string() }
}

#[async_trait]
impl AgentCluster for KubeAgentCluster {
    async fn list_pods(&self, node: &str) -> Result<Vec<AgentPod>, AgentError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| kube_err("list pods", e))?;
        Ok(list.items.into_iter().map(agent_pod).collect())
    }

    async fn patch_node_annotation(&self, node: &str, key: &str, value: &str) -> Result<(), AgentError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(node, &PatchParams::default(), &annotation_patch(key, value))
            .await
            .map(|_| ())
            .map_err(|e| kube_err("patch node", e))
    }

    async fn patch_pod_annotation(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), AgentError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match pods.patch(name, &PatchParams::default(), &annotation_patch(key, value)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(kube_err("patch pod", e)),
        }
    }

    async fn publish_event(&self, event: &AgentEvent) -> Result<(), AgentError> {
        let reference = match &event.target {
            EventTarget::Pod { namespace, name, uid } => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                uid: Some(uid.clone()),
                ..ObjectReference::default()
            },
            EventTarget::Node { name } => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(name.clone()),
                ..ObjectReference::default()
            },
        };
        let ev = Event {
            type_: if event.warning { EventType::Warning } else { EventType::Normal },
            reason: event.reason.into(),
            // Events take at most 1 kB of note.
            note: Some(event.note.chars().take(1000).collect()),
            action: event.action.into(),
            secondary: None,
        };
        self.recorder.publish(&ev, &reference).await.map_err(|e| kube_err("publish event", e))
    }
}

fn agent_pod(p: Pod) -> AgentPod {
    let meta = p.metadata;
    let mut annotations = meta.annotations.unwrap_or_default();
    let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
    AgentPod {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        uid: meta.uid.unwrap_or_default(),
        finished: phase == "Succeeded" || phase == "Failed",
        deleting: meta.deletion_timestamp.is_some(),
        networks: annotations.remove(crate::netdef::NETWORKS_ANNOTATION),
        network_status: annotations.remove(crate::netdef::NETWORK_STATUS_ANNOTATION),
        agent_status: annotations.remove(super::verify::AGENT_STATUS_ANNOTATION),
    }
}
