//! The fabrics file (issue 17) through the released binary: a bad file is refused at start with
//! the field named, single-UFM settings alongside it are a named conflict, and a one-fabric
//! file drives its UFM (mock-ufm over real TLS, the fake API server) with the file's GUID pool.
//! Two fabrics (two mock-ufm servers over TLS, one fake API server): each pod lands in its
//! node's fabric's UFM and never the other, one UFM in outage does not stop the other, and a
//! NAD moved to another fabric moves its members.

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use support::*;

/// The binary with no ambient UFM or fabrics setting (the test process may carry some).
fn bare_binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabric-sync"));
    for key in [
        "UFM_ADDRESS",
        "UFM_PORT",
        "UFM_USERNAME",
        "UFM_PASSWORD",
        "UFM_TOKEN",
        "UFM_CERTIFICATE",
        "UFM_CA_FILE",
        "UFM_SECRET_DIR",
        "UFM_HTTP_SCHEMA",
        "FABRIC_SYNC_FABRICS_FILE",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out: Output = cmd.stdin(Stdio::null()).output().expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A UFM Secret directory as Kubernetes mounts one: a file per key.
fn secret_dir(dir: &std::path::Path, name: &str, ca_pem: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("secret dir");
    std::fs::write(d.join("UFM_USERNAME"), "admin\n").expect("user");
    std::fs::write(d.join("UFM_PASSWORD"), format!("{UFM_PASSWORD}\n")).expect("password");
    std::fs::write(d.join("UFM_CERTIFICATE"), ca_pem).expect("CA");
    d
}

const TWO: &str = r#"
fabrics:
  - name: compute
    ufm: {address: 127.0.0.1, port: 1, secretDir: SECRET_A}
    nodeSelector: {matchLabels: {fabric-sync.io/fabric: compute}}
    guidPool: {start: "02:00:00:00:00:00:00:00", end: "02:00:00:00:7f:ff:ff:ff"}
  - name: storage
    ufm: {address: 127.0.0.1, port: 2, secretDir: SECRET_B}
    nodeSelector: {matchLabels: {fabric-sync.io/fabric: storage}}
    guidPool: {start: "02:00:00:00:80:00:00:00", end: "END_B"}
"#;

fn two_fabrics_file(dir: &std::path::Path, end_b: &str) -> std::path::PathBuf {
    let a = secret_dir(dir, "a", "not a pem");
    let b = secret_dir(dir, "b", "not a pem");
    // No CA in these: the pool check comes first for fabric 1, the CA check names its fabric.
    let _ = std::fs::remove_file(a.join("UFM_CERTIFICATE"));
    let _ = std::fs::remove_file(b.join("UFM_CERTIFICATE"));
    let text = TWO
        .replace("SECRET_A", &a.display().to_string())
        .replace("SECRET_B", &b.display().to_string())
        .replace("END_B", end_b);
    let path = dir.join("fabrics.yaml");
    std::fs::write(&path, text).expect("fabrics file");
    path
}

#[test]
fn a_bad_fabrics_file_is_refused_at_start_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = two_fabrics_file(dir.path(), "02:00:00:00:7f:00:00:00");
    let (code, err) = run(bare_binary().args(["controller", "--fabrics-file"]).arg(&path));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FABRIC_SYNC_FABRICS_FILE (--fabrics-file): fabrics[1].guidPool.end"), "{err}");
    let path = two_fabrics_file(dir.path(), "zz:00");
    let (code, err) = run(bare_binary().arg("controller").env("FABRIC_SYNC_FABRICS_FILE", &path));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fabrics[1].guidPool.end"), "{err}");
    // No secret is echoed.
    assert!(!err.contains(UFM_PASSWORD), "{err}");
}

