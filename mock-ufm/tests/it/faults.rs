//! Every fault kind, seen from a real client, plus scoping and the admin fault API.

use std::error::Error as _;
use std::time::Duration;

use mock_ufm::{Config, FaultRule};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Harness, PASS, USER, client_for, eventually, guid, into_resp};

const VERSION: &str = "/ufmRest/app/ufm_version";

#[tokio::test]
async fn latency_delays_answers_past_a_short_client_timeout() {
    let h = Harness::start().await;
    h.ufm.add_fault(FaultRule::latency(Duration::from_secs(5)));
    let impatient = client_for(&h.ufm, None, Duration::from_millis(200));
    let err = impatient.get(h.url(VERSION)).basic_auth(USER, Some(PASS)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    h.ufm.set_faults(vec![FaultRule::latency_between(Duration::from_millis(10), Duration::from_millis(40))]);
    for _ in 0..5 {
        assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::OK);
    }
    // The timed-out request is logged only when its 5 s delay ends; leave it out.
    let delays: Vec<u64> = h.ufm.requests().iter().map(|r| r.latency_ms).filter(|ms| *ms != 5000).collect();
    assert_eq!(delays.len(), 5);
    assert!(delays.iter().all(|d| (10..=40).contains(d)), "{delays:?}");
}

#[tokio::test]
async fn error_rate_answers_listed_statuses_with_html() {
    let h = Harness::with(Config { fault_seed: Some(42), ..Default::default() }).await;
    h.ufm.add_fault(FaultRule::error_rate(1.0, &[502]));
    let r = h.get("/resources/pkeys").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.is_html() && r.text.contains("502 Bad Gateway"), "{}", r.text);

    h.ufm.set_faults(vec![FaultRule::error_rate(0.0, &[500])]);
    assert_eq!(h.get("/resources/pkeys").await.status, StatusCode::OK);

    h.ufm.set_faults(vec![FaultRule::error_rate(0.5, &[500, 503])]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(h.get("/app/ufm_version").await.status.as_u16());
    }
    assert_eq!(seen, [200, 500, 503].into_iter().collect());
    let c = &h.ufm.counters()["GET /app/ufm_version"];
    assert_eq!(c.count, 60);
    assert!(c.failed > 0 && c.failed < 60);
}

#[tokio::test]
async fn an_outage_answers_503_everywhere_until_its_window_ends() {
    let h = Harness::with(Config { tokens: vec!["tok".into()], ..Default::default() }).await;
    h.ufm.add_fault(FaultRule::outage(Duration::from_secs(3600)));
    let r = h.get("/resources/pkeys").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.is_html() && r.text.contains("503 Service Temporarily Unavailable"));
    let v3 = h.http.get(h.url("/ufmRestV3/app/ufm_version")).header("Authorization", "Basic tok").send().await.unwrap();
    assert_eq!(v3.status(), 503);
    // Even bad credentials get the 503: the outage sits in front of authentication.
    let anon = h.http.get(h.url(VERSION)).send().await.unwrap();
    assert_eq!(anon.status(), 503);

    // A short window ends by itself and the rule disappears.
    h.ufm.set_faults(vec![FaultRule::outage(Duration::from_millis(100))]);
    eventually("the outage ends", async || h.get("/app/ufm_version").await.status == StatusCode::OK).await;
    assert!(h.ufm.faults().is_empty());
}

