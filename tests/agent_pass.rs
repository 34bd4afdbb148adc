//! Agent passes against a realistic fake sysfs tree, a fake `VfControl` (call log, GUID state) and
//! a fake `AgentCluster` (pods, GuidClaims, the NodeFabricStatus): verification against the
//! ledger (not the annotation), foreign GUIDs reported and (program mode) reset, programming
//! order, reset of VFs no pod holds, fallbacks, and the admin server.

mod agent_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::*;
use fabric_sync::agent::metrics::{Health, admin_router};
use fabric_sync::agent::pass::CheckReport;
use fabric_sync::agent::{Agent, AgentMetrics, AgentMode, EventTarget, INVENTORY_ANNOTATION, RawGuid, Verdict, scan};

const G1: u64 = 0x0200_0000_0000_0001;
const G5: u64 = 0x0200_0000_0000_0005;
const G1S: &str = "02:00:00:00:00:00:00:01";
const G5S: &str = "02:00:00:00:00:00:00:05";
const G9: &str = "02:00:00:00:00:00:00:09";
const LABEL: &str = "t/ib@net1";
/// A routable GUID outside the managed range (02:…): never the agent's to judge.
const OUTSIDE: u64 = 0x0c42_a103_0000_0001;

/// VF 0 of mlx5_0 (ib0, ifindex 4) carries G1, VF 1 is unset, VF 0 of mlx5_1 (ib1) carries a
/// GUID outside the managed range.
fn hardware() -> FakeVf {
    FakeVf::with(&[((4, 0), G1), ((4, 1), u64::MAX), ((5, 0), OUTSIDE)])
}

/// An agent on node-1 whose ledger holds `claims`.
fn agent(
    s: &FakeSys,
    mode: AgentMode,
    pods: Vec<fabric_sync::agent::AgentPod>,
    claims: Vec<fabric_sync::engine::Claim>,
) -> (Agent<FakeCluster, FakeVf>, Arc<AgentMetrics>) {
    let metrics = Arc::new(AgentMetrics::new().unwrap());
    let cluster = FakeCluster::with_pods(pods);
    cluster.set_claims(claims);
    let a = Agent::new("node-1", mode, s.sysfs(), cluster, hardware(), metrics.clone());
    (a, metrics)
}

fn checks(m: &AgentMetrics, result: &str) -> u64 {
    m.checks.with_label_values(&[result]).get()
}

#[tokio::test]
async fn verify_mode_confirms_the_vf_guid_against_the_ledger_and_reports_it_in_the_node_status() {
    let s = realistic_node();
    let p = pod("pod-a", G1S, Some(VF_A0));
    let c = claim_of(&p, "node-1", G1S, Some(0x5));
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![p], vec![c]);
    let r = a.pass().await;
    assert_eq!(r.checks, vec![CheckReport { pod: "t/pod-a".into(), label: LABEL.into(), verdict: Verdict::Verified }]);
    assert!(r.is_clean() && r.node_annotation_written && r.status_written, "{r:?}");
    let summary = serde_json::to_string(&scan(&s.sysfs()).summary()).unwrap();
    assert_eq!(a.cluster().node_annotations.lock().unwrap().get(INVENTORY_ANNOTATION), Some(&summary));
    let entry = a.cluster().attachment("t/pod-a", LABEL);
    assert_eq!(
        (&entry["verdict"], &entry["guid"], &entry["vf"], &entry["vfGuid"], &entry["pkey"]),
        (&"verified".into(), &G1S.into(), &VF_A0.into(), &G1S.into(), &"0x5".into())
    );
    // VF 0's own RDMA device (mlx5_4) already holds 0x8005: ready at first sight.
    assert_eq!(entry["fabricReady"]["reason"], "FabricReady", "{entry}");
    assert_eq!(a.cluster().status()["conditions"][0]["status"], "True");
    assert_eq!(a.vf_control().calls(), ["vf_guids ib0", "vf_guids ib1"], "verify mode only reads");

    // Nothing changed: no second write to the Node or the status.
    let r = a.pass().await;
    assert!(!r.node_annotation_written && !r.status_written);
    assert_eq!((*a.cluster().node_patches.lock().unwrap(), a.cluster().status_writes()), (1, 1));
    assert_eq!(checks(&m, "verified"), 2);
    assert_eq!(m.passes.get(), 2);
    assert!(a.cluster().events().is_empty());
}

