//! `KubeAgentCluster` (the real kube-rs client) against a small fake API server on loopback: the
//! exact requests the agent makes (field and label selectors, the claim read by name, the Node
//! merge patch, the NodeFabricStatus patched or created with its owner, events.k8s.io Events),
//! what it reads back, and that every request is covered by `AGENT_API_CALLS` (the RBAC list).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use fabric_sync::agent::{AGENT_API_CALLS, AgentCluster, AgentEvent, AgentPod, EventTarget, KubeAgentCluster};
use fabric_sync::kube::claim_object;
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, method: Method, path: String, query: Option<String>, headers: &HeaderMap, body: &Bytes) {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen { method: method.to_string(), path, query, content_type, body });
}

fn pod_json(name: &str, phase: &str, deleting: bool) -> Value {
    let mut meta = json!({
        "name": name, "namespace": "t", "uid": format!("uid-{name}"),
        "annotations": {
            "k8s.v1.cni.cncf.io/networks": "ib@net1",
            "k8s.v1.cni.cncf.io/network-status": "[]",
            "other": "x"
        }
    });
    if deleting {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": "node-1", "containers": []}, "status": {"phase": phase}})
}

async fn fake_api() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .route(
            "/api/v1/pods",
            get(|State(log): State<Log>, RawQuery(q): RawQuery, headers: HeaderMap| async move {
                record(&log, Method::GET, "/api/v1/pods".into(), q, &headers, &Bytes::new());
                axum::Json(json!({
                    "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
                    "items": [pod_json("pod-a", "Running", false), pod_json("pod-b", "Succeeded", false), pod_json("pod-c", "Running", true)]
                }))
            }),
        )
        .route(
            "/api/v1/nodes/{name}",
            patch(|State(log): State<Log>, Path(name): Path<String>, headers: HeaderMap, body: Bytes| async move {
                record(&log, Method::PATCH, format!("/api/v1/nodes/{name}"), None, &headers, &body);
                axum::Json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": "node-uid-1"}}))
            }),
        )
        .route(
            "/apis/fabric-sync.io/v1alpha1/guidclaims",
            get(|State(log): State<Log>, RawQuery(q): RawQuery, headers: HeaderMap| async move {
                record(&log, Method::GET, "/apis/fabric-sync.io/v1alpha1/guidclaims".into(), q, &headers, &Bytes::new());
                let claim = serde_json::to_value(claim_object(&sample_claim("uid-pod-a"))).unwrap();
                axum::Json(json!({"apiVersion": "fabric-sync.io/v1alpha1", "kind": "GuidClaimList",
                                  "metadata": {"resourceVersion": "9"}, "items": [claim]}))
            }),
        )
        .route(
            "/apis/fabric-sync.io/v1alpha1/namespaces/{ns}/guidclaims/{name}",
            get(|State(log): State<Log>, Path((ns, name)): Path<(String, String)>, headers: HeaderMap| async move {
                record(&log, Method::GET, format!("/apis/fabric-sync.io/v1alpha1/namespaces/{ns}/guidclaims/{name}"), None, &headers, &Bytes::new());
                if name != "uid-old" {
                    return (StatusCode::NOT_FOUND, axum::Json(not_found("guidclaims", &name))).into_response();
                }
                axum::Json(serde_json::to_value(claim_object(&sample_claim("uid-old"))).unwrap()).into_response()
            }),
        )
        .route(
            "/apis/fabric-sync.io/v1alpha1/nodefabricstatuses/{name}",
            patch(|State(log): State<Log>, Path(name): Path<String>, headers: HeaderMap, body: Bytes| async move {
                record(&log, Method::PATCH, format!("/apis/fabric-sync.io/v1alpha1/nodefabricstatuses/{name}"), None, &headers, &body);
                let created = log.lock().unwrap().iter().any(|s| s.method == "POST" && s.path.ends_with("/nodefabricstatuses"));
                if !created {
                    return (StatusCode::NOT_FOUND, axum::Json(not_found("nodefabricstatuses", &name))).into_response();
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                axum::Json(json!({"apiVersion": "fabric-sync.io/v1alpha1", "kind": "NodeFabricStatus",
                                  "metadata": {"name": name}, "status": v["status"]})).into_response()
            }),
        )
        .route(
            "/apis/fabric-sync.io/v1alpha1/nodefabricstatuses",
            post(|State(log): State<Log>, headers: HeaderMap, body: Bytes| async move {
                record(&log, Method::POST, "/apis/fabric-sync.io/v1alpha1/nodefabricstatuses".into(), None, &headers, &body);
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                (StatusCode::CREATED, axum::Json(v)).into_response()
            }),
        )
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events",
            post(|State(log): State<Log>, Path(ns): Path<String>, headers: HeaderMap, body: Bytes| async move {
                record(&log, Method::POST, format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"), None, &headers, &body);
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                (StatusCode::CREATED, axum::Json(v)).into_response()
            }),
        )
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            Response::builder().status(418).body(axum::body::Body::from(format!("unexpected {method} {uri}"))).unwrap()
        })
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

