//! The UFM client against mock-ufm over TLS: every operation, the exact bodies and paths UFM
//! receives, splitting of large changes, the legacy-remove fallback and QoS on add.

mod ufm_support;

use std::sync::Arc;

use fabric_sync::engine::{ErrorClass, Fabric, FabricReason};
use fabric_sync::ib::{Membership, MtuLimit, PKey, PartitionSpec, Qos, ServiceLevel};
use fabric_sync::ufm::UfmClient;
use mock_ufm::{FaultRule, Mutation};
use serde_json::json;
use ufm_support::*;

fn qos(mtu: MtuLimit, sl: u8, rate: &str) -> Qos {
    Qos { mtu_limit: Some(mtu), service_level: ServiceLevel::new(sl), rate_limit: Some(rate.parse().unwrap()) }
}

#[tokio::test]
async fn version_comes_from_ufm_over_basic_auth() {
    let ufm = start_with(mock_ufm::Config { ufm_version: "6.20.1-3".into(), ..Default::default() }).await;
    let c = client(&args(&ufm));
    assert_eq!(c.version().await.unwrap(), "6.20.1-3");
    let log = ufm.requests();
    assert_eq!(lines(&log), ["GET /ufmRest/app/ufm_version"]);
    assert_eq!((log[0].auth, log[0].user.as_deref()), (mock_ufm::AuthKind::Basic, Some(USER)));
}

#[tokio::test]
async fn add_sends_pkey_and_guids_in_ufm_form() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    let spec = PartitionSpec {
        pkey: pkey(0xa5),
        membership: Membership::Limited,
        index0: false,
        ip_over_ib: false,
        qos: Qos::default(),
    };
    let guids = [guid(0x0200_0000_0000_00ab), "02:00:00:00:00:00:0A:0B".parse().unwrap()];
    c.add_guids(&spec, &guids).await.unwrap();
    let log = ufm.requests();
    assert_eq!(lines(&log), ["POST /ufmRest/resources/pkeys"]);
    assert_eq!(
        log[0].body.as_deref(),
        Some(
            r#"{"pkey":"0xa5","guids":["02000000000000ab","0200000000000a0b"],"membership":"limited","index0":false,"ip_over_ib":false}"#
        )
    );
    let table = ufm.snapshot();
    let p = &table[&0xa5];
    assert_eq!(p.members.len(), 2);
    assert!(!p.ip_over_ib);
}

#[tokio::test]
async fn large_adds_are_split_at_the_request_limit() {
    let ufm = start().await;
    let mut a = args(&ufm);
    a.max_guids_per_request = "100".into();
    let c = client(&a);
    let guids: Vec<_> = (1..=250).map(|i| guid(0x0200_0000_0000_0000 + i)).collect();
    c.add_guids(&PartitionSpec::new(pkey(5)), &guids).await.unwrap();
    let sizes: Vec<usize> =
        ufm.requests().iter().map(|r| r.json().unwrap()["guids"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(ufm.snapshot()[&5].members.len(), 250);
    assert_eq!(c.counters().snapshot().add, 3);
}

#[tokio::test]
async fn repeated_guids_are_sent_once_and_empty_changes_send_nothing() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    c.add_guids(&PartitionSpec::new(pkey(5)), &[guid(0x0200_0000_0000_0001); 3]).await.unwrap();
    c.add_guids(&PartitionSpec::new(pkey(5)), &[]).await.unwrap();
    c.remove_guids(pkey(5), &[]).await.unwrap();
    let log = ufm.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].json().unwrap()["guids"], json!(["0200000000000001"]));
}

