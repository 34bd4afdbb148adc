//! The fake API server itself, driven by a real `kube::Client`: it must behave like the real
//! one where the controller depends on it, or the controller tests prove nothing.

mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use serde_json::json;
use support::fake_api::json::{Selector, json_patch, merge_patch, url_decode};
use support::*;

fn pod(name: &str, node: &str) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": "t", "labels": {"app": name}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
}

#[test]
fn patches_and_selectors_follow_the_rfcs_and_kubernetes() {
    let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1]});
    merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
    assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    let ops = json!([{"op": "test", "path": "/a/c", "value": 2}, {"op": "add", "path": "/d/-", "value": 5}]);
    assert_eq!(json_patch(&doc, &ops).unwrap()["d"], json!([2, 5]));
    assert!(json_patch(&doc, &json!([{"op": "test", "path": "/a/c", "value": 9}])).is_err());
    let p = json!({"metadata": {"name": "p", "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}});
    assert!(Selector::parse("app=x,!tier").matches_labels(&p));
    assert!(!Selector::parse("app!=x").matches_labels(&p));
    assert!(Selector::parse("spec.nodeName=n1,metadata.name==p").matches_fields(&p));
    assert!(!Selector::parse("spec.nodeName=n2").matches_fields(&p));
    assert_eq!(url_decode("spec.nodeName%3Dn1%2Ca+b"), "spec.nodeName=n1,a b");
}

#[tokio::test]
async fn a_stale_resource_version_conflicts_and_a_failed_test_op_is_refused() {
    let fake = FakeApi::start().await;
    fake.create(Res::Pods, pod("p", "n1"));
    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "t");
    let p = pods.get("p").await.unwrap();
    let rv = p.metadata.resource_version.clone().unwrap();
    let body = json!({"metadata": {"resourceVersion": rv, "annotations": {"a": "1"}}});
    pods.patch("p", &PatchParams::default(), &Patch::Merge(&body)).await.unwrap();
    // The same resourceVersion again is stale now.
    let err = pods.patch("p", &PatchParams::default(), &Patch::Merge(&body)).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    // A replace with a stale version conflicts too.
    let err = pods.replace("p", &Default::default(), &p).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    // JSON patch: `test` guards the write.
    let fresh = pods.get("p").await.unwrap();
    let ops = json!([{"op": "test", "path": "/metadata/annotations/a", "value": "2"},
                     {"op": "add", "path": "/metadata/annotations/b", "value": "x"}]);
    let client = fake.client("t");
    let raw = client.request::<Pod>(http_patch("/api/v1/namespaces/t/pods/p", "application/json-patch+json", &ops));
    assert!(matches!(raw.await, Err(kube::Error::Api(s)) if s.code == 422));
    assert_eq!(pods.get("p").await.unwrap().metadata.resource_version, fresh.metadata.resource_version);
    // An unconditional merge patch (no resourceVersion) always applies.
    pods.patch("p", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await.unwrap();
    let conflicts = fake.requests().iter().filter(|r| r.status == 409).count();
    assert_eq!(conflicts, 2);
}

fn http_patch(path: &str, content_type: &str, body: &serde_json::Value) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::patch(path)
        .header("content-type", content_type)
        .body(serde_json::to_vec(body).unwrap())
        .unwrap()
}

#[tokio::test]
async fn selectors_filter_lists_and_metadata_lists_carry_only_metadata() {
    let fake = FakeApi::start().await;
    fake.create(Res::Pods, pod("a", "n1"));
    fake.create(Res::Pods, pod("b", "n2"));
    let pods: Api<Pod> = Api::all(fake.client("t"));
    let on_n1 = pods.list(&ListParams::default().fields("spec.nodeName=n1")).await.unwrap();
    assert_eq!(on_n1.items.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["a"]);
    let b = pods.list(&ListParams::default().labels("app=b")).await.unwrap();
    assert_eq!(b.items.len(), 1);
    let by_name = pods.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    let meta: Api<PartialObjectMeta<Pod>> = Api::all(fake.client("t"));
    let list = meta.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(list.items[0].metadata.uid.is_some());
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let fake = FakeApi::start().await;
    let mut p = pod("f", "n1");
    p["metadata"]["finalizers"] = json!(["example.com/hold"]);
    fake.create(Res::Pods, p);
    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "t");
    pods.delete("f", &DeleteParams::default()).await.unwrap();
    let held = pods.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    pods.patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert!(pods.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn watches_resume_from_a_version_replay_what_was_missed_and_expire_after_compaction() {
    let fake = FakeApi::start().await;
    fake.create(Res::Pods, pod("a", "n1"));
    let pods: Api<Pod> = Api::all(fake.client("t"));
    let rv = pods.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    fake.create(Res::Pods, pod("b", "n1"));
    fake.delete(Res::Pods, "t", "a");
    let mut stream = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match stream.next().await.unwrap().unwrap() {
            WatchEvent::Added(p) => seen.push(format!("ADDED {}", p.metadata.name.unwrap())),
            WatchEvent::Deleted(p) => seen.push(format!("DELETED {}", p.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => seen.push("BOOKMARK".into()),
            other => seen.push(format!("{other:?}")),
        }
    }
    assert_eq!(seen, ["ADDED b", "DELETED a", "BOOKMARK"]);
    // Dropping watches ends the stream.
    fake.drop_watches();
    assert!(stream.next().await.is_none());
    // After compaction, resuming from the old version answers 410 in an ERROR event.
    fake.compact();
    let mut stream = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(s) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn absent_resources_answer_404_and_faults_fire_for_the_chosen_client() {
    let fake = FakeApi::start().await;
    fake.set_absent(Res::Smcs, true);
    let smcs: Api<kube::api::DynamicObject> = Api::all_with(fake.client("t"), &fabric_sync::kube::smc_resource());
    let err = smcs.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
    fake.fail(Fault { client: Some("victim".into()), code: 500, remaining: Some(1), ..Fault::default() });
    let other: Api<Pod> = Api::all(fake.client("bystander"));
    other.list(&ListParams::default()).await.unwrap();
    let victim: Api<Pod> = Api::all(fake.client("victim"));
    assert!(victim.list(&ListParams::default()).await.is_err());
    victim.list(&ListParams::default()).await.unwrap();
    let log = fake.requests();
    assert_eq!(
        log.iter().map(|r| (r.client.as_str(), r.status)).collect::<Vec<_>>()[1..],
        [("bystander", 200), ("victim", 500), ("victim", 200)]
    );
}
