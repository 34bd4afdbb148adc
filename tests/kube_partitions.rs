//! Automatic partitions end to end (issue 16): a real `kube::Client` against the fake API server
//! and the real UFM client against mock-ufm over TLS, through the released `Controller` with
//! `with_partitions`. Every test asserts on what UFM ends up holding (partitions, names,
//! members), the PartitionClaims, the NADs' annotations and finalizers, and the pods.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fabric_sync::alloc::PkeyRange;
use fabric_sync::controller::Controller;
use fabric_sync::engine::{Policy, PolicyMode};
use fabric_sync::kube::PartitionSettings;
use fabric_sync::ops::Metrics;
use serde_json::{Value, json};
use support::*;

const AUTO: &str = "fabric-sync.io/pkey";
const ASSIGNED: &str = "fabric-sync.io/assigned-pkey";
const IBK_PKEY: &str = "mellanox.infiniband.pkey";
const NAD_FINALIZER: &str = "fabric-sync.io/partition";

/// A controller with automatic partitions over `range` (and a tenant policy, if given).
async fn start(env: &Env, name: &str, range: &str, policy: Option<&str>) -> Running {
    let mut config = test_config(name);
    let policy = policy.map(|t| Policy::parse("test-policy", t).expect("policy parses"));
    if policy.is_some() {
        // Enforced: an automatic pkey is fabric-sync's choice, never in a tenant's allow-list.
        config.engine.policy_mode = PolicyMode::Enforce;
    }
    config.engine.policy = policy.clone();
    let metrics = Metrics::new();
    let ufm = Arc::new(env.ufm_client(&metrics));
    let settings = PartitionSettings {
        range: PkeyRange::parse(range).expect("range"),
        policy,
        resync: Duration::from_millis(200),
    };
    let controller =
        Controller::new(env.api.client(name), ufm.clone(), config, metrics.clone()).with_partitions(settings, ufm);
    Running::start(name, controller, metrics).await
}

fn auto_nad(env: &Env, ns: &str, name: &str) -> Value {
    let config = json!({"cniVersion": "0.3.1", "name": name, "type": "ib-sriov", "pkey": ""});
    env.api.create(
        Res::Nads,
        json!({"metadata": {"name": name, "namespace": ns, "annotations": {AUTO: "auto"}},
               "spec": {"config": config.to_string()}}),
    )
}

fn pod_in(env: &Env, ns: &str, name: &str, network: &str) -> Value {
    env.api.create(
        Res::Pods,
        json!({
            "metadata": {"name": name, "namespace": ns, "annotations": {NETWORKS: network}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Pending"}
        }),
    )
}

fn element(env: &Env, ns: &str, pod: &str) -> Value {
    let p = env.api.get(Res::Pods, ns, pod).expect("pod exists");
    let text = p.pointer("/metadata/annotations/k8s.v1.cni.cncf.io~1networks").and_then(Value::as_str);
    serde_json::from_str::<Value>(text.unwrap_or("[]")).ok().and_then(|v| v.get(0).cloned()).unwrap_or(Value::Null)
}

fn configured_pkey(env: &Env, ns: &str, pod: &str) -> Option<String> {
    let e = element(env, ns, pod);
    (e.pointer("/cni-args/mellanox.infiniband.app").and_then(Value::as_str) == Some("configured"))
        .then(|| e.pointer("/cni-args/pkey").and_then(Value::as_str).map(str::to_string))
        .flatten()
}

fn guid_of(env: &Env, ns: &str, pod: &str) -> String {
    let e = element(env, ns, pod);
    ufm_guid(e.pointer("/cni-args/guid").or_else(|| e.get("infiniband-guid")).and_then(Value::as_str).unwrap_or(""))
}

fn status_of(env: &Env, ns: &str, pod: &str) -> String {
    let p = env.api.get(Res::Pods, ns, pod).expect("pod exists");
    p.pointer("/metadata/annotations/fabric-sync.io~1status").and_then(Value::as_str).unwrap_or("").to_string()
}

fn nad_annotation(env: &Env, ns: &str, name: &str, key: &str) -> Option<String> {
    let n = env.api.get(Res::Nads, ns, name)?;
    n.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str).map(str::to_string)
}