#[tokio::test]
async fn list_and_get_read_members_and_absent_pkeys_are_none() {
    let ufm = start().await;
    ufm.apply(Mutation::AddGuids {
        pkey: mock_ufm::PKey::parse("0x5").unwrap(),
        members: vec![
            (
                mock_ufm::Guid::parse("0200000000000001").unwrap(),
                mock_ufm::Member { membership: mock_ufm::Membership::Full, index0: true },
            ),
            (
                mock_ufm::Guid::parse("946dae03005975c8").unwrap(),
                mock_ufm::Member { membership: mock_ufm::Membership::Limited, index0: false },
            ),
        ],
        ip_over_ib: Some(true),
        name: None,
    })
    .unwrap();
    let c = client(&args(&ufm));
    let parts = c.list_pkeys().await.unwrap();
    assert_eq!(parts.keys().copied().collect::<Vec<_>>(), [pkey(5), PKey::DEFAULT]);
    let members = &parts[&pkey(5)].members;
    assert_eq!(members.len(), 2);
    assert_eq!(
        (members[0].guid, members[0].membership, members[0].index0),
        (guid(0x0200_0000_0000_0001), Membership::Full, true)
    );
    assert_eq!(members[1].membership, Membership::Limited);
    assert_eq!(parts[&PKey::DEFAULT].name.as_deref(), Some("management"));

    let one = c.get_pkey(pkey(5)).await.unwrap().unwrap();
    assert_eq!(one.name.as_deref(), Some("api_pkey_0x5"));
    assert_eq!(one.members.len(), 2);
    assert!(one.qos.is_some());
    assert_eq!(c.get_pkey(pkey(6)).await.unwrap(), None, "UFM's 200 {{}}");
    ufm.update_settings(|s| s.unknown_pkey_404 = true);
    assert_eq!(c.get_pkey(pkey(6)).await.unwrap(), None, "404");
    assert_eq!(
        lines(&ufm.requests()),
        [
            "GET /ufmRest/resources/pkeys?guids_data=true",
            "GET /ufmRest/resources/pkeys/0x5?guids_data=true&qos_conf=true",
            "GET /ufmRest/resources/pkeys/0x6?guids_data=true&qos_conf=true",
            "GET /ufmRest/resources/pkeys/0x6?guids_data=true&qos_conf=true",
        ]
    );

    // Through the engine's port: every member, in range or not (the engine keeps to its range).
    let fabric: Arc<dyn Fabric> = Arc::new(c);
    let listing = fabric.list().await.unwrap();
    assert_eq!(listing[&pkey(5)].len(), 2);
    assert_eq!(fabric.check().await.unwrap(), "6.19.0-7");
}

#[tokio::test]
async fn remove_uses_the_guid_list_endpoint_and_the_last_guid_deletes_the_pkey() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    let g = [guid(0x0200_0000_0000_0001), guid(0x0200_0000_0000_0002), guid(0x0200_0000_0000_0003)];
    c.add_guids(&PartitionSpec::new(pkey(0x1f)), &g).await.unwrap();
    ufm.clear_requests();
    c.remove_guids(pkey(0x1f), &g[..2]).await.unwrap();
    assert_eq!(ufm.snapshot()[&0x1f].members.len(), 1);
    c.remove_guids(pkey(0x1f), &g[2..]).await.unwrap();
    assert!(!ufm.snapshot().contains_key(&0x1f));
    // Removing from a pkey that is gone is not an error.
    c.remove_guids(pkey(0x1f), &g[2..]).await.unwrap();
    assert_eq!(
        lines(&ufm.requests()),
        [
            "DELETE /ufmRest/resources/pkeys/0x1f/guids/0200000000000001,0200000000000002",
            "DELETE /ufmRest/resources/pkeys/0x1f/guids/0200000000000003",
            "DELETE /ufmRest/resources/pkeys/0x1f/guids/0200000000000003",
        ]
    );
    assert!(!c.uses_legacy_remove());
}

#[tokio::test]
async fn large_removals_keep_urls_short() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    let guids: Vec<_> = (1..=450).map(|i| guid(0x0200_0000_0000_0000 + i)).collect();
    c.add_guids(&PartitionSpec::new(pkey(5)), &guids).await.unwrap();
    ufm.clear_requests();
    c.remove_guids(pkey(5), &guids).await.unwrap();
    let counts: Vec<usize> =
        ufm.requests().iter().map(|r| r.path.rsplit('/').next().unwrap().split(',').count()).collect();
    assert_eq!(counts, [400, 50]);
    assert!(!ufm.snapshot().contains_key(&5));
}

