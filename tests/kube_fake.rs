//! The fake API server itself, driven by a real `kube::Client`: it must behave like the real
//! one where the controller depends on it, or the controller tests prove nothing.

mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
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

// ---- GuidClaims, garbage collection, namespace deletion, finalizers, faults ----

type Claims = Api<DynamicObject>;

fn claims_in(fake: &FakeApi, ns: &str) -> Claims {
    Api::namespaced_with(fake.client("t"), ns, &guidclaims())
}

fn owner_ref(pod: &serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]})
}

/// A GuidClaim as the ledger design writes it, owned by `owners`.
fn claim(name: &str, ns: &str, owners: &[&serde_json::Value], finalizers: &[&str]) -> DynamicObject {
    let pod = owners.first().map(|p| p["metadata"]["name"].clone()).unwrap_or(json!("none"));
    let v = json!({
        "apiVersion": "fabric-sync.io/v1alpha1", "kind": "GuidClaim",
        "metadata": {"name": name, "namespace": ns, "finalizers": finalizers,
                     "ownerReferences": owners.iter().map(|o| owner_ref(o)).collect::<Vec<_>>(),
                     "labels": {"app.kubernetes.io/managed-by": "fabric-sync"}},
        "spec": {"pod": pod, "podUid": owners.first().map(|p| p["metadata"]["uid"].clone()), "node": "n1",
                 "migrated": false,
                 "attachments": [{"network": format!("{ns}/ib-a"), "interface": "net1", "occurrence": 0,
                                  "guid": "02:00:00:00:00:00:00:2a", "pkey": "0x1000"}]}
    });
    serde_json::from_value(v).unwrap()
}

fn api_code(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next watch event but bookmarks, as `TYPE name` (`+deleting` when it carries a
/// deletionTimestamp).
async fn next_event<K, S>(stream: &mut S) -> String
where
    K: kube::Resource,
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    let describe = |kind: &str, o: &K| {
        let deleting = if o.meta().deletion_timestamp.is_some() { " +deleting" } else { "" };
        format!("{kind} {}{deleting}", o.meta().name.clone().unwrap_or_default())
    };
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("a watch event within 10 s")
            .expect("the watch stream is open")
            .expect("a well-formed event");
        return match e {
            WatchEvent::Added(o) => describe("ADDED", &o),
            WatchEvent::Modified(o) => describe("MODIFIED", &o),
            WatchEvent::Deleted(o) => describe("DELETED", &o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(s) => format!("ERROR {}", s.code),
        };
    }
}

fn json_patch_request(path: &str, ops: serde_json::Value) -> axum::http::Request<Vec<u8>> {
    http_patch(path, "application/json-patch+json", &ops)
}

#[tokio::test]
async fn guidclaims_are_served_at_their_group_paths_like_any_resource() {
    let fake = FakeApi::start().await;
    let p = fake.create(Res::Pods, pod("p", "n1"));
    let client = fake.client("t");
    let claims = claims_in(&fake, "t");
    let created = claims.create(&PostParams::default(), &claim("c1", "t", &[&p], &[])).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("t"));
    assert!(created.metadata.uid.is_some());
    claims.create(&PostParams::default(), &claim("c2", "other", &[], &[])).await.unwrap_err();
    claims_in(&fake, "other").create(&PostParams::default(), &claim("c2", "other", &[], &[])).await.unwrap();
    let all: Claims = Api::all_with(client.clone(), &guidclaims());
    let names: Vec<String> =
        all.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|c| c.metadata.name).collect();
    assert_eq!(names, ["c2", "c1"], "listed in namespace, then name order, as etcd keys sort");
    assert_eq!(
        claims
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=fabric-sync"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // Merge patch, JSON patch, get, delete.
    claims.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"migrated": true}}))).await.unwrap();
    let ops = json!([{"op": "test", "path": "/spec/migrated", "value": true},
                     {"op": "replace", "path": "/spec/attachments/0/pkey", "value": "0x2000"}]);
    client
        .request::<DynamicObject>(json_patch_request("/apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/c1", ops))
        .await
        .unwrap();
    let c1 = claims.get("c1").await.unwrap();
    assert_eq!(c1.data["spec"]["attachments"][0]["pkey"], "0x2000");
    assert_eq!(c1.types.as_ref().map(|t| t.kind.as_str()), Some("GuidClaim"));
    claims.delete("c1", &DeleteParams::default()).await.unwrap();
    assert!(claims.get_opt("c1").await.unwrap().is_none());
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(paths.contains(&"/apis/fabric-sync.io/v1alpha1/guidclaims".to_string()));
    assert!(paths.contains(&"/apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/c1".to_string()));
    assert_eq!(fake.count("POST", Res::GuidClaims), 3);
    assert_eq!(fake.count_verb("list", Res::GuidClaims), 2);
    assert_eq!(fake.count("PATCH", Res::GuidClaims), 2);
    assert_eq!(fake.count("DELETE", Res::GuidClaims), 1);
}

