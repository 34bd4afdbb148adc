//! Fencing, with a real process: a leader frozen (SIGSTOP) with work queued, replaced by
//! another replica, then resumed (SIGCONT) writes nothing — no pod, claim, Event or Lease
//! write — because every write checks the age of its last Lease renewal first.

mod support;

use std::process::{Child, Command, Stdio};

use support::*;

const IDENTITY: &str = "node-x_uid-1";

fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    kubeconfig_file(dir, url)
}

fn spawn_controller(kubeconfig: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fabric-sync"))
        .arg("controller")
        .env("KUBECONFIG", kubeconfig)
        .env("DAEMON_SM_PLUGIN", "noop")
        .env("POD_NAMESPACE", LEASE_NS)
        .env("K8S_NODE", "node-x")
        .env("POD_UID", "uid-1")
        .env("FABRIC_SYNC_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FABRIC_SYNC_LEASE_DURATION", "3s")
        .env("FABRIC_SYNC_LEASE_RENEW_DEADLINE", "2s")
        .env("FABRIC_SYNC_LEASE_RETRY_PERIOD", "1s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill runs");
    assert!(ok.success(), "kill {sig}");
}

/// Requests of the process `IDENTITY` that change something.
fn writes_of_a(api: &FakeApi) -> Vec<RequestRecord> {
    api.requests()
        .into_iter()
        .filter(|r| r.client.contains(IDENTITY) && !matches!(r.method.as_str(), "GET" | "HEAD"))
        .collect()
}

fn lease_reads_of_a(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.client.contains(IDENTITY) && r.method == "GET" && r.path.ends_with(&format!("/leases/{LEASE_NAME}"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_term_writes_nothing_when_it_wakes_up() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("p1", "ib", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path(), &env.api.url());
    let mut a = spawn_controller(&config);
    eventually_async("the binary leads", || async { env.lease_holder().await.as_deref() == Some(IDENTITY) }).await;
    eventually("p1 configured by the binary", || env.configured_element("p1").is_some()).await;

    signal(&a, "-STOP");
    // Work queues up for the frozen leader: its watches will deliver these when it wakes.
    for i in 2..5 {
        env.pod(&format!("p{i}"), "ib", &[]);
    }
    let b = env.controller("ctrl-b", UfmAuth::Basic).await;
    eventually("ctrl-b takes over after the frozen term ran out", || b.is_leader()).await;
    eventually("ctrl-b configures the queued pods", || {
        (2..5).all(|i| env.configured_element(&format!("p{i}")).is_some())
    })
    .await;
    env.pod("p5", "ib", &[]);
    let before = writes_of_a(&env.api).len();
    let reads = lease_reads_of_a(&env.api);

    signal(&a, "-CONT");
    // The woken leader reads the Lease again (and finds ctrl-b holding it) at least twice.
    eventually("the woken process looked at the Lease", || lease_reads_of_a(&env.api) >= reads + 2).await;
    eventually("ctrl-b configures p5", || env.configured_element("p5").is_some()).await;
    let after: Vec<String> =
        writes_of_a(&env.api).iter().skip(before).map(|r| format!("{} {} -> {}", r.method, r.path, r.status)).collect();
    assert!(after.is_empty(), "the woken process wrote after the takeover: {after:?}");
    assert_eq!(env.lease_holder().await.as_deref(), Some("ctrl-b"));
    let _ = a.kill();
    let _ = a.wait();
    b.stop().await;
}
