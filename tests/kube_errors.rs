//! Errors as data, end to end: permanent refusals from the API server and from UFM are shown
//! where an operator looks and are not retried hot, a wrong UFM password does not become a
//! login storm, oversized input takes nothing, freed GUIDs are reused soon, and a new leader
//! reports the bad networks it saw as a follower. Attempts are counted, not timed; where a rate
//! is the behaviour, the test watches a fixed window and bounds the count from both sides.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn status(env: &Env, pod: &str) -> String {
    env.annotation(pod, STATUS).unwrap_or_default()
}

fn reasons(env: &Env, kind: &str, name: &str) -> Vec<String> {
    events_about(&env.api, kind, name)
        .iter()
        .filter_map(|e| e.get("reason").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn pod_patches(env: &Env, pod: &str) -> usize {
    let path = format!("/api/v1/namespaces/t/pods/{pod}");
    env.api.requests().iter().filter(|r| r.method == "PATCH" && r.path == path).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_patch_refused_for_good_is_retried_with_a_growing_pause_and_reported() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("p1", "ib", &[]);
    // An admission policy (or RBAC) refuses every write to pods.
    env.api.fail(Fault::on_verb("patch", Res::Pods, 403));
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("the first refused patch", || pod_patches(&env, "p1") >= 1).await;
    eventually("a WriteRefused Event on the pod", || reasons(&env, "Pod", "p1").iter().any(|r| r == "WriteRefused"))
        .await;
    let first = pod_patches(&env, "p1");
    // The window: pauses of 0.2, 0.4, 0.8, 1.6, 3.2 s (+25% jitter) fit about 5 retries in 8 s;
    // a back-off that restarts at its shortest pause (the old bug) would make 30 or more.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let retries = pod_patches(&env, "p1") - first;
    assert!((2..=6).contains(&retries), "{retries} retries of a permanently refused patch in 8 s");
    let refused = reasons(&env, "Pod", "p1").iter().filter(|r| *r == "WriteRefused").count();
    assert_eq!(refused, 1, "one Event, not one per attempt");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ufm_password_pauses_ufm_traffic_instead_of_storming_the_login() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("p1", "ib", &[]);
    let c = env.controller("ctrl", UfmAuth::WrongPassword).await;
    eventually_async("readyz names the credentials", || async {
        let (code, body) = c.admin_get("/readyz").await;
        code == 503 && body.contains("refuses the credentials")
    })
    .await;
    let (_, metrics) = c.admin_get("/metrics").await;
    assert_eq!(sample(&metrics, "fabric_sync_ufm_auth_failing"), Some(1.0));
    let before = env.ufm.requests().len();
    // Pauses of 1, 2, 4, 8 s: at most 4 attempts in 10 s (the old loop made ~43).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let logins = env.ufm.requests().len() - before;
    assert!((1..=5).contains(&logins), "{logins} UFM requests in 10 s with a wrong password");
    assert!(env.ufm.requests().iter().all(|r| r.status == Some(401)), "nothing but refused logins");
    assert!(env.configured_element("p1").is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_attribute_ufm_refuses_is_shown_and_not_retried_until_the_nad_changes() {
    // This UFM does not support 300 Gb/s, though fabric-sync's list (UFM's full one) has it.
    let env = Env::with_ufm(|c| c.rate_limits = vec![2.5, 100.0, 200.0]).await;
    let nad = |rate: &str| {
        json!({"metadata": {"name": "ib", "namespace": "t", "annotations": {"fabric-sync.io/rate-limit": rate}},
               "spec": {"config": json!({"cniVersion": "0.3.1", "name": "ib", "type": "ib-sriov", "pkey": "0x10"}).to_string()}})
    };
    env.api.create(Res::Nads, nad("300"));
    env.pod("p1", "ib", &[]);
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("the pod's status names UFM's refusal", || status(&env, "p1").contains("refused: FabricRejected")).await;
    eventually("an Event on the NAD", || {
        reasons(&env, "NetworkAttachmentDefinition", "ib").iter().any(|r| r == "FabricRejected")
    })
    .await;
    eventually("an Event on the pod", || reasons(&env, "Pod", "p1").iter().any(|r| r == "FabricRejected")).await;
    let adds = || env.ufm.requests().iter().filter(|r| r.method == "POST" && r.status == Some(400)).count();
    let refused = adds();
    // Resyncs come every second here; none of them retries the refused add.
    let lists = c.stats.lists.get();
    eventually("three more listings", || c.stats.lists.get() >= lists + 3).await;
    assert_eq!(adds(), refused, "a permanent refusal is not retried while the NAD is unchanged");
    // The tenant fixes the NAD: tried again at once, and it works.
    env.api.merge_patch(
        Res::Nads,
        "t",
        "ib",
        json!({"metadata": {"annotations": {"fabric-sync.io/rate-limit": "200"}}}),
    );
    eventually("configured after the fix", || env.configured_element("p1").is_some()).await;
    eventually("status configured", || status(&env, "p1") == r#"{"t/ib":"configured"}"#).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_asking_for_thousands_of_attachments_takes_no_guid() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    let many = vec!["ib"; 2500].join(",");
    env.pod("greedy", &many, &[]);
    env.pod("modest", "ib", &[]);
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("the modest pod configured", || env.configured_element("modest").is_some()).await;
    eventually("the greedy pod refused", || status(&env, "greedy").contains("FABRIC_SYNC_MAX_ATTACHMENTS_PER_POD"))
        .await;
    assert_eq!(env.members(0x10).len(), 1, "no GUID for the greedy pod in UFM");
    assert!(env.claim_for("greedy").is_none(), "no claim either");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_guid_is_reused_without_waiting_for_the_periodic_resync() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("a", "ib", &[]);
    env.pod("b", "ib", &[]);
    let mut config = test_config("ctrl");
    // A pool of two GUIDs, and resyncs far beyond the test's patience: only the listing that
    // confirms the removal can free a GUID in time.
    let engine = fabric_sync::config::EngineSettings::from_args(&fabric_sync::config::EngineArgs {
        guid_range_start: "02:00:00:00:00:00:00:00".into(),
        guid_range_end: "02:00:00:00:00:00:00:01".into(),
        ..Default::default()
    })
    .expect("settings");
    config.engine = engine.engine_config().expect("engine config");
    config.timing.resync_interval = Duration::from_secs(3600);
    config.timing.periodic_update = Duration::from_secs(3600);
    let c = env.controller_with("ctrl", UfmAuth::Basic, config).await;
    eventually("a and b configured", || env.configured_element("a").is_some() && env.configured_element("b").is_some())
        .await;
    env.pod("c", "ib", &[]);
    eventually("c waits for a GUID", || status(&env, "c").contains("PoolExhausted")).await;
    env.api.delete(Res::Pods, "t", "a");
    eventually("c gets a's GUID", || env.configured_element("c").is_some()).await;
    assert_eq!(env.members(0x10).len(), 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_nad_seen_before_leadership_gets_its_event_from_the_new_leader() {
    let env = Env::new().await;
    env.nad("broken", "1000", false);
    // Another replica holds the Lease for two more seconds: this one starts as a follower.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    env.api.create(
        Res::Leases,
        json!({"metadata": {"name": LEASE_NAME, "namespace": LEASE_NS},
               "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 2, "acquireTime": now, "renewTime": now}}),
    );
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually_async("caches synced as a follower", || async { c.stats.caches_synced() && !c.is_leader() }).await;
    eventually("leader after the other term ran out", || c.is_leader()).await;
    eventually("the NAD's InvalidNetwork Event", || {
        reasons(&env, "NetworkAttachmentDefinition", "broken").iter().any(|r| r == "InvalidNetwork")
    })
    .await;
    c.stop().await;
}