#[tokio::test]
async fn a_pods_claims_are_collected_with_it_held_ones_only_marked() {
    let fake = FakeApi::start().await;
    let p = fake.create(Res::Pods, pod("p", "n1"));
    let q = fake.create(Res::Pods, pod("q", "n1"));
    let claims = claims_in(&fake, "t");
    let pp = PostParams::default();
    let free = claims.create(&pp, &claim("c-free", "t", &[&p], &[])).await.unwrap();
    claims.create(&pp, &claim("c-held", "t", &[&p], &["fabric-sync.io/fabric-cleanup"])).await.unwrap();
    claims.create(&pp, &claim("c-shared", "t", &[&p, &q], &[])).await.unwrap();
    claims.create(&pp, &claim("c-other", "t", &[&q], &[])).await.unwrap();
    // A dependent of a dependent goes too.
    let free = serde_json::to_value(&free).unwrap();
    claims.create(&pp, &claim("c-grand", "t", &[&free], &[])).await.unwrap();
    let rv = claims.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut events = claims.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "t");
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut events).await);
    }
    assert_eq!(seen, ["DELETED c-free", "DELETED c-grand", "MODIFIED c-held +deleting", "MODIFIED c-shared"]);
    assert!(claims.get_opt("c-free").await.unwrap().is_none());
    assert!(claims.get("c-held").await.unwrap().metadata.deletion_timestamp.is_some());
    let shared = claims.get("c-shared").await.unwrap();
    assert_eq!(shared.metadata.owner_references.unwrap().iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["q"]);
    assert!(claims.get("c-other").await.unwrap().metadata.deletion_timestamp.is_none());

    // The held claim goes when its finalizer does.
    claims
        .patch("c-held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, "DELETED c-held +deleting");
    assert!(claims.get_opt("c-held").await.unwrap().is_none());
    // A pod held by its own finalizer keeps its claims until it is really removed.
    let mut r = pod("r", "n1");
    r["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let r = fake.create(Res::Pods, r);
    claims.create(&pp, &claim("c-r", "t", &[&r], &[])).await.unwrap();
    pods.delete("r", &DeleteParams::default()).await.unwrap();
    assert!(claims.get_opt("c-r").await.unwrap().is_some());
    pods.patch("r", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": []}}))).await.unwrap();
    assert!(claims.get_opt("c-r").await.unwrap().is_none());
}

#[tokio::test]
async fn with_collection_off_claims_outlive_their_pods_until_a_pass() {
    let fake = FakeApi::start().await;
    let p = fake.create(Res::Pods, pod("p", "n1"));
    let q = fake.create(Res::Pods, pod("q", "n1"));
    let claims = claims_in(&fake, "t");
    let pp = PostParams::default();
    claims.create(&pp, &claim("c-p", "t", &[&p], &[])).await.unwrap();
    claims.create(&pp, &claim("c-held", "t", &[&p], &["fabric-sync.io/fabric-cleanup"])).await.unwrap();
    claims.create(&pp, &claim("c-q", "t", &[&q], &[])).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "t");

    fake.set_garbage_collection(false);
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(claims.get_opt("c-p").await.unwrap().is_some(), "no collection while it is off");
    assert!(claims.get("c-held").await.unwrap().metadata.deletion_timestamp.is_none());
    // A claim naming an owner that never existed is garbage too, and so is one whose owner is in
    // another namespace (owner references do not cross namespaces).
    let ghost = json!({"metadata": {"name": "ghost", "uid": "00000000-dead-4000-8000-000000000000"}});
    claims.create(&pp, &claim("c-ghost", "t", &[&ghost], &[])).await.unwrap();
    let far = claims_in(&fake, "elsewhere");
    far.create(&pp, &claim("c-far", "elsewhere", &[&q], &[])).await.unwrap();

    fake.collect_garbage();
    assert!(claims.get_opt("c-p").await.unwrap().is_none());
    assert!(claims.get_opt("c-ghost").await.unwrap().is_none());
    assert!(far.get_opt("c-far").await.unwrap().is_none());
    assert!(claims.get("c-held").await.unwrap().metadata.deletion_timestamp.is_some());
    assert!(claims.get("c-q").await.unwrap().metadata.deletion_timestamp.is_none(), "a live owner keeps it");
    // Still off: the next removal leaves its dependents; switching collection on collects them.
    pods.delete("q", &DeleteParams::default()).await.unwrap();
    assert!(claims.get_opt("c-q").await.unwrap().is_some());
    fake.set_garbage_collection(true);
    assert!(claims.get_opt("c-q").await.unwrap().is_none());
}

#[tokio::test]
async fn a_deleted_namespace_waits_for_held_claims_and_refuses_new_content() {
    let fake = FakeApi::start().await;
    fake.create(Res::Namespaces, json!({"metadata": {"name": "team-a"}}));
    fake.create(Res::Namespaces, json!({"metadata": {"name": "team-b"}}));
    let mut p = pod("p", "n1");
    p["metadata"]["namespace"] = json!("team-a");
    let p = fake.create(Res::Pods, p);
    let mut bystander = pod("b", "n1");
    bystander["metadata"]["namespace"] = json!("team-b");
    fake.create(Res::Pods, bystander);
    fake.create(Res::Nads, json!({"metadata": {"name": "ib-a", "namespace": "team-a"}, "spec": {"config": "{}"}}));
    let claims = claims_in(&fake, "team-a");
    claims
        .create(&PostParams::default(), &claim("c", "team-a", &[&p], &["fabric-sync.io/fabric-cleanup"]))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(fake.client("t"));
    let rv = namespaces.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut ns_events = namespaces.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    namespaces.delete("team-a", &DeleteParams::default()).await.unwrap();
    let ns = namespaces.get("team-a").await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "team-a");
    assert!(pods.get_opt("p").await.unwrap().is_none());
    assert!(fake.get(Res::Nads, "team-a", "ib-a").is_none());
    assert!(claims.get("c").await.unwrap().metadata.deletion_timestamp.is_some(), "held by its finalizer");
    assert!(fake.get(Res::Pods, "team-b", "b").is_some(), "other namespaces are untouched");
    // A second delete is refused while content remains, as the real server does.
    let (code, reason, _) = api_code(namespaces.delete("team-a", &DeleteParams::default()).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    // No new content in a terminating namespace.
    let mut new = pod("new", "n1");
    new["metadata"]["namespace"] = json!("team-a");
    let (code, reason, message) =
        api_code(pods.create(&PostParams::default(), &serde_json::from_value(new).unwrap()).await);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(
        message.contains("unable to create new content in namespace team-a because it is being terminated"),
        "{message}"
    );
    let (code, _, _) = api_code(claims.create(&PostParams::default(), &claim("c2", "team-a", &[], &[])).await);
    assert_eq!(code, 403);
    // Writes to what is still there are allowed: removing the finalizer lets everything go.
    let ops = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "fabric-sync.io/fabric-cleanup"},
                     {"op": "remove", "path": "/metadata/finalizers/0"}]);
    let path = "/apis/fabric-sync.io/v1alpha1/namespaces/team-a/guidclaims/c";
    fake.client("t").request::<DynamicObject>(json_patch_request(path, ops)).await.unwrap();
    assert!(claims.get_opt("c").await.unwrap().is_none());
    assert!(namespaces.get_opt("team-a").await.unwrap().is_none(), "the namespace goes once it is empty");
    let seen = [next_event(&mut ns_events).await, next_event(&mut ns_events).await];
    assert_eq!(seen, ["MODIFIED team-a +deleting", "DELETED team-a +deleting"]);
    // An empty namespace goes at once; the name can be used again after.
    namespaces.delete("team-b", &DeleteParams::default()).await.unwrap();
    assert!(fake.get(Res::Pods, "team-b", "b").is_none());
    assert!(namespaces.get_opt("team-b").await.unwrap().is_none());
    fake.create(Res::Namespaces, json!({"metadata": {"name": "team-a"}}));
    claims.create(&PostParams::default(), &claim("c3", "team-a", &[], &[])).await.unwrap();
}

