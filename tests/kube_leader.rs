//! Leader election against the fake API server: only the Lease holder writes (to pods, Events
//! and UFM), a standby takes over a dead leader's work, a leader that cannot renew steps down
//! before anyone else may take over, and a stopped controller (SIGTERM) releases the Lease.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn writes_by(api: &FakeApi, client: &str) -> Vec<RequestRecord> {
    api.requests_by(client).into_iter().filter(|r| r.method != "GET").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_standby_finishes_the_work_of_a_dead_leader() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    let a = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("ctrl-a leads", || a.is_leader()).await;
    let b = env.controller("ctrl-b", UfmAuth::Token).await;
    eventually("p1 configured", || env.configured_element("p1").is_some()).await;
    eventually("ctrl-b synced", || b.stats.caches_synced()).await;
    // A warm standby is ready (it stays in the Service) but does not lead.
    assert_eq!(b.admin_get("/readyz").await.0, 200);
    assert!(!b.is_leader());
    env.pod("p2", r#"[{"name":"ib-a"}]"#, &[]);
    eventually("p2 configured", || env.configured_element("p2").is_some()).await;
    assert_eq!(env.lease_holder().await.as_deref(), Some("ctrl-a"));

    // The follower only read: no PATCH, POST, PUT or DELETE, and no UFM request at all.
    assert!(writes_by(&env.api, "ctrl-b").is_empty(), "{:?}", writes_by(&env.api, "ctrl-b"));
    assert!(!writes_by(&env.api, "ctrl-a").is_empty());
    let ufm_log = env.ufm.requests();
    assert!(ufm_log.iter().all(|r| r.auth == mock_ufm::AuthKind::Basic), "only ctrl-a (Basic) spoke to UFM");

    // The leader dies without releasing the Lease.
    a.kill().await;
    env.pod("p3", r#"[{"name":"ib-a"}]"#, &[]);
    eventually("ctrl-b takes over after the lease expires", || b.is_leader()).await;
    eventually("p3 configured by ctrl-b", || env.configured_element("p3").is_some()).await;
    let lease = env.api.get(Res::Leases, LEASE_NS, LEASE_NAME).unwrap();
    assert_eq!(lease.pointer("/spec/holderIdentity").and_then(Value::as_str), Some("ctrl-b"));
    assert_eq!(lease.pointer("/spec/leaseTransitions").and_then(Value::as_i64), Some(1));
    let p3_writers: Vec<String> = env
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/pods/p3"))
        .map(|r| r.client.clone())
        .collect();
    assert!(!p3_writers.is_empty() && p3_writers.iter().all(|c| c == "ctrl-b"), "{p3_writers:?}");
    // Every request of the dead leader arrived before the first write of its successor.
    let last_a = env.api.requests_by("ctrl-a").iter().map(|r| r.seq).max().unwrap();
    let first_b_write = writes_by(&env.api, "ctrl-b").iter().map(|r| r.seq).min().unwrap();
    assert!(last_a < first_b_write, "ctrl-a's last request {last_a}, ctrl-b's first write {first_b_write}");
    // UFM saw Basic (ctrl-a) requests, then only token (ctrl-b) requests: never both at once.
    let ufm_log = env.ufm.requests();
    let last_a = ufm_log.iter().filter(|r| r.auth == mock_ufm::AuthKind::Basic).map(|r| r.seq).max().unwrap();
    let first_b = ufm_log.iter().filter(|r| r.auth == mock_ufm::AuthKind::Token).map(|r| r.seq).min().unwrap();
    assert!(last_a < first_b, "ctrl-b spoke to UFM only after ctrl-a was gone");
    let g3 = env.configured_element("p3").unwrap()["cni-args"]["guid"].as_str().unwrap().to_string();
    assert!(env.members(0x10).contains(&ufm_guid(&g3)));
    assert_calls_are_declared(&env.api, "ctrl-a");
    assert_calls_are_declared(&env.api, "ctrl-b");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_the_standby_may_take_over() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    // A 4 s term renewed within 1 s: 3 s between stepping down and the earliest takeover.
    let config = |name: &str| {
        let mut c = test_config(name);
        c.lease.duration = Duration::from_secs(4);
        c
    };
    let a = env.controller_with("ctrl-a", UfmAuth::Basic, config("ctrl-a")).await;
    eventually("ctrl-a leads", || a.is_leader()).await;
    let b = env.controller_with("ctrl-b", UfmAuth::Token, config("ctrl-b")).await;
    eventually("ctrl-b synced", || b.stats.caches_synced()).await;

    // From now on every Lease request of ctrl-a fails.
    env.api.fail(Fault {
        client: Some("ctrl-a".into()),
        path_contains: Some("/leases/".into()),
        code: 500,
        ..Fault::default()
    });
    eventually("ctrl-a steps down", || !a.is_leader()).await;
    // At the moment ctrl-a stopped leading, nobody else led, and the Lease still named it.
    assert!(!b.is_leader());
    assert_eq!(env.lease_holder().await.as_deref(), Some("ctrl-a"));
    eventually("ctrl-b takes over once the lease expired", || b.is_leader()).await;
    assert!(!a.is_leader());
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    eventually("p1 configured by ctrl-b", || env.configured_element("p1").is_some()).await;
    let writers: Vec<String> = env
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/pods/p1"))
        .map(|r| r.client.clone())
        .collect();
    assert!(writers.iter().all(|c| c == "ctrl-b"), "{writers:?}");
    a.kill().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_controller_releases_the_lease() {
    let env = Env::new().await;
    let a = env.controller("ctrl-a", UfmAuth::Basic).await;
    eventually("ctrl-a leads", || a.is_leader()).await;
    let stats = a.stats.clone();
    a.stop().await;
    assert!(!stats.is_leader());
    let lease = env.api.get(Res::Leases, LEASE_NS, LEASE_NAME).unwrap();
    assert_eq!(lease.pointer("/spec/holderIdentity"), None, "{lease}");
    assert_eq!(lease.pointer("/spec/leaseDurationSeconds"), Some(&json!(1)));
    // A standby takes a released lease at once: no expiry wait (the 2 s term never elapsed
    // on its clock, yet it acquires on its first look).
    let b = env.controller("ctrl-b", UfmAuth::Token).await;
    eventually("ctrl-b leads", || b.is_leader()).await;
    let b_lease: Vec<(String, u16)> = env
        .api
        .requests_by("ctrl-b")
        .iter()
        .filter(|r| r.path.ends_with(&format!("/leases/{LEASE_NAME}")))
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(b_lease[..2], [("GET".to_string(), 200), ("PUT".to_string(), 200)], "acquired on the first look");
    b.stop().await;
}

fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    kubeconfig_file(dir, url)
}

fn controller_command(kubeconfig: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fabric-sync"));
    cmd.arg("controller")
        .env("KUBECONFIG", kubeconfig)
        .env("DAEMON_SM_PLUGIN", "noop")
        .env("POD_NAMESPACE", LEASE_NS)
        .env("K8S_NODE", "node-x")
        .env("POD_UID", "uid-1")
        .env("FABRIC_SYNC_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_0_on_sigterm_and_releases_the_lease() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &env.api.url());
    let mut child = controller_command(&config).spawn().expect("the binary starts");
    eventually_async("the binary holds the lease", || async {
        env.lease_holder().await.as_deref() == Some("node-x_uid-1")
    })
    .await;
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut exited = None;
    eventually("the binary exits", || {
        exited = exited.or_else(|| child.try_wait().ok().flatten());
        exited.is_some()
    })
    .await;
    let status = exited.expect("it exited");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert_eq!(env.lease_holder().await, None);
    let agent = env.api.requests().into_iter().find(|r| r.path.contains("/leases/")).unwrap().client;
    assert!(agent.starts_with("fabric-sync/") && agent.contains("node-x_uid-1"), "{agent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "http://127.0.0.1:9");
    let out = controller_command(&config).env("FABRIC_SYNC_ADMIN_LISTEN", "nowhere").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FABRIC_SYNC_ADMIN_LISTEN"), "{stderr}");
    let out = controller_command(&dir.path().join("missing")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KUBECONFIG"));
}

/// The migration overlay shares ib-kubernetes' Lease: a record written by client-go (MicroTime
/// timestamps, its own identity and transition count) must be honoured while its holder
/// renews it, and taken over only after the holder stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_ib_kubernetes_is_honoured_until_its_holder_stops_renewing() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.pod("p1", r#"[{"name":"ib-a"}]"#, &[]);
    let micro = |t: std::time::SystemTime| {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_micros()
        )
    };
    let now = std::time::SystemTime::now();
    env.api.create(
        Res::Leases,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NS},
            "spec": {"holderIdentity": "cp-1_5d0e7a3c", "leaseDurationSeconds": 2,
                     "acquireTime": micro(now), "renewTime": micro(now), "leaseTransitions": 4}
        }),
    );
    let b = env.controller("ctrl-b", UfmAuth::Basic).await;
    eventually("ctrl-b synced", || b.stats.caches_synced()).await;
    // ib-kubernetes renews for 4 s, twice its lease duration: each time ctrl-b has read the Lease
    // twice more (its retry period is 200 ms), a renewal comes.
    let lease_reads =
        || env.api.requests().iter().filter(|r| r.client.contains("ctrl-b") && r.path.contains("/leases/")).count();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let seen = lease_reads();
        eventually("ctrl-b reads the Lease twice more", || lease_reads() >= seen + 2).await;
        env.api.merge_patch(
            Res::Leases,
            LEASE_NS,
            LEASE_NAME,
            json!({"spec": {"renewTime": micro(std::time::SystemTime::now())}}),
        );
        assert!(!b.is_leader(), "fabric-sync must not lead while ib-kubernetes renews");
    }
    assert!(writes_by(&env.api, "ctrl-b").is_empty(), "{:?}", writes_by(&env.api, "ctrl-b"));
    assert!(env.ufm.requests().is_empty(), "no UFM call while ib-kubernetes leads");
    // ib-kubernetes is scaled to 0 and stops renewing: fabric-sync takes over and configures.
    eventually("ctrl-b takes over", || b.is_leader()).await;
    eventually("p1 configured", || env.configured_element("p1").is_some()).await;
    let lease = env.api.get(Res::Leases, LEASE_NS, LEASE_NAME).unwrap();
    assert_eq!(lease.pointer("/spec/holderIdentity").and_then(Value::as_str), Some("ctrl-b"));
    assert_eq!(lease.pointer("/spec/leaseTransitions").and_then(Value::as_i64), Some(5));
    b.stop().await;
}