fn not_found(resource: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound",
           "message": format!("{resource} \"{name}\" not found"), "code": 404})
}

fn sample_claim(uid: &str) -> fabric_sync::engine::Claim {
    use fabric_sync::engine::{Claim, ClaimedAttachment, ObjectKey, PodUid, Slot};
    Claim {
        pod_uid: PodUid::new(uid),
        pod: ObjectKey { namespace: "t".into(), name: "pod-a".into() },
        node: "node-1".into(),
        migrated: false,
        deleting: false,
        attachments: vec![ClaimedAttachment {
            network: fabric_sync::netdef::NetworkKey::new("t", "ib"),
            slot: Slot::Interface("net1".into()),
            guid: "02:00:00:00:00:00:00:2a".parse().unwrap(),
            pkey: fabric_sync::ib::PKey::new(0x1000),
            former_pkeys: vec![],
            fabric: None,
        }],
    }
}

async fn cluster(url: &str) -> KubeAgentCluster {
    fabric_sync::install_crypto_provider();
    let config = kube::Config::new(url.parse().unwrap());
    KubeAgentCluster::new(kube::Client::try_from(config).unwrap(), "node-1")
}

/// (group, resource, verb) of a request to the fake, as RBAC names it.
fn rbac_of(s: &Seen) -> (String, String, String) {
    let parts: Vec<&str> = s.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => (String::new(), &parts[2..]),
        _ => (parts[1].to_string(), &parts[3..]),
    };
    let resource = if rest[0] == "namespaces" { rest[2] } else { rest[0] };
    let named = if rest[0] == "namespaces" { rest.len() > 3 } else { rest.len() > 1 };
    let verb = match (s.method.as_str(), named) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("PATCH", _) => "patch",
        ("POST", _) => "create",
        (m, _) => m,
    };
    (group, resource.to_string(), verb.to_string())
}