#[tokio::test]
async fn the_ledger_not_a_forged_annotation_says_which_guid_the_vf_must_carry() {
    let s = realistic_node();
    // The pod's annotation claims G1 (what VF 0 carries); the ledger gave it G9.
    let p = pod("pod-a", G1S, Some(VF_A0));
    let c = claim_of(&p, "node-1", G9, Some(0x5));
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![p.clone()], vec![c]);
    let r = a.pass().await;
    assert_eq!(r.checks[0].verdict, Verdict::Mismatch { vf: VF_A0.into(), found: RawGuid(G1) });
    // G1 is in the managed range and no ledger entry explains it: reported at once.
    assert_eq!(r.foreign.len(), 1, "{r:?}");
    assert!(!r.is_clean());
    let entry = a.cluster().attachment("t/pod-a", LABEL);
    assert_eq!(
        entry["message"],
        "mismatch: VF 0000:3b:00.2 has port GUID 02:00:00:00:00:00:00:01, assigned 02:00:00:00:00:00:00:09"
    );
    let foreign = &a.cluster().status()["foreignVfs"][0];
    assert_eq!(
        (&foreign["reason"], &foreign["pod"], &foreign["action"]),
        (&"VfGuidUnexplained".into(), &"t/pod-a".into(), &"reported".into())
    );
    let events = a.cluster().events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].reason, events[0].warning), ("VfGuidUnexplained", true));
    assert_eq!(
        events[0].target,
        EventTarget::Node { name: "node-1".into() },
        "the agent writes Events of its node only"
    );
    assert_eq!(m.foreign_vf_guids.with_label_values(&["unexplained"]).get(), 1);
    assert!(a.vf_control().calls().iter().all(|c| c.starts_with("vf_guids")), "verify mode never writes");

    // Still wrong: counted again, but no second Event and no rewrite of the same status.
    a.pass().await;
    assert_eq!(checks(&m, "mismatch"), 2);
    assert_eq!((a.cluster().events().len(), a.cluster().status_writes()), (1, 1));

    // Without any claim, the annotation's GUID is not believed: unknown, not verified.
    a.cluster().set_claims(vec![]);
    let r = a.pass().await;
    assert!(matches!(&r.checks[0].verdict, Verdict::Unknown(w) if w.contains("no GuidClaim")), "{r:?}");
    assert_eq!(
        *a.cluster().claim_gets.lock().unwrap(),
        ["t/uid-pod-a"],
        "looked up by name once listed claims lack it"
    );
}

#[tokio::test]
async fn program_mode_sets_the_ledgers_guid_node_then_port_then_rebinds_and_verifies() {
    let s = realistic_node();
    let p = pod("pod-a", G9, Some(VF_A0));
    let c = claim_of(&p, "node-1", G9, None);
    let (mut a, m) = agent(&s, AgentMode::Program, vec![p], vec![c]);
    let r = a.pass().await;
    assert_eq!(
        a.vf_control().calls(),
        [
            "vf_guids ib0",
            "vf_guids ib1",
            "set_node ib0 vf0 02:00:00:00:00:00:00:09",
            "set_port ib0 vf0 02:00:00:00:00:00:00:09",
            "unbind 0000:3b:00.2 mlx5_core",
            "bind 0000:3b:00.2 mlx5_core",
            "vf_guids ib0",
        ]
    );
    assert_eq!(r.programmed, vec![VF_A0.to_string()]);
    assert!(r.reset.is_empty(), "an unheld GUID outside the range waits a pass");
    assert_eq!(r.checks[0].verdict, Verdict::Verified, "read back after programming");
    assert_eq!(a.cluster().attachment("t/pod-a", LABEL)["fabricReady"]["reason"], "NoPartition");
    let events = a.cluster().events();
    let programmed = events.iter().find(|e| e.reason == "VfGuidProgrammed").expect("programmed");
    assert_eq!(
        programmed.note,
        "t/ib@net1 of pod t/pod-a: VF 0000:3b:00.2 (mlx5_0 vf 0) set to 02:00:00:00:00:00:00:09, rebound to mlx5_core"
    );
    assert_eq!(m.guid_writes.with_label_values(&["program"]).get(), 1);

    // The next pass finds it right and leaves it alone.
    a.vf_control().clear();
    let r = a.pass().await;
    assert!(r.programmed.is_empty());
    assert!(!a.vf_control().calls().iter().any(|c| c.contains("ib0 vf0") || c.contains("3b:00.2")));
}

