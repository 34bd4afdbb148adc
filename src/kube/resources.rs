//! The Kubernetes objects the controller reads, and their conversion into the engine's
//! `ClusterEvent`s: pure functions, no I/O. Pods are decoded into [`SlimPod`] (only the fields
//! the engine needs survive deserialisation) and dropped as soon as their `PodView` is built.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::{ObjectMeta, PartialObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{ClusterEvent, NetworkKind, PodMeta, PodPhase, PodView, STATUS_ANNOTATION};
use crate::netdef::{IbNetwork, NETWORKS_ANNOTATION, NetdefError, NetworkKey, parse_nad, parse_smc};

pub use crate::wire::keys::INVENTORY_ANNOTATION;

/// A pod as the watcher decodes it. Unknown fields are skipped by serde, so a 100k-pod list
/// never holds containers, volumes or conditions.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SlimPod {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SlimPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SlimPodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SlimPodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition.
pub fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

/// `spiderpool.spidernet.io/v2beta1` SpiderMultusConfig.
pub fn smc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("spiderpool.spidernet.io", "v2beta1", "SpiderMultusConfig"),
        "spidermultusconfigs",
    )
}

/// The engine's view of a pod; `None` when the pod has no UID, name or namespace (not a
/// real pod object).
pub fn pod_view(pod: &SlimPod) -> Option<PodView> {
    let m = &pod.metadata;
    let uid = m.uid.as_deref().filter(|u| !u.is_empty())?;
    let name = m.name.as_deref()?;
    let namespace = m.namespace.as_deref()?;
    let spec = pod.spec.as_ref();
    let meta = PodMeta {
        uid,
        namespace,
        name,
        node: spec.and_then(|s| s.node_name.as_deref()),
        phase: PodPhase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
        deleting: m.deletion_timestamp.is_some(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        created: m.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
    };
    let annotation = |key: &str| m.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str);
    Some(PodView::new(meta, annotation(NETWORKS_ANNOTATION)).with_status(annotation(STATUS_ANNOTATION)))
}

/// The key of a namespaced object; `None` without a name or namespace.
pub fn network_key(meta: &ObjectMeta) -> Option<NetworkKey> {
    Some(NetworkKey::new(meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// What a NAD says: its `spec.config` (a JSON string) read by [`parse_nad`].
pub fn nad_network(key: &NetworkKey, nad: &DynamicObject) -> Result<Option<IbNetwork>, NetdefError> {
    let config = nad.data.get("spec").and_then(|s| s.get("config")).and_then(Value::as_str).unwrap_or("");
    parse_nad(&key.namespace, &key.name, annotations(&nad.metadata), config)
}

/// What a SpiderMultusConfig says: its `spec` read by [`parse_smc`].
pub fn smc_network(key: &NetworkKey, smc: &DynamicObject) -> Result<Option<IbNetwork>, NetdefError> {
    let spec = smc.data.get("spec").unwrap_or(&Value::Null);
    parse_smc(&key.namespace, &key.name, annotations(&smc.metadata), spec)
}

/// `NetworkApplied` for a NAD or SMC object.
pub fn network_event(kind: NetworkKind, key: NetworkKey, obj: &DynamicObject) -> ClusterEvent {
    let mut network = match kind {
        NetworkKind::Nad => nad_network(&key, obj),
        NetworkKind::SpiderMultusConfig => smc_network(&key, obj),
    };
    // An automatic network being deleted (held by our finalizer) is gone for its pods.
    if let Ok(Some(IbNetwork { auto: Some(a), .. })) = &mut network {
        a.deleting = obj.metadata.deletion_timestamp.is_some();
    }
    ClusterEvent::NetworkApplied { key, kind, network }
}

/// `NodeApplied` with the node's labels and the capacity the agent reported, if any.
pub fn node_event<K>(node: &PartialObjectMeta<K>) -> Option<ClusterEvent> {
    let name = node.metadata.name.clone()?;
    let pkey_capacity = annotations(&node.metadata).get(INVENTORY_ANNOTATION).and_then(|a| {
        let cap = crate::wire::inventory::pkey_capacity(a);
        if cap.is_none() {
            tracing::debug!(node = %name, "inventory annotation has no usable pkey_capacity; default applies");
        }
        cap
    });
    let hca_capacities = annotations(&node.metadata)
        .get(INVENTORY_ANNOTATION)
        .map(|a| crate::wire::inventory::hca_capacities(a))
        .unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    Some(ClusterEvent::NodeApplied { name, labels, pkey_capacity, hca_capacities })
}

/// `NamespaceApplied` with the namespace's labels (the tenant policy reads them).
pub fn namespace_event<K>(ns: &PartialObjectMeta<K>) -> Option<ClusterEvent> {
    let name = ns.metadata.name.clone()?;
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    Some(ClusterEvent::NamespaceApplied { name, labels })
}

fn annotations(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.annotations.as_ref().unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_slim_pod_keeps_what_the_engine_needs_and_skips_the_rest() {
        let pod: SlimPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "t", "uid": "u1", "resourceVersion": "7",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {"k8s.v1.cni.cncf.io/networks": "ib"}},
            "spec": {"nodeName": "n1", "hostNetwork": false, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]}
        }))
        .unwrap();
        let v = pod_view(&pod).unwrap();
        assert_eq!(v.uid.as_str(), "u1");
        assert_eq!(v.node.as_deref(), Some("n1"));
        assert_eq!(v.phase, PodPhase::Running);
        assert!(v.deleting);
        assert_eq!(v.attachments.unwrap()[0].network, NetworkKey::new("t", "ib"));
        let back = serde_json::to_value(&pod).unwrap();
        assert!(back["spec"].get("containers").is_none());
    }

    #[test]
    fn a_pod_without_uid_is_not_viewed() {
        let pod: SlimPod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "t"}})).unwrap();
        assert!(pod_view(&pod).is_none());
    }

    #[test]
    fn nad_config_and_smc_spec_are_read() {
        let nad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "ib", "namespace": "t"},
            "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"ib-sriov\",\"pkey\":\"0x10\"}"}
        }))
        .unwrap();
        let key = network_key(&nad.metadata).unwrap();
        let net = nad_network(&key, &nad).unwrap().unwrap();
        assert_eq!(net.pkey().map(|p| p.value()), Some(0x10));

        let no_config: DynamicObject =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "t"}})).unwrap();
        assert!(nad_network(&key, &no_config).unwrap().is_none());

        let smc: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "t"},
            "spec": {"cniType": "ib-sriov", "ibsriov": {"pkey": 1000}}
        }))
        .unwrap();
        let key = network_key(&smc.metadata).unwrap();
        let err = smc_network(&key, &smc).unwrap_err();
        assert!(err.to_string().contains("spec.ibsriov.pkey"), "{err}");
    }
}
