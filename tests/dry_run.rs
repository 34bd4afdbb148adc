//! `fabric-sync controller --dry-run`, the released binary, against the fake API server and
//! mock-ufm over TLS: it makes no write request to either (no pod, ledger, Event or Lease
//! write, no UFM change), and the plan it logs is the plan a real controller then executes.

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::*;

/// The JSON log lines of the dry run so far.
fn log_lines(path: &std::path::Path) -> Vec<Value> {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

/// (pkey, 16-hex GUID) of each logged UFM change with `message`.
fn pairs(lines: &[Value], message: &str) -> BTreeSet<(String, String)> {
    with_message(lines, message)
        .iter()
        .map(|l| (l["pkey"].as_str().unwrap_or("").to_string(), ufm_guid(l["guid"].as_str().unwrap_or(""))))
        .collect()
}

fn seed_ufm(env: &Env, pkey: u16, guid: &str) {
    let members = vec![(
        mock_ufm::Guid::parse(&ufm_guid(guid)).expect("GUID"),
        mock_ufm::Member { membership: mock_ufm::Membership::Full, index0: true },
    )];
    let pkey = mock_ufm::PKey::new(pkey).expect("pkey");
    env.ufm.apply(mock_ufm::Mutation::AddGuids { pkey, members, ip_over_ib: None, name: None }).expect("seeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_and_logs_the_plan_a_real_run_then_executes() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.nad("ib-b", "0x20", true);
    env.pod("p1", "ib-a", &[]);
    env.pod("p2", "ib-a", &[]);
    env.pod("p3", "ib-b", &[]);
    // A NAD with a bare-decimal pkey: a real run puts an InvalidNetwork Event on it.
    env.nad("bare", "1000", false);
    // A GUID of the managed range in a named pkey that no pod explains: a real run removes it.
    let stale = "02:00:00:00:00:00:0f:01";
    seed_ufm(&env, 0x10, stale);
    let ufm_before = env.ufm.snapshot();
    env.ufm.clear_requests();

    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dry-run.log");
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = fabric_sync_binary(&env, dir.path())
        .args(["--log-format", "json", "controller", "--dry-run"])
        .env("POD_NAMESPACE", LEASE_NS)
        .env("K8S_NODE", "dry-node")
        .env("POD_UID", "uid-dry")
        .env("FABRIC_SYNC_ADMIN_LISTEN", admin.to_string())
        .env("FABRIC_SYNC_RESYNC_INTERVAL", "300ms")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("the binary starts");

    // The whole plan: three adds, the stale removal, three claims and three write-backs, and
    // several UFM listings after it (which must not bring the adds back as "lost").
    eventually("the dry run logged its plan and listed UFM again", || {
        let lines = log_lines(&log);
        let listed_after = lines
            .iter()
            .skip_while(|l| l["message"] != "dry run: would patch pod")
            .filter(|l| l["message"] == "resync: UFM listed")
            .count();
        with_message(&lines, "dry run: would add to UFM").len() == 3
            && with_message(&lines, "dry run: would remove from UFM").len() == 1
            && with_message(&lines, "dry run: would patch pod").len() == 3
            && with_message(&lines, "dry run: would emit Event").len() == 1
            && listed_after >= 2
    })
    .await;
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.expect("admin").text().await.expect("body");
    assert_eq!(sample(&metrics, r#"fabric_sync_dry_run_changes_total{kind="ufm_add"}"#), Some(3.0), "{metrics}");
    assert_eq!(sample(&metrics, r#"fabric_sync_dry_run_changes_total{kind="ufm_remove"}"#), Some(1.0));
    assert_eq!(sample(&metrics, r#"fabric_sync_dry_run_changes_total{kind="ledger_write"}"#), Some(3.0));
    assert_eq!(sample(&metrics, r#"fabric_sync_dry_run_changes_total{kind="pod_patch"}"#), Some(3.0));
    assert_eq!(sample(&metrics, r#"fabric_sync_dry_run_changes_total{kind="event"}"#), Some(1.0));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("joined").expect("waited");
    assert!(status.success(), "exit {status:?}");
    let lines = log_lines(&log);
    // README's example (`-- --nocapture`).
    for l in lines.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("dry run"))) {
        println!("{l}");
    }
    // Logged once each, even across the later listings.
    assert_eq!(with_message(&lines, "dry run: would add to UFM").len(), 3);
    let adds = pairs(&lines, "dry run: would add to UFM");
    let removes = pairs(&lines, "dry run: would remove from UFM");
    assert_eq!(removes, BTreeSet::from([("0x10".to_string(), ufm_guid(stale))]));
    let event = with_message(&lines, "dry run: would emit Event")[0];
    assert_eq!(
        (&event["reason"], &event["object"]),
        (&json!("InvalidNetwork"), &json!("NetworkAttachmentDefinition t/bare"))
    );

    // Zero writes: every request of the dry run to the API server was a read, and nothing it
    // would have written exists.
    // (The test seeds objects in process: every logged request is the dry run's.)
    let requests = env.api.requests();
    assert!(requests.iter().all(|r| r.client.contains("dry-node_uid-dry")), "only the dry run talked to the API");
    assert!(requests.iter().any(|r| r.path == "/api/v1/pods"), "the dry run watched pods");
    let writes: Vec<String> =
        requests.iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(writes.is_empty(), "the dry run wrote: {writes:?}");
    assert!(env.api.get(Res::Leases, LEASE_NS, LEASE_NAME).is_none(), "no Lease");
    assert!(env.api.list(Res::Events).is_empty(), "no Event");
    assert!(env.claims().is_empty(), "no GuidClaim");
    assert!(env.configured_element("p1").is_none() && env.annotation("p1", STATUS).is_none(), "pods untouched");
    // Zero UFM changes: only reads reached it, and it holds what it held.
    let ufm_writes: Vec<String> =
        env.ufm.requests().iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(ufm_writes.is_empty(), "the dry run changed UFM: {ufm_writes:?}");
    assert!(!env.ufm.requests().is_empty(), "the dry run listed UFM");
    assert_eq!(env.ufm.snapshot(), ufm_before);

    // The real run does what the dry run said.
    let c = env.controller("real", UfmAuth::Basic).await;
    eventually("all three configured and the stale GUID gone", || {
        ["p1", "p2", "p3"].iter().all(|p| env.configured_element(p).is_some())
            && !env.members(0x10).contains(&ufm_guid(stale))
    })
    .await;
    c.stop().await;
    let mut real: BTreeSet<(String, String)> = BTreeSet::new();
    for (pkey, name) in [(0x10u16, "0x10"), (0x20, "0x20")] {
        real.extend(env.members(pkey).into_iter().map(|g| (name.to_string(), g)));
    }
    assert_eq!(adds, real, "dry-run adds vs the real run's memberships");
    assert_eq!(env.claims().len(), 3);
    let real_events = events_about(&env.api, "NetworkAttachmentDefinition", "bare");
    assert_eq!(real_events.len(), 1, "the real run emits the Event the dry run logged");
    assert_eq!(real_events[0]["reason"], "InvalidNetwork");
}
