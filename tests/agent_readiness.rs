//! Fabric readiness and VFIO on a ConnectX-6/7 fake sysfs tree whose pkey tables change over
//! time, with the agent's clock injected: a pkey appearing after a delay gives `FabricReady`
//! with that delay (and one histogram sample), a pkey that never appears gives the
//! `FabricReadyTimeout` condition, and a VFIO VF (no netdev, no RDMA device on the host) is
//! verified through its PF's VF table and watched in its PF's pkey table. No sleeps: the test
//! moves the clock and changes the tree.

mod agent_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_support::*;
use fabric_sync::agent::{Agent, AgentMetrics, AgentMode, RawGuid, ReadinessSettings, Verdict};

const G: &str = "02:00:00:00:00:00:00:2a";
const GV: u64 = 0x0200_0000_0000_002a;
const LABEL: &str = "t/ib@net1";

/// The agent's clock: starts at `t0`, moves only when the test says.
struct TestClock {
    t0: Instant,
    now: Arc<Mutex<Instant>>,
}

impl TestClock {
    fn new() -> TestClock {
        let t0 = Instant::now();
        TestClock { t0, now: Arc::new(Mutex::new(t0)) }
    }

    fn at(&self, secs: u64) {
        *self.now.lock().unwrap() = self.t0 + Duration::from_secs(secs);
    }
}

fn agent(
    s: &FakeSys,
    pods: Vec<fabric_sync::agent::AgentPod>,
    vf: FakeVf,
    timeout: Duration,
) -> (Agent<FakeCluster, FakeVf>, Arc<AgentMetrics>, TestClock) {
    let metrics = Arc::new(AgentMetrics::new().unwrap());
    let claims = pods.iter().map(|p| claim_of(p, "gpu-1", G, Some(0x1000))).collect();
    let cluster = FakeCluster::with_pods(pods);
    cluster.set_claims(claims);
    let clock = TestClock::new();
    let now = clock.now.clone();
    let a = Agent::new("gpu-1", AgentMode::Verify, s.sysfs(), cluster, vf, metrics.clone())
        .with_readiness(ReadinessSettings { poll: Duration::from_secs(1), timeout })
        .with_clock(Arc::new(move || *now.lock().unwrap()));
    (a, metrics, clock)
}

#[tokio::test]
async fn a_pkey_appearing_after_a_delay_gives_fabric_ready_with_that_duration() {
    let s = connectx_node();
    // VF 0 of the ConnectX-7 (PF ifindex 4) carries the GUID; its own table (mlx5_2) lacks 0x1000.
    let (mut a, m, clock) =
        agent(&s, vec![pod("trainer-0", G, Some(CX7_VF0))], FakeVf::with(&[((4, 0), GV)]), Duration::from_secs(300));
    let r = a.pass().await;
    assert_eq!(r.checks[0].verdict, Verdict::Verified);
    let entry = a.cluster().attachment("t/trainer-0", LABEL);
    assert_eq!(entry["fabricReady"]["reason"], "WaitingForPKey", "{entry}");
    assert_eq!(entry["fabricReady"]["table"], "mlx5_2 port 1 (the VF's own table)");
    assert_eq!(m.fabric_ready_waiting.get(), 1);

    // Polls find nothing until the subnet manager programs the pkey (full member) at 7 s.
    for t in 1..7 {
        clock.at(t);
        assert!(!a.poll_readiness().await.status_written, "nothing changed at {t}s");
    }
    s.set_pkey("mlx5_2", 1, 1, "0x9000");
    clock.at(7);
    assert!(a.poll_readiness().await.status_written);
    let ready = a.cluster().attachment("t/trainer-0", LABEL)["fabricReady"].clone();
    assert_eq!(
        (&ready["status"], &ready["reason"], &ready["seconds"]),
        (&"True".into(), &"FabricReady".into(), &7.0.into())
    );
    assert!(ready["message"].as_str().unwrap().contains("entry 1 (0x9000, full member) of mlx5_2 port 1"), "{ready}");
    assert_eq!(m.fabric_ready_seconds.get_sample_count(), 1);
    assert_eq!(m.fabric_ready_seconds.get_sample_sum(), 7.0);
    assert_eq!((m.fabric_ready_waiting.get(), m.fabric_ready_timeouts.get()), (0, 0));
    assert_eq!(a.cluster().status()["conditions"][1]["reason"], "FabricReady");
    assert_eq!(a.cluster().status_writes(), 2, "the first pass, and readiness");

    // Later passes keep the result; nothing is rewritten, nothing observed twice.
    clock.at(67);
    assert!(!a.pass().await.status_written);
    assert_eq!(m.fabric_ready_seconds.get_sample_count(), 1);
    // With nothing waiting, settling returns at once.
    a.settle(tokio::time::Instant::now() + Duration::from_secs(3600)).await;
}

