//! The ownership ledger end to end, against tenants that do not play fair and controllers that
//! stop at the worst moment: a real `kube::Client` against the fake API server (with garbage
//! collection and namespace deletion), the real UFM client against mock-ufm over TLS. Every
//! test asserts on UFM's final membership, the pods' annotations and the claims.

mod support;

use serde_json::{Value, json};
use support::*;

const MARKER: &str = "mellanox.infiniband.app";

/// A pod in `ns` on node n1 with the given phase.
fn pod_in(env: &Env, ns: &str, name: &str, networks: &str, phase: &str) -> Value {
    env.api.create(
        Res::Pods,
        json!({
            "metadata": {"name": name, "namespace": ns, "annotations": {NETWORKS: networks}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": phase}
        }),
    )
}

fn nad_in(env: &Env, ns: &str, name: &str, config: Value) {
    env.api.create(
        Res::Nads,
        json!({"metadata": {"name": name, "namespace": ns}, "spec": {"config": config.to_string()}}),
    );
}

fn element(env: &Env, ns: &str, pod: &str) -> Value {
    let p = env.api.get(Res::Pods, ns, pod).expect("pod exists");
    let text = p.pointer(&format!("/metadata/annotations/{}", NETWORKS.replace('/', "~1"))).and_then(Value::as_str);
    serde_json::from_str::<Value>(text.unwrap_or("[]")).ok().and_then(|v| v.get(0).cloned()).unwrap_or(Value::Null)
}

fn status_of(env: &Env, ns: &str, pod: &str) -> String {
    let p = env.api.get(Res::Pods, ns, pod).expect("pod exists");
    p.pointer("/metadata/annotations/fabric-sync.io~1status").and_then(Value::as_str).unwrap_or("").to_string()
}

fn is_configured(e: &Value) -> bool {
    e.pointer(&format!("/cni-args/{MARKER}")).and_then(Value::as_str) == Some("configured")
}

fn guid_in(e: &Value) -> Option<String> {
    e.get("infiniband-guid").or_else(|| e.pointer("/cni-args/guid")).and_then(Value::as_str).map(str::to_string)
}

/// The GUIDs of every claim of namespace `ns`, with their pkeys.
fn claimed(env: &Env, ns: &str) -> Vec<(String, Option<String>)> {
    env.claims()
        .iter()
        .filter(|c| c.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
        .flat_map(|c| c.pointer("/spec/attachments").and_then(Value::as_array).cloned().unwrap_or_default())
        .map(|a| {
            (a["guid"].as_str().unwrap_or("").to_string(), a.get("pkey").and_then(Value::as_str).map(str::to_string))
        })
        .collect()
}

fn seed_ufm(env: &Env, pkey: u16, guids: &[&str]) {
    let members = guids
        .iter()
        .map(|g| {
            let guid = mock_ufm::Guid::parse(g).expect("GUID");
            (guid, mock_ufm::Member { membership: mock_ufm::Membership::Full, index0: false })
        })
        .collect();
    let pkey = mock_ufm::PKey::new(pkey).expect("pkey");
    env.ufm.apply(mock_ufm::Mutation::AddGuids { pkey, members, ip_over_ib: None, name: None }).expect("seeded");
}

async fn configured_guid(env: &Env, ns: &str, pod: &str) -> String {
    eventually(&format!("{ns}/{pod} configured"), || is_configured(&element(env, ns, pod))).await;
    guid_in(&element(env, ns, pod)).expect("a configured element has a GUID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgers_created_while_the_controller_is_down_take_nothing_at_restart_or_leader_change() {
    let env = Env::new().await;
    env.api.create(Res::Namespaces, json!({"metadata": {"name": "a"}}));
    env.nad("ib-b", "0x10", false);
    nad_in(&env, "a", "ib-a", json!({"type": "ib-sriov", "pkey": "0x20"}));
    env.pod("victim", "ib-b", &[]);
    let c = env.controller("ctrl-1", UfmAuth::Basic).await;
    let victim = configured_guid(&env, "t", "victim").await;
    c.kill().await;
    // Several tenant-A pods claim the victim's live GUID as configured, while nobody watches.
    let forged = format!(r#"[{{"name":"ib-a","cni-args":{{"guid":"{victim}","{MARKER}":"configured"}}}}]"#);
    for i in 0..3 {
        pod_in(&env, "a", &format!("forger-{i}"), &forged, "Pending");
    }
    let c2 = env.controller("ctrl-2", UfmAuth::Basic).await;
    eventually("every forged marker stripped", || {
        (0..3).all(|i| !is_configured(&element(&env, "a", &format!("forger-{i}"))))
    })
    .await;
    // A leader change: a second replica takes over from a stopped first.
    let c3 = env.controller("ctrl-3", UfmAuth::Basic).await;
    c2.stop().await;
    eventually("ctrl-3 leads", || c3.is_leader()).await;
    eventually("forgers refused", || {
        (0..3).all(|i| status_of(&env, "a", &format!("forger-{i}")).contains("refused: ForgedAnnotation"))
    })
    .await;
    assert_eq!(guid_in(&element(&env, "t", "victim")).as_deref(), Some(victim.as_str()));
    assert!(is_configured(&element(&env, "t", "victim")));
    assert!(env.members(0x10).contains(&ufm_guid(&victim)), "the victim keeps its membership");
    assert!(!env.members(0x20).contains(&ufm_guid(&victim)), "no forger joined the GUID to its pkey");
    for i in 0..3 {
        let e = element(&env, "a", &format!("forger-{i}"));
        assert_eq!(guid_in(&e), None, "the unbacked GUID is removed from forger-{i}: {e}");
    }
    assert!(claimed(&env, "a").is_empty(), "no claim for a forger");
    assert!(!events_about(&env.api, "Pod", "forger-0").is_empty(), "the forger's pod has an Event");
    c3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_marker_on_create_is_stripped_and_an_edited_guid_is_restored() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("honest", "ib", &[]);
    env.pod("other", "ib", &[]);
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    let honest = configured_guid(&env, "t", "honest").await;
    let other = configured_guid(&env, "t", "other").await;
    // On create: a marker and a GUID nobody gave this pod.
    env.pod(
        "forger",
        &format!(r#"[{{"name":"ib","cni-args":{{"guid":"{other}","{MARKER}":"configured","pkey":"0x10"}}}}]"#),
        &[],
    );
    eventually("forged marker stripped", || {
        let e = element(&env, "t", "forger");
        !is_configured(&e) && guid_in(&e).is_none() && e.pointer("/cni-args/pkey").is_none()
    })
    .await;
    eventually("forger refused", || status_of(&env, "t", "forger").contains("refused: ForgedAnnotation")).await;
    // On edit: a configured pod points its element at another pod's GUID.
    let edited = format!(r#"[{{"name":"ib","cni-args":{{"guid":"{other}","{MARKER}":"configured","pkey":"0x10"}}}}]"#);
    env.api.merge_patch(Res::Pods, "t", "honest", json!({"metadata": {"annotations": {NETWORKS: edited}}}));
    eventually("the ledger's GUID is restored", || {
        guid_in(&element(&env, "t", "honest")).as_deref() == Some(honest.as_str())
    })
    .await;
    assert!(is_configured(&element(&env, "t", "honest")));
    // Events are sent after the patch, on their own: wait for it rather than race it.
    eventually("a ForgedAnnotation Event on the edited pod", || {
        events_about(&env.api, "Pod", "honest")
            .iter()
            .any(|e| e.get("reason").and_then(Value::as_str) == Some("ForgedAnnotation"))
    })
    .await;
    let mut members = env.members(0x10);
    members.sort();
    let mut want = vec![ufm_guid(&honest), ufm_guid(&other)];
    want.sort();
    assert_eq!(members, want, "UFM holds exactly the two honest GUIDs");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_off_boarded_while_the_controller_is_down_leaves_ufm_and_its_finalizers_go() {
    let env = Env::new().await;
    env.api.create(Res::Namespaces, json!({"metadata": {"name": "gone"}}));
    nad_in(&env, "gone", "ib", json!({"type": "ib-sriov", "pkey": "0x30"}));
    for i in 0..3 {
        pod_in(&env, "gone", &format!("p{i}"), "ib", "Pending");
    }
    let c = env.controller("ctrl-1", UfmAuth::Basic).await;
    for i in 0..3 {
        configured_guid(&env, "gone", &format!("p{i}")).await;
    }
    assert_eq!(env.members(0x30).len(), 3);
    c.kill().await;
    env.delete_namespace("gone");
    // Pods and NAD are gone; the claims' finalizers hold the namespace while nobody runs.
    assert_eq!(claimed(&env, "gone").len(), 3);
    assert!(env.api.get(Res::Namespaces, "", "gone").is_some(), "the namespace waits for the claims");
    let c2 = env.controller("ctrl-2", UfmAuth::Basic).await;
    eventually("UFM emptied of the namespace's GUIDs", || env.members(0x30).is_empty()).await;
    eventually("claims released and the namespace gone", || {
        claimed(&env, "gone").is_empty() && env.api.get(Res::Namespaces, "", "gone").is_none()
    })
    .await;
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_while_the_controller_is_down_is_removed_past_the_mass_removal_breaker() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    for i in 0..40 {
        env.pod(&format!("job-{i}"), "ib", &[]);
    }
    env.pod("survivor", "ib", &[]);
    let c = env.controller("ctrl-1", UfmAuth::Basic).await;
    eventually("41 members", || env.members(0x10).len() == 41).await;
    let survivor = configured_guid(&env, "t", "survivor").await;
    c.kill().await;
    for i in 0..40 {
        env.api.delete(Res::Pods, "t", &format!("job-{i}"));
    }
    let c2 = env.controller("ctrl-2", UfmAuth::Basic).await;
    // 40 of 41 members at once is far past the breaker's share, but every one is known ours.
    eventually("only the survivor stays", || env.members(0x10) == vec![ufm_guid(&survivor)]).await;
    eventually("the job's claims are released", || claimed(&env, "t").len() == 1).await;
    assert_eq!(c2.stats.fabric_total(|f| &f.breaker_trips), 0, "no breaker trip for known deletions");
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nad_moved_then_deleted_across_restarts_leaves_no_member_behind() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("p1", "ib", &[]);
    env.pod("p2", "ib", &[]);
    let c = env.controller("ctrl-1", UfmAuth::Basic).await;
    let g1 = configured_guid(&env, "t", "p1").await;
    configured_guid(&env, "t", "p2").await;
    c.kill().await;
    // Moved while down.
    let moved = json!({"cniVersion": "0.3.1", "name": "ib", "type": "ib-sriov", "pkey": "0x11"}).to_string();
    env.api.merge_patch(Res::Nads, "t", "ib", json!({"spec": {"config": moved}}));
    let c2 = env.controller("ctrl-2", UfmAuth::Basic).await;
    eventually("members moved to 0x11", || env.members(0x11).len() == 2 && env.members(0x10).is_empty()).await;
    eventually("annotations say 0x11", || element(&env, "t", "p1").pointer("/cni-args/pkey") == Some(&json!("0x11")))
        .await;
    assert_eq!(guid_in(&element(&env, "t", "p1")).as_deref(), Some(g1.as_str()), "the GUID stays");
    eventually("claims record 0x11", || claimed(&env, "t").iter().all(|(_, p)| p.as_deref() == Some("0x11"))).await;
    c2.kill().await;
    // Deleted while down: no network names 0x11 any more, but the claims do.
    env.api.delete(Res::Nads, "t", "ib");
    let c3 = env.controller("ctrl-3", UfmAuth::Basic).await;
    eventually("0x11 emptied", || env.members(0x11).is_empty()).await;
    assert!(env.members(0x10).is_empty());
    c3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_between_the_ufm_add_and_the_write_back_is_completed_with_the_same_guids() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    for i in 0..4 {
        env.pod(&format!("p{i}"), "ib", &[]);
    }
    // Every pod write fails: UFM gets the adds, the pods never hear of them.
    env.api.fail(Fault::on_verb("patch", Res::Pods, 500));
    let c = env.controller("ctrl-1", UfmAuth::Basic).await;
    eventually("4 members in UFM", || env.members(0x10).len() == 4).await;
    let recorded: Vec<String> = claimed(&env, "t").into_iter().map(|(g, _)| g).collect();
    assert_eq!(recorded.len(), 4, "the claims were written before the adds");
    c.kill().await;
    env.api.clear_faults();
    let c2 = env.controller("ctrl-2", UfmAuth::Basic).await;
    let mut written = Vec::new();
    for i in 0..4 {
        written.push(configured_guid(&env, "t", &format!("p{i}")).await);
    }
    written.sort();
    let mut recorded = recorded;
    recorded.sort();
    assert_eq!(written, recorded, "the same GUIDs, from the ledger");
    let mut members = env.members(0x10);
    members.sort();
    assert_eq!(members, written.iter().map(|g| ufm_guid(g)).collect::<Vec<_>>(), "no second set in UFM");
    c2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guids_held_only_in_annotations_are_adopted_once_and_never_handed_out_twice() {
    let env = Env::new().await;
    // A pkey-less network: nothing in UFM says who holds these GUIDs.
    nad_in(&env, "t", "plain", json!({"cniVersion": "0.3.1", "name": "plain", "type": "ib-sriov"}));
    let held = ["02:00:00:00:00:00:00:00", "02:00:00:00:00:00:00:01", "02:00:00:00:00:00:00:02"];
    for (i, g) in held.iter().enumerate() {
        let ann = format!(r#"[{{"name":"plain","cni-args":{{"guid":"{g}","{MARKER}":"configured"}}}}]"#);
        pod_in(&env, "t", &format!("old-{i}"), &ann, "Running");
    }
    for i in 0..3 {
        env.pod(&format!("new-{i}"), "plain", &[]);
    }
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    let mut all = Vec::new();
    for i in 0..3 {
        all.push(configured_guid(&env, "t", &format!("new-{i}")).await);
    }
    for (i, g) in held.iter().enumerate() {
        assert_eq!(guid_in(&element(&env, "t", &format!("old-{i}"))).as_deref(), Some(*g), "old-{i} keeps its GUID");
        all.push(g.to_string());
    }
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 6, "no GUID in two pods: {all:?}");
    eventually("6 claims, the adopted ones marked migrated", || {
        claimed(&env, "t").len() == 6
            && env.claims().iter().filter(|c| c.pointer("/spec/migrated") == Some(&json!(true))).count() == 3
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pod_that_was_never_configured_is_refused_not_configured() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("warm-up", "ib", &[]);
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    configured_guid(&env, "t", "warm-up").await;
    pod_in(&env, "t", "late", "ib", "Running");
    eventually("refused with the reason", || status_of(&env, "t", "late").contains("refused: StartedUnconfigured"))
        .await;
    assert!(!is_configured(&element(&env, "t", "late")));
    assert_eq!(env.members(0x10).len(), 1, "no GUID in UFM for a VF that does not carry it");
    assert_eq!(claimed(&env, "t").len(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_leaves_a_bare_pkey_pods_membership_alone_though_a_valid_nad_names_the_pkey() {
    let env = Env::new().await;
    // ib-kubernetes read "1000" as 0x1000 and configured old-pod; fabric-sync refuses that NAD.
    nad_in(&env, "t", "legacy", json!({"cniVersion": "0.3.1", "name": "legacy", "type": "ib-sriov", "pkey": "1000"}));
    env.nad("current", "0x1000", false);
    let legacy = "02:00:00:00:00:00:10:00";
    let current = "02:00:00:00:00:00:10:01";
    seed_ufm(&env, 0x1000, &["0200000000001000", "0200000000001001"]);
    for (name, net, g) in [("old-pod", "legacy", legacy), ("new-pod", "current", current)] {
        let ann = format!(r#"[{{"name":"{net}","cni-args":{{"guid":"{g}","{MARKER}":"configured"}}}}]"#);
        pod_in(&env, "t", name, &ann, "Running");
    }
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("both adopted into the ledger", || claimed(&env, "t").len() == 2).await;
    // Several resyncs (1 s each here) pass: the legacy pod's GUID is never taken for stale.
    let lists = c.stats.fabric_total(|f| &f.lists);
    eventually("three more listings", || c.stats.fabric_total(|f| &f.lists) >= lists + 3).await;
    let members = env.members(0x1000);
    assert!(members.contains(&ufm_guid(legacy)), "the legacy pod keeps its membership: {members:?}");
    assert!(members.contains(&ufm_guid(current)));
    assert!(status_of(&env, "t", "old-pod").contains("InvalidNetwork"), "{}", status_of(&env, "t", "old-pod"));
    assert!(is_configured(&element(&env, "t", "new-pod")));
    c.stop().await;
}
