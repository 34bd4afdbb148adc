//! `fabric-sync audit`, the released binary, against the fake API server and mock-ufm over TLS:
//! each seeded problem (a stale GUID in UFM, a missing membership, a forged `configured`
//! marker, a node over its 128-entry pkey budget, a bare-decimal pkey) is found and exits 1; a
//! clean cluster exits 0; an API server or UFM it cannot reach exits 2 with one line. The audit
//! never writes.

mod support;

use std::process::Output;

use serde_json::{Value, json};
use support::*;

/// The audit binary with the controller's settings for `env`, run with `args`.
async fn audit(env: &Env, dir: &std::path::Path, args: &[&str]) -> Output {
    audit_with(env, dir, args, &[]).await
}

async fn audit_with(env: &Env, dir: &std::path::Path, args: &[&str], extra: &[(&str, String)]) -> Output {
    let mut cmd = fabric_sync_binary(env, dir);
    cmd.arg("audit").args(args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output()).await.expect("joined").expect("the binary runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn report(env: &Env, dir: &std::path::Path) -> (i32, Value) {
    let out = audit(env, dir, &["--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON report ({e}): {}", text(&out)));
    (code(&out), v)
}

fn seed_ufm(env: &Env, pkey: u16, guids: &[&str]) {
    let members = guids
        .iter()
        .map(|g| {
            let guid = mock_ufm::Guid::parse(&ufm_guid(g)).expect("GUID");
            (guid, mock_ufm::Member { membership: mock_ufm::Membership::Full, index0: true })
        })
        .collect();
    let pkey = mock_ufm::PKey::new(pkey).expect("pkey");
    env.ufm.apply(mock_ufm::Mutation::AddGuids { pkey, members, ip_over_ib: None, name: None }).expect("seeded");
}

fn unseed_ufm(env: &Env, pkey: u16, guid: &str) {
    let guids = vec![mock_ufm::Guid::parse(&ufm_guid(guid)).expect("GUID")];
    let pkey = mock_ufm::PKey::new(pkey).expect("pkey");
    env.ufm.apply(mock_ufm::Mutation::RemoveGuids { pkey, guids }).expect("removed");
}

fn row<'a>(report: &'a Value, pkey: &str) -> &'a Value {
    report["pkeys"].as_array().and_then(|r| r.iter().find(|r| r["pkey"] == pkey)).unwrap_or(&Value::Null)
}

fn hazard_kinds(report: &Value) -> Vec<String> {
    report["hazards"].as_array().into_iter().flatten().filter_map(|h| h["kind"].as_str().map(str::to_string)).collect()
}

/// The audit only reads: no request of it to the fake API server changes anything.
fn assert_audit_read_only(env: &Env) {
    let audits: Vec<RequestRecord> = env.api.requests().into_iter().filter(|r| r.client.contains("(audit)")).collect();
    assert!(!audits.is_empty(), "the audit's requests are logged");
    for r in &audits {
        assert_eq!(r.method, "GET", "the audit wrote: {} {}", r.method, r.path);
    }
}