#[tokio::test]
async fn a_pkey_that_never_appears_gives_the_timeout_condition_with_its_reason() {
    let s = connectx_node();
    let (mut a, m, clock) =
        agent(&s, vec![pod("trainer-0", G, Some(CX6_VF0))], FakeVf::with(&[((5, 0), GV)]), Duration::from_secs(300));
    a.pass().await;
    // Another pkey arrives meanwhile: not ours, still waiting.
    s.set_pkey("mlx5_3", 1, 1, "0x9001");
    clock.at(299);
    a.poll_readiness().await;
    assert_eq!(a.cluster().attachment("t/trainer-0", LABEL)["fabricReady"]["reason"], "WaitingForPKey");
    clock.at(300);
    a.poll_readiness().await;
    let ready = a.cluster().attachment("t/trainer-0", LABEL)["fabricReady"].clone();
    assert_eq!(
        (&ready["status"], &ready["reason"], &ready["seconds"]),
        (&"False".into(), &"FabricReadyTimeout".into(), &300.0.into())
    );
    assert_eq!(
        ready["message"],
        "pkey 0x1000 is not in mlx5_3 port 1 (the VF's own table) 300s after the attachment was seen configured: \
         check the partition in UFM (fabric-sync ufm show 0x1000), the subnet manager and the port's state"
    );
    let cond = &a.cluster().status()["conditions"][1];
    assert_eq!((&cond["status"], &cond["reason"]), (&"False".into(), &"FabricReadyTimeout".into()));
    assert_eq!((m.fabric_ready_timeouts.get(), m.fabric_ready_seconds.get_sample_count()), (1, 0));
    assert_eq!(m.fabric_ready_waiting.get(), 0, "a timed-out attachment is not polled between passes");

    // It still counts if the pkey shows up late, with the real duration.
    clock.at(400);
    s.set_pkey("mlx5_3", 1, 2, "0x1000");
    a.pass().await;
    let ready = a.cluster().attachment("t/trainer-0", LABEL)["fabricReady"].clone();
    assert_eq!((&ready["reason"], &ready["seconds"]), (&"FabricReady".into(), &400.0.into()));
    assert!(ready["message"].as_str().unwrap().contains("limited member"), "{ready}");
    assert_eq!(m.fabric_ready_timeouts.get(), 1);
}

#[tokio::test]
async fn a_vfio_vf_is_verified_through_its_pfs_vf_table_and_watched_in_its_pfs_pkey_table() {
    let s = connectx_node();
    // VF 1 of the ConnectX-7 is bound to vfio-pci: no netdev, no RDMA device on the host.
    let vf = FakeVf::with(&[((4, 1), GV)]);
    let (mut a, m, clock) = agent(&s, vec![vfio_pod("vm-0", G, CX7_VF1)], vf, Duration::from_secs(300));
    let r = a.pass().await;
    assert_eq!(r.checks[0].verdict, Verdict::Verified, "{r:?}");
    let entry = a.cluster().attachment("t/vm-0", LABEL);
    assert_eq!((&entry["vf"], &entry["vfGuid"]), (&CX7_VF1.into(), &G.into()));
    assert_eq!(entry["fabricReady"]["table"], "mlx5_0 port 1 (the PF's table)");
    s.set_pkey("mlx5_0", 1, 4, "0x9000");
    clock.at(1);
    a.poll_readiness().await;
    let ready = a.cluster().attachment("t/vm-0", LABEL)["fabricReady"].clone();
    assert_eq!((&ready["reason"], &ready["seconds"]), (&"FabricReady".into(), &1.0.into()));
    assert_eq!(m.fabric_ready_seconds.get_sample_count(), 1);

    // Without device-info at all, the VF is found by the GUID it carries.
    let mut p = vfio_pod("vm-0", G, CX7_VF1);
    p.network_status = Some(r#"[{"name":"t/ib","interface":"net1"}]"#.into());
    a.cluster().set_pods(vec![p]);
    let r = a.pass().await;
    assert_eq!(r.checks[0].verdict, Verdict::Verified);
    assert_eq!(a.cluster().attachment("t/vm-0", LABEL)["vf"], CX7_VF1);

    // A VF carrying another GUID is a mismatch, found through the PF's table as well.
    a.vf_control().guids.lock().unwrap().insert((4, 1), (RawGuid(GV + 1), RawGuid(GV + 1)));
    a.cluster().set_pods(vec![vfio_pod("vm-0", G, CX7_VF1)]);
    let r = a.pass().await;
    assert_eq!(r.checks[0].verdict, Verdict::Mismatch { vf: CX7_VF1.into(), found: RawGuid(GV + 1) });
}