#[tokio::test]
async fn a_hang_never_answers_and_the_client_times_out() {
    let h = Harness::start().await;
    h.ufm.add_fault(FaultRule::hang().times(1));
    let impatient = client_for(&h.ufm, None, Duration::from_millis(300));
    let err = impatient.get(h.url(VERSION)).basic_auth(USER, Some(PASS)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let rec = &h.ufm.requests()[0];
    assert_eq!((rec.fault.as_deref(), rec.status), (Some("hang"), None));
    // Other connections are unaffected.
    assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_limited_hang_closes_the_connection_without_an_answer() {
    let h = Harness::start().await;
    h.ufm.add_fault(serde_json::from_value(json!({"kind": "hang", "ms": 50, "count": 1})).unwrap());
    let err = h.http.get(h.url(VERSION)).basic_auth(USER, Some(PASS)).send().await.unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
}

#[tokio::test]
async fn a_reset_drops_the_connection_with_a_tcp_reset() {
    let h = Harness::start().await;
    h.ufm.add_fault(FaultRule::reset().method("POST").times(1));
    let err = h
        .http
        .post(h.url("/ufmRest/resources/pkeys"))
        .basic_auth(USER, Some(PASS))
        .json(&json!({"pkey": "0x5", "guids": [guid(1)]}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    let mut source = err.source();
    let mut reset = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            reset |= io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = e.source();
    }
    assert!(reset, "expected ECONNRESET somewhere in {err:?}");
    assert_eq!(h.ufm.requests()[0].fault.as_deref(), Some("reset"));
    assert!(!h.ufm.snapshot().contains_key(&5), "a reset request is not applied");
    assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_401_storm_hits_the_next_n_requests_then_stops() {
    let h = Harness::start().await;
    h.ufm.add_fault(FaultRule::unauthorized_next(3));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(h.get("/app/ufm_version").await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, vec![401, 401, 401, 200, 200]);
    let r = {
        h.ufm.add_fault(FaultRule::unauthorized_for(Duration::from_secs(3600)));
        h.get("/resources/pkeys").await
    };
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.is_html());
    assert_eq!(h.ufm.requests().last().unwrap().fault.as_deref(), Some("unauthorized"));
}

#[tokio::test]
async fn faults_can_be_scoped_to_one_endpoint() {
    let h = Harness::with(Config { tokens: vec!["tok".into()], ..Default::default() }).await;
    h.ufm.add_fault(FaultRule::error_rate(1.0, &[500]).method("POST").path("/resources/pkeys"));
    h.ufm.add_fault(FaultRule::outage(Duration::from_secs(3600)).path("/ufmRestV3/"));
    assert_eq!(h.get("/resources/pkeys").await.status, StatusCode::OK);
    let post = h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    assert_eq!(post.status, StatusCode::INTERNAL_SERVER_ERROR);
    let other_post = h.post("/app/tokens", json!({})).await;
    assert_eq!(other_post.status, StatusCode::OK);
    let v3 = h.http.get(h.url("/ufmRestV3/resources/pkeys")).header("Authorization", "Basic tok").send().await.unwrap();
    assert_eq!(v3.status(), 503);
    let counters = h.ufm.counters();
    assert_eq!(counters["POST /resources/pkeys"].failed, 1);
    assert_eq!(counters["GET /resources/pkeys"].count, 2);
    assert_eq!(counters["GET /resources/pkeys"].failed, 1);
}

#[tokio::test]
async fn the_admin_api_installs_lists_and_removes_faults() {
    let h = Harness::start().await;
    let added = h
        .admin(
            Method::POST,
            "/mock/faults",
            Some(json!({"kind": "error", "statuses": [503], "path_prefix": "/app/", "count": 2})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    let id = added.json()["id"].as_u64().unwrap();
    let listed = h.admin(Method::GET, "/mock/faults", None).await.json();
    assert_eq!(listed["rules"][0]["id"], id);
    assert_eq!(listed["rules"][0]["kind"], "error");
    assert_eq!(listed["rules"][0]["remaining"], 2);
    assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.admin(Method::GET, "/mock/faults", None).await.json()["rules"][0]["remaining"], 1);
    let del = h.admin(Method::DELETE, &format!("/mock/faults/{id}"), None).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::OK);
    let gone = h.admin(Method::DELETE, &format!("/mock/faults/{id}"), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    let replaced = h
        .admin(
            Method::PUT,
            "/mock/faults",
            Some(json!({"rules": [{"kind": "unauthorized"}, {"kind": "latency", "ms": 1}]})),
        )
        .await;
    assert_eq!(replaced.json()["ids"].as_array().unwrap().len(), 2);
    assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::UNAUTHORIZED);
    h.admin(Method::DELETE, "/mock/faults", None).await;
    assert_eq!(h.get("/app/ufm_version").await.status, StatusCode::OK);

    let bad = h.admin(Method::POST, "/mock/faults", Some(json!({"kind": "meteor"}))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error().contains("meteor"), "{}", bad.text);
}

#[tokio::test]
async fn the_admin_api_is_never_faulted() {
    let h = Harness::start().await;
    h.ufm.add_fault(FaultRule::outage(Duration::from_secs(3600)));
    let r = h.admin(Method::GET, "/mock/health", None).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"ok": true})));
    let anon = into_resp(h.http.get(h.url("/mock/counters")).send().await.unwrap()).await;
    assert_eq!(anon.status, StatusCode::OK);
}