fn ufm_writes(env: &Env) -> Vec<String> {
    env.ufm.requests().into_iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.path)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_cluster_exits_0_and_stale_missing_and_forged_each_exit_1() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    env.pod("p1", "ib", &[]);
    env.pod("p2", "ib", &[]);
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("both configured", || env.configured_element("p1").is_some() && env.configured_element("p2").is_some())
        .await;
    eventually("two claims", || env.claims().len() == 2).await;
    c.stop().await;
    let g1 = env.configured_element("p1").unwrap()["cni-args"]["guid"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    env.ufm.clear_requests();

    // Clean: exit 0, and the owners table names each GUID's pod.
    let out = audit(&env, dir.path(), &["--owners"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("result: clean"), "{stdout}");
    let owner_line = stdout.lines().find(|l| l.starts_with(&g1)).unwrap_or_else(|| panic!("{g1} listed: {stdout}"));
    assert!(owner_line.contains("t/p1") && owner_line.contains("0x10") && owner_line.contains("n1"), "{owner_line}");
    let (rc, r) = report(&env, dir.path()).await;
    assert_eq!((rc, &r["clean"]), (0, &json!(true)), "{r:#}");
    assert_eq!(row(&r, "0x10")["expected"], 2);
    assert_eq!(row(&r, "0x10")["in_ufm"], 2);

    // A stale GUID in UFM (in range, in a pkey a network names, no claim explains it).
    let stale = "02:00:00:00:00:00:0f:01";
    seed_ufm(&env, 0x10, &[stale]);
    let (rc, r) = report(&env, dir.path()).await;
    assert_eq!(rc, 1, "{r:#}");
    assert_eq!(row(&r, "0x10")["stale"], 1, "{r:#}");
    assert_eq!(r["plan"]["removes"], json!([["0x10", stale, "stale"]]));
    assert!(hazard_kinds(&r).contains(&"UnexplainedGuids".to_string()), "{r:#}");
    unseed_ufm(&env, 0x10, stale);
    assert_eq!(report(&env, dir.path()).await.0, 0, "clean again");

    // A membership UFM lost: the plan re-adds it.
    unseed_ufm(&env, 0x10, &g1);
    let (rc, r) = report(&env, dir.path()).await;
    assert_eq!(rc, 1, "{r:#}");
    assert_eq!(row(&r, "0x10")["missing"], 1, "{r:#}");
    assert_eq!(r["plan"]["adds"], json!([["0x10", g1]]));
    seed_ufm(&env, 0x10, &[&g1]);
    assert_eq!(report(&env, dir.path()).await.0, 0, "clean again");

    // A forged marker: a pod that says configured with a GUID the ledger does not give it.
    let forged =
        r#"[{"name":"ib","cni-args":{"guid":"02:00:00:00:00:00:0e:01","mellanox.infiniband.app":"configured"}}]"#;
    env.pod("forger", forged, &[]);
    let (rc, r) = report(&env, dir.path()).await;
    assert_eq!(rc, 1, "{r:#}");
    let markers = r["markers"].as_array().expect("markers");
    assert_eq!(markers.len(), 1, "{r:#}");
    assert_eq!((&markers[0]["pod"], &markers[0]["reason"]), (&json!("t/forger"), &json!("ForgedAnnotation")));
    assert!(r["plan"]["pod_rewrites"].as_array().unwrap().iter().any(|p| p[0] == "t/forger"), "{r:#}");
    let out = audit(&env, dir.path(), &[]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("t/forger"), "{}", text(&out));

    assert_audit_read_only(&env);
    assert!(ufm_writes(&env).is_empty(), "the audit changed UFM: {:?}", ufm_writes(&env));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_decimal_pkey_and_ib_kubernetes_era_hazards_are_found() {
    let env = Env::new().await;
    // ib-kubernetes read "1000" as hex; two NADs naming one pkey; a pod it configured on a NAD
    // that does not read.
    env.nad("bare", "1000", false);
    env.nad("a", "0x20", false);
    env.nad("b", "0x20", false);
    let configured =
        r#"[{"name":"bare","cni-args":{"guid":"02:00:00:00:00:00:00:42","mellanox.infiniband.app":"configured"}}]"#;
    env.pod("old", configured, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (rc, r) = report(&env, dir.path()).await;
    assert_eq!(rc, 1, "{r:#}");
    let kinds = hazard_kinds(&r);
    for k in ["BarePKey", "SharedPKey", "ConfiguredOnInvalidNetwork"] {
        assert!(kinds.contains(&k.to_string()), "{k} in {kinds:?}");
    }
    let bare = r["hazards"].as_array().unwrap().iter().find(|h| h["kind"] == "BarePKey").unwrap();
    assert_eq!(bare["object"], "NetworkAttachmentDefinition t/bare");
    assert!(bare["message"].as_str().unwrap().contains("0x"), "{bare}");
    // The ledger is empty: the first start adopts ib-kubernetes' marker (left alone here).
    assert_eq!(r["migration"]["adopted"], 1, "{r:#}");
    assert_eq!(r["migration"]["left_alone"], 1, "{r:#}");
    // Text report: the hazard and its fix; --migration flags the missing CA too.
    let out = audit_with(&env, dir.path(), &["--migration"], &[("UFM_INSECURE_SKIP_VERIFY", "true".into())]).await;
    assert_eq!(code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[BarePKey] NetworkAttachmentDefinition t/bare"), "{stdout}");
    assert!(stdout.contains("[TlsNotVerified]"), "{stdout}");
    assert!(stdout.contains("  fix: "), "{stdout}");
    assert_audit_read_only(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_128_entry_pkey_budget_is_found() {
    let env = Env::new().await;
    env.api.create(Res::Nodes, json!({"metadata": {"name": "n2"}}));
    // 130 networks, each its own pkey, one pod each on n2: the default capacity is 128 with
    // one slot reserved for the default partition, so 3 do not fit.
    for i in 0..130u16 {
        let name = format!("net{i}");
        env.nad(&name, &format!("{:#x}", 0x100 + i), false);
        env.api.create(
            Res::Pods,
            json!({
                "metadata": {"name": format!("p{i}"), "namespace": "t", "annotations": {NETWORKS: name}},
                "spec": {"nodeName": "n2", "containers": [{"name": "app", "image": "busybox"}]},
                "status": {"phase": "Pending"}
            }),
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (rc, r) = report(&env, dir.path()).await;
    assert_eq!(rc, 1, "{r:#}");
    let n = &r["nodes"][0];
    assert_eq!(
        (&n["node"], &n["pkeys_wanted"], &n["limit"], &n["over"]),
        (&json!("n2"), &json!(130), &json!(127), &json!(true))
    );
    assert_eq!(n["pkeys_granted"], 127);
    assert_eq!(r["not_configured"]["PKeyLimitExceeded"].as_array().map(Vec::len), Some(3), "{:#}", r["not_configured"]);
    assert!(hazard_kinds(&r).contains(&"PKeyBudget".to_string()));
    let out = audit(&env, dir.path(), &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("n2 ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("130") && line.contains("OVER"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_or_ufm_exits_2_with_one_line() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    let dir = tempfile::tempdir().expect("temp dir");
    // An API server that is not there (a closed port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let elsewhere = dir.path().join("closed");
    std::fs::create_dir(&elsewhere).expect("dir");
    let kubeconfig = kubeconfig_file(&elsewhere, &format!("http://{closed}"));
    let out = audit_with(&env, dir.path(), &[], &[("KUBECONFIG", kubeconfig.display().to_string())]).await;
    assert_eq!(code(&out), 2, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("could not look: Kubernetes API: cannot list pods"), "{stderr}");
    // With logs asked for (RUST_LOG), text logs off a terminal carry no ANSI colour codes.
    let extra = [("KUBECONFIG", kubeconfig.display().to_string()), ("RUST_LOG", "debug".to_string())];
    let out = audit_with(&env, dir.path(), &[], &extra).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().count() > 1 && stderr.contains("DEBUG"), "logs were asked for: {stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI codes in a log file: {stderr:?}");

    // UFM refusing the password.
    let out = audit_with(&env, dir.path(), &[], &[("UFM_PASSWORD", "wrong".into())]).await;
    assert_eq!(code(&out), 2, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not look: UFM at") && !stderr.contains("wrong"), "{stderr}");
    // UFM not listening.
    let out = audit_with(&env, dir.path(), &[], &[("UFM_PORT", closed.port().to_string())]).await;
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

/// Prints the report README shows: `cargo test --test audit -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints README's audit example"]
async fn print_readme_example() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.nad("ib-b", "0x20", true);
    env.pod("trainer-0", "ib-a", &[]);
    env.pod("trainer-1", "ib-a, ib-b", &[]);
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("every element configured", || {
        env.annotation("trainer-0", STATUS).as_deref() == Some(r#"{"t/ib-a":"configured"}"#)
            && env.annotation("trainer-1", STATUS).as_deref()
                == Some(r#"{"t/ib-a":"configured","t/ib-b":"configured"}"#)
    })
    .await;
    eventually("two claims", || env.claims().len() == 2).await;
    c.stop().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = audit(&env, dir.path(), &["--owners"]).await;
    println!("$ fabric-sync audit --owners    # exit {}\n{}", code(&out), String::from_utf8_lossy(&out.stdout));
    seed_ufm(&env, 0x10, &["02:00:00:00:00:00:0f:01"]);
    env.nad("legacy", "1000", false);
    let forged =
        r#"[{"name":"ib-a","cni-args":{"guid":"02:00:00:00:00:00:0e:01","mellanox.infiniband.app":"configured"}}]"#;
    env.pod("forger", forged, &[]);
    let out = audit(&env, dir.path(), &["--migration"]).await;
    println!("$ fabric-sync audit --migration    # exit {}\n{}", code(&out), String::from_utf8_lossy(&out.stdout));
}
