//! Agent passes against a realistic fake sysfs tree, a fake `VfControl` (call log, GUID state) and
//! a fake `AgentCluster`: verification, mismatch reporting, programming order, reset of VFs no pod
//! holds, fallbacks, and the admin server.

mod agent_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::*;
use fabric_sync::agent::metrics::{Health, admin_router};
use fabric_sync::agent::pass::CheckReport;
use fabric_sync::agent::{
    AGENT_STATUS_ANNOTATION, Agent, AgentEvent, AgentMetrics, AgentMode, EventTarget, INVENTORY_ANNOTATION, RawGuid,
    Verdict, scan,
};

const G1: u64 = 0x0200_0000_0000_0001;
const G5: u64 = 0x0200_0000_0000_0005;
const G9: &str = "02:00:00:00:00:00:00:09";
const LABEL: &str = "t/ib@net1";

/// VF 0 of mlx5_0 (ib0, ifindex 4) carries G1, VF 1 is unset, VF 0 of mlx5_1 (ib1) carries G5.
fn hardware() -> FakeVf {
    FakeVf::with(&[((4, 0), G1), ((4, 1), u64::MAX), ((5, 0), G5)])
}

fn agent(
    s: &FakeSys,
    mode: AgentMode,
    pods: Vec<fabric_sync::agent::AgentPod>,
) -> (Agent<FakeCluster, FakeVf>, Arc<AgentMetrics>) {
    let metrics = Arc::new(AgentMetrics::new().unwrap());
    let a = Agent::new("node-1", mode, s.sysfs(), FakeCluster::with_pods(pods), hardware(), metrics.clone());
    (a, metrics)
}

fn checks(m: &AgentMetrics, result: &str) -> u64 {
    m.checks.with_label_values(&[result]).get()
}