#[tokio::test]
async fn kube_cluster_makes_exactly_the_calls_rbac_grants() {
    let (url, log) = fake_api().await;
    let c = cluster(&url).await;

    let pods = c.list_pods("node-1").await.unwrap();
    let summary: Vec<(&str, bool, bool)> = pods.iter().map(|p| (p.name.as_str(), p.finished, p.deleting)).collect();
    assert_eq!(summary, [("pod-a", false, false), ("pod-b", true, false), ("pod-c", false, true)]);
    assert_eq!(
        pods[0],
        AgentPod {
            namespace: "t".into(),
            name: "pod-a".into(),
            uid: "uid-pod-a".into(),
            finished: false,
            deleting: false,
            networks: Some("ib@net1".into()),
            network_status: Some("[]".into()),
        }
    );

    let claims = c.list_claims("node-1").await.unwrap();
    assert_eq!(claims, vec![sample_claim("uid-pod-a")], "the claim as the controller wrote it");
    assert_eq!(c.get_claim("t", "uid-old").await.unwrap(), Some(sample_claim("uid-old")));
    assert_eq!(c.get_claim("t", "uid-none").await.unwrap(), None, "a missing claim is no error");
    let uid = c.patch_node_annotation("node-1", "fabric-sync.io/ib-inventory", r#"{"version":1}"#).await.unwrap();
    assert_eq!(uid.as_deref(), Some("node-uid-1"));
    let status = json!({"mode": "verify", "attachments": [], "foreignVfs": [], "conditions": []});
    c.write_fabric_status("node-1", "node-uid-1", &status).await.unwrap();
    c.write_fabric_status("node-1", "node-uid-1", &status).await.unwrap();
    let event = AgentEvent {
        target: EventTarget::Node { name: "node-1".into() },
        warning: true,
        reason: "VfGuidUnexplained",
        action: "VerifyVfGuid",
        note: "VF 0000:3b:00.2 carries 02:00:00:00:00:00:00:09".into(),
    };
    c.publish_event(&event).await.unwrap();

    let seen = log.lock().unwrap().clone();
    let lines: Vec<String> = seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert_eq!(
        lines,
        [
            "GET /api/v1/pods",
            "GET /apis/fabric-sync.io/v1alpha1/guidclaims",
            "GET /apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/uid-old",
            "GET /apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/uid-none",
            "PATCH /api/v1/nodes/node-1",
            // Missing at first: created, owned by the Node; then patched.
            "PATCH /apis/fabric-sync.io/v1alpha1/nodefabricstatuses/node-1",
            "POST /apis/fabric-sync.io/v1alpha1/nodefabricstatuses",
            "PATCH /apis/fabric-sync.io/v1alpha1/nodefabricstatuses/node-1",
            "POST /apis/events.k8s.io/v1/namespaces/default/events",
        ]
    );
    let q = seen[0].query.as_deref().unwrap_or_default();
    assert!(q.contains("fieldSelector=spec.nodeName%3Dnode-1"), "{q}");
    let q = seen[1].query.as_deref().unwrap_or_default();
    assert!(q.contains("labelSelector=fabric-sync.io%2Fnode%3Dnode-1"), "{q}");
    assert_eq!(seen[4].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(seen[4].body, json!({"metadata": {"annotations": {"fabric-sync.io/ib-inventory": "{\"version\":1}"}}}));
    let owner = json!([{"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "node-uid-1"}]);
    assert_eq!(seen[5].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(seen[5].body, json!({"metadata": {"ownerReferences": owner}, "status": status}));
    let created = &seen[6].body;
    assert_eq!(
        (&created["kind"], &created["metadata"]["name"], &created["metadata"]["ownerReferences"], &created["status"]),
        (&json!("NodeFabricStatus"), &json!("node-1"), &owner, &status)
    );
    let ev = &seen[8].body;
    assert_eq!(
        (&ev["type"], &ev["reason"], &ev["action"]),
        (&json!("Warning"), &json!("VfGuidUnexplained"), &json!("VerifyVfGuid"))
    );
    assert_eq!(ev["regarding"], json!({"apiVersion": "v1", "kind": "Node", "name": "node-1"}));
    assert_eq!(ev["reportingController"], "fabric-sync-agent");
    assert_eq!(ev["reportingInstance"], "node-1");

    for s in &seen {
        let (g, r, v) = rbac_of(s);
        assert!(
            AGENT_API_CALLS.iter().any(|(ag, ar, av)| (*ag, *ar, *av) == (g.as_str(), r.as_str(), v.as_str())),
            "{} {} needs ({g:?}, {r:?}, {v:?}), which AGENT_API_CALLS lacks",
            s.method,
            s.path
        );
    }
}
