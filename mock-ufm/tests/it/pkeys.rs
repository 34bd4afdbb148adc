//! The pkey, version and port endpoints over TLS, with UFM's quirks.

use std::time::Duration;

use mock_ufm::Config;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Harness, eventually, guid};

#[tokio::test]
async fn version_is_served_on_both_prefixes_and_answers_head() {
    let h = Harness::with(Config { ufm_version: "6.11.1-2".into(), tokens: vec!["tok".into()], ..Default::default() })
        .await;
    assert_eq!(h.get_ok("/app/ufm_version").await, json!({"ufm_release_version": "6.11.1-2"}));
    let v3 = h.http.get(h.url("/ufmRestV3/app/ufm_version")).header("Authorization", "Basic tok").send().await.unwrap();
    assert_eq!(v3.status(), StatusCode::OK);
    let head = h.http.head(h.url("/ufmRest/app/ufm_version")).basic_auth("admin", Some("123456")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers().contains_key("date"));
}

#[tokio::test]
async fn list_without_flags_is_an_array_holding_the_management_pkey() {
    let h = Harness::start().await;
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x7fff"]));
    let mgmt = h.get_ok("/resources/pkeys/0x7FFF?guids_data=true").await;
    assert_eq!(mgmt["partition"], "management");
    assert_eq!(mgmt["guids"], json!([]));
}

#[tokio::test]
async fn adding_guids_creates_an_api_named_partition_with_normalised_keys() {
    let h = Harness::start().await;
    let r = h
        .post("/resources/pkeys", json!({"pkey": "0x0005", "guids": ["0002C903000E0B72", "0x0002c903000e0b73"]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!({}));
    let list = h.get_ok("/resources/pkeys?guids_data=true").await;
    assert_eq!(
        list["0x5"],
        json!({
            "guids": [
                {"guid": "0002c903000e0b72", "index0": false, "membership": "full"},
                {"guid": "0002c903000e0b73", "index0": false, "membership": "full"}
            ],
            "ip_over_ib": true,
            "partition": "api_pkey_0x5"
        })
    );
    assert_eq!(list["0x7fff"]["membership"], "limited");
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x5", "0x7fff"]));
    // ib-kubernetes' upper-case padded form reaches the same partition.
    let one = h.get_ok("/resources/pkeys/0X0005?guids_data=true").await;
    assert_eq!(one["guids"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn listing_with_both_flags_is_refused_but_one_pkey_allows_both() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x2fb", "guids": [guid(1)], "index0": true})).await;
    let both = h.get("/resources/pkeys?guids_data=true&qos_conf=true").await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert!(both.error().contains("guids_data and qos_conf"), "{}", both.text);

    let qos = h.get_ok("/resources/pkeys?qos_conf=true").await;
    assert_eq!(
        qos["0x2fb"],
        json!({"ip_over_ib": true, "partition": "api_pkey_0x2fb",
               "qos_conf": {"mtu_limit": 2, "rate_limit": 2.5, "service_level": 0}})
    );
    assert!(qos["0x2fb"].get("guids").is_none());

    let one = h.get_ok("/resources/pkeys/0x2fb?guids_data=true&qos_conf=true").await;
    assert_eq!(one["guids"][0]["index0"], true);
    assert_eq!(one["qos_conf"]["mtu_limit"], 2);
    let plain = h.get_ok("/resources/pkeys/0x2fb").await;
    assert_eq!(plain, json!({"ip_over_ib": true, "partition": "api_pkey_0x2fb"}));
    let bad = h.get("/resources/pkeys?guids_data=maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error().contains("guids_data"));
}

#[tokio::test]
async fn unknown_pkey_is_200_empty_object_or_404_when_configured() {
    let h = Harness::start().await;
    let r = h.get("/resources/pkeys/0x99?guids_data=true").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({})));
    h.ufm.update_settings(|s| s.unknown_pkey_404 = true);
    let r = h.get("/resources/pkeys/0x99").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("0x99"));
}

#[tokio::test]
async fn per_guid_memberships_are_stored_and_conflicts_refused() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/resources/pkeys",
            json!({"pkey": "0x10", "guids": [guid(1), guid(2)],
                   "memberships": ["limited", "full"], "index0": true, "ip_over_ib": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = h.get_ok("/resources/pkeys/0x10?guids_data=true").await;
    assert_eq!(p["guids"][0]["membership"], "limited");
    assert_eq!(p["guids"][1]["membership"], "full");
    assert_eq!(p["guids"][0]["index0"], true);
    assert_eq!(p["ip_over_ib"], false);

    let both = h
        .post(
            "/resources/pkeys",
            json!({"pkey": "0x10", "guids": [guid(3)], "membership": "full", "memberships": ["full"]}),
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert!(both.error().contains("mutually exclusive"));
    let short =
        h.post("/resources/pkeys", json!({"pkey": "0x10", "guids": [guid(3), guid(4)], "memberships": ["full"]})).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.error().contains("memberships"));
    assert_eq!(h.ufm.snapshot()[&0x10].members.len(), 2);
}

#[tokio::test]
async fn put_replaces_the_member_set() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1), guid(2)]})).await;
    let r =
        h.put("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(2), guid(3)], "membership": "limited"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = h.get_ok("/resources/pkeys/0x5?guids_data=true").await;
    assert_eq!(
        p["guids"],
        json!([
            {"guid": guid(2), "index0": false, "membership": "limited"},
            {"guid": guid(3), "index0": false, "membership": "limited"}
        ])
    );
    let empty = h.put("/resources/pkeys", json!({"pkey": "0x5", "guids": []})).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.error().contains("empty"));
}