#[tokio::test]
async fn a_vf_carrying_a_guid_the_ledger_gives_another_pod_is_reported_and_in_program_mode_reset() {
    for mode in [AgentMode::Verify, AgentMode::Program] {
        let s = realistic_node();
        let p = pod("pod-a", G1S, Some(VF_A0));
        let c = claim_of(&p, "node-1", G1S, Some(0x5));
        let (mut a, m) = agent(&s, mode, vec![p], vec![c]);
        // A tenant programs pod-a's GUID onto a second VF (mlx5_1's VF 0) to join its partition.
        a.vf_control().guids.lock().unwrap().insert((5, 0), (RawGuid(G1), RawGuid(G1)));
        let r = a.pass().await;
        assert_eq!(r.checks[0].verdict, Verdict::Verified, "pod-a's own VF is fine");
        assert_eq!(r.foreign.len(), 1);
        let f = &a.cluster().status()["foreignVfs"][0];
        assert_eq!(
            (&f["vf"], &f["reason"], &f["ownerPod"]),
            (&VF_B0.into(), &"VfGuidOfAnotherPod".into(), &"t/pod-a".into())
        );
        let events = a.cluster().events();
        assert_eq!(events.len(), 1);
        assert!(events[0].note.contains("VF 0000:5e:00.1 (mlx5_1 vf 0) of no configured attachment carries 02:00:00:00:00:00:00:01, which the ledger gives to attachment t/ib@net1 of pod t/pod-a"), "{}", events[0].note);
        assert_eq!(m.foreign_vf_guids.with_label_values(&["of_another_pod"]).get(), 1);
        let writes: Vec<String> = a.vf_control().calls().into_iter().filter(|c| !c.starts_with("vf_guids")).collect();
        match mode {
            AgentMode::Verify => {
                assert!(writes.is_empty(), "{writes:?}");
                assert_eq!(f["action"], "reported");
            }
            AgentMode::Program => {
                assert_eq!(
                    writes,
                    [
                        "set_node ib1 vf0 ff:ff:ff:ff:ff:ff:ff:ff",
                        "set_port ib1 vf0 ff:ff:ff:ff:ff:ff:ff:ff",
                        "unbind 0000:5e:00.1 mlx5_core",
                        "bind 0000:5e:00.1 mlx5_core"
                    ]
                );
                assert_eq!((&f["action"], &r.reset), (&"reset".into(), &vec![VF_B0.to_string()]));
                // Gone at the next pass, and the status says so.
                let r = a.pass().await;
                assert!(r.foreign.is_empty() && r.is_clean(), "{r:?}");
                assert_eq!(a.cluster().status()["foreignVfs"], serde_json::json!([]));
            }
        }
    }
}

#[tokio::test]
async fn program_mode_resets_unheld_vfs_after_a_pass_of_grace_and_spares_ledger_guids() {
    let s = realistic_node();
    // pod-b holds G5 (the GUID VF 0 of mlx5_1 carries) but Multus has not written its status yet.
    let pa = pod("pod-a", G1S, Some(VF_A0));
    let pb = pod("pod-b", G5S, None);
    let claims = vec![claim_of(&pa, "node-1", G1S, None), claim_of(&pb, "node-1", G5S, None)];
    let (mut a, m) = agent(&s, AgentMode::Program, vec![pa.clone(), pb], claims.clone());
    a.vf_control().guids.lock().unwrap().insert((5, 0), (RawGuid(G5), RawGuid(G5)));
    for _ in 0..2 {
        let r = a.pass().await;
        assert!(r.reset.is_empty() && r.foreign.is_empty(), "{r:?}");
        assert!(matches!(&r.checks[1].verdict, Verdict::Verified), "found by the GUID it carries: {r:?}");
    }
    assert!(a.vf_control().calls().iter().all(|c| c.starts_with("vf_guids")));

    // A GUID outside the managed range on an unheld VF: reset only after a pass of grace.
    a.cluster().set_pods(vec![pa]);
    a.cluster().set_claims(claims[..1].to_vec());
    a.vf_control().guids.lock().unwrap().insert((5, 0), (RawGuid(OUTSIDE), RawGuid(OUTSIDE)));
    assert!(a.pass().await.reset.is_empty());
    a.vf_control().clear();
    let r = a.pass().await;
    assert_eq!(r.reset, vec![VF_B0.to_string()]);
    let events = a.cluster().events();
    let reset = events.iter().find(|e| e.reason == "VfGuidReset").expect("reset event");
    assert_eq!(reset.target, EventTarget::Node { name: "node-1".into() });
    assert!(reset.note.contains("0000:5e:00.1 (mlx5_1 vf 0) carried 0c:42:a1:03:00:00:00:01"), "{}", reset.note);
    assert_eq!(m.guid_writes.with_label_values(&["reset"]).get(), 1);

    // Reset VFs are unset now: nothing more to do.
    a.vf_control().clear();
    assert!(a.pass().await.reset.is_empty());
    assert_eq!(a.vf_control().calls(), ["vf_guids ib0", "vf_guids ib1"]);
}

