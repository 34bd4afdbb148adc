//! End to end through the fake API server over HTTP: the controller configures a pod (its
//! GuidClaim carries the node label), the real agent client reads that claim, checks the VF on a
//! fake sysfs tree and writes its NodeFabricStatus, and the controller mirrors the findings onto
//! the pod as Events (`VfGuidMismatch`, then `FabricReady` once the pkey shows in the VF's table).
//! A report of another node about this pod is not mirrored. Every request of both is one their
//! RBAC grants.

mod agent_support;
mod support;

use std::sync::Arc;

use agent_support::{FakeVf, VF_A0, realistic_node};
use fabric_sync::agent::{AGENT_API_CALLS, Agent, AgentMetrics, AgentMode, KubeAgentCluster, RawGuid};
use serde_json::{Value, json};
use support::fake_api::Res;
use support::{Env, UfmAuth, api_call, assert_calls_are_declared, events_about, eventually};

fn reasons(env: &Env, pod: &str) -> Vec<String> {
    events_about(&env.api, "Pod", pod)
        .iter()
        .filter(|e| e["reportingController"] == "fabric-sync.io/controller")
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_report_reaches_the_pod_as_events_through_the_controller() {
    let env = Env::new().await;
    env.nad("ib", "0x1000", false);
    env.pod("p1", r#"[{"name":"ib","interface":"net1"}]"#, &[]);
    let c = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("p1 configured", || env.configured_element("p1").is_some()).await;
    let claim = env.claim_for("p1").expect("a claim");
    assert_eq!(claim["metadata"]["labels"]["fabric-sync.io/node"], "n1", "the agent lists claims by this label");
    let guid: String = claim["spec"]["attachments"][0]["guid"].as_str().unwrap().to_string();

    // Multus reports the VF; the VF carries another GUID (outside the range: not foreign).
    let status = json!([{"name": "t/ib", "interface": "net1",
                         "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF_A0}}}]);
    env.api.merge_patch(
        Res::Pods,
        "t",
        "p1",
        json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": status.to_string()}}}),
    );
    let s = realistic_node();
    let vf = FakeVf::with(&[((4, 0), 0x0c42_a103_0000_0001)]);
    let cluster = KubeAgentCluster::new(env.api.client("agent-n1"), "n1");
    let metrics = Arc::new(AgentMetrics::new().unwrap());
    let mut agent = Agent::new("n1", AgentMode::Verify, s.sysfs(), cluster, vf, metrics);
    let r = agent.pass().await;
    assert!(r.status_written && r.errors.is_empty(), "{r:?}");
    let report = env.api.get(Res::NodeFabricStatuses, "", "n1").expect("the agent's NodeFabricStatus");
    assert_eq!(report["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(report["status"]["attachments"][0]["guid"], guid.as_str());
    eventually("VfGuidMismatch on p1", || reasons(&env, "p1").contains(&"VfGuidMismatch".to_string())).await;

    // Another node's agent reporting about p1 (a forgery): ignored. Then p1's VF is fixed and
    // its pkey reaches the VF's table: FabricReady (the forgery was handled before, in order).
    let mut forged = report.clone();
    forged["metadata"] = json!({"name": "n2"});
    forged["status"]["attachments"][0]["fabricReady"] = json!({"reason": "FabricReadyTimeout", "message": "forged"});
    env.api.create(Res::NodeFabricStatuses, forged);
    let g = u64::from_str_radix(&guid.replace(':', ""), 16).unwrap();
    agent.vf_control().guids.lock().unwrap().insert((4, 0), (RawGuid(g), RawGuid(g)));
    s.set_pkey("mlx5_4", 1, 1, "0x9000");
    let r = agent.pass().await;
    assert_eq!(r.count("verified"), 1, "{r:?}");
    eventually("FabricReady on p1", || reasons(&env, "p1").contains(&"FabricReady".to_string())).await;
    assert!(!reasons(&env, "p1").contains(&"FabricReadyTimeout".to_string()), "n2 may not speak for p1");
    let ready: Vec<Value> =
        events_about(&env.api, "Pod", "p1").into_iter().filter(|e| e["reason"] == "FabricReady").collect();
    assert_eq!(ready[0]["type"], "Normal");
    assert!(ready[0]["note"].as_str().unwrap().contains("t/ib@net1: node n1: pkey 0x1000 is entry 1"), "{}", ready[0]);

    assert_calls_are_declared(&env.api, "ctrl-a");
    for req in env.api.requests_by("agent-n1") {
        let call = api_call(&req).unwrap_or_else(|| panic!("unexpected request {} {}", req.method, req.path));
        assert!(
            AGENT_API_CALLS.iter().any(|(g, r, v)| (*g, *r, *v) == (call.0.as_str(), call.1.as_str(), call.2.as_str())),
            "the agent made {call:?}, which AGENT_API_CALLS does not declare"
        );
    }
    c.stop().await;
}
