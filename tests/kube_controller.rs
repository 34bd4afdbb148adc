//! The controller end to end over HTTP: a real `kube::Client` against the fake API server, the
//! real UFM client against an in-process mock UFM over TLS, and the real engine in between.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_sync::engine::{
    AttachmentWrite, ClusterWriter, EventObject, EventRecord, EventType, ObjectKey, ObjectKind, PatchOutcome, PodPatch,
    PodUid, Reason, Slot,
};
use fabric_sync::kube::{EventPublisher, INVENTORY_ANNOTATION, KubeWriter, NetworkUids};
use fabric_sync::netdef::{GuidVia, NetworkKey};
use fabric_sync::ops::Metrics;
use serde_json::{Value, json};
use support::*;

fn is_colon_guid(s: &str) -> bool {
    s.len() == 23
        && s.split(':').all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
}

fn patches_to(api: &FakeApi, client: &str, pod: &str) -> Vec<RequestRecord> {
    let path = format!("/api/v1/namespaces/t/pods/{pod}");
    api.requests_by(client).into_iter().filter(|r| r.method == "PATCH" && r.path == path).collect()
}

fn pod_lists(api: &FakeApi, client: &str) -> usize {
    api.requests_by(client).iter().filter(|r| r.method == "GET" && r.path == "/api/v1/pods" && !r.is_watch()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_the_contract_annotation_and_a_ufm_membership_and_lose_it_when_deleted() {
    let env = Env::new().await;
    // Spiderpool is not installed here: the controller must sync and work regardless.
    env.api.set_absent(Res::Smcs, true);
    env.nad("ib-a", "0x10", false);
    env.nad("ib-b", "0x20", true);
    env.pod(
        "p1",
        r#"[{"name":"ib-a","ips":["10.0.0.2/24"],"cni-args":{"foo":"bar"},"x-vendor":{"k":1}}]"#,
        &[("keep.example.com/note", "hello")],
    );
    env.pod("p2", r#"[{"name":"ib-b","interface":"net1"}]"#, &[]);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("both pods configured", || {
        env.configured_element("p1").is_some() && env.configured_element("p2").is_some()
    })
    .await;

    // cni-args variant: GUID in cni-args, other fields and other annotations untouched.
    let e1 = env.configured_element("p1").unwrap();
    let g1 = e1["cni-args"]["guid"].as_str().unwrap().to_string();
    assert!(is_colon_guid(&g1) && g1.starts_with("02:"), "{g1}");
    assert_eq!(
        e1,
        json!({"name": "ib-a", "ips": ["10.0.0.2/24"], "x-vendor": {"k": 1},
               "cni-args": {"foo": "bar", "guid": g1, "mellanox.infiniband.app": "configured", "pkey": "0x10"}})
    );
    assert_eq!(env.annotation("p1", "keep.example.com/note").as_deref(), Some("hello"));
    // infiniband-guid variant (the NAD declares the capability).
    let e2 = env.configured_element("p2").unwrap();
    let g2 = e2["infiniband-guid"].as_str().unwrap().to_string();
    assert!(is_colon_guid(&g2), "{g2}");
    assert_ne!(g1, g2);
    assert_eq!(
        e2,
        json!({"name": "ib-b", "interface": "net1", "infiniband-guid": g2,
               "cni-args": {"mellanox.infiniband.app": "configured", "pkey": "0x20"}})
    );
    eventually("status annotations", || {
        env.annotation("p1", STATUS).as_deref() == Some(r#"{"t/ib-a":"configured"}"#)
            && env.annotation("p2", STATUS).as_deref() == Some(r#"{"t/ib-b@net1":"configured"}"#)
    })
    .await;
    // UFM holds each GUID in its network's pkey.
    assert!(env.members(0x10).contains(&ufm_guid(&g1)), "{:?}", env.members(0x10));
    assert!(env.members(0x20).contains(&ufm_guid(&g2)), "{:?}", env.members(0x20));

    // Every patch names the resourceVersion it was computed from and touches only our keys.
    let patches = patches_to(&env.api, "ctrl-a", "p1");
    assert!(!patches.is_empty());
    for p in &patches {
        let body: Value = serde_json::from_str(p.body.as_deref().unwrap()).unwrap();
        assert!(
            body.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_some_and(|v| !v.is_empty()),
            "{body}"
        );
        let keys: Vec<&String> = body.pointer("/metadata/annotations").unwrap().as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| *k == NETWORKS || *k == STATUS), "{keys:?}");
        assert_eq!(body.as_object().unwrap().len(), 1, "only metadata is patched: {body}");
    }

    // The absent SMC CRD was asked for again (slowly), not given up on.
    eventually("SMC list retried", || {
        env.api
            .requests_by("ctrl-a")
            .iter()
            .filter(|r| r.path.ends_with("/spidermultusconfigs") && r.status == 404)
            .count()
            >= 2
    })
    .await;

    // Deleting a pod removes its GUID from the pkey.
    env.api.delete(Res::Pods, "t", "p1");
    eventually("p1's GUID leaves pkey 0x10", || !env.members(0x10).contains(&ufm_guid(&g1))).await;
    assert!(env.members(0x20).contains(&ufm_guid(&g2)));
    assert_calls_are_declared(&env.api, "ctrl-a");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_annotation_change_answers_409_and_the_patch_is_recomputed() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    env.api.concurrent_change_before_next_write(
        Res::Pods,
        "t",
        "p1",
        json!({"metadata": {"annotations": {"other.example.com/touched": "yes"}}}),
    );
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("p1 configured", || env.configured_element("p1").is_some()).await;
    // Both changes survive: the other writer's annotation and ours.
    assert_eq!(env.annotation("p1", "other.example.com/touched").as_deref(), Some("yes"));
    let statuses: Vec<u16> = patches_to(&env.api, "ctrl-a", "p1").iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&409), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let text = c.metrics.render(&c.stats);
    assert!(sample(&text, "fabric_sync_pod_patch_conflicts_total").unwrap_or(0.0) >= 1.0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_created_while_watches_are_down_are_configured_after_the_watch_resumes() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("p1 configured", || env.configured_element("p1").is_some()).await;

    env.api.set_watch_outage(true);
    env.api.drop_watches();
    eventually("a pod watch is refused", || {
        env.api.requests_by("ctrl-a").iter().any(|r| r.path == "/api/v1/pods" && r.is_watch() && r.status == 500)
    })
    .await;
    env.pod("p2", r#"[{"name":"ib-a"}]"#, &[]);
    env.pod("p3", r#"[{"name":"ib-a"}]"#, &[]);
    env.api.set_watch_outage(false);
    eventually("p2 and p3 configured", || {
        env.configured_element("p2").is_some() && env.configured_element("p3").is_some()
    })
    .await;
    // The watch resumed from its resourceVersion: no second list was needed.
    assert_eq!(pod_lists(&env.api, "ctrl-a"), 1);
    let text = c.metrics.render(&c.stats);
    assert!(sample(&text, r#"fabric_sync_watch_errors_total{resource="pods"}"#).unwrap_or(0.0) >= 1.0, "{text}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_resource_version_relists_and_a_pod_deleted_in_the_gap_leaves_ufm() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    env.pod("p2", r#"[{"name":"ib-a"}]"#, &[]);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("p1, p2 configured", || {
        env.configured_element("p1").is_some() && env.configured_element("p2").is_some()
    })
    .await;
    let g1 = env.configured_element("p1").unwrap()["cni-args"]["guid"].as_str().unwrap().to_string();
    assert!(env.members(0x10).contains(&ufm_guid(&g1)));

    env.api.set_watch_outage(true);
    env.api.drop_watches();
    env.api.delete(Res::Pods, "t", "p1");
    env.pod("p3", r#"[{"name":"ib-a"}]"#, &[]);
    env.api.compact();
    env.api.set_watch_outage(false);

    eventually("p1's GUID removed after the relist", || !env.members(0x10).contains(&ufm_guid(&g1))).await;
    eventually("p3 configured", || env.configured_element("p3").is_some()).await;
    assert!(pod_lists(&env.api, "ctrl-a") >= 2, "the pods were listed again");
    let gone = env.api.requests_by("ctrl-a").iter().filter(|r| r.path == "/api/v1/pods" && r.is_watch()).count();
    assert!(gone >= 2);
    let text = c.metrics.render(&c.stats);
    assert!(sample(&text, r#"fabric_sync_watch_relists_total{resource="pods"}"#).unwrap_or(0.0) >= 1.0, "{text}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nad_created_after_the_pod_is_picked_up() {
    let env = Env::new().await;
    env.pod("p1", r#"[{"name":"ib-late"}]"#, &[]);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("leader, synced, UFM reached", || c.is_leader() && c.stats.caches_synced() && c.stats.fabric_reached())
        .await;
    assert!(env.configured_element("p1").is_none());
    env.nad("ib-late", "0x30", false);
    eventually("p1 configured", || env.configured_element("p1").is_some()).await;
    let g = env.configured_element("p1").unwrap()["cni-args"]["guid"].as_str().unwrap().to_string();
    assert!(env.members(0x30).contains(&ufm_guid(&g)));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smc_with_a_numeric_pkey_gets_a_warning_event_once_its_crd_appears() {
    let env = Env::new().await;
    env.api.set_absent(Res::Smcs, true);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("synced without the SMC CRD, and leader", || c.stats.caches_synced() && c.is_leader()).await;
    env.api.set_absent(Res::Smcs, false);
    let smc = env.api.create(
        Res::Smcs,
        json!({"metadata": {"name": "bad-smc", "namespace": "t"},
               "spec": {"cniType": "ib-sriov", "ibsriov": {"pkey": 1000}}}),
    );
    eventually("a Warning Event on the SMC", || !events_about(&env.api, "SpiderMultusConfig", "bad-smc").is_empty())
        .await;
    let ev = &events_about(&env.api, "SpiderMultusConfig", "bad-smc")[0];
    assert_eq!(ev["reason"], "InvalidNetwork");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev.pointer("/regarding/uid"), smc.pointer("/metadata/uid"));
    assert_eq!(ev.pointer("/regarding/apiVersion").and_then(Value::as_str), Some("spiderpool.spidernet.io/v2beta1"));
    assert!(ev["note"].as_str().unwrap().contains("spec.ibsriov.pkey"), "{ev}");
    assert_eq!(ev["reportingInstance"], "ctrl-a");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_pkey_capacity_limits_pkeys_per_node_with_a_pod_event() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.nad("ib-b", "0x20", false);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    // The agent reports after the controller leads (the engine's budget forgets capacities
    // reported before a leader term starts; see the report).
    eventually("leader and synced", || c.is_leader() && c.stats.caches_synced()).await;
    // Two table entries, one reserved for the default partition: one tenant pkey on n1.
    env.api.merge_patch(
        Res::Nodes,
        "",
        "n1",
        json!({"metadata": {"annotations": {INVENTORY_ANNOTATION: r#"{"version":1,"pkey_capacity":2}"#}}}),
    );
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    eventually("p1 configured and n1 at its pkey limit", || {
        env.configured_element("p1").is_some() && c.stats.gauges().nodes_at_pkey_limit() == 1
    })
    .await;
    let p2 = env.pod("p2", r#"[{"name":"ib-b"}]"#, &[]);
    eventually("p2 refused in its status", || {
        env.annotation("p2", STATUS).is_some_and(|s| s.contains("refused: PKeyLimitExceeded"))
    })
    .await;
    eventually("a Pod Event", || !events_about(&env.api, "Pod", "p2").is_empty()).await;
    let ev = &events_about(&env.api, "Pod", "p2")[0];
    assert_eq!(ev["reason"], "PKeyLimitExceeded");
    assert_eq!(ev.pointer("/regarding/uid"), p2.pointer("/metadata/uid"));
    assert!(env.configured_element("p2").is_none());
    assert!(env.members(0x20).is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_initial_lists_and_metrics_report_the_work() {
    let env = Env::new().await;
    env.api.set_outage(Res::Pods, true);
    env.nad("ib-a", "0x10", false);
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    env.pod("p2", r#"[{"name":"ib-a"}]"#, &[]);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("a pod list refused", || {
        env.api.requests_by("ctrl-a").iter().any(|r| r.path == "/api/v1/pods" && r.status == 500)
    })
    .await;
    assert_eq!(c.admin_get("/readyz").await.0, 503);
    assert_eq!(c.admin_get("/healthz").await.0, 200);
    env.api.set_outage(Res::Pods, false);
    eventually_async("ready", || async { c.admin_get("/readyz").await.0 == 200 }).await;
    eventually("both configured", || env.configured_element("p1").is_some() && env.configured_element("p2").is_some())
        .await;
    eventually_async("metrics show the work", || async {
        let (status, text) = c.admin_get("/metrics").await;
        status == 200
            && sample(&text, "fabric_sync_leader") == Some(1.0)
            && sample(&text, "fabric_sync_caches_synced") == Some(1.0)
            && sample(&text, "fabric_sync_guid_pool_used{fabric=\"default\"}") == Some(2.0)
            && sample(&text, r#"fabric_sync_attachments{state="configured"}"#) == Some(2.0)
            && sum_samples(&text, "fabric_sync_ufm_requests_total", &[r#"operation="add_guids""#, r#"code="200""#])
                > 0.0
            && sample(&text, "fabric_sync_pod_configure_duration_seconds_count").unwrap_or(0.0) >= 2.0
            && sample(&text, r#"fabric_sync_watch_errors_total{resource="pods"}"#).unwrap_or(0.0) >= 1.0
    })
    .await;
    let (_, text) = c.admin_get("/metrics").await;
    for (name, ..) in fabric_sync::ops::METRICS {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from /metrics");
    }
    c.stop().await;
}

fn write(net: &str) -> AttachmentWrite {
    AttachmentWrite {
        network: NetworkKey::new("t", net),
        slot: Slot::Occurrence(0),
        guid: Some("02:00:00:00:00:00:00:42".parse().unwrap()),
        configured: true,
        guid_via: GuidVia::CniArgs,
        pkey: Some("0x10".parse().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_reports_gone_pods_and_attachments_and_annotates_nodes() {
    let env = Env::new().await;
    let pod = env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap().to_string();
    let client = env.api.client("writer");
    let uids = Arc::new(NetworkUids::default());
    let writer = KubeWriter::new(client.clone(), EventPublisher::new(client, "writer", uids), Metrics::new());
    let patch = |uid: &str, net: &str, name: &str| PodPatch {
        uid: PodUid::new(uid),
        pod: ObjectKey { namespace: "t".into(), name: name.into() },
        writes: vec![write(net)],
        status: BTreeMap::new(),
    };
    assert_eq!(writer.patch_pod(&patch("other-uid", "ib-a", "p1")).await, Ok(PatchOutcome::PodGone));
    assert_eq!(writer.patch_pod(&patch(&uid, "ib-a", "missing")).await, Ok(PatchOutcome::PodGone));
    assert_eq!(writer.patch_pod(&patch(&uid, "ib-x", "p1")).await, Ok(PatchOutcome::AttachmentGone));
    assert!(patches_to(&env.api, "writer", "p1").is_empty(), "nothing was written");
    assert_eq!(writer.patch_pod(&patch(&uid, "ib-a", "p1")).await, Ok(PatchOutcome::Patched));
    // Writing the same again sends no patch at all.
    assert_eq!(writer.patch_pod(&patch(&uid, "ib-a", "p1")).await, Ok(PatchOutcome::Patched));
    assert_eq!(patches_to(&env.api, "writer", "p1").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_are_counted_on_one_object() {
    let env = Env::new().await;
    let client = env.api.client("events");
    let publisher = EventPublisher::new(client, "events", Arc::new(NetworkUids::default()));
    let record = |message: &str| EventRecord {
        object: EventObject {
            kind: ObjectKind::Pod,
            key: ObjectKey { namespace: "t".into(), name: "p1".into() },
            uid: Some("u1".into()),
        },
        event_type: EventType::Warning,
        reason: Reason::GuidConflict,
        message: message.into(),
    };
    publisher.publish(&record("taken")).await.unwrap();
    publisher.publish(&record("taken")).await.unwrap();
    publisher.publish(&record("taken")).await.unwrap();
    publisher.publish(&record("something else")).await.unwrap();
    let events = events_about(&env.api, "Pod", "p1");
    assert_eq!(events.len(), 2, "{events:?}");
    let taken = events.iter().find(|e| e["note"] == "taken").unwrap();
    assert_eq!(taken.pointer("/series/count"), Some(&json!(3)));
    let verbs: Vec<String> = env.api.requests_by("events").iter().map(|r| r.method.clone()).collect();
    assert_eq!(verbs, ["POST", "PATCH", "PATCH", "POST"]);
}