#[tokio::test]
async fn a_namespace_deleted_while_nothing_runs_finishes_through_env_helpers() {
    let env = Env::new().await;
    let p = env.pod("trainer-0", "[]", &[]);
    let c = claim("c", "t", &[&p], &["fabric-sync.io/fabric-cleanup"]);
    env.api.create(Res::GuidClaims, serde_json::to_value(&c).unwrap());
    assert_eq!(env.claims().len(), 1);
    assert_eq!(env.claim_for("trainer-0").unwrap()["metadata"]["name"], "c");
    assert!(env.claim_for("trainer-1").is_none());
    let ns = env.delete_namespace("t");
    assert_eq!(ns["status"]["phase"], "Terminating");
    env.delete_namespace("t"); // again: not an error while it terminates
    assert!(env.claim_for("trainer-0").unwrap()["metadata"]["deletionTimestamp"].is_string());
    assert!(env.api.get(Res::Namespaces, "", "t").is_some());
    env.api.merge_patch(Res::GuidClaims, "t", "c", json!({"metadata": {"finalizers": null}}));
    assert!(env.claims().is_empty());
    assert!(env.api.get(Res::Namespaces, "", "t").is_none(), "namespace t went with its last object");
}

#[tokio::test]
async fn finalizers_come_off_by_merge_or_json_patch_with_version_preconditions() {
    let fake = FakeApi::start().await;
    let client = fake.client("t");
    let claims = claims_in(&fake, "t");
    let pp = PostParams::default();
    claims.create(&pp, &claim("m", "t", &[], &["a.io/one", "b.io/two"])).await.unwrap();
    claims.create(&pp, &claim("j", "t", &[], &["a.io/one"])).await.unwrap();
    claims.delete("m", &DeleteParams::default()).await.unwrap();
    claims.delete("j", &DeleteParams::default()).await.unwrap();
    let stale = claims.get("m").await.unwrap().metadata.resource_version.unwrap();
    claims
        .patch("m", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();

    // Merge patch: a stale version conflicts, the current one applies; a new list keeps the object.
    let with = |rv: &str, f: serde_json::Value| json!({"metadata": {"resourceVersion": rv, "finalizers": f}});
    let (code, _, _) =
        api_code(claims.patch("m", &PatchParams::default(), &Patch::Merge(with(&stale, json!(["b.io/two"])))).await);
    assert_eq!(code, 409);
    let current = claims.get("m").await.unwrap().metadata.resource_version.unwrap();
    let m =
        claims.patch("m", &PatchParams::default(), &Patch::Merge(with(&current, json!(["b.io/two"])))).await.unwrap();
    assert_eq!(m.metadata.finalizers.as_deref(), Some(&["b.io/two".to_string()][..]));
    assert!(m.metadata.deletion_timestamp.is_some());
    let current = m.metadata.resource_version.unwrap();
    claims.patch("m", &PatchParams::default(), &Patch::Merge(with(&current, json!(null)))).await.unwrap();
    assert!(claims.get_opt("m").await.unwrap().is_none());

    // JSON patch: a failing `test` (wrong finalizer, stale version) changes nothing.
    let path = "/apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/j";
    let j = claims.get("j").await.unwrap();
    let rv = j.metadata.resource_version.clone().unwrap();
    let remove_if = |pointer: &str, value: &str| json!([{"op": "test", "path": pointer, "value": value}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    let r = client
        .request::<DynamicObject>(json_patch_request(path, remove_if("/metadata/finalizers/0", "x.io/other")))
        .await;
    assert_eq!(api_code(r).0, 422);
    let r =
        client.request::<DynamicObject>(json_patch_request(path, remove_if("/metadata/resourceVersion", &stale))).await;
    assert_eq!(api_code(r).0, 422);
    assert_eq!(claims.get("j").await.unwrap().metadata.resource_version.unwrap(), rv);
    client
        .request::<DynamicObject>(json_patch_request(path, remove_if("/metadata/resourceVersion", &rv)))
        .await
        .unwrap();
    assert!(claims.get_opt("j").await.unwrap().is_none());
}

#[tokio::test]
async fn an_object_being_deleted_takes_no_new_finalizer_and_keeps_its_deletion_timestamp() {
    let fake = FakeApi::start().await;
    let client = fake.client("t");
    let claims = claims_in(&fake, "t");
    claims.create(&PostParams::default(), &claim("c", "t", &[], &["a.io/one"])).await.unwrap();
    // Not being deleted yet: finalizers can be added.
    let c = claims
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["a.io/one", "b.io/two"]}})),
        )
        .await
        .unwrap();
    assert_eq!(c.metadata.finalizers.unwrap().len(), 2);
    claims.delete("c", &DeleteParams::default()).await.unwrap();
    let before = claims.get("c").await.unwrap();

    let add = json!({"metadata": {"finalizers": ["a.io/one", "b.io/two", "c.io/three"]}});
    let (code, reason, message) = api_code(claims.patch("c", &PatchParams::default(), &Patch::Merge(add)).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"c.io/three\"}"), "{message}");
    let swap = json!({"metadata": {"finalizers": ["x.io/new"]}});
    assert_eq!(api_code(claims.patch("c", &PatchParams::default(), &Patch::Merge(swap)).await).0, 422);
    let ops = json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "c.io/three"}]);
    let r = client
        .request::<DynamicObject>(json_patch_request("/apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/c", ops))
        .await;
    assert_eq!(api_code(r).0, 422);
    assert_eq!(claims.get("c").await.unwrap().metadata.resource_version, before.metadata.resource_version);
    // A deletion cannot be taken back: the timestamp stays.
    let c = claims
        .patch("c", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"deletionTimestamp": null}})))
        .await
        .unwrap();
    assert_eq!(c.metadata.deletion_timestamp, before.metadata.deletion_timestamp);
    // Removing one of them is fine.
    let c = claims
        .patch("c", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": ["b.io/two"]}})))
        .await
        .unwrap();
    assert_eq!(c.metadata.finalizers.unwrap(), ["b.io/two"]);
}