#[tokio::test]
async fn verify_mode_confirms_the_vf_guid_and_reports_on_node_and_pod() {
    let s = realistic_node();
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![pod("pod-a", "02:00:00:00:00:00:00:01", Some(VF_A0))]);
    let r = a.pass().await;
    assert_eq!(r.checks, vec![CheckReport { pod: "t/pod-a".into(), label: LABEL.into(), verdict: Verdict::Verified }]);
    assert!(r.is_clean() && r.node_annotation_written, "{r:?}");
    assert_eq!(
        a.cluster().pod_patches(),
        vec![("t/pod-a".to_string(), AGENT_STATUS_ANNOTATION.to_string(), r#"{"t/ib@net1":"verified"}"#.to_string())]
    );
    let summary = serde_json::to_string(&scan(&s.sysfs()).summary()).unwrap();
    assert_eq!(a.cluster().node_annotations.lock().unwrap().get(INVENTORY_ANNOTATION), Some(&summary));
    assert_eq!(a.vf_control().calls(), ["vf_guids ib0", "vf_guids ib1"], "verify mode only reads");

    // Nothing changed: no second write to the Node or the pod.
    let r = a.pass().await;
    assert!(!r.node_annotation_written);
    assert_eq!(a.cluster().pod_patches().len(), 1);
    assert_eq!(*a.cluster().node_patches.lock().unwrap(), 1);
    assert_eq!(checks(&m, "verified"), 2);
    assert_eq!(m.passes.get(), 2);
    assert!(a.cluster().events().is_empty());
}

#[tokio::test]
async fn verify_mode_reports_a_mismatch_once_with_event_metric_and_status() {
    let s = realistic_node();
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![pod("pod-a", G9, Some(VF_A0))]);
    let r = a.pass().await;
    let text = "mismatch: VF 0000:3b:00.2 has port GUID 02:00:00:00:00:00:00:01, assigned 02:00:00:00:00:00:00:09";
    assert_eq!(r.checks[0].verdict, Verdict::Mismatch { vf: VF_A0.into(), found: RawGuid(G1) });
    assert!(!r.is_clean());
    assert_eq!(a.cluster().pod("pod-a").unwrap().agent_status, Some(format!(r#"{{"{LABEL}":"{text}"}}"#)));
    assert_eq!(
        a.cluster().events(),
        vec![AgentEvent {
            target: EventTarget::Pod { namespace: "t".into(), name: "pod-a".into(), uid: "uid-pod-a".into() },
            warning: true,
            reason: "VfGuidMismatch",
            action: "VerifyVfGuid",
            note: format!("{LABEL}: {text}"),
        }]
    );
    assert_eq!(checks(&m, "mismatch"), 1);
    assert!(a.vf_control().calls().iter().all(|c| c.starts_with("vf_guids")), "verify mode never writes");

    // Still wrong: counted again, but no second Event and no rewrite of the same status.
    a.pass().await;
    assert_eq!(checks(&m, "mismatch"), 2);
    assert_eq!(a.cluster().events().len(), 1);
    assert_eq!(a.cluster().pod_patches().len(), 1);

    // Someone fixes the VF: the status flips to verified, without an Event.
    a.vf_control()
        .guids
        .lock()
        .unwrap()
        .insert((4, 0), (RawGuid(0x0200_0000_0000_0009), RawGuid(0x0200_0000_0000_0009)));
    let r = a.pass().await;
    assert_eq!(r.checks[0].verdict, Verdict::Verified);
    assert_eq!(a.cluster().pod("pod-a").unwrap().agent_status.as_deref(), Some(r#"{"t/ib@net1":"verified"}"#));
    assert_eq!(a.cluster().events().len(), 1);
}

#[tokio::test]
async fn program_mode_sets_node_then_port_guid_then_rebinds_and_verifies() {
    let s = realistic_node();
    let (mut a, m) = agent(&s, AgentMode::Program, vec![pod("pod-a", G9, Some(VF_A0))]);
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
    assert_eq!(r.checks[0].verdict, Verdict::Verified, "read back after programming");
    assert!(r.reset.is_empty(), "no reset in the first pass");
    assert_eq!(a.cluster().pod("pod-a").unwrap().agent_status.as_deref(), Some(r#"{"t/ib@net1":"verified"}"#));
    let events = a.cluster().events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].reason, events[0].warning), ("VfGuidProgrammed", false));
    assert_eq!(
        events[0].note,
        "t/ib@net1: VF 0000:3b:00.2 (mlx5_0 vf 0) set to 02:00:00:00:00:00:00:09, rebound to mlx5_core"
    );
    assert_eq!(m.guid_writes.with_label_values(&["program"]).get(), 1);

    // The next pass finds it right and leaves it alone.
    a.vf_control().clear();
    let r = a.pass().await;
    assert!(r.programmed.is_empty());
    assert!(!a.vf_control().calls().iter().any(|c| c.contains("ib0 vf0") || c.contains("3b:00.2")));
}

#[tokio::test]
async fn program_mode_does_not_rebind_a_vf_held_by_vfio_pci() {
    let s = realistic_node();
    // VF 1 of mlx5_0 is passed to a VM: unbinding vfio-pci would block until the VM lets go.
    s.driver("vfio-pci");
    s.bind("devices/pci0000:00/0000:00:02.0/0000:3b:00.3", "vfio-pci");
    let (mut a, _) = agent(&s, AgentMode::Program, vec![pod("vm-a", G9, Some(VF_A1))]);
    let r = a.pass().await;
    assert_eq!(
        a.vf_control().calls(),
        [
            "vf_guids ib0",
            "vf_guids ib1",
            "set_node ib0 vf1 02:00:00:00:00:00:00:09",
            "set_port ib0 vf1 02:00:00:00:00:00:00:09",
            "vf_guids ib0",
        ]
    );
    assert_eq!(r.checks[0].verdict, Verdict::Verified);
    let note = &a.cluster().events()[0].note;
    assert!(note.ends_with("not rebound (bound to vfio-pci; it applies at the VF's next reset)"), "{note}");
}

#[tokio::test]
async fn program_mode_resets_unheld_vfs_after_a_pass_of_grace_and_spares_named_guids() {
    let s = realistic_node();
    // pod-b names G5 (the GUID VF 0 of mlx5_1 carries) but Multus has not written its status yet.
    let (mut a, m) = agent(
        &s,
        AgentMode::Program,
        vec![pod("pod-a", "02:00:00:00:00:00:00:01", Some(VF_A0)), pod("pod-b", "02:00:00:00:00:00:00:05", None)],
    );
    for _ in 0..2 {
        let r = a.pass().await;
        assert!(r.reset.is_empty(), "{r:?}");
        assert_eq!(r.checks[1].verdict, Verdict::Unknown("no network-status annotation yet".into()));
    }
    assert!(a.vf_control().calls().iter().all(|c| c.starts_with("vf_guids")));

    // pod-b goes: the first pass only notes the VF, the second resets it.
    a.cluster().set_pods(vec![pod("pod-a", "02:00:00:00:00:00:00:01", Some(VF_A0))]);
    assert!(a.pass().await.reset.is_empty());
    a.vf_control().clear();
    let r = a.pass().await;
    assert_eq!(r.reset, vec![VF_B0.to_string()]);
    assert_eq!(
        a.vf_control().calls(),
        [
            "vf_guids ib0",
            "vf_guids ib1",
            "set_node ib1 vf0 ff:ff:ff:ff:ff:ff:ff:ff",
            "set_port ib1 vf0 ff:ff:ff:ff:ff:ff:ff:ff",
            "unbind 0000:5e:00.1 mlx5_core",
            "bind 0000:5e:00.1 mlx5_core",
        ]
    );
    let events = a.cluster().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target, EventTarget::Node { name: "node-1".into() });
    assert_eq!(events[0].reason, "VfGuidReset");
    assert!(
        events[0].note.contains("0000:5e:00.1 (mlx5_1 vf 0) carried 02:00:00:00:00:00:00:05"),
        "{}",
        events[0].note
    );
    assert_eq!(m.guid_writes.with_label_values(&["reset"]).get(), 1);

    // Reset VFs are unset now: nothing more to do.
    a.vf_control().clear();
    assert!(a.pass().await.reset.is_empty());
    assert_eq!(a.vf_control().calls(), ["vf_guids ib0", "vf_guids ib1"]);
}

#[tokio::test]
async fn verify_mode_never_resets_but_counts_unheld_vfs() {
    let s = realistic_node();
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![]);
    for _ in 0..3 {
        assert!(a.pass().await.reset.is_empty());
    }
    assert!(a.vf_control().calls().iter().all(|c| c.starts_with("vf_guids")));
    assert_eq!(m.unheld_vfs_with_guid.get(), 2, "VF 0 of mlx5_0 (G1) and VF 0 of mlx5_1 (G5)");
}

#[tokio::test]
async fn unreadable_netlink_falls_back_to_ofed_sysfs_and_counts_errors() {
    let s = realistic_node();
    let (mut a, m) = agent(
        &s,
        AgentMode::Verify,
        vec![
            pod("pod-a", "02:00:00:00:00:00:00:01", Some(VF_A0)),
            pod("pod-b", G9, Some(VF_B0)),
            pod("pod-c", G9, Some("0000:af:00.2")),
        ],
    );
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
    let (mut a, m) = agent(&s, AgentMode::Verify, vec![pod("pod-a", G9, Some(VF_A0))]);
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
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    assert!(!metrics.contains("hca=\"mlx5_2\""), "Ethernet ports have no pkey gauges");
    assert!(!metrics.contains("hca=\"mlx5_4\""), "VF devices have no pkey gauges");
    let health = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