#[test]
fn single_ufm_settings_next_to_a_fabrics_file_are_a_named_conflict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = two_fabrics_file(dir.path(), "02:00:00:00:ff:ff:ff:ff");
    let (code, err) =
        run(bare_binary().args(["controller", "--fabrics-file"]).arg(&path).env("UFM_ADDRESS", "ufm.example.com"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("UFM_ADDRESS (--ufm-address)") && err.contains("cannot be combined"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_fabric_file_configures_pods_through_its_ufm_with_its_pool() {
    let env = Env::new().await;
    env.nad("ib-a", "0x10", false);
    env.pod("p1", "ib-a", &[]);
    env.pod("p2", "ib-a", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let secrets = secret_dir(dir.path(), "ufm-compute", &env.ufm.ca_pem().expect("the mock has a CA"));
    let file = dir.path().join("fabrics.yaml");
    let text = format!(
        "fabrics:\n  - name: compute\n    ufm: {{address: {}, port: {}, secretDir: {}}}\n    \
         guidPool: {{start: \"02:00:00:00:44:00:00:00\", end: \"02:00:00:00:44:ff:ff:ff\"}}\n",
        env.ufm.addr().ip(),
        env.ufm.addr().port(),
        secrets.display()
    );
    std::fs::write(&file, text).expect("fabrics file");
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let mut child = bare_binary()
        .args(["controller", "--fabrics-file"])
        .arg(&file)
        .env("KUBECONFIG", kubeconfig_file(dir.path(), &env.api.url()))
        .env("POD_NAMESPACE", LEASE_NS)
        .env("POD_UID", "uid-fabrics")
        .env("FABRIC_SYNC_ADMIN_LISTEN", admin.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    eventually("both pods are configured", || {
        env.configured_element("p1").is_some() && env.configured_element("p2").is_some()
    })
    .await;
    let members = env.members(0x10);
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|g| g.starts_with("0200000044")), "GUIDs from the file's pool: {members:?}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("joined").expect("waited");
    assert!(status.success(), "exit {status:?}");
}

fn seed_pkey(ufm: &mock_ufm::MockUfm, pkey: u16, guid: &str) {
    let members = vec![(
        mock_ufm::Guid::parse(guid).expect("GUID"),
        mock_ufm::Member { membership: mock_ufm::Membership::Full, index0: false },
    )];
    let pkey = mock_ufm::PKey::new(pkey).expect("pkey");
    ufm.apply(mock_ufm::Mutation::AddGuids { pkey, members, ip_over_ib: None, name: None }).expect("seeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ufm_commands_talk_to_the_fabric_named_with_its_own_secret_dir() {
    let (compute, storage) = (Env::new().await, Env::new().await);
    seed_pkey(&compute.ufm, 0x123, "0200000000000001");
    seed_pkey(&storage.ufm, 0x456, "0200000080000001");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::from("fabrics:\n");
    for (i, (name, env)) in [("compute", &compute), ("storage", &storage)].into_iter().enumerate() {
        let secrets = secret_dir(dir.path(), name, &env.ufm.ca_pem().expect("CA"));
        text.push_str(&format!(
            "  - name: {name}\n    ufm: {{address: 127.0.0.1, port: {}, secretDir: {}}}\n    \
             guidPool: {{start: \"02:00:00:00:{i}0:00:00:00\", end: \"02:00:00:00:{i}f:ff:ff:ff\"}}\n",
            env.ufm.addr().port(),
            secrets.display()
        ));
    }
    let file = dir.path().join("fabrics.yaml");
    std::fs::write(&file, text).expect("fabrics file");
    let pkeys = |fabric: Option<&str>| {
        let mut cmd = bare_binary();
        cmd.args(["ufm", "pkeys", "--json", "--fabrics-file"]).arg(&file);
        if let Some(f) = fabric {
            cmd.args(["--fabric", f]);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = pkeys(Some("storage"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0x456") && !out.contains("0x123"), "{out}");
    let (code, out, err) = pkeys(Some("compute"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0x123") && !out.contains("0x456"), "{out}");
    let (code, _, err) = pkeys(None);
    assert_eq!(code, 2);
    assert!(err.contains("--fabric is required") && err.contains("compute, storage"), "{err}");
    let (code, _, err) = pkeys(Some("gpu"));
    assert_eq!(code, 2);
    assert!(err.contains("no such fabric"), "{err}");
}

/// Two fabrics: compute (nodes labelled `ib.example.com/compute`, pool 02:…:10:xx:xx:xx) on
/// `compute`'s mock UFM, storage (`ib.example.com/storage`, pool 02:…:20:xx:xx:xx) on
/// `storage`'s. Nodes: c1 on compute, s1 on storage, both on both.
fn two_fabric_file(dir: &std::path::Path, compute: &Env, storage: &Env) -> std::path::PathBuf {
    let mut text = String::from("fabrics:\n");
    for (name, env, pool) in [("compute", compute, "10"), ("storage", storage, "20")] {
        let secrets = secret_dir(dir, name, &env.ufm.ca_pem().expect("CA"));
        text.push_str(&format!(
            "  - name: {name}\n    ufm: {{address: 127.0.0.1, port: {}, secretDir: {}}}\n    \
             nodeSelector: {{matchLabels: {{ib.example.com/{name}: \"true\"}}}}\n    \
             guidPool: {{start: \"02:00:00:00:{pool}:00:00:00\", end: \"02:00:00:00:{pool}:ff:ff:ff\"}}\n",
            env.ufm.addr().port(),
            secrets.display()
        ));
    }
    let file = dir.join("fabrics.yaml");
    std::fs::write(&file, text).expect("fabrics file");
    for (node, labels) in [
        ("c1", json!({"ib.example.com/compute": "true"})),
        ("s1", json!({"ib.example.com/storage": "true"})),
        ("both", json!({"ib.example.com/compute": "true", "ib.example.com/storage": "true"})),
    ] {
        compute.api.create(Res::Nodes, json!({"metadata": {"name": node, "labels": labels}}));
    }
    file
}

fn pod_on(env: &Env, name: &str, node: &str, networks: &str) {
    env.api.create(
        Res::Pods,
        json!({
            "metadata": {"name": name, "namespace": "t", "annotations": {NETWORKS: networks}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Pending"}
        }),
    );
}

fn nad_on(env: &Env, name: &str, pkey: &str, fabric: Option<&str>) {
    let config = json!({"cniVersion": "0.3.1", "name": name, "type": "ib-sriov", "pkey": pkey});
    let mut metadata = json!({"name": name, "namespace": "t"});
    if let Some(f) = fabric {
        metadata["annotations"] = json!({"fabric-sync.io/fabric": f});
    }
    env.api.create(Res::Nads, json!({"metadata": metadata, "spec": {"config": config.to_string()}}));
}

fn guid_of(env: &Env, pod: &str) -> Option<String> {
    let e = env.configured_element(pod)?;
    let g = e.pointer("/cni-args/guid").and_then(serde_json::Value::as_str)?;
    Some(g.replace(':', ""))
}

fn start_controller(env: &Env, dir: &std::path::Path, file: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let child = bare_binary()
        .args(["controller", "--fabrics-file"])
        .arg(file)
        .env("KUBECONFIG", kubeconfig_file(dir, &env.api.url()))
        .env("POD_NAMESPACE", LEASE_NS)
        .env("POD_UID", "uid-two-fabrics")
        .env("FABRIC_SYNC_ADMIN_LISTEN", admin.to_string())
        .env("FABRIC_SYNC_RESYNC_INTERVAL", "1s")
        .env("FABRIC_SYNC_RETRY_MAX", "1s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    (child, admin)
}

async fn admin_get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{admin}{path}")).await.expect("admin server answers");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn stop(mut child: Child) {
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("joined").expect("waited");
    assert!(status.success(), "exit {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_in_their_fabrics_ufm_only_and_one_ufm_down_does_not_stop_the_other() {
    let (compute, storage) = (Env::new().await, Env::new().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = two_fabric_file(dir.path(), &compute, &storage);
    nad_on(&compute, "ib-a", "0x10", None);
    // The storage UFM is down from the start.
    storage.ufm.add_fault(mock_ufm::FaultRule::outage(Duration::from_secs(3600)));
    pod_on(&compute, "pa", "c1", "ib-a");
    pod_on(&compute, "pb", "s1", "ib-a");
    let (child, admin) = start_controller(&compute, dir.path(), &file);
    eventually("the compute pod is configured while storage is down", || compute.configured_element("pa").is_some())
        .await;
    // /readyz names the fabric whose UFM has not answered; the metrics carry the fabric.
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("fabric storage") && !body.contains("compute"), "{body}");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        sum_samples(&metrics, "fabric_sync_ufm_requests_total", &[r#"fabric="compute""#, r#"code="200""#]) > 0.0,
        "{metrics}"
    );
    assert!(
        sum_samples(&metrics, "fabric_sync_ufm_requests_total", &[r#"fabric="storage""#, r#"code="200""#]) == 0.0,
        "storage answered nothing"
    );
    let ga = guid_of(&compute, "pa").expect("pa's GUID");
    assert!(ga.starts_with("0200000010"), "from the compute pool: {ga}");
    assert_eq!(compute.members(0x10), vec![ga.clone()]);
    assert!(storage.members(0x10).is_empty());
    assert!(compute.configured_element("pb").is_none(), "pb waits for its own UFM");
    // Storage comes back: pb is configured there, and only there.
    storage.ufm.clear_faults();
    eventually("the storage pod is configured", || compute.configured_element("pb").is_some()).await;
    let gb = guid_of(&compute, "pb").expect("pb's GUID");
    assert!(gb.starts_with("0200000020"), "from the storage pool: {gb}");
    assert_eq!(storage.members(0x10), vec![gb]);
    assert_eq!(compute.members(0x10), vec![ga], "compute never got pb's GUID");
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "every fabric answered: {body}");
    // The ledger records each attachment's fabric.
    let fabrics: Vec<String> = compute
        .claims()
        .iter()
        .filter_map(|c| c.pointer("/spec/attachments/0/fabric").and_then(serde_json::Value::as_str).map(String::from))
        .collect();
    assert!(fabrics.contains(&"compute".to_string()) && fabrics.contains(&"storage".to_string()), "{fabrics:?}");
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nad_moved_to_another_fabric_moves_its_members_and_a_node_off_the_fabric_is_refused() {
    let (compute, storage) = (Env::new().await, Env::new().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = two_fabric_file(dir.path(), &compute, &storage);
    nad_on(&compute, "ib-m", "0x20", Some("compute"));
    pod_on(&compute, "pm", "both", "ib-m");
    // A tenant names compute for a pod whose node is cabled to storage only: refused.
    pod_on(&compute, "px", "s1", "ib-m");
    let (child, _) = start_controller(&compute, dir.path(), &file);
    eventually("the pod is configured in compute", || compute.configured_element("pm").is_some()).await;
    let old = guid_of(&compute, "pm").expect("GUID");
    assert_eq!(compute.members(0x20), vec![old.clone()]);
    eventually("the off-fabric pod is refused", || {
        compute.annotation("px", "fabric-sync.io/status").is_some_and(|s| s.contains("FabricNotOnNode"))
    })
    .await;
    // The NAD's author sees it where they look: a Warning Event on the NAD naming the pod.
    eventually("a FabricNotOnNode Event on the NAD", || {
        events_about(&compute.api, "NetworkAttachmentDefinition", "ib-m")
            .iter()
            .any(|e| e["reason"] == "FabricNotOnNode" && e["note"].as_str().is_some_and(|n| n.contains("px")))
    })
    .await;
    compute.api.merge_patch(
        Res::Nads,
        "t",
        "ib-m",
        json!({"metadata": {"annotations": {"fabric-sync.io/fabric": "storage"}}}),
    );
    eventually("the pod carries a GUID of the storage pool", || {
        guid_of(&compute, "pm").is_some_and(|g| g.starts_with("0200000020"))
    })
    .await;
    let new = guid_of(&compute, "pm").expect("GUID");
    eventually("the member moved: out of compute's UFM, into storage's", || {
        compute.members(0x20).is_empty() && storage.members(0x20).contains(&new)
    })
    .await;
    // px is on storage's node: now that the NAD names storage, it is configured there.
    eventually("the storage node's pod is configured", || compute.configured_element("px").is_some()).await;
    let gx = guid_of(&compute, "px").expect("GUID");
    let mut want = vec![new, gx];
    want.sort();
    assert_eq!(storage.members(0x20), want);
    assert!(compute.members(0x20).is_empty(), "nothing is left in compute");
    assert!(!storage.members(0x20).contains(&old), "the compute GUID never went to storage");
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_per_fabric_and_a_guid_both_fabrics_ufms_list() {
    let (compute, storage) = (Env::new().await, Env::new().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = two_fabric_file(dir.path(), &compute, &storage);
    // A GUID of compute's pool that someone also put into storage's UFM.
    seed_pkey(&compute.ufm, 0x30, "0200000010000005");
    seed_pkey(&storage.ufm, 0x30, "0200000010000005");
    let mut cmd = bare_binary();
    cmd.args(["audit", "--json", "--fabrics-file"])
        .arg(&file)
        .env("KUBECONFIG", kubeconfig_file(dir.path(), &compute.api.url()));
    let out =
        tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output()).await.expect("joined").expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}): {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "a finding: {stdout}");
    let hazards = report["hazards"].as_array().expect("hazards");
    let twice: Vec<&serde_json::Value> = hazards.iter().filter(|h| h["kind"] == "GuidInTwoFabrics").collect();
    assert_eq!(twice.len(), 1, "{hazards:?}");
    assert!(twice[0]["object"].as_str().is_some_and(|o| o.contains("02:00:00:00:10:00:00:05")), "{twice:?}");
    assert!(twice[0]["message"].as_str().is_some_and(|m| m.contains("compute, storage")), "{twice:?}");
    // Rows are per (fabric, pkey), of each fabric's own pool: the copy in storage's UFM is outside
    // storage's pool, so it is not storage's to repair; it is the finding above.
    let fabrics: Vec<&str> = report["pkeys"]
        .as_array()
        .expect("pkeys")
        .iter()
        .filter(|r| r["pkey"] == "0x30")
        .filter_map(|r| r["fabric"].as_str())
        .collect();
    assert_eq!(fabrics, vec!["compute"], "{stdout}");
    // Nothing was written to either UFM.
    assert_eq!(compute.members(0x30), vec!["0200000010000005".to_string()]);
    assert_eq!(storage.members(0x30), vec!["0200000010000005".to_string()]);
}
