//! `KubeAgentCluster` (the real kube-rs client) against a small fake API server on loopback: the
//! exact requests the agent makes (field selector, merge patches, events.k8s.io Events), the pods
//! it reads back, and that every request is covered by `AGENT_API_CALLS` (the RBAC list).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use fabric_sync::agent::{AGENT_API_CALLS, AgentCluster, AgentEvent, AgentPod, EventTarget, KubeAgentCluster};
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
            "fabric-sync.io/agent-status": "{}",
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
                axum::Json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            patch(|State(log): State<Log>, Path((ns, name)): Path<(String, String)>, headers: HeaderMap, body: Bytes| async move {
                record(&log, Method::PATCH, format!("/api/v1/namespaces/{ns}/pods/{name}"), None, &headers, &body);
                if name == "gone" {
                    let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound",
                                        "message": "pods \"gone\" not found", "code": 404});
                    return (StatusCode::NOT_FOUND, axum::Json(status)).into_response();
                }
                axum::Json(pod_json(&name, "Running", false)).into_response()
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
            agent_status: Some("{}".into()),
        }
    );

    c.patch_node_annotation("node-1", "fabric-sync.io/ib-inventory", r#"{"version":1}"#).await.unwrap();
    c.patch_pod_annotation("t", "pod-a", "fabric-sync.io/agent-status", r#"{"t/ib":"verified"}"#).await.unwrap();
    c.patch_pod_annotation("t", "gone", "fabric-sync.io/agent-status", "{}").await.expect("a vanished pod is no error");
    let event = AgentEvent {
        target: EventTarget::Pod { namespace: "t".into(), name: "pod-a".into(), uid: "uid-pod-a".into() },
        warning: true,
        reason: "VfGuidMismatch",
        action: "VerifyVfGuid",
        note: "t/ib: mismatch".into(),
    };
    c.publish_event(&event).await.unwrap();

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    let q = seen[0].query.as_deref().unwrap_or_default();
    assert!(q.contains("fieldSelector=spec.nodeName%3Dnode-1"), "{q}");
    assert_eq!(seen[1].path, "/api/v1/nodes/node-1");
    assert_eq!(seen[1].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(seen[1].body, json!({"metadata": {"annotations": {"fabric-sync.io/ib-inventory": "{\"version\":1}"}}}));
    assert_eq!(seen[2].path, "/api/v1/namespaces/t/pods/pod-a");
    assert_eq!(seen[2].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(
        seen[2].body,
        json!({"metadata": {"annotations": {"fabric-sync.io/agent-status": "{\"t/ib\":\"verified\"}"}}})
    );
    let ev = &seen[4].body;
    assert_eq!(seen[4].path, "/apis/events.k8s.io/v1/namespaces/t/events");
    assert_eq!(
        (&ev["type"], &ev["reason"], &ev["action"], &ev["note"]),
        (&json!("Warning"), &json!("VfGuidMismatch"), &json!("VerifyVfGuid"), &json!("t/ib: mismatch"))
    );
    assert_eq!(
        ev["regarding"],
        json!({"apiVersion": "v1", "kind": "Pod", "namespace": "t", "name": "pod-a", "uid": "uid-pod-a"})
    );
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
