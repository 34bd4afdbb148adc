//! `fabric-sync ufm …` run as a process against an in-process mock-ufm: `check` passes, and
//! fails with a distinct, specific diagnosis for a wrong password, a wrong CA and a closed
//! port; the inspection and change commands work and bad arguments exit 2.

mod ufm_support;

use std::process::Output;

use mock_ufm::{MockUfm, TestPki};
use ufm_support::*;

/// Environment for the binary pointing at `ufm` (only what the test sets: nothing leaks in).
fn env_for(ufm: &MockUfm) -> Vec<(String, String)> {
    vec![
        ("UFM_ADDRESS".into(), "127.0.0.1".into()),
        ("UFM_PORT".into(), ufm.addr().port().to_string()),
        ("UFM_USERNAME".into(), USER.into()),
        ("UFM_PASSWORD".into(), PASSWORD.into()),
        ("UFM_CERTIFICATE".into(), ufm.ca_pem().unwrap_or_default()),
        ("UFM_CONNECT_TIMEOUT".into(), "2s".into()),
        ("UFM_REQUEST_TIMEOUT".into(), "5s".into()),
    ]
}

async fn run(env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fabric-sync"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("ufm")
        .args(args)
        .output()
        .await
        .expect("the binary runs");
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn set(env: &mut [(String, String)], key: &str, value: &str) {
    if let Some(slot) = env.iter_mut().find(|(k, _)| k == key) {
        slot.1 = value.to_string();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_and_each_failure_has_its_own_diagnosis() {
    let ufm = start().await;
    let env = env_for(&ufm);
    let target = format!("127.0.0.1:{}", ufm.addr().port());

    let (code, out, err) = run(&env, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("connect: ok") && out.contains("TLS: ok") && out.contains("auth: ok"), "{out}");
    assert!(out.contains("version: UFM 6.19.0-7"), "{out}");

    let mut wrong_pw = env.clone();
    set(&mut wrong_pw, "UFM_PASSWORD", "not-the-password");
    let (code, auth_out, _) = run(&wrong_pw, &["check"]).await;
    assert_eq!(code, 1, "{auth_out}");
    assert!(
        auth_out.contains("auth: FAILED: UFM answered 401 for user admin: check UFM_USERNAME/UFM_PASSWORD"),
        "{auth_out}"
    );
    assert!(!auth_out.contains("not-the-password"));

    let mut wrong_ca = env.clone();
    set(&mut wrong_ca, "UFM_CERTIFICATE", TestPki::new("someone else").unwrap().ca_pem());
    let (code, tls_out, _) = run(&wrong_ca, &["check"]).await;
    assert_eq!(code, 1, "{tls_out}");
    assert!(
        tls_out
            .contains(&format!("TLS: FAILED: the certificate of {target} is not signed by the CA in UFM_CERTIFICATE")),
        "{tls_out}"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut closed_port = env.clone();
    set(&mut closed_port, "UFM_PORT", &closed.to_string());
    let (code, conn_out, _) = run(&closed_port, &["check"]).await;
    assert_eq!(code, 1, "{conn_out}");
    assert!(
        conn_out.contains(&format!("connect: FAILED: nothing listens on 127.0.0.1:{closed} (connection refused)")),
        "{conn_out}"
    );

    let failed = |s: &str| s.lines().find(|l| l.contains("FAILED")).map(str::to_string);
    let diagnoses = [failed(&auth_out), failed(&tls_out), failed(&conn_out)];
    assert!(diagnoses.iter().all(Option::is_some));
    assert!(diagnoses[0] != diagnoses[1] && diagnoses[1] != diagnoses[2] && diagnoses[0] != diagnoses[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_show_pkeys_and_remove_change_and_read_ufm() {
    let ufm = start().await;
    let env = env_for(&ufm);
    let (code, out, err) =
        run(&env, &["add", "0x1a", "02:00:00:00:00:00:00:01", "0200000000000002", "--index0", "--mtu-limit", "4"])
            .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added 2 GUID(s) to 0x1a"), "{out}");
    let p = &ufm.snapshot()[&0x1a];
    assert_eq!((p.members.len(), p.qos.mtu_limit), (2, 4));
    assert!(p.members.values().all(|m| m.index0));

    let (code, out, _) = run(&env, &["pkeys", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("pkeys --json prints JSON");
    assert_eq!(v["0x1a"]["members"].as_array().unwrap().len(), 2);
    assert_eq!(v["0x1a"]["members"][0]["guid"], "02:00:00:00:00:00:00:01");
    assert!(v.get("0x7fff").is_some());

    let (code, out, _) = run(&env, &["pkeys"]).await;
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("0x1a") && l.trim_end().ends_with('2')), "{out}");

    let (code, out, _) = run(&env, &["show", "0x1a", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["name"].as_str(), v["qos"]["mtu_limit"].as_u64()), (Some("api_pkey_0x1a"), Some(4)));

    // A GUID that is not a member is reported as such, not counted as removed.
    let (code, out, _) = run(&env, &["remove", "0x1a", "02:00:00:00:00:00:00:01", "02:00:00:00:00:00:00:09"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 1 of 2 GUID(s) from 0x1a; 1 was not a member: 02:00:00:00:00:00:00:09"), "{out}");
    assert_eq!(ufm.snapshot()[&0x1a].members.len(), 1);
    let (code, out, _) = run(&env, &["remove", "0x1a", "02:00:00:00:00:00:00:02"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 1 of 1 GUID(s) from 0x1a; 0x1a has no members left"), "{out}");
    let (code, out, _) = run(&env, &["remove", "0x1a", "02:00:00:00:00:00:00:02"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 0 of 1 GUID(s) from 0x1a (pkey 0x1a does not exist in UFM)"), "{out}");
    let (code, _, err) = run(&env, &["show", "0x1a"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("pkey 0x1a does not exist in UFM"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_over_plain_http_does_not_claim_tls() {
    let ufm = start_with(mock_ufm::Config { tls: mock_ufm::TlsMode::Plain, ..Default::default() }).await;
    let mut env = env_for(&ufm);
    env.retain(|(k, _)| k != "UFM_CERTIFICATE");
    env.push(("UFM_HTTP_SCHEMA".into(), "http".into()));
    let (code, out, err) = run(&env, &["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("TLS: not used (http)") && !out.contains("TLS: ok"), "{out}");
    set(&mut env, "UFM_PASSWORD", "not-the-password");
    let (code, out, _) = run(&env, &["check"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TLS: not used (http)\nauth: FAILED") && !out.contains("TLS: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_and_settings_exit_2_with_a_clear_message() {
    let ufm = start().await;
    let env = env_for(&ufm);
    let (code, _, err) = run(&env, &["add", "0x5", "not-a-guid"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("not-a-guid"), "{err}");
    let (code, _, err) = run(&env, &["show", "5"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no 0x prefix"), "{err}");
    let (code, _, err) = run(&env, &["remove", "0x7fff", "0200000000000001"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("management"), "{err}");
    let no_address: Vec<_> = env.iter().filter(|(k, _)| k != "UFM_ADDRESS").cloned().collect();
    let (code, _, err) = run(&no_address, &["check"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("UFM_ADDRESS"), "{err}");
    let mut with_port = env.clone();
    set(&mut with_port, "UFM_ADDRESS", &format!("127.0.0.1:{}", ufm.addr().port()));
    let (code, _, err) = run(&with_port, &["check"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("UFM_ADDRESS (--ufm-address)") && err.contains("UFM_PORT="), "{err}");
    let (code, _, err) = run(&env, &["add", "0x5", "0200000000000001", "--rate-limit", "150"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("not a rate UFM accepts"), "{err}");
    assert!(ufm.requests().is_empty(), "nothing reached UFM");
}