#[tokio::test]
async fn permanent_refusals_last_until_cleared_and_429_says_when_to_retry() {
    let fake = FakeApi::start().await;
    fake.create(Res::Pods, pod("p", "n1"));
    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "t");
    let claims = claims_in(&fake, "t");
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"try": v}}}));

    fake.fail(Fault::on("PATCH", Res::Pods, 403));
    fake.fail(Fault::on_verb("create", Res::GuidClaims, 422).message("GuidClaim.fabric-sync.io \"c\" is invalid"));
    for i in 0..3 {
        let (code, reason, _) = api_code(pods.patch("p", &PatchParams::default(), &label(&i.to_string())).await);
        assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    }
    let (code, reason, message) = api_code(claims.create(&PostParams::default(), &claim("c", "t", &[], &[])).await);
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (422, "Invalid", "GuidClaim.fabric-sync.io \"c\" is invalid")
    );
    assert!(!pods.get("p").await.unwrap().metadata.labels.unwrap().contains_key("try"), "a refusal changes nothing");
    fake.clear_faults();
    pods.patch("p", &PatchParams::default(), &label("ok")).await.unwrap();
    assert_eq!(fake.count("PATCH", Res::Pods), 4);
    assert_eq!(fake.count("get", Res::Pods), 1);
    assert_eq!(fake.count_verb("create", Res::GuidClaims), 1);

    // 429 with Retry-After, as the wire shows it.
    fake.fail(Fault::on("PATCH", Res::Pods, 429).retry_after(1).times(1));
    let raw = reqwest::Client::new()
        .patch(format!("{}/api/v1/namespaces/t/pods/p", fake.url()))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"try":"raw"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 429);
    assert_eq!(raw.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let status: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(
        (status["reason"].as_str(), status["details"]["retryAfterSeconds"].as_u64()),
        (Some("TooManyRequests"), Some(1))
    );
    // kube's client waits as told and retries once.
    fake.fail(Fault::on("PATCH", Res::Pods, 429).retry_after(1).times(1));
    pods.patch("p", &PatchParams::default(), &label("after-429")).await.unwrap();
    let statuses: Vec<u16> =
        fake.requests().iter().filter(|r| r.method == "PATCH" && r.res == Some(Res::Pods)).map(|r| r.status).collect();
    assert_eq!(statuses, [403, 403, 403, 200, 429, 429, 200]);
    assert_eq!(pods.get("p").await.unwrap().metadata.labels.unwrap()["try"], "after-429");
}

#[tokio::test]
async fn delete_preconditions_conflict_and_orphaning_keeps_dependents() {
    let fake = FakeApi::start().await;
    let p = fake.create(Res::Pods, pod("p", "n1"));
    let claims = claims_in(&fake, "t");
    claims.create(&PostParams::default(), &claim("c", "t", &[&p], &[])).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(fake.client("t"), "t");
    let uid = |u: &str| DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some(u.into()), resource_version: None }),
        ..DeleteParams::default()
    };
    assert_eq!(api_code(pods.delete("p", &uid("another-pod")).await).0, 409);
    assert!(pods.get_opt("p").await.unwrap().is_some());
    let mut orphan = uid(p["metadata"]["uid"].as_str().unwrap());
    orphan.propagation_policy = DeleteParams::orphan().propagation_policy;
    pods.delete("p", &orphan).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
    let c = claims.get("c").await.unwrap();
    assert_eq!(c.metadata.owner_references.unwrap_or_default(), [], "orphaned, not collected");
}