#[tokio::test]
async fn creating_an_empty_pkey_sets_qos_and_refuses_duplicates() {
    let h = Harness::start().await;
    let r = h
        .post("/resources/pkeys/add", json!({"pkey": "0x12", "mtu_limit": 4, "service_level": 3, "rate_limit": 100}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = h.get_ok("/resources/pkeys/0x12?guids_data=true&qos_conf=true").await;
    assert_eq!(
        p,
        json!({"guids": [], "ip_over_ib": true, "partition": "api_pkey_0x12",
               "qos_conf": {"mtu_limit": 4, "rate_limit": 100, "service_level": 3}})
    );
    let again = h.post("/resources/pkeys/add", json!({"pkey": "0x12"})).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.error().contains("already exists"));
    for bad in [
        json!({"pkey": "0x13", "mtu_limit": 3}),
        json!({"pkey": "0x13", "service_level": 16}),
        json!({"pkey": "0x13", "rate_limit": 7}),
    ] {
        let r = h.post("/resources/pkeys/add", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.error().contains("qos"), "{}", r.text);
    }
}

#[tokio::test]
async fn removing_guids_by_path_is_idempotent_and_the_last_one_deletes_the_partition() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1), guid(2), guid(3)]})).await;
    let r = h.delete(&format!("/resources/pkeys/0x5/guids/{},{}", guid(1), guid(2))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let nonmember = h.delete(&format!("/resources/pkeys/0x5/guids/{}", guid(9))).await;
    assert_eq!(nonmember.status, StatusCode::OK);
    assert_eq!(h.ufm.snapshot()[&5].members.len(), 1);
    let last = h.delete(&format!("/resources/pkeys/0x0005/guids/{}", guid(3).to_uppercase())).await;
    assert_eq!(last.status, StatusCode::OK);
    assert_eq!(h.get_ok("/resources/pkeys/0x5").await, json!({}));
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x7fff"]));
}

#[tokio::test]
async fn legacy_remove_action_removes_guids() {
    let h = Harness::start().await;
    h.post("/resources/pkeys/", json!({"pkey": "0x0007", "guids": [guid(1), guid(2)]})).await;
    let r = h.post("/actions/remove_guids_from_pkey", json!({"pkey": "0x0007", "guids": [guid(1)]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = h.get_ok("/resources/pkeys/?guids_data=true").await;
    assert_eq!(p["0x7"]["guids"], json!([{"guid": guid(2), "index0": false, "membership": "full"}]));
    let extra =
        h.post("/actions/remove_guids_from_pkey", json!({"pkey": "0x7", "guids": [guid(2)], "index0": true})).await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST);
    assert!(extra.error().contains("index0"));
}

#[tokio::test]
async fn deleting_a_pkey_removes_it_and_an_absent_one_is_404() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    assert_eq!(h.delete("/resources/pkeys/0x5").await.status, StatusCode::OK);
    assert!(!h.ufm.snapshot().contains_key(&5));
    let again = h.delete("/resources/pkeys/0x5").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.error().contains("0x5"));
}

