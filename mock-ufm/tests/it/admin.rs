//! The admin API: request log, counters, state dump and restore, reset, settings, ports.

use mock_ufm::{Config, ResetScope};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Harness, guid};

#[tokio::test]
async fn the_request_log_records_what_clients_sent() {
    let h = Harness::with(Config { tokens: vec!["tok".into()], ..Default::default() }).await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    h.get("/resources/pkeys?guids_data=true").await;
    h.http.get(h.url("/ufmRestV3/app/ufm_version")).header("Authorization", "Basic tok").send().await.unwrap();
    h.http.get(h.url("/ufmRest/app/ufm_version")).send().await.unwrap();

    let log = h.admin(Method::GET, "/mock/requests", None).await.json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["path"], "/ufmRest/resources/pkeys");
    assert_eq!(log[0]["auth"], "basic");
    assert_eq!(log[0]["status"], 200);
    let body: serde_json::Value = serde_json::from_str(log[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["pkey"], "0x5");
    assert_eq!(log[1]["query"], "guids_data=true");
    assert_eq!(log[1]["endpoint"], "GET /resources/pkeys");
    assert_eq!(log[2]["auth"], "token");
    assert_eq!(log[3]["auth"], "none");
    assert_eq!(log[3]["status"], 401);

    let since = h.admin(Method::GET, "/mock/requests?since=3", None).await.json();
    assert_eq!(since.as_array().unwrap().len(), 1);
    assert_eq!(h.ufm.requests()[0].json().unwrap()["guids"][0], guid(1));

    let counters = h.admin(Method::GET, "/mock/counters", None).await.json();
    assert_eq!(counters["GET /app/ufm_version"], json!({"count": 2, "failed": 1}));
    assert_eq!(counters["POST /resources/pkeys"], json!({"count": 1, "failed": 0}));

    h.admin(Method::DELETE, "/mock/requests", None).await;
    assert!(h.ufm.requests().is_empty());
    assert!(h.ufm.counters().is_empty());
}

#[tokio::test]
async fn state_can_be_dumped_restored_and_reset() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)], "index0": true})).await;
    let dump = h.admin(Method::GET, "/mock/state", None).await.json();
    assert_eq!(dump["state"]["partitions"]["0x5"]["name"], "api_pkey_0x5");
    assert_eq!(dump["state"]["partitions"]["0x5"]["members"][guid(1)], json!({"membership": "full", "index0": true}));
    assert!(dump["last_updated"].is_string());
    assert_eq!(dump["pending_changes"], 0);
    assert_eq!(dump["settings"]["ufm_version"], "6.19.0-7");

    h.admin(Method::POST, "/mock/reset", None).await;
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x7fff"]));
    assert_eq!(h.get_ok("/resources/pkeys/last_updated").await["last_updated"], json!(null));

    let restored = h.admin(Method::PUT, "/mock/state", Some(dump["state"].clone())).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.text);
    assert_eq!(h.get_ok("/resources/pkeys/0x5?guids_data=true").await["guids"][0]["index0"], true);
    let bad = h.admin(Method::PUT, "/mock/state", Some(json!({"partitions": {"0x0": {}}}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn reset_can_keep_some_parts() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    h.ufm.add_fault(mock_ufm::FaultRule::latency(std::time::Duration::from_millis(1)));
    let r = h.admin(Method::POST, "/mock/reset", Some(json!({"state": false, "log": false}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(h.ufm.faults().is_empty());
    assert!(h.ufm.snapshot().contains_key(&5));
    assert_eq!(h.ufm.requests().len(), 1);
    h.ufm.reset_only(ResetScope { state: true, faults: false, log: true });
    assert!(!h.ufm.snapshot().contains_key(&5));
    assert!(h.ufm.requests().is_empty());
    let bad = h.admin(Method::POST, "/mock/reset", Some(json!({"everything": true}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn settings_and_ports_change_at_runtime() {
    let h = Harness::start().await;
    let s = h
        .admin(Method::PATCH, "/mock/settings", Some(json!({"ufm_version": "6.22.1-1", "unknown_pkey_404": true})))
        .await;
    assert_eq!(s.json()["ufm_version"], "6.22.1-1");
    assert_eq!(h.get_ok("/app/ufm_version").await["ufm_release_version"], "6.22.1-1");
    assert_eq!(h.get("/resources/pkeys/0x44").await.status, StatusCode::NOT_FOUND);

    let ports = h.admin(Method::GET, "/mock/ports", None).await.json();
    let mut one = ports[0].clone();
    one["guid"] = json!(guid(0xabc));
    let put = h.admin(Method::PUT, "/mock/ports", Some(json!([one]))).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let listed = h.get_ok("/resources/ports").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["guid"], guid(0xabc));

    let token = h.admin(Method::POST, "/mock/tokens", None).await.json();
    let t = token["access_token"].as_str().unwrap();
    let r = h
        .http
        .get(h.url("/ufmRestV3/resources/pkeys"))
        .header("Authorization", format!("Basic {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn in_process_mutations_use_the_same_rules_as_rest() {
    let h = Harness::start().await;
    let pkey = mock_ufm::PKey::new(0x9).unwrap();
    let g = mock_ufm::Guid::parse(&guid(7)).unwrap();
    let add = mock_ufm::Mutation::AddGuids {
        pkey,
        members: vec![(g, mock_ufm::Member::default())],
        ip_over_ib: Some(false),
        name: None,
    };
    assert!(h.ufm.apply(add).unwrap());
    let p = h.get_ok("/resources/pkeys/0x9?guids_data=true").await;
    assert_eq!(p["ip_over_ib"], false);
    assert_eq!(p["guids"][0]["guid"], guid(7));
    let readonly = h.ufm.apply(mock_ufm::Mutation::Delete { pkey: mock_ufm::PKey::MANAGEMENT });
    assert!(readonly.is_err());
    assert!(h.ufm.last_updated().is_some());
}
