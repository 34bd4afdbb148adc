//! The agent's admission policy (`fabric-sync-agent-node-scope`), its CEL evaluated for real on
//! the requests the agent makes, read from the rendered default overlay with its parameter (the
//! agent's ClusterRoleBinding): allowed for its own node's objects, refused for another node's,
//! refused without the node name a pod's bound token carries, and on its Node nothing but the
//! inventory annotation.

use super::admission::{Verdict, admit, allowed, create, denied, policy, update};
use super::*;

const AGENT_SA: &str = "system:serviceaccount:fabric-sync:fabric-sync-agent";
const INVENTORY: &str = "fabric-sync.io/ib-inventory";

fn node(name: &str, annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> Value {
    let a: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let l: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": l, "annotations": a},
        "spec": {"podCIDR": "10.244.1.0/24"},
    })
}

fn fabric_status(node: &str) -> Value {
    serde_json::json!({
        "apiVersion": "fabric-sync.io/v1alpha1", "kind": "NodeFabricStatus",
        "metadata": {"name": node, "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": format!("uid-{node}")}]},
        "status": {"mode": "verify", "attachments": [], "foreignVfs": [], "conditions": []},
    })
}

fn event_about(kind: &str, name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("{name}.17a"), "namespace": "default"},
        "regarding": {"apiVersion": "v1", "kind": kind, "name": name},
        "reason": "VfGuidReset", "type": "Normal", "action": "ResetVfGuid",
        "reportingController": "fabric-sync-agent", "reportingInstance": name,
    })
}

#[test]
fn agent_node_scope_allows_its_own_nodes_objects_and_refuses_another_nodes() {
    let (p, params) = policy("fabric-sync-agent-node-scope");
    assert_eq!(str_at(&params, "/metadata/name"), "fabric-sync-agent", "the parameter is the agent's binding");
    let admit = |r: super::admission::Request| admit(&p, &params, &r);

    // Its own NodeFabricStatus: created and updated.
    allowed(admit(create("nodefabricstatuses", AGENT_SA, &fabric_status("gpu-1")).on_node("gpu-1")));
    let mut changed = fabric_status("gpu-1");
    changed["status"]["mode"] = "program".into();
    allowed(admit(update("nodefabricstatuses", AGENT_SA, &changed, &fabric_status("gpu-1")).on_node("gpu-1")));
    // Another node's: refused, with a message naming both nodes.
    denied(
        admit(create("nodefabricstatuses", AGENT_SA, &fabric_status("gpu-2")).on_node("gpu-1")),
        &["node gpu-1", "of node gpu-2", "its own node"],
    );
    denied(
        admit(
            update("nodefabricstatuses", AGENT_SA, &fabric_status("gpu-2"), &fabric_status("gpu-2")).on_node("gpu-1"),
        ),
        &["gpu-2"],
    );
    // A token without the node claim (a legacy secret token, a pre-1.32 cluster): refused.
    denied(admit(create("nodefabricstatuses", AGENT_SA, &fabric_status("gpu-1"))), &["no node name", "1.32"]);

    // Its Node: the inventory annotation only.
    let bare = node("gpu-1", &[("other", "x")], &[("fabric-sync.io/ib-node", "true")]);
    let inventoried =
        node("gpu-1", &[("other", "x"), (INVENTORY, r#"{"version":1}"#)], &[("fabric-sync.io/ib-node", "true")]);
    allowed(admit(update("nodes", AGENT_SA, &inventoried, &bare).on_node("gpu-1")));
    let relabelled =
        node("gpu-1", &[("other", "x"), (INVENTORY, "{}")], &[("fabric-sync.io/ib-node", "true"), ("role", "x")]);
    denied(admit(update("nodes", AGENT_SA, &relabelled, &bare).on_node("gpu-1")), &["more of its Node"]);
    let mut untainted = inventoried.clone();
    untainted["spec"]["unschedulable"] = true.into();
    denied(admit(update("nodes", AGENT_SA, &untainted, &inventoried).on_node("gpu-1")), &["more of its Node"]);
    let reannotated = node("gpu-1", &[("other", "y")], &[("fabric-sync.io/ib-node", "true")]);
    denied(admit(update("nodes", AGENT_SA, &reannotated, &bare).on_node("gpu-1")), &["more of its Node"]);
    let other = node("gpu-2", &[], &[]);
    let other_inventoried = node("gpu-2", &[(INVENTORY, "{}")], &[]);
    denied(admit(update("nodes", AGENT_SA, &other_inventoried, &other).on_node("gpu-1")), &["of node gpu-2"]);
    denied(admit(create("nodes", AGENT_SA, &bare).on_node("gpu-1")), &["may not CREATE its Node"]);

    // Events about its own Node only: not another node's, not a pod's.
    allowed(admit(create("events", AGENT_SA, &event_about("Node", "gpu-1")).on_node("gpu-1")));
    allowed(admit(
        update("events", AGENT_SA, &event_about("Node", "gpu-1"), &event_about("Node", "gpu-1")).on_node("gpu-1"),
    ));
    denied(admit(create("events", AGENT_SA, &event_about("Node", "gpu-2")).on_node("gpu-1")), &["of node gpu-2"]);
    denied(admit(create("events", AGENT_SA, &event_about("Pod", "trainer-0")).on_node("gpu-1")), &["not about a Node"]);

    // Anyone else (the kubelet, an admin, the agent's namesake elsewhere) is not looked at.
    let kubelet = update("nodes", "system:node:gpu-2", &other_inventoried, &other);
    assert!(matches!(admit(kubelet), Verdict::NotMatched));
    let namesake =
        create("nodefabricstatuses", "system:serviceaccount:tenant-a:fabric-sync-agent", &fabric_status("gpu-2"));
    assert!(matches!(admit(namesake.on_node("gpu-1")), Verdict::NotMatched), "RBAC grants it nothing");
}

#[test]
fn helm_ships_the_agent_policy_and_the_status_crd_of_the_base() {
    let crd = read(&format!("{CHART}/crds/nodefabricstatuses.fabric-sync.io.yaml"));
    assert_eq!(crd, read(&format!("{BASE}/nodefabricstatus-crd.yaml")), "crds/ and the base's CRD");
    // The template with release `fabric-sync` (its only template actions are the guard, the
    // names and the labels).
    let text = read(&format!("{CHART}/templates/agent-admission-policy.yaml"));
    let rendered: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("{{-"))
        .map(|l| l.replace(r#"{{ include "fabric-sync.fullname" . }}"#, "fabric-sync") + "\n")
        .collect();
    assert!(!rendered.contains("{{"), "only the guard, names and labels are templated");
    assert!(text.starts_with("{{- if .Values.agent.enabled }}"), "shipped with the agent only");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&rendered)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect();
    let base = yaml_docs(&format!("{BASE}/agent-admission-policy.yaml"));
    assert_eq!(docs.len(), base.len());
    for (c, b) in docs.iter().zip(&base) {
        assert_eq!(
            (str_at(c, "/kind"), str_at(c, "/metadata/name")),
            (str_at(b, "/kind"), str_at(b, "/metadata/name"))
        );
        assert_eq!(c["spec"], b["spec"], "{}: chart and base", str_at(b, "/kind"));
    }
    // The parameter is the chart's agent ClusterRoleBinding.
    assert_eq!(str_at(&docs[1], "/spec/paramRef/name"), "fabric-sync-agent");
    let rbac = read(&format!("{CHART}/templates/agent-rbac.yaml"));
    assert!(
        rbac.contains("kind: ClusterRoleBinding\nmetadata:\n  name: {{ include \"fabric-sync.fullname\" . }}-agent\n")
    );
}