fn nad_finalizers(env: &Env, ns: &str, name: &str) -> Vec<String> {
    env.api
        .get(Res::Nads, ns, name)
        .and_then(|n| n.pointer("/metadata/finalizers").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// (name, pkey, phase, scope) of every PartitionClaim.
fn partition_claims(env: &Env) -> Vec<(String, String, String, Value)> {
    env.api
        .list(Res::PartitionClaims)
        .iter()
        .map(|c| {
            let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
            (
                s("/metadata/name"),
                s("/spec/pkey"),
                s("/status/phase"),
                c.pointer("/spec/scope").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn claim_phase(env: &Env, name: &str) -> Option<String> {
    env.api.get(Res::PartitionClaims, "", name)?.pointer("/status/phase").and_then(Value::as_str).map(str::to_string)
}

/// UFM's partitions (pkey → name, members) inside `lo..=hi`.
fn ufm_partitions(env: &Env, lo: u16, hi: u16) -> Vec<(u16, String, usize)> {
    env.ufm
        .snapshot()
        .iter()
        .filter(|(p, _)| (lo..=hi).contains(*p))
        .map(|(p, s)| (*p, s.name.clone(), s.members.len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_network_gets_a_named_partition_its_pods_use_and_deleting_it_cleans_up_everything() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    let c = start(&env, "ctrl-1", "0x1000-0x100f", None).await;
    eventually("the claim is Created", || claim_phase(&env, "pkey-0x1000").as_deref() == Some("Created")).await;
    assert_eq!(ufm_partitions(&env, 0x1000, 0x100f), vec![(0x1000, "fs_t_ib_auto_1000".to_string(), 0)]);
    eventually("the NAD records the pkey", || {
        nad_annotation(&env, "t", "ib-auto", ASSIGNED).as_deref() == Some("0x1000")
    })
    .await;
    assert_eq!(nad_annotation(&env, "t", "ib-auto", IBK_PKEY).as_deref(), Some("0x1000"));
    assert!(nad_finalizers(&env, "t", "ib-auto").contains(&NAD_FINALIZER.to_string()));
    let scope = &partition_claims(&env)[0].3;
    assert_eq!(scope, &json!({"network": "t/ib-auto"}));

    pod_in(&env, "t", "p1", "ib-auto");
    eventually("p1 configured in 0x1000", || configured_pkey(&env, "t", "p1").as_deref() == Some("0x1000")).await;
    let guid = guid_of(&env, "t", "p1");
    assert_eq!(env.members(0x1000), vec![guid]);

    // The NAD goes while its pod still runs: the members go, then the partition, the claim, the NAD.
    env.api.delete(Res::Nads, "t", "ib-auto");
    assert!(env.api.get(Res::Nads, "t", "ib-auto").is_some(), "the finalizer holds the NAD");
    eventually("the NAD is gone", || env.api.get(Res::Nads, "t", "ib-auto").is_none()).await;
    assert!(ufm_partitions(&env, 0x1000, 0x100f).is_empty(), "partition deleted from UFM");
    assert!(partition_claims(&env).is_empty(), "claim released");
    assert!(env.members(0x1000).is_empty());
    eventually("p1 waits", || !status_of(&env, "t", "p1").contains("configured")).await;

    // The pkey went back to the range: the next automatic network gets it again.
    auto_nad(&env, "t", "ib-next");
    eventually("0x1000 reused", || nad_annotation(&env, "t", "ib-next", ASSIGNED).as_deref() == Some("0x1000")).await;
    assert_eq!(ufm_partitions(&env, 0x1000, 0x100f), vec![(0x1000, "fs_t_ib_next_1000".to_string(), 0)]);
    let text = c.admin_get("/metrics").await.1;
    assert_eq!(sample(&text, "fabric_sync_pkey_range_size"), Some(16.0));
    assert_eq!(sample(&text, "fabric_sync_pkey_range_used"), Some(1.0));
    // UFM dropped the first partition with its last member; this one is empty: fabric-sync deletes it.
    env.api.delete(Res::Nads, "t", "ib-next");
    eventually("ib-next is gone", || env.api.get(Res::Nads, "t", "ib-next").is_none()).await;
    assert!(ufm_partitions(&env, 0x1000, 0x100f).is_empty());
    let text = c.admin_get("/metrics").await.1;
    let ops = |op: &str, result: &str| {
        let labels = [format!("operation=\"{op}\""), format!("result=\"{result}\"")];
        sum_samples(&text, "fabric_sync_partition_operations_total", &[labels[0].as_str(), labels[1].as_str()])
    };
    assert_eq!((ops("create", "ok"), ops("delete", "ok"), ops("release", "ok")), (2.0, 1.0, 2.0));
    assert_calls_are_declared(&env.api, "ctrl-1");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_rule_makes_its_auto_networks_share_one_pkey_and_others_keep_their_own() {
    let env = Env::new().await;
    env.api.create(Res::Namespaces, json!({"metadata": {"name": "u"}}));
    // Deny by default, and the rule allows no pkey: automatic networks are served all the same.
    let policy =
        "default: deny\nrules:\n  - name: shared\n    namespaces: [t]\n    autoPkey: namespace\n    pkeys: []\n";
    auto_nad(&env, "t", "ib-a");
    auto_nad(&env, "t", "ib-b");
    auto_nad(&env, "u", "ib-a");
    let c = start(&env, "ctrl-ns", "0x2000-0x200f", Some(policy)).await;
    eventually("all three annotated", || {
        [("t", "ib-a"), ("t", "ib-b"), ("u", "ib-a")]
            .iter()
            .all(|(ns, n)| nad_annotation(&env, ns, n, ASSIGNED).is_some())
    })
    .await;
    let t_a = nad_annotation(&env, "t", "ib-a", ASSIGNED);
    assert_eq!(t_a, nad_annotation(&env, "t", "ib-b", ASSIGNED), "one pkey for namespace t");
    assert_ne!(t_a, nad_annotation(&env, "u", "ib-a", ASSIGNED), "u has its own");
    let claims = partition_claims(&env);
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert!(claims.iter().any(|c| c.3 == json!({"namespace": "t"})), "{claims:?}");
    let names: Vec<String> = ufm_partitions(&env, 0x2000, 0x200f).into_iter().map(|p| p.1).collect();
    assert!(names.iter().any(|n| n.starts_with("fs_t_2")), "{names:?}");

    pod_in(&env, "t", "pa", "ib-a");
    pod_in(&env, "t", "pb", "ib-b");
    eventually("both configured", || {
        configured_pkey(&env, "t", "pa").is_some() && configured_pkey(&env, "t", "pb").is_some()
    })
    .await;
    assert_eq!(configured_pkey(&env, "t", "pa"), t_a);
    assert_eq!(configured_pkey(&env, "t", "pb"), t_a);
    let shared = u16::from_str_radix(t_a.as_deref().unwrap_or("").trim_start_matches("0x"), 16).expect("hex");
    assert_eq!(env.members(shared).len(), 2);

    // One NAD of the namespace goes: its pod leaves the partition, the partition stays for the other.
    env.api.delete(Res::Nads, "t", "ib-a");
    eventually("t/ib-a released", || env.api.get(Res::Nads, "t", "ib-a").is_none()).await;
    assert_eq!(env.members(shared), vec![guid_of(&env, "t", "pb")]);
    assert!(ufm_partitions(&env, shared, shared).len() == 1, "the shared partition stays");
    // The last one goes: so does the partition.
    env.api.delete(Res::Nads, "t", "ib-b");
    eventually("shared partition deleted", || ufm_partitions(&env, shared, shared).is_empty()).await;
    eventually("namespace claim released", || partition_claims(&env).len() == 1).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_asking_at_once_get_different_pkeys_and_a_lost_race_picks_again() {
    let env = Env::new().await;
    for n in ["n-a", "n-b", "n-c"] {
        auto_nad(&env, "t", n);
    }
    // Another writer wins the first pkey the controller tries (the API server answers 409).
    env.api.fail(Fault { code: 409, remaining: Some(1), ..Fault::on("POST", Res::PartitionClaims, 409) });
    let c = start(&env, "ctrl-race", "0x3000-0x300f", None).await;
    eventually("all annotated", || {
        ["n-a", "n-b", "n-c"].iter().all(|n| nad_annotation(&env, "t", n, ASSIGNED).is_some())
    })
    .await;
    let mut pkeys: Vec<String> =
        ["n-a", "n-b", "n-c"].iter().filter_map(|n| nad_annotation(&env, "t", n, ASSIGNED)).collect();
    pkeys.sort();
    pkeys.dedup();
    assert_eq!(pkeys.len(), 3, "distinct pkeys: {pkeys:?}");
    assert_eq!(partition_claims(&env).len(), 3);
    assert_eq!(ufm_partitions(&env, 0x3000, 0x300f).len(), 3);
    let text = c.admin_get("/metrics").await.1;
    assert_eq!(
        sum_samples(
            &text,
            "fabric_sync_partition_operations_total",
            &["operation=\"allocate\"", "result=\"conflict\""]
        ),
        1.0
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_ufm_create_and_the_record_is_finished_after_restart_without_a_second_pkey() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    // The claim's status cannot be written: UFM gets the partition, the record stays Allocated.
    env.api.fail(Fault::on("PATCH", Res::PartitionClaims, 500));
    let c1 = start(&env, "ctrl-a", "0x4000-0x400f", None).await;
    eventually("UFM has the partition", || !ufm_partitions(&env, 0x4000, 0x400f).is_empty()).await;
    c1.kill().await;
    assert_eq!(claim_phase(&env, "pkey-0x4000").as_deref(), Some("Allocated"));
    env.api.clear_faults();
    env.ufm.clear_requests();

    let c2 = start(&env, "ctrl-b", "0x4000-0x400f", None).await;
    eventually("adopted: Created", || claim_phase(&env, "pkey-0x4000").as_deref() == Some("Created")).await;
    eventually("NAD annotated", || nad_annotation(&env, "t", "ib-auto", ASSIGNED).as_deref() == Some("0x4000")).await;
    assert_eq!(ufm_partitions(&env, 0x4000, 0x400f), vec![(0x4000, "fs_t_ib_auto_4000".to_string(), 0)]);
    assert_eq!(partition_claims(&env).len(), 1, "no second pkey");
    let creates = env.ufm.requests().iter().filter(|r| r.path.ends_with("/resources/pkeys/add")).count();
    assert_eq!(creates, 0, "the restarted controller adopts, it does not create again");
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nad_deleted_while_the_controller_is_down_is_held_and_cleaned_up_after_start() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    pod_in(&env, "t", "p1", "ib-auto");
    let c1 = start(&env, "ctrl-1", "0x5000-0x500f", None).await;
    eventually("p1 configured", || configured_pkey(&env, "t", "p1").as_deref() == Some("0x5000")).await;
    c1.kill().await;

    env.api.delete(Res::Nads, "t", "ib-auto");
    assert!(env.api.get(Res::Nads, "t", "ib-auto").is_some(), "held by the finalizer while nobody runs");
    assert_eq!(env.members(0x5000).len(), 1);

    let c2 = start(&env, "ctrl-2", "0x5000-0x500f", None).await;
    eventually("the NAD is gone", || env.api.get(Res::Nads, "t", "ib-auto").is_none()).await;
    assert!(ufm_partitions(&env, 0x5000, 0x500f).is_empty());
    assert!(partition_claims(&env).is_empty());
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preexisting_partition_is_never_taken_and_exhaustion_is_a_clear_refusal_until_a_pkey_frees() {
    let env = Env::new().await;
    // Someone else's partition inside the range, with a member.
    let foreign = mock_ufm::PKey::new(0x6000).expect("pkey");
    env.ufm
        .apply(mock_ufm::Mutation::CreateEmpty {
            pkey: foreign,
            ip_over_ib: true,
            qos: Default::default(),
            name: Some("storage".into()),
        })
        .expect("seeded");
    auto_nad(&env, "t", "ib-a");
    let c = start(&env, "ctrl-x", "0x6000-0x6001", None).await;
    eventually("ib-a got 0x6001", || nad_annotation(&env, "t", "ib-a", ASSIGNED).as_deref() == Some("0x6001")).await;

    auto_nad(&env, "t", "ib-b");
    pod_in(&env, "t", "pb", "ib-b");
    eventually("pb refused", || status_of(&env, "t", "pb").contains("PkeyRangeExhausted")).await;
    assert!(status_of(&env, "t", "pb").contains("FABRIC_SYNC_PKEY_RANGE"), "{}", status_of(&env, "t", "pb"));
    eventually("NAD Event", || {
        events_about(&env.api, "NetworkAttachmentDefinition", "ib-b")
            .iter()
            .any(|e| e.get("reason").and_then(Value::as_str) == Some("PkeyRangeExhausted"))
    })
    .await;
    assert_eq!(ufm_partitions(&env, 0x6000, 0x6000), vec![(0x6000, "storage".to_string(), 0)], "untouched");
    assert!(nad_annotation(&env, "t", "ib-b", ASSIGNED).is_none());

    // `fabric-sync audit` shows the range's use (the released binary, read-only).
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = fabric_sync_binary(&env, dir.path());
    cmd.arg("audit").env("FABRIC_SYNC_PKEY_RANGE", "0x6000-0x6001");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("joined").expect("runs");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{report}");
    let section = report.split("== Managed pkey range").nth(1).unwrap_or_default();
    assert!(
        section.contains("range 0x6000-0x6001: 2 pkeys, 1 claimed (1 created in UFM), 0 free; UFM has 1 of the range without a claim (never taken: 0x6000)"),
        "{report}"
    );
    assert!(section.contains("t/ib-b: PkeyRangeExhausted: no free pkey"), "{report}");

    // ib-a goes: its pkey frees, ib-b gets it and its pod is configured.
    env.api.delete(Res::Nads, "t", "ib-a");
    eventually("pb configured in 0x6001", || configured_pkey(&env, "t", "pb").as_deref() == Some("0x6001")).await;
    assert_eq!(ufm_partitions(&env, 0x6000, 0x6000), vec![(0x6000, "storage".to_string(), 0)], "still untouched");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_editing_the_assigned_pkey_changes_nothing_in_ufm_and_is_restored() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    pod_in(&env, "t", "p1", "ib-auto");
    let c = start(&env, "ctrl-1", "0x7000-0x700f", None).await;
    eventually("p1 configured", || configured_pkey(&env, "t", "p1").as_deref() == Some("0x7000")).await;
    env.api.merge_patch(
        Res::Nads,
        "t",
        "ib-auto",
        json!({"metadata": {"annotations": {ASSIGNED: "0x0fff", IBK_PKEY: "0x0fff"}}}),
    );
    eventually("restored", || nad_annotation(&env, "t", "ib-auto", ASSIGNED).as_deref() == Some("0x7000")).await;
    assert_eq!(nad_annotation(&env, "t", "ib-auto", IBK_PKEY).as_deref(), Some("0x7000"));
    eventually("reported", || {
        events_about(&env.api, "NetworkAttachmentDefinition", "ib-auto")
            .iter()
            .any(|e| e.get("reason").and_then(Value::as_str) == Some("ForgedAnnotation"))
    })
    .await;
    pod_in(&env, "t", "p2", "ib-auto");
    eventually("p2 configured in the claimed pkey", || configured_pkey(&env, "t", "p2").as_deref() == Some("0x7000"))
        .await;
    assert!(!env.ufm.snapshot().contains_key(&0x0fff), "UFM never saw the tenant's pkey");
    assert_eq!(env.members(0x7000).len(), 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_range_an_auto_network_is_refused_naming_the_setting() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    env.pod("p1", "ib-auto", &[]);
    let c = env.controller("ctrl-off", UfmAuth::Basic).await;
    eventually("refused", || status_of(&env, "t", "p1").contains("AutoPkeyUnavailable")).await;
    assert!(status_of(&env, "t", "p1").contains("FABRIC_SYNC_PKEY_RANGE"));
    eventually("NAD Event", || {
        events_about(&env.api, "NetworkAttachmentDefinition", "ib-auto")
            .iter()
            .any(|e| e.get("reason").and_then(Value::as_str) == Some("AutoPkeyUnavailable"))
    })
    .await;
    assert!(configured_pkey(&env, "t", "p1").is_none());
    c.stop().await;
}

/// The README's worked example: config/nad-auto-pkey.yaml as shipped, and what UFM then holds
/// (printed with `--nocapture`, pasted into README "Automatic partitions").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_auto_pkey_example_gets_a_named_partition_in_ufm() {
    let env = Env::new().await;
    env.api.create(Res::Namespaces, json!({"metadata": {"name": "tenant-a"}}));
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/nad-auto-pkey.yaml")).expect("file");
    for doc in text.split("\n---\n") {
        let mut obj: Value = serde_norway::from_str(doc).expect("YAML");
        match obj["kind"].as_str() {
            Some("NetworkAttachmentDefinition") => env.api.create(Res::Nads, obj),
            Some("Pod") => {
                obj["spec"]["nodeName"] = json!("n1");
                obj["status"] = json!({"phase": "Pending"});
                env.api.create(Res::Pods, obj)
            }
            other => panic!("unexpected kind {other:?}"),
        };
    }
    let c = start(&env, "ctrl-1", "0x1000-0x1fff", None).await;
    eventually("configured", || configured_pkey(&env, "tenant-a", "ib-auto-client").as_deref() == Some("0x1000")).await;
    let guid = guid_of(&env, "tenant-a", "ib-auto-client");
    let ca = reqwest::Certificate::from_pem(env.ufm.ca_pem().expect("CA").as_bytes()).expect("CA PEM");
    let http = reqwest::Client::builder().add_root_certificate(ca).build().expect("client");
    let answer = http
        .get(format!("{}/ufmRest/resources/pkeys/0x1000?guids_data=true", env.ufm.url()))
        .basic_auth("admin", Some(UFM_PASSWORD))
        .send()
        .await
        .expect("UFM answers")
        .text()
        .await
        .expect("body");
    let v: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(v["partition"], json!("fs_tenant_a_ib_auto_1000"), "{answer}");
    assert_eq!(v["guids"][0]["guid"], json!(guid), "{answer}");
    let nad = env.api.get(Res::Nads, "tenant-a", "ib-auto").expect("NAD");
    let claim = env.api.get(Res::PartitionClaims, "", "pkey-0x1000").expect("claim");
    println!("GET /ufmRest/resources/pkeys/0x1000?guids_data=true\n{answer}");
    println!("NAD metadata:\n{}", serde_norway::to_string(&nad["metadata"]).unwrap_or_default());
    println!("PartitionClaim:\n{}", serde_norway::to_string(&claim).unwrap_or_default());
    println!("pod element: {}", element(&env, "tenant-a", "ib-auto-client"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ufm_failing_the_create_and_the_delete_is_retried_without_a_second_pkey_or_a_leak() {
    use mock_ufm::FaultRule;
    let env = Env::new().await;
    // Every create fails (503, retried by the client, then by the next pass) until cleared.
    env.ufm.add_fault(FaultRule::error_rate(1.0, &[503]).method("POST").path("/resources/pkeys/add"));
    auto_nad(&env, "t", "ib-auto");
    let c = start(&env, "ctrl-1", "0x1800-0x180f", None).await;
    eventually("create attempted", || {
        env.ufm.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/resources/pkeys/add")).count()
            >= 3
    })
    .await;
    assert_eq!(claim_phase(&env, "pkey-0x1800").as_deref(), Some("Allocated"));
    assert!(nad_annotation(&env, "t", "ib-auto", ASSIGNED).is_none(), "not before UFM has it");
    env.ufm.clear_faults();
    eventually("Created", || claim_phase(&env, "pkey-0x1800").as_deref() == Some("Created")).await;
    assert_eq!(partition_claims(&env).len(), 1, "the same pkey, not a second one");
    assert_eq!(ufm_partitions(&env, 0x1800, 0x180f).len(), 1);

    // The delete fails too: the NAD and the claim wait, nothing is leaked once UFM answers.
    env.ufm.add_fault(FaultRule::error_rate(1.0, &[503]).method("DELETE").path("/resources/pkeys/"));
    env.api.delete(Res::Nads, "t", "ib-auto");
    eventually("delete attempted", || env.ufm.requests().iter().any(|r| r.method == "DELETE")).await;
    assert!(env.api.get(Res::Nads, "t", "ib-auto").is_some(), "held while UFM still has the partition");
    assert_eq!(partition_claims(&env).len(), 1);
    env.ufm.clear_faults();
    eventually("released", || env.api.get(Res::Nads, "t", "ib-auto").is_none()).await;
    assert!(ufm_partitions(&env, 0x1800, 0x180f).is_empty());
    assert!(partition_claims(&env).is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_release_all_also_deletes_our_partitions_and_frees_the_nads() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-used");
    auto_nad(&env, "t", "ib-empty");
    pod_in(&env, "t", "p1", "ib-used");
    let c = start(&env, "ctrl-1", "0x1900-0x190f", None).await;
    eventually("p1 configured", || configured_pkey(&env, "t", "p1").is_some()).await;
    eventually("both annotated", || nad_annotation(&env, "t", "ib-empty", ASSIGNED).is_some()).await;
    c.stop().await;
    // Someone else's partition in the range is not ours to delete.
    env.ufm
        .apply(mock_ufm::Mutation::CreateEmpty {
            pkey: mock_ufm::PKey::new(0x190f).expect("pkey"),
            ip_over_ib: true,
            qos: Default::default(),
            name: Some("theirs".into()),
        })
        .expect("seeded");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = fabric_sync_binary(&env, dir.path());
    cmd.args(["ledger", "release", "--all"]);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("joined").expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("released 2 PartitionClaims"), "{stdout}");
    assert_eq!(ufm_partitions(&env, 0x1900, 0x190f), vec![(0x190f, "theirs".to_string(), 0)], "{stdout}");
    assert!(partition_claims(&env).is_empty());
    for nad in ["ib-used", "ib-empty"] {
        assert!(!nad_finalizers(&env, "t", nad).contains(&NAD_FINALIZER.to_string()));
        env.api.delete(Res::Nads, "t", nad);
        assert!(env.api.get(Res::Nads, "t", nad).is_none(), "nothing holds {nad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_pkey_inside_the_managed_range_is_refused_on_the_pod_and_the_nad() {
    let env = Env::new().await;
    env.nad("ib-fixed", "0x1a05", false);
    env.pod("p1", "ib-fixed", &[]);
    let c = start(&env, "ctrl-1", "0x1a00-0x1a0f", None).await;
    eventually("refused", || status_of(&env, "t", "p1").contains("PkeyReserved")).await;
    assert!(status_of(&env, "t", "p1").contains("0x1a00-0x1a0f"), "{}", status_of(&env, "t", "p1"));
    eventually("NAD Event", || {
        events_about(&env.api, "NetworkAttachmentDefinition", "ib-fixed")
            .iter()
            .any(|e| e.get("reason").and_then(Value::as_str) == Some("PkeyReserved"))
    })
    .await;
    assert!(env.members(0x1a05).is_empty());
    // An automatic network never gets the tenant's pkey, even though UFM has no such partition.
    auto_nad(&env, "t", "ib-auto");
    eventually("auto annotated", || nad_annotation(&env, "t", "ib-auto", ASSIGNED).is_some()).await;
    assert_ne!(nad_annotation(&env, "t", "ib-auto", ASSIGNED).as_deref(), Some("0x1a05"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_claim_for_one_network_is_released_and_never_gets_a_partition() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    // As two writers in a leader handover could leave it: two claims for one network.
    for (pkey, phase) in [("0x1b00", "Created"), ("0x1b01", "Allocated")] {
        let hex = &pkey[2..];
        env.api.create(
            Res::PartitionClaims,
            json!({"metadata": {"name": format!("pkey-0x{hex}"), "finalizers": ["fabric-sync.io/partition-cleanup"]},
                   "spec": {"pkey": pkey, "scope": {"network": "t/ib-auto"}, "partitionName": format!("fs_t_ib_auto_{hex}"),
                            "fabric": "default"},
                   "status": {"phase": phase, "createdInUfm": phase == "Created"}}),
        );
    }
    env.ufm
        .apply(mock_ufm::Mutation::CreateEmpty {
            pkey: mock_ufm::PKey::new(0x1b00).expect("pkey"),
            ip_over_ib: true,
            qos: Default::default(),
            name: Some("fs_t_ib_auto_1b00".into()),
        })
        .expect("seeded");
    pod_in(&env, "t", "p1", "ib-auto");
    let c = start(&env, "ctrl-1", "0x1b00-0x1b0f", None).await;
    eventually("p1 configured", || configured_pkey(&env, "t", "p1").as_deref() == Some("0x1b00")).await;
    eventually("the second claim released", || partition_claims(&env).len() == 1).await;
    assert_eq!(partition_claims(&env)[0].0, "pkey-0x1b00");
    assert_eq!(ufm_partitions(&env, 0x1b00, 0x1b0f).iter().map(|p| p.0).collect::<Vec<_>>(), vec![0x1b00]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_someone_deletes_is_cleaned_up_and_its_network_gets_another_pkey() {
    let env = Env::new().await;
    auto_nad(&env, "t", "ib-auto");
    pod_in(&env, "t", "p1", "ib-auto");
    let c = start(&env, "ctrl-1", "0x1c00-0x1c0f", None).await;
    eventually("p1 configured", || configured_pkey(&env, "t", "p1").as_deref() == Some("0x1c00")).await;
    // An admin deletes the claim: its finalizer holds it until the partition is cleaned up.
    env.api.delete(Res::PartitionClaims, "", "pkey-0x1c00");
    eventually("moved to another pkey", || configured_pkey(&env, "t", "p1").as_deref() == Some("0x1c01")).await;
    eventually("the deleted claim is gone", || env.api.get(Res::PartitionClaims, "", "pkey-0x1c00").is_none()).await;
    eventually("its partition is gone", || ufm_partitions(&env, 0x1c00, 0x1c00).is_empty()).await;
    assert_eq!(env.members(0x1c01), vec![guid_of(&env, "t", "p1")]);
    assert_eq!(nad_annotation(&env, "t", "ib-auto", ASSIGNED).as_deref(), Some("0x1c01"));
    c.stop().await;
}
