//! The `mock-ufm` binary and the state file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mock_ufm::Config;
use reqwest::{Certificate, Client};
use serde_json::json;

use crate::common::{Harness, PASS, USER, guid, install_provider};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and returns it with the URL it printed.
fn spawn(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-ufm"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Running(child), url)
}

#[tokio::test]
async fn the_binary_serves_tls_with_a_ca_it_writes_out() {
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (_proc, url) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--self-signed-dir",
        d,
        "--token",
        "cli-token",
        "--ufm-version",
        "6.20.0-1",
    ]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let http = Client::builder()
        .tls_certs_only([Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let v: serde_json::Value = http
        .get(format!("{url}/ufmRestV3/app/ufm_version"))
        .header("Authorization", "Basic cli-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ufm_release_version"], "6.20.0-1");
    let r = http
        .post(format!("{url}/ufmRest/resources/pkeys"))
        .basic_auth(USER, Some(PASS))
        .json(&json!({"pkey": "0x5", "guids": [guid(1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(dir.path().join("server.pem").exists());
}

#[tokio::test]
async fn the_binary_serves_plain_http_with_custom_credentials() {
    let (_proc, url) =
        spawn(&["--listen", "127.0.0.1:0", "--http", "--username", "ops", "--password", "pw", "--unknown-pkey-404"]);
    assert!(url.starts_with("http://"), "{url}");
    let http = Client::new();
    let ok = http.get(format!("{url}/ufmRest/resources/pkeys/0x5")).basic_auth("ops", Some("pw")).send().await.unwrap();
    assert_eq!(ok.status(), 404);
    let admin = http.get(format!("{url}/mock/health")).send().await.unwrap();
    assert_eq!(admin.status(), 200);
}

#[test]
fn the_binary_refuses_to_start_without_a_transport() {
    let out = Command::new(env!("CARGO_BIN_EXE_mock-ufm")).args(["--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http") || err.contains("--self-signed-dir"), "{err}");
}

#[tokio::test]
async fn state_survives_a_restart_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = Config { state_file: Some(path.clone()), ..Default::default() };
    let h = Harness::with(config.clone()).await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1), guid(2)]})).await;
    let token = h.ufm.issue_token();
    let before = h.get_ok("/resources/pkeys/last_updated").await;
    let Harness { ufm, .. } = h;
    ufm.shutdown().await;
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["partitions"]["0x5"]["members"].as_object().unwrap().len(), 2);

    let again = Harness::with(config).await;
    assert_eq!(again.ufm.snapshot()[&5].members.len(), 2);
    assert_eq!(again.get_ok("/resources/pkeys/last_updated").await, before);
    let r = again
        .http
        .get(again.url("/ufmRestV3/resources/pkeys"))
        .header("Authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "tokens survive restarts");
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start() {
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, "not json").unwrap();
    let err = mock_ufm::MockUfm::start(Config { state_file: Some(path), ..Default::default() }).await.unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
}
