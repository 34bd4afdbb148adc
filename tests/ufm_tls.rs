//! TLS and authentication against mock-ufm: only the configured CA is trusted, the host name
//! is checked, verification is off only when asked, and token and client-certificate auth
//! reach the right API prefix with the right (or no) Authorization header.

mod ufm_support;

use fabric_sync::config::UfmSettings;
use fabric_sync::engine::{ErrorClass, FabricReason};
use fabric_sync::ufm::UfmClient;
use mock_ufm::{AuthKind, ClientAuth, Config, TestPki, TlsMode};
use ufm_support::*;

fn other_ca() -> String {
    TestPki::new("not UFM's CA").unwrap().ca_pem().to_string()
}

#[tokio::test]
async fn the_right_ca_is_trusted_and_another_is_refused() {
    let ufm = start().await;
    assert!(client(&args(&ufm)).version().await.is_ok());
    let mut a = args(&ufm);
    a.certificate = Some(other_ca());
    let e = client(&a).version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmTls);
    assert_eq!(e.class(), ErrorClass::Auth, "an untrusted UFM pauses all traffic");
    let target = format!("127.0.0.1:{}", ufm.addr().port());
    assert!(e.to_string().contains(&format!("the certificate of {target} is not signed by the CA in")), "{e}");
    assert_eq!(ufm.requests().len(), 1, "the refused handshake never reached the API");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ufm = start_with(Config {
        tls: TlsMode::SelfSigned { sans: vec!["ufm.example".into()], write_dir: None },
        ..Config::default()
    })
    .await;
    let e = client(&args(&ufm)).version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmTls);
    assert!(e.to_string().contains("is not valid for the name 127.0.0.1 (it names: ufm.example)"), "{e}");
    assert!(ufm.requests().is_empty());
}

#[tokio::test]
async fn verification_is_skipped_only_when_asked() {
    let ufm = start().await;
    let mut a = args(&ufm);
    a.certificate = None;
    // No CA configured: the system trust store does not know the mock's CA (and a machine
    // without a trust store refuses to build the client at all).
    let settings = UfmSettings::from_args(&a).unwrap();
    match UfmClient::new(&settings) {
        Ok(c) => {
            let e = c.version().await.unwrap_err();
            assert_eq!(e.reason(), FabricReason::UfmTls, "{e}");
            assert!(e.to_string().contains("system trust store"), "{e}");
        }
        Err(e) => assert!(e.to_string().starts_with("UFM_CERTIFICATE: is not set and the system trust store"), "{e}"),
    }
    a.insecure_skip_verify = "true".into();
    assert_eq!(client(&a).version().await.unwrap(), "6.19.0-7");
    // Insecure mode also overrides a wrong CA (and says so in the log).
    a.certificate = Some(other_ca());
    assert!(client(&a).version().await.is_ok());
}

#[tokio::test]
async fn a_ca_that_does_not_load_fails_the_start_naming_the_setting() {
    let ufm = start().await;
    let mut a = args(&ufm);
    // Valid PEM armour around bytes that are not a certificate.
    a.certificate = Some("-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n".into());
    let settings = UfmSettings::from_args(&a).expect("PEM syntax is fine");
    let e = UfmClient::new(&settings).err().expect("the client refuses it");
    assert_eq!(e.reason(), FabricReason::UfmConfig);
    assert!(e.to_string().starts_with("UFM_CERTIFICATE/UFM_CA_FILE: certificate 1 is not a usable CA"), "{e}");
    let observer = std::sync::Arc::new(fabric_sync::ufm::NoopObserver);
    assert!(fabric_sync::ufm::from_settings(&settings, observer).is_err());
}

#[tokio::test]
async fn token_auth_goes_to_v3_with_basic_token_header() {
    let ufm = start_with(Config { tokens: vec!["t0ken-abc".into()], ..Config::default() }).await;
    let mut a = args(&ufm);
    a.username = None;
    a.password = None;
    a.token = Some(fabric_sync::config::Secret::new("t0ken-abc"));
    let c = client(&a);
    c.version().await.unwrap();
    let log = ufm.requests();
    assert_eq!(lines(&log), ["GET /ufmRestV3/app/ufm_version"]);
    assert_eq!((log[0].auth, log[0].status), (AuthKind::Token, Some(200)));

    a.token = Some(fabric_sync::config::Secret::new("revoked-or-wrong"));
    let e = client(&a).version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmUnauthorized);
    assert!(e.to_string().contains("UFM_TOKEN"), "{e}");
}

#[tokio::test]
async fn a_client_certificate_authenticates_without_an_authorization_header() {
    let clients = TestPki::new("UFM client CA").unwrap();
    let ufm = start_with(Config {
        client_auth: Some(ClientAuth { ca_pem: clients.ca_pem().to_string(), required: true }),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let issued = clients.issue_client("fabric-sync").unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();

    let mut a = args(&ufm);
    a.username = None;
    a.password = None;
    a.client_cert = Some(cert);
    a.client_key = Some(key.clone());
    client(&a).add_guids(&fabric_sync::ib::PartitionSpec::new(pkey(5)), &[guid(0x0200_0000_0000_0001)]).await.unwrap();
    let log = ufm.requests();
    assert_eq!(lines(&log), ["POST /ufmRest/resources/pkeys"]);
    assert_eq!((log[0].auth, log[0].status), (AuthKind::ClientCert, Some(200)));

    // Without the certificate, the server refuses the handshake.
    let e = client(&args(&ufm)).version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmTls, "{e}");
    assert!(e.to_string().contains("UFM_CLIENT_CERT_FILE"), "{e}");

    // A key file that holds no key is a start-up error naming the setting.
    std::fs::write(&key, "not a key").unwrap();
    let settings = UfmSettings::from_args(&a).unwrap();
    let e = UfmClient::new(&settings).err().unwrap();
    assert!(e.to_string().starts_with("UFM_CLIENT_KEY_FILE:"), "{e}");
}

#[tokio::test]
async fn a_scheme_that_does_not_match_the_port_is_named() {
    let plain = start_with(Config { tls: TlsMode::Plain, ..Config::default() }).await;
    let e = client(&args(&plain)).version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmTls, "{e}");
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
    let mut a = args(&plain);
    a.scheme = Some("http".into());
    assert!(client(&a).version().await.is_ok());

    let tls = start().await;
    let mut a = args(&tls);
    a.scheme = Some("http".into());
    a.max_attempts = "1".into();
    let e = client(&a).version().await.unwrap_err();
    assert!(e.to_string().contains("set UFM_HTTP_SCHEMA=https"), "{e}");
}
