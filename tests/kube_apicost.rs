//! What configuring pods costs the API server, counted (never timed): the real controller over
//! HTTP against the fake API server, and the writer against a watch cache filled by hand.

mod support;

use std::sync::Arc;

use fabric_sync::engine::{Claim, ClaimOutcome, ClaimedAttachment, ClusterWriter, ObjectKey, PodUid, Slot};
use fabric_sync::kube::{EventPublisher, KubeWriter, NetworkUids, RateLimit, WatchCache, limited_client};
use fabric_sync::netdef::NetworkKey;
use fabric_sync::ops::Metrics;
use kube::core::ObjectMeta;
use serde_json::Value;
use support::*;

const N: usize = 12;

fn by(api: &FakeApi, client: &str, verb: &str, res: Res) -> usize {
    api.requests_by(client).iter().filter(|r| r.res == Some(res) && r.verb == Some(verb)).count()
}

fn all_configured(env: &Env) -> bool {
    (0..N).all(|i| env.configured_element(&format!("p{i}")).is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_pods_configured_cost_n_pod_patches_n_ledger_creates_and_no_reads() {
    let env = Env::new().await;
    env.api.set_absent(Res::Smcs, true);
    env.nad("ib-a", "0x10", false);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("the controller leads", || c.is_leader()).await;
    for i in 0..N {
        env.pod(&format!("p{i}"), r#"[{"name":"ib-a"}]"#, &[]);
    }
    eventually("every pod configured", || all_configured(&env)).await;
    eventually("every status written", || {
        (0..N).all(|i| env.annotation(&format!("p{i}"), STATUS).as_deref() == Some(r#"{"t/ib-a":"configured"}"#))
    })
    .await;
    assert_eq!(by(&env.api, "ctrl-a", "patch", Res::Pods), N, "one pod patch per pod");
    assert_eq!(by(&env.api, "ctrl-a", "get", Res::Pods), 0, "no pod read before a write");
    assert_eq!(by(&env.api, "ctrl-a", "create", Res::GuidClaims), N, "one ledger create per pod");
    assert_eq!(by(&env.api, "ctrl-a", "patch", Res::GuidClaims), 0);
    assert_eq!(by(&env.api, "ctrl-a", "get", Res::GuidClaims), 0);
    // Each patch carried the version the watcher had seen, and the pod's UID.
    for r in env.api.requests_by("ctrl-a").iter().filter(|r| r.res == Some(Res::Pods) && r.verb == Some("patch")) {
        let body: Value = serde_json::from_str(r.body.as_deref().unwrap_or("{}")).unwrap();
        assert!(body.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_some_and(|v| !v.is_empty()));
        assert!(body.pointer("/metadata/uid").and_then(Value::as_str).is_some());
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_calls_are_declared(&env.api, "ctrl-a");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_costs_exactly_one_read_and_one_more_patch() {
    let env = Env::new().await;
    env.api.set_absent(Res::Smcs, true);
    env.nad("ib-a", "0x10", false);
    env.api.fail(Fault::on("PATCH", Res::Pods, 409).for_client("ctrl-a").times(1));
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    env.pod("p0", r#"[{"name":"ib-a"}]"#, &[]);
    eventually("p0 configured", || env.configured_element("p0").is_some()).await;
    assert_eq!(by(&env.api, "ctrl-a", "get", Res::Pods), 1, "the 409 is followed by one read");
    let statuses: Vec<u16> = env
        .api
        .requests_by("ctrl-a")
        .iter()
        .filter(|r| r.res == Some(Res::Pods) && r.verb == Some("patch"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [409, 200]);
    c.stop().await;
}

fn claim(pkey: &str) -> Claim {
    Claim {
        pod_uid: PodUid::new("uid-1"),
        pod: ObjectKey { namespace: "t".into(), name: "p".into() },
        node: Arc::from("n1"),
        migrated: false,
        deleting: false,
        attachments: vec![ClaimedAttachment {
            network: NetworkKey::new("t", "ib"),
            slot: Slot::Occurrence(0),
            guid: "02:00:00:00:00:00:00:2a".parse().unwrap(),
            pkey: Some(pkey.parse().unwrap()),
            former_pkeys: vec![],
            fabric: None,
        }],
    }
}

fn seen(obj: &Value) -> ObjectMeta {
    serde_json::from_value(obj["metadata"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_claim_is_updated_by_one_patch_with_its_version_and_a_409_costs_one_read() {
    let env = Env::new().await;
    let client = env.api.client("w");
    let cache = Arc::new(WatchCache::default());
    let writer = KubeWriter::new(
        client.clone(),
        EventPublisher::new(client, "w", Arc::new(NetworkUids::default())),
        Metrics::new(),
    )
    .with_cache(cache.clone());
    // Not watched yet: created, nothing read.
    assert_eq!(writer.write_claim(&claim("0x10")).await, Ok(ClaimOutcome::Written));
    assert_eq!((by(&env.api, "w", "create", Res::GuidClaims), by(&env.api, "w", "get", Res::GuidClaims)), (1, 0));
    // The watcher saw it: the update is one patch carrying its version.
    let obj = env.api.get(Res::GuidClaims, "t", "uid-1").unwrap();
    cache.claim_seen(&seen(&obj));
    assert_eq!(writer.write_claim(&claim("0x20")).await, Ok(ClaimOutcome::Written));
    let patches: Vec<RequestRecord> = env
        .api
        .requests_by("w")
        .into_iter()
        .filter(|r| r.res == Some(Res::GuidClaims) && r.verb == Some("patch"))
        .collect();
    assert_eq!(patches.len(), 1);
    let body: Value = serde_json::from_str(patches[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(body.pointer("/metadata/resourceVersion"), obj.pointer("/metadata/resourceVersion"));
    assert_eq!(by(&env.api, "w", "get", Res::GuidClaims), 0);
    // The cache is stale (another writer changed the claim): one 409, one read, one patch.
    env.api.merge_patch(Res::GuidClaims, "t", "uid-1", serde_json::json!({"metadata": {"labels": {"x": "y"}}}));
    assert_eq!(writer.write_claim(&claim("0x30")).await, Ok(ClaimOutcome::Written));
    assert_eq!(by(&env.api, "w", "get", Res::GuidClaims), 1);
    assert_eq!(by(&env.api, "w", "patch", Res::GuidClaims), 3);
    assert_eq!(by(&env.api, "w", "create", Res::GuidClaims), 1);
    let now = env.api.get(Res::GuidClaims, "t", "uid-1").unwrap();
    assert_eq!(now.pointer("/spec/attachments/0/pkey").and_then(Value::as_str), Some("0x30"));
    assert_eq!(now.pointer("/metadata/labels/x").and_then(Value::as_str), Some("y"));
}

/// A client of the fake API server named `name`, through the controller's rate limiter.
fn limited(env: &Env, name: &str, limit: RateLimit, metrics: &Arc<Metrics>) -> kube::Client {
    let mut config = kube::Config::new(env.api.url().parse().unwrap());
    config.headers.push((axum::http::header::USER_AGENT, axum::http::HeaderValue::from_str(name).unwrap()));
    limited_client(config, limit, Some(metrics.clone())).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_the_budget_as_the_server_counts_it() {
    let env = Env::new().await;
    env.api.set_absent(Res::Smcs, true);
    env.nad("ib-a", "0x10", false);
    let (qps, burst) = (20.0, 5);
    let limiter_metrics = Metrics::new();
    let client = limited(&env, "ctrl-q", RateLimit { qps, burst }, &limiter_metrics);
    let c = env.controller_with_client("ctrl-q", UfmAuth::Basic, test_config("ctrl-q"), client).await;
    eventually("the controller leads", || c.is_leader()).await;
    for i in 0..N * 2 {
        env.pod(&format!("p{i}"), r#"[{"name":"ib-a"}]"#, &[]);
    }
    eventually("every pod configured", || (0..N * 2).all(|i| env.configured_element(&format!("p{i}")).is_some())).await;
    // Requests other than the Lease's (which never wait, but whose tokens the others pay for),
    // in arrival order: n of them cannot have arrived in less than (n - burst) / qps.
    let mut arrivals: Vec<std::time::Instant> =
        env.api.requests_by("ctrl-q").iter().filter(|r| r.res != Some(Res::Leases)).map(|r| r.at).collect();
    arrivals.sort();
    assert!(arrivals.len() > 2 * N, "{} requests", arrivals.len());
    for (i, first) in arrivals.iter().enumerate() {
        for (j, later) in arrivals.iter().enumerate().skip(i + burst as usize + 2) {
            let window = later.duration_since(*first).as_secs_f64();
            // One token of slack each side for arrival jitter on loopback.
            let budget = f64::from(burst) + qps * window + 2.0;
            assert!((j - i + 1) as f64 <= budget, "{} requests arrived within {window:.3} s", j - i + 1);
        }
    }
    let text = limiter_metrics.render(&c.stats);
    assert!(sample(&text, "fabric_sync_kube_api_throttled_total").unwrap_or(0.0) >= 1.0, "the limiter engaged");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_once_after_its_retry_after_and_the_engine_never_sees_it() {
    let env = Env::new().await;
    env.api.set_absent(Res::Smcs, true);
    env.nad("ib-a", "0x10", false);
    env.api.fail(Fault::on("PATCH", Res::Pods, 429).for_client("ctrl-r").retry_after(1).times(1));
    let limiter_metrics = Metrics::new();
    let client = limited(&env, "ctrl-r", RateLimit { qps: 0.0, burst: 1 }, &limiter_metrics);
    let c = env.controller_with_client("ctrl-r", UfmAuth::Basic, test_config("ctrl-r"), client).await;
    env.pod("p0", r#"[{"name":"ib-a"}]"#, &[]);
    eventually("p0 configured", || env.configured_element("p0").is_some()).await;
    let patches: Vec<RequestRecord> = env
        .api
        .requests_by("ctrl-r")
        .into_iter()
        .filter(|r| r.res == Some(Res::Pods) && r.verb == Some("patch"))
        .collect();
    let statuses: Vec<u16> = patches.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200], "one retry, by the client layer (kube's own retry is off)");
    let gap = patches[1].at.duration_since(patches[0].done);
    assert!(gap >= std::time::Duration::from_secs(1), "Retry-After: 1 was honoured: {gap:?}");
    let text = limiter_metrics.render(&c.stats);
    assert_eq!(sample(&text, "fabric_sync_kube_api_retries_total"), Some(1.0));
    // The engine saw one successful patch: no failure was counted or retried there.
    assert_eq!(sample(&c.metrics.render(&c.stats), "fabric_sync_pod_patch_failures_total"), Some(0.0));
    c.stop().await;
}