#[tokio::test]
async fn remove_falls_back_to_the_legacy_action_once_and_for_good() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    let g = [guid(0x0200_0000_0000_0001), guid(0x0200_0000_0000_0002), guid(0x0200_0000_0000_0003)];
    c.add_guids(&PartitionSpec::new(pkey(5)), &g).await.unwrap();
    // An older UFM: the DELETE route does not exist (Apache's HTML 404).
    ufm.add_fault(FaultRule::error_rate(1.0, &[404]).method("DELETE").path("/resources/pkeys/"));
    ufm.clear_requests();
    c.remove_guids(pkey(5), &g[..1]).await.unwrap();
    assert!(c.uses_legacy_remove());
    c.remove_guids(pkey(5), &g[1..]).await.unwrap();
    let log = ufm.requests();
    assert_eq!(
        lines(&log),
        [
            "DELETE /ufmRest/resources/pkeys/0x5/guids/0200000000000001",
            "POST /ufmRest/actions/remove_guids_from_pkey",
            "POST /ufmRest/actions/remove_guids_from_pkey",
        ]
    );
    assert_eq!(log[1].body.as_deref(), Some(r#"{"pkey":"0x5","guids":["0200000000000001"]}"#));
    assert_eq!(log[2].json().unwrap(), json!({"pkey": "0x5", "guids": ["0200000000000002", "0200000000000003"]}));
    assert!(!ufm.snapshot().contains_key(&5));
}

#[tokio::test]
async fn qos_on_add_creates_the_partition_with_it_before_guids_join() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    let mut spec = PartitionSpec::new(pkey(7));
    spec.qos = qos(MtuLimit::Mtu4k, 3, "200");
    c.add_guids(&spec, &[guid(0x0200_0000_0000_0001)]).await.unwrap();
    let log = ufm.requests();
    assert_eq!(
        lines(&log),
        [
            "GET /ufmRest/resources/pkeys/0x7?guids_data=true&qos_conf=true",
            "POST /ufmRest/resources/pkeys/add",
            "POST /ufmRest/resources/pkeys",
        ]
    );
    assert_eq!(
        log[1].json().unwrap(),
        json!({"pkey": "0x7", "index0": true, "ip_over_ib": true, "mtu_limit": 4, "service_level": 3, "rate_limit": 200.0})
    );
    let p = &ufm.snapshot()[&7];
    assert_eq!((p.qos.mtu_limit, p.qos.service_level, p.qos.rate_limit), (4, 3, 200.0));
    assert_eq!(p.members.len(), 1);

    // Same QoS again: only the check and the add.
    ufm.clear_requests();
    c.add_guids(&spec, &[guid(0x0200_0000_0000_0002)]).await.unwrap();
    assert_eq!(
        lines(&ufm.requests()),
        ["GET /ufmRest/resources/pkeys/0x7?guids_data=true&qos_conf=true", "POST /ufmRest/resources/pkeys"]
    );

    // Different QoS on an existing partition: updated before the add.
    ufm.clear_requests();
    spec.qos = Qos { rate_limit: Some("100".parse().unwrap()), ..Qos::default() };
    c.add_guids(&spec, &[guid(0x0200_0000_0000_0003)]).await.unwrap();
    let log = ufm.requests();
    assert_eq!(
        lines(&log),
        [
            "GET /ufmRest/resources/pkeys/0x7?guids_data=true&qos_conf=true",
            "PUT /ufmRest/resources/pkeys/qos_conf",
            "POST /ufmRest/resources/pkeys",
        ]
    );
    assert_eq!(log[1].json().unwrap(), json!({"pkey": "0x7", "rate_limit": 100.0}));
    let p = &ufm.snapshot()[&7];
    assert_eq!((p.qos.mtu_limit, p.qos.rate_limit, p.members.len()), (4, 100.0, 3));
}

#[tokio::test]
async fn qos_is_set_after_the_first_add_on_a_ufm_that_cannot_create_empty_pkeys() {
    let ufm = start().await;
    ufm.add_fault(FaultRule::error_rate(1.0, &[404]).method("POST").path("/resources/pkeys/add"));
    let mut a = args(&ufm);
    a.max_guids_per_request = "1".into();
    let c = client(&a);
    let mut spec = PartitionSpec::new(pkey(8));
    spec.qos = Qos { mtu_limit: Some(MtuLimit::Mtu4k), ..Qos::default() };
    c.add_guids(&spec, &[guid(0x0200_0000_0000_0001), guid(0x0200_0000_0000_0002)]).await.unwrap();
    assert_eq!(
        lines(&ufm.requests()),
        [
            "GET /ufmRest/resources/pkeys/0x8?guids_data=true&qos_conf=true",
            "POST /ufmRest/resources/pkeys/add",
            "POST /ufmRest/resources/pkeys",
            "PUT /ufmRest/resources/pkeys/qos_conf",
            "POST /ufmRest/resources/pkeys",
        ]
    );
    assert_eq!(ufm.snapshot()[&8].qos.mtu_limit, 4);
}

#[tokio::test]
async fn create_pkey_and_update_qos_are_available_directly() {
    let ufm = start().await;
    let c: UfmClient = client(&args(&ufm));
    let mut spec = PartitionSpec::new(pkey(0x30));
    spec.ip_over_ib = false;
    spec.qos = Qos { service_level: ServiceLevel::new(5), ..Qos::default() };
    assert!(c.create_pkey(&spec).await.unwrap());
    let err = c.create_pkey(&spec).await.unwrap_err();
    assert_eq!(
        (err.reason(), err.status(), err.class()),
        (FabricReason::UfmRejected, Some(400), ErrorClass::Permanent)
    );
    c.update_qos(pkey(0x30), &qos(MtuLimit::Mtu2k, 1, "2.5")).await.unwrap();
    let p = &ufm.snapshot()[&0x30];
    assert!(p.members.is_empty() && !p.ip_over_ib);
    assert_eq!((p.qos.mtu_limit, p.qos.service_level, p.qos.rate_limit), (2, 1, 2.5));
    let missing = c.update_qos(pkey(0x31), &qos(MtuLimit::Mtu2k, 1, "2.5")).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert_eq!(missing.class(), ErrorClass::Permanent);
}
