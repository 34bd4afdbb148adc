//! Errors as data, end to end: permanent refusals from the API server and from UFM are shown
//! where an operator looks and are not retried hot, a wrong UFM password does not become a
//! login storm, oversized input takes nothing, freed GUIDs are reused soon, and a new leader
//! reports the bad networks it saw as a follower. Tests wait on counts, never on a sleep; where a
//! back-off is the behaviour, the gaps between the logged attempts are bounded from below.

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

/// The time between consecutive PATCHes of `pod`, in arrival order.
fn patch_gaps(env: &Env, pod: &str) -> Vec<Duration> {
    let path = format!("/api/v1/namespaces/t/pods/{pod}");
    let mut at: Vec<_> = env.api.requests().into_iter().filter(|r| r.method == "PATCH" && r.path == path).collect();
    at.sort_by_key(|r| r.seq);
    at.windows(2).map(|w| w[1].at.duration_since(w[0].at)).collect()
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
    // Pauses of 0.2, 0.4, 0.8, 1.6 s (jitter only lengthens them): each gap between attempts
    // is at least the pause before it. A back-off that restarts at its shortest pause (the old
    // bug) makes every gap about 0.2 s and fails from the second gap on.
    eventually("five attempts", || pod_patches(&env, "p1") >= 5).await;
    let gaps = patch_gaps(&env, "p1");
    for (i, gap) in gaps.iter().take(4).enumerate() {
        // 10% slack: the pause may start a little before the refused request was logged.
        let pause = Duration::from_millis(180 << i);
        assert!(*gap >= pause, "gap {i} is {gap:?}, shorter than the pause {pause:?}: {gaps:?}");
    }
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
    assert_eq!(sample(&metrics, "fabric_sync_ufm_auth_failing{fabric=\"default\"}"), Some(1.0));
    // Pauses of 1 s doubling up to the retry cap (2 s in these tests; jitter only lengthens
    // them) between refused logins: each gap is at least 1 s and, once doubled, 2 s (the old loop
    // retried every ~0.2 s, ~43 logins in 10 s).
    let before = env.ufm.requests().len();
    eventually("three more refused logins", || env.ufm.requests().len() >= before + 3).await;
    let at: Vec<u64> = env.ufm.requests()[before..].iter().map(|r| r.time_ms).collect();
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    // The first counted login may already follow a longer pause: lower bounds only.
    assert!(gaps[0] >= 900 && gaps[1] >= 1800, "refused logins {gaps:?} ms apart");
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
    let lists = c.stats.fabric_total(|f| &f.lists);
    eventually("three more listings", || c.stats.fabric_total(|f| &f.lists) >= lists + 3).await;
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