#[tokio::test]
async fn a_rate_limit_ufm_does_not_support_is_refused_with_400_on_create_and_qos_update() {
    let h = Harness::start().await;
    let r = h.post("/resources/pkeys/add", json!({"pkey": "0x14", "rate_limit": 150})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.content_type, "application/json");
    let said = r.error();
    assert!(said.contains("rate_limit 150 is not supported"), "{said}");
    assert!(
        said.contains("supported values: 2.5, 5, 10, 14, 20, 25, 30, 40, 56, 60, 80, 100, 112, 120, 168, 200, 300")
    );
    assert!(!h.ufm.snapshot().contains_key(&0x14), "nothing was created");
    h.post("/resources/pkeys", json!({"pkey": "0x15", "guids": [guid(1)]})).await;
    let r = h.put("/resources/pkeys/qos_conf", json!({"pkey": "0x15", "rate_limit": 150})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.error().contains("rate_limit 150"), "{}", r.text);
    assert_eq!(h.ufm.snapshot()[&0x15].qos.rate_limit, 2.5, "QoS unchanged");
    // Rates are not accepted on the GUID add itself.
    let r = h.post("/resources/pkeys", json!({"pkey": "0x15", "guids": [guid(2)], "rate_limit": 200})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn a_ufm_configured_with_fewer_rates_refuses_the_others() {
    let h = Harness::with(Config { rate_limits: vec![100.0, 200.0], ..Config::default() }).await;
    let r = h.post("/resources/pkeys/add", json!({"pkey": "0x16", "rate_limit": 300})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.error().ends_with("supported values: 100, 200"), "{}", r.text);
    let r = h.post("/resources/pkeys/add", json!({"pkey": "0x16", "rate_limit": 100})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Without an explicit rate, UFM's default applies and is not checked against the list.
    let r = h.post("/resources/pkeys/add", json!({"pkey": "0x17"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn qos_update_changes_only_given_fields() {
    let h = Harness::start().await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    let r = h
        .put("/resources/pkeys/qos_conf", json!({"pkey": "0x5", "mtu_limit": 4, "service_level": 0, "rate_limit": 200}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let q = &h.ufm.snapshot()[&5].qos;
    assert_eq!((q.mtu_limit, q.rate_limit, q.service_level), (4, 200.0, 0));
    let missing = h.put("/resources/pkeys/qos_conf", json!({"pkey": "0x6", "mtu_limit": 4})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = h.put("/resources/pkeys/qos_conf", json!({"pkey": "0x5", "mtu_limit": 8})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error().contains("mtu_limit"));
}

#[tokio::test]
async fn last_updated_is_null_until_a_change_then_a_timestamp() {
    let h = Harness::start().await;
    assert_eq!(h.get_ok("/resources/pkeys/last_updated").await, json!({"last_updated": null}));
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    let v = h.get_ok("/resources/pkeys/last_updated").await;
    let s = v["last_updated"].as_str().unwrap().to_string();
    // DD-MM-YYYY, HH:MM:SS
    let shape: String = s.chars().map(|c| if c.is_ascii_digit() { 'd' } else { c }).collect();
    assert_eq!(shape, "dd-dd-dddd, dd:dd:dd", "{s}");
    h.ufm.update_settings(|s| s.last_updated_format = mock_ufm::TimeFormat::Ctime);
    let c = h.get_ok("/resources/pkeys/last_updated").await;
    assert!(c["last_updated"].as_str().unwrap().contains(" UTC "), "{c}");
}

#[tokio::test]
async fn the_management_partition_is_read_only() {
    let h = Harness::start().await;
    let writes = [
        h.post("/resources/pkeys", json!({"pkey": "0x7fff", "guids": [guid(1)]})).await,
        h.put("/resources/pkeys", json!({"pkey": "0x7FFF", "guids": [guid(1)]})).await,
        h.post("/resources/pkeys/add", json!({"pkey": "0x7fff"})).await,
        h.put("/resources/pkeys/qos_conf", json!({"pkey": "0x7fff", "mtu_limit": 4})).await,
        h.delete("/resources/pkeys/0x7fff").await,
        h.delete(&format!("/resources/pkeys/0x7fff/guids/{}", guid(1))).await,
    ];
    for r in writes {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.error().contains("read-only"), "{}", r.text);
    }
    assert!(h.ufm.snapshot()[&0x7fff].members.is_empty());
}

#[tokio::test]
async fn invalid_input_is_400_naming_what_is_wrong() {
    let h = Harness::start().await;
    let cases = [
        (json!({"pkey": "0x0", "guids": [guid(1)]}), "0x0"),
        (json!({"pkey": "0x8000", "guids": [guid(1)]}), "0x8000"),
        (json!({"pkey": "5", "guids": [guid(1)]}), "\"5\""),
        (json!({"pkey": "0x5", "guids": ["00:02:c9:03:00:0e:0b:72"]}), "00:02:c9:03:00:0e:0b:72"),
        (json!({"pkey": "0x5", "guids": ["0000000000000000"]}), "all-zero"),
        (json!({"pkey": "0x5", "guids": ["0002c903000e0b7"]}), "0002c903000e0b7"),
        (json!({"pkey": "0x5", "guids": [guid(1), guid(1)]}), "more than once"),
        (json!({"pkey": "0x5", "guids": [guid(1)], "membership": "owner"}), "owner"),
        (json!({"pkey": "0x5", "guid": [guid(1)]}), "guid"),
        (json!({"pkey": "0x5", "guids": [guid(1)], "index0": "yes"}), "invalid type"),
    ];
    for (body, needle) in cases {
        let r = h.post("/resources/pkeys", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
    let raw = h
        .http
        .post(h.url("/ufmRest/resources/pkeys"))
        .basic_auth("admin", Some("123456"))
        .header("content-type", "application/json")
        .body("{\"pkey\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = raw.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("invalid JSON"));
    let bad_path = h.get("/resources/pkeys/0xzz").await;
    assert_eq!(bad_path.status, StatusCode::BAD_REQUEST);
    assert!(bad_path.error().contains("0xzz"));
    let bad_guid = h.delete("/resources/pkeys/0x5/guids/abc").await;
    assert_eq!(bad_guid.status, StatusCode::BAD_REQUEST);
    assert!(bad_guid.error().contains("abc"));
    assert_eq!(h.ufm.snapshot().len(), 1, "nothing may have been created");
}

#[tokio::test]
async fn ports_are_listed_and_filtered_by_system_type() {
    let h = Harness::start().await;
    let all = h.get_ok("/resources/ports").await;
    let computers = h.get_ok("/resources/ports?sys_type=Computer").await;
    let all = all.as_array().unwrap();
    let computers = computers.as_array().unwrap();
    assert!(computers.len() < all.len());
    assert!(!computers.is_empty());
    for p in computers {
        assert_eq!(p["sys_type"], "Computer");
        assert_eq!(p["guid"].as_str().unwrap().len(), 16);
        for field in ["name", "systemID", "lid", "dname", "system_name", "logical_state"] {
            assert!(p.get(field).is_some(), "port lacks {field}: {p}");
        }
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_apache_pages() {
    let h = Harness::start().await;
    let missing = h.get("/resources/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.is_html(), "{}", missing.text);
    let method = h.call(Method::PATCH, "/resources/pkeys", None).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    let outside = h.http.get(h.url("/ufmRestV2/app/ufm_version")).send().await.unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_an_apply_delay_changes_are_invisible_until_applied() {
    let h = Harness::with(Config { apply_delay: Duration::from_secs(3600), ..Default::default() }).await;
    let r = h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    assert_eq!(r.status, StatusCode::OK, "the write is answered at once");
    assert_eq!(h.ufm.pending_changes(), 1);
    assert_eq!(h.get_ok("/resources/pkeys/0x5").await, json!({}));
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x7fff"]));
    assert_eq!(h.get_ok("/resources/pkeys/last_updated").await, json!({"last_updated": null}));
    assert!(h.ufm.apply_pending());
    assert_eq!(h.ufm.pending_changes(), 0);
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x5", "0x7fff"]));
    assert!(h.get_ok("/resources/pkeys/last_updated").await["last_updated"].is_string());
}

#[tokio::test]
async fn delayed_changes_are_applied_when_due_without_help() {
    let h = Harness::with(Config { apply_delay: Duration::from_millis(100), ..Default::default() }).await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    eventually("the change becomes visible", async || h.get_ok("/resources/pkeys/0x5").await != json!({})).await;
    assert_eq!(h.ufm.pending_changes(), 0);
    assert!(h.get_ok("/resources/pkeys/last_updated").await["last_updated"].is_string());
}

#[tokio::test]
async fn delayed_writes_are_checked_against_pending_changes() {
    let h = Harness::with(Config { apply_delay: Duration::from_secs(3600), ..Default::default() }).await;
    h.post("/resources/pkeys", json!({"pkey": "0x5", "guids": [guid(1)]})).await;
    // Not visible, but the pending partition can be deleted, and only once.
    assert_eq!(h.delete("/resources/pkeys/0x5").await.status, StatusCode::OK);
    assert_eq!(h.delete("/resources/pkeys/0x5").await.status, StatusCode::NOT_FOUND);
    h.post("/resources/pkeys/add", json!({"pkey": "0x6"})).await;
    let dup = h.post("/resources/pkeys/add", json!({"pkey": "0x6"})).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.ufm.pending_changes(), 3);
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x7fff"]));
    let applied = h.admin(Method::POST, "/mock/apply", None).await;
    assert_eq!(applied.json(), json!({"changed": true}));
    assert_eq!(h.get_ok("/resources/pkeys").await, json!(["0x6", "0x7fff"]));
}
