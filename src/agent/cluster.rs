//! The agent's view of the cluster: the [`AgentCluster`] seam (list this node's pods and
//! GuidClaims, patch the Node's inventory annotation, write the node's NodeFabricStatus, publish
//! Events about the Node) and its kube-rs implementation. Kept apart from the controller's
//! adapter on purpose: [`AGENT_API_CALLS`] lists the agent's few calls for RBAC, and every write
//! is to an object of its own node (the `fabric-sync-agent-node-scope` admission policy).

use std::path::Path;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::AgentError;
use super::claims::NODE_LABEL;
use super::status::{STATUS_GROUP, STATUS_KIND, STATUS_PLURAL, STATUS_VERSION, status_object};
use crate::engine::Claim;
use crate::kube::{EventNote, EventSender, claim_from_object, claim_resource};
use crate::wire::keys::AGENT_REPORTING_CONTROLLER;

/// (API group, resource, verb) of every call the agent makes; the DaemonSet's ClusterRole must
/// grant exactly these. Reads are cluster-wide in RBAC (narrowed by selectors); writes are
/// narrowed to the agent's own node by the `fabric-sync-agent-node-scope` admission policy.
pub const AGENT_API_CALLS: &[(&str, &str, &str)] = &[
    // This node's pods (field selector spec.nodeName).
    ("", "pods", "list"),
    // This node's GuidClaims (label fabric-sync.io/node), and one by name for a claim written
    // before that label.
    ("fabric-sync.io", "guidclaims", "list"),
    ("fabric-sync.io", "guidclaims", "get"),
    // The inventory annotation on its own Node.
    ("", "nodes", "patch"),
    // Its own NodeFabricStatus: merge-patched, created when missing.
    ("fabric-sync.io", "nodefabricstatuses", "patch"),
    ("fabric-sync.io", "nodefabricstatuses", "create"),
    // Events about its own Node, patched when they repeat.
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

/// `fabric-sync.io/v1alpha1` NodeFabricStatus.
pub fn status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(STATUS_GROUP, STATUS_VERSION, STATUS_KIND), STATUS_PLURAL)
}

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
    /// PascalCase, stable: `VfGuidProgrammed`, `VfGuidReset`, `VfGuidOfAnotherPod`, `VfGuidUnexplained`.
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

#[async_trait]
pub trait AgentCluster: Send + Sync {
    /// Pods with `spec.nodeName = node`.
    async fn list_pods(&self, node: &str) -> Result<Vec<AgentPod>, AgentError>;
    /// GuidClaims labelled with this node.
    async fn list_claims(&self, node: &str) -> Result<Vec<Claim>, AgentError>;
    /// One pod's GuidClaim (named after its UID), if it exists.
    async fn get_claim(&self, namespace: &str, pod_uid: &str) -> Result<Option<Claim>, AgentError>;
    /// Merge-patches one annotation of the Node; returns the Node's UID.
    async fn patch_node_annotation(&self, node: &str, key: &str, value: &str) -> Result<Option<String>, AgentError>;
    /// Makes the node's NodeFabricStatus hold `status` (created, owned by the Node, if missing).
    async fn write_fabric_status(
        &self,
        node: &str,
        node_uid: &str,
        status: &serde_json::Value,
    ) -> Result<(), AgentError>;
    async fn publish_event(&self, event: &AgentEvent) -> Result<(), AgentError>;
}

/// [`AgentCluster`] on a kube-rs client.
pub struct KubeAgentCluster {
    client: Client,
    events: EventSender,
}

impl KubeAgentCluster {
    /// Builds the client from `kubeconfig`, or infers it (in-cluster service account, then
    /// `KUBECONFIG`, then `~/.kube/config`). Install the crypto provider first.
    /// The client both binaries build the same way ([`crate::kube::client_config`]: the
    /// kubeconfig file, else in-cluster; a `User-Agent` naming the agent's node).
    pub async fn connect(kubeconfig: Option<&Path>, node: &str) -> Result<KubeAgentCluster, AgentError> {
        let err = |detail: String| AgentError::Kube { op: "connect", detail };
        let config =
            crate::kube::client_config(kubeconfig, &format!("agent {node}")).await.map_err(|e| err(e.to_string()))?;
        let client = Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(KubeAgentCluster::new(client, node))
    }

    pub fn new(client: Client, node: &str) -> KubeAgentCluster {
        KubeAgentCluster { events: EventSender::new(client.clone(), AGENT_REPORTING_CONTROLLER, node), client }
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

    async fn list_claims(&self, node: &str) -> Result<Vec<Claim>, AgentError> {
        let claims: Api<DynamicObject> = Api::all_with(self.client.clone(), &claim_resource());
        let list = claims
            .list(&ListParams::default().labels(&format!("{NODE_LABEL}={node}")))
            .await
            .map_err(|e| kube_err("list guidclaims", e))?;
        Ok(list.items.iter().filter_map(claim_from_object).collect())
    }

    async fn get_claim(&self, namespace: &str, pod_uid: &str) -> Result<Option<Claim>, AgentError> {
        let claims: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &claim_resource());
        match claims.get_opt(pod_uid).await {
            Ok(c) => Ok(c.as_ref().and_then(claim_from_object)),
            Err(e) => Err(kube_err("get guidclaim", e)),
        }
    }

    async fn patch_node_annotation(&self, node: &str, key: &str, value: &str) -> Result<Option<String>, AgentError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(node, &PatchParams::default(), &annotation_patch(key, value))
            .await
            .map(|n| n.metadata.uid)
            .map_err(|e| kube_err("patch node", e))
    }

    async fn write_fabric_status(
        &self,
        node: &str,
        node_uid: &str,
        status: &serde_json::Value,
    ) -> Result<(), AgentError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &status_resource());
        let object = status_object(node, node_uid, status);
        let patch = Patch::Merge(json!({"metadata": {"ownerReferences": object["metadata"]["ownerReferences"]},
                                        "status": status}));
        match api.patch(node, &PatchParams::default(), &patch).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err("patch nodefabricstatus", e)),
        }
        let obj: DynamicObject = serde_json::from_value(object)
            .map_err(|e| AgentError::Kube { op: "build nodefabricstatus", detail: e.to_string() })?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            // Created meanwhile (a restart racing itself): the next pass patches it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(kube_err("create nodefabricstatus", e)),
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
        let note = EventNote {
            regarding: reference,
            warning: event.warning,
            reason: event.reason,
            action: event.action,
            note: &event.note,
        };
        self.events.send(&note).await.map_err(|e| kube_err("publish event", e))
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
    }
}