#[tokio::test]
async fn verify_mode_never_resets_but_counts_unheld_vfs() {
    let s = realistic_node();
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![], vec![]);
    for _ in 0..3 {
        assert!(a.pass().await.reset.is_empty());
    }
    assert!(a.vf_control().calls().iter().all(|c| c.starts_with("vf_guids")));
    assert_eq!(m.unheld_vfs_with_guid.get(), 1, "VF 0 of mlx5_1, outside the managed range");
    assert_eq!(m.foreign_vf_guids.with_label_values(&["unexplained"]).get(), 1, "G1 on VF 0 of mlx5_0, reported once");
}

#[tokio::test]
async fn unreadable_netlink_falls_back_to_ofed_sysfs_and_counts_errors() {
    let s = realistic_node();
    let pods =
        vec![pod("pod-a", G1S, Some(VF_A0)), pod("pod-b", G9, Some(VF_B0)), pod("pod-c", G9, Some("0000:af:00.2"))];
    let claims = vec![
        claim_of(&pods[0], "node-1", G1S, None),
        claim_of(&pods[1], "node-1", G9, None),
        claim_of(&pods[2], "node-1", "02:00:00:00:00:00:00:0a", None),
    ];
    let (mut a, m) = agent(&s, AgentMode::Verify, pods, claims);
    *a.vf_control().fail_reads.lock().unwrap() = true;
    let r = a.pass().await;
    let verdicts: Vec<&Verdict> = r.checks.iter().map(|c| &c.verdict).collect();
    assert_eq!(
        verdicts,
        [
            &Verdict::Verified,
            &Verdict::Unknown(
                "the port GUID of VF 0000:5e:00.1 cannot be read (neither netlink nor sysfs has it)".into()
            ),
            &Verdict::Unknown("device 0000:af:00.2 is not a VF of an HCA on this node".into()),
        ]
    );
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert_eq!(m.errors.with_label_values(&["netlink"]).get(), 2);
    assert_eq!((checks(&m, "verified"), checks(&m, "unknown")), (1, 2));
}

#[tokio::test]
async fn admin_server_serves_metrics_and_health() {
    fabric_sync::install_crypto_provider();
    let s = realistic_node();
    let p = pod("pod-a", G9, Some(VF_A0));
    let c = claim_of(&p, "node-1", G9, None);
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![p], vec![c]);
    a.pass().await;
    let health = Arc::new(Health::new(Instant::now(), Duration::from_secs(3600)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, admin_router(m, health)).await });
    let http = reqwest::Client::new();
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "fabric_sync_agent_passes_total 1",
        "fabric_sync_agent_vf_guid_checks_total{result=\"mismatch\"} 1",
        "fabric_sync_agent_vf_guid_checks_total{result=\"verified\"} 0",
        "fabric_sync_agent_pkey_table_capacity{hca=\"mlx5_1\",port=\"2\"} 128",
        "fabric_sync_agent_pkey_table_used{hca=\"mlx5_0\",port=\"1\"} 2",
        "fabric_sync_agent_inventory_warnings 3",
        "fabric_sync_agent_errors_total{kind=\"netlink\"} 0",
        "fabric_sync_agent_foreign_vf_guids_total{kind=\"unexplained\"} 1",
        "fabric_sync_agent_status_writes_total 1",
        "fabric_sync_agent_fabric_ready_seconds_count 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    assert!(!metrics.contains("hca=\"mlx5_2\""), "Ethernet ports have no pkey gauges");
    assert!(!metrics.contains("hca=\"mlx5_4\""), "VF devices have no pkey gauges");
    let health = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
