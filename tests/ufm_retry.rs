//! Failures and retries against mock-ufm: transient failures (503, timeouts, resets) are
//! retried up to the attempt limit, refusals (400, 401) are not, and each is classified
//! (transient, permanent, auth) where it is seen; attempts are counted from the mock's request
//! log; rotated Secret files take effect on the next request.

mod ufm_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fabric_sync::config::Secret;
use fabric_sync::engine::{ErrorClass, Fabric, FabricError, FabricReason};
use fabric_sync::ib::{PKey, PartitionSpec, Qos, RateLimit};
use fabric_sync::ufm::UfmObserver;
use mock_ufm::{FaultKind, FaultRule};
use ufm_support::*;

fn hang(max: Duration) -> FaultRule {
    FaultRule { kind: FaultKind::Hang { max: Some(max) }, ..FaultRule::hang() }
}

/// Records what the metrics hook is told.
#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, String)>>);

impl UfmObserver for Recorder {
    fn request_done(&self, op: &'static str, status: &str, _elapsed: Duration) {
        self.0.lock().unwrap().push((op, status.to_string()));
    }
}

impl Recorder {
    fn seen(&self) -> Vec<(&'static str, String)> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_503_is_retried_until_ufm_answers() {
    let ufm = start().await;
    ufm.add_fault(FaultRule::error_rate(1.0, &[503]).times(2));
    let recorder = Arc::new(Recorder::default());
    let c = client(&args(&ufm)).with_observer(recorder.clone());
    c.add_guids(&PartitionSpec::new(pkey(5)), &[guid(0x0200_0000_0000_0001)]).await.unwrap();
    let statuses: Vec<Option<u16>> = ufm.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    let counts = c.counters().snapshot();
    assert_eq!((counts.add, counts.failed), (3, 2));
    assert_eq!(ufm.snapshot()[&5].members.len(), 1);
    let seen = recorder.seen();
    let expected: Vec<(&str, String)> = ["503", "503", "200"].iter().map(|s| ("add_guids", s.to_string())).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn retries_stop_at_max_attempts_with_a_readable_reason() {
    let ufm = start().await;
    ufm.add_fault(FaultRule::outage(Duration::from_secs(600)));
    let mut a = args(&ufm);
    a.max_attempts = "3".into();
    let e = client(&a).list_pkeys().await.unwrap_err();
    assert_eq!(ufm.requests().len(), 3);
    assert_eq!((e.reason(), e.status(), e.class()), (FabricReason::UfmUnavailable, Some(503), ErrorClass::Transient));
    let shown = e.to_string();
    assert!(shown.contains("Service Temporarily Unavailable"), "{shown}");
    assert!(!shown.contains('<'), "HTML is reduced to text: {shown}");
    let f: FabricError = e.into();
    assert!(f.is_transient() && !f.is_auth());
    assert_eq!((f.class, f.reason.as_str()), (ErrorClass::Transient, "UfmUnavailable"));
}

#[tokio::test]
async fn timeouts_are_retried_and_counted() {
    let ufm = start().await;
    ufm.add_fault(hang(Duration::from_secs(5)).times(2));
    let mut a = args(&ufm);
    a.request_timeout = "300ms".into();
    let recorder = Arc::new(Recorder::default());
    let c = client(&a).with_observer(recorder.clone());
    assert_eq!(c.version().await.unwrap(), "6.19.0-7");
    let statuses: Vec<String> = recorder.seen().into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, ["timeout", "timeout", "200"]);
    let faults: Vec<Option<String>> = ufm.requests().iter().map(|r| r.fault.clone()).collect();
    assert_eq!(faults, [Some("hang".to_string()), Some("hang".to_string()), None]);

    ufm.clear_requests();
    ufm.add_fault(hang(Duration::from_secs(5)));
    a.max_attempts = "2".into();
    let e = client(&a).version().await.unwrap_err();
    assert_eq!((e.reason(), e.class()), (FabricReason::UfmTimeout, ErrorClass::Transient));
    assert!(e.to_string().contains("did not answer within 300ms"), "{e}");
    assert_eq!(ufm.requests().len(), 2);
    let f = FabricError::from(e);
    assert!(f.is_transient() && f.reason == FabricReason::UfmTimeout);
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let ufm = start().await;
    ufm.add_fault(FaultRule::reset().times(1));
    let c = client(&args(&ufm));
    c.remove_guids(pkey(5), &[guid(0x0200_0000_0000_0001)]).await.unwrap();
    let faults: Vec<Option<String>> = ufm.requests().iter().map(|r| r.fault.clone()).collect();
    assert_eq!(faults, [Some("reset".to_string()), None]);
}

#[tokio::test]
async fn a_400_is_not_retried_and_quotes_ufm() {
    let ufm = start().await;
    let c = client(&args(&ufm));
    // 0x7fff is read-only in UFM.
    let e = c.add_guids(&PartitionSpec::new(PKey::DEFAULT), &[guid(0x0200_0000_0000_0001)]).await.unwrap_err();
    assert_eq!((e.reason(), e.status(), e.class()), (FabricReason::UfmRejected, Some(400), ErrorClass::Permanent));
    assert_eq!(ufm.requests().len(), 1);
    assert!(e.to_string().contains("0x7fff"), "UFM's own words are kept: {e}");
}

/// A mock UFM that supports rates up to 200 Gb/s only: 300 is a rate fabric-sync accepts
/// (it is one of UFM's) that this UFM refuses, as a value that slipped through would be.
async fn ufm_without_300() -> mock_ufm::MockUfm {
    let rates: Vec<f64> = RateLimit::accepted().map(RateLimit::gbps).filter(|r| *r < 300.0).collect();
    start_with(mock_ufm::Config { rate_limits: rates, ..Default::default() }).await
}

fn rate_300() -> Qos {
    Qos { rate_limit: Some("300".parse().expect("300 is one of UFM's rates")), ..Qos::default() }
}

#[tokio::test]
async fn a_rate_limit_ufm_refuses_is_a_permanent_refusal_not_retried_and_no_guid_joins() {
    let ufm = ufm_without_300().await;
    let c = client(&args(&ufm));
    let mut spec = PartitionSpec::new(pkey(0x21));
    spec.qos = rate_300();
    let e = Fabric::add_guids(&c, &spec, &[guid(0x0200_0000_0000_0001)]).await.unwrap_err();
    assert_eq!((e.class, e.reason), (ErrorClass::Permanent, FabricReason::UfmRejected));
    assert!(e.is_permanent() && !e.is_transient() && !e.is_auth());
    assert!(e.message.contains("400") && e.message.contains("rate_limit 300 is not supported"), "{}", e.message);
    let creates: Vec<Option<u16>> =
        ufm.requests().iter().filter(|r| r.path.ends_with("/resources/pkeys/add")).map(|r| r.status).collect();
    assert_eq!(creates, [Some(400)], "refused once, not retried");
    assert!(ufm.requests().iter().all(|r| r.method != "POST" || !r.path.ends_with("/resources/pkeys")));
    assert!(!ufm.snapshot().contains_key(&0x21), "no partition, no member");

    // On an existing partition the QoS update is refused the same way, before any GUID joins.
    ufm.clear_requests();
    c.add_guids(&PartitionSpec::new(pkey(0x22)), &[guid(0x0200_0000_0000_0002)]).await.unwrap();
    spec.pkey = pkey(0x22);
    let e = Fabric::add_guids(&c, &spec, &[guid(0x0200_0000_0000_0003)]).await.unwrap_err();
    assert_eq!((e.class, e.reason), (ErrorClass::Permanent, FabricReason::UfmRejected));
    let qos_puts: Vec<Option<u16>> =
        ufm.requests().iter().filter(|r| r.path.ends_with("/qos_conf")).map(|r| r.status).collect();
    assert_eq!(qos_puts, [Some(400)]);
    assert_eq!(ufm.snapshot()[&0x22].members.len(), 1, "the new GUID did not join");
}

#[tokio::test]
async fn a_503_storm_and_a_timeout_are_transient_and_a_401_is_auth_through_the_fabric_port() {
    let ufm = start().await;
    let mut a = args(&ufm);
    a.max_attempts = "2".into();
    ufm.add_fault(FaultRule::error_rate(1.0, &[503]).times(2));
    let e = Fabric::list(&client(&a)).await.unwrap_err();
    assert_eq!((e.class, e.reason), (ErrorClass::Transient, FabricReason::UfmUnavailable));

    ufm.add_fault(hang(Duration::from_secs(5)).times(2));
    a.request_timeout = "200ms".into();
    let e = Fabric::check(&client(&a)).await.unwrap_err();
    assert_eq!((e.class, e.reason), (ErrorClass::Transient, FabricReason::UfmTimeout));

    ufm.clear_requests();
    let mut wrong = args(&ufm);
    wrong.password = Some(Secret::new("wrong-password"));
    let e = Fabric::add_guids(&client(&wrong), &PartitionSpec::new(pkey(5)), &[guid(0x0200_0000_0000_0001)])
        .await
        .unwrap_err();
    assert_eq!((e.class, e.reason), (ErrorClass::Auth, FabricReason::UfmUnauthorized));
    assert!(e.is_auth());
    assert!(!e.message.contains("wrong-password"), "{}", e.message);
    assert_eq!(ufm.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_401_is_not_retried_and_names_the_settings() {
    let ufm = start().await;
    let mut a = args(&ufm);
    a.password = Some(Secret::new("wrong-password"));
    let e = client(&a).version().await.unwrap_err();
    assert_eq!((e.reason(), e.class()), (FabricReason::UfmUnauthorized, ErrorClass::Auth));
    assert!(e.to_string().contains("UFM answered 401 for user admin: check UFM_USERNAME/UFM_PASSWORD"), "{e}");
    assert_eq!(ufm.requests().len(), 1);
    // An injected 401 storm is not retried either.
    ufm.clear_requests();
    ufm.add_fault(FaultRule::unauthorized_next(5));
    assert!(client(&args(&ufm)).version().await.is_err());
    assert_eq!(ufm.requests().len(), 1);
}

#[tokio::test]
async fn a_read_only_user_gets_a_403_that_is_not_retried() {
    let ufm =
        start_with(mock_ufm::Config { viewers: vec![("viewer".into(), "view-pw".into())], ..Default::default() }).await;
    let mut a = args(&ufm);
    a.username = Some("viewer".into());
    a.password = Some(Secret::new("view-pw"));
    let c = client(&a);
    assert!(c.list_pkeys().await.is_ok(), "viewers may read");
    let e = c.add_guids(&PartitionSpec::new(pkey(5)), &[guid(0x0200_0000_0000_0001)]).await.unwrap_err();
    assert_eq!((e.reason(), e.status(), e.class()), (FabricReason::UfmForbidden, Some(403), ErrorClass::Auth));
    assert!(e.to_string().contains("for user viewer"), "{e}");
    assert_eq!(ufm.requests().len(), 2);
}

/// Rewrites a Secret file the way a rotation does: new content, newer modification time.
fn rotate(path: &std::path::Path, value: &str, age: u64) {
    std::fs::remove_file(path).ok();
    std::fs::write(path, value).unwrap();
    let t = SystemTime::now() + Duration::from_secs(age);
    std::fs::File::options().write(true).open(path).and_then(|f| f.set_modified(t)).unwrap();
}

#[tokio::test]
async fn rotated_secret_files_are_used_without_a_restart() {
    let ufm = start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("UFM_USERNAME"), "admin\n").unwrap();
    std::fs::write(dir.path().join("UFM_PASSWORD"), "old-password\n").unwrap();
    let mut a = args(&ufm);
    a.password = None;
    a.secret_dir = Some(dir.path().to_path_buf());
    let c = client(&a);
    let e = c.version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmUnauthorized);
    rotate(&dir.path().join("UFM_PASSWORD"), PASSWORD, 5);
    assert_eq!(c.version().await.unwrap(), "6.19.0-7");
    // And a switch to a token moves the same client to /ufmRestV3.
    let token = ufm.issue_token();
    rotate(&dir.path().join("UFM_TOKEN"), &token, 10);
    c.version().await.unwrap();
    let log = ufm.requests();
    let seen: Vec<(String, Option<u16>)> = log.iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(
        seen,
        [
            ("/ufmRest/app/ufm_version".to_string(), Some(401)),
            ("/ufmRest/app/ufm_version".to_string(), Some(200)),
            ("/ufmRestV3/app/ufm_version".to_string(), Some(200)),
        ]
    );
}
