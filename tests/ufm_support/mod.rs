//! Shared helpers for the UFM client tests: an in-process mock UFM over TLS on loopback and
//! settings that point fabric-sync's client at it.
#![allow(dead_code)]

use std::time::Duration;

use fabric_sync::config::{Secret, UfmArgs, UfmSettings};
use fabric_sync::ib::{Guid, PKey};
use fabric_sync::ufm::UfmClient;
use mock_ufm::{Config, MockUfm, RequestRecord};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "mock-pw-51";

/// A mock UFM with TLS (self-signed CA, SANs localhost and 127.0.0.1) and our test password.
pub async fn start() -> MockUfm {
    start_with(Config::default()).await
}

pub async fn start_with(config: Config) -> MockUfm {
    fabric_sync::install_crypto_provider();
    let config = Config { password: PASSWORD.into(), fault_seed: Some(7), ..config };
    MockUfm::start(config).await.expect("mock UFM starts")
}

/// Settings for `ufm`: its address and port, trusting only its CA, Basic auth.
pub fn args(ufm: &MockUfm) -> UfmArgs {
    UfmArgs {
        address: Some(ufm.addr().ip().to_string()),
        port: Some(ufm.addr().port().to_string()),
        username: Some(USER.into()),
        password: Some(Secret::new(PASSWORD)),
        certificate: ufm.ca_pem(),
        connect_timeout: "2s".into(),
        request_timeout: "5s".into(),
        ..UfmArgs::default()
    }
}

/// A client with short retry pauses (attempts are counted, never timed).
pub fn client(args: &UfmArgs) -> UfmClient {
    let settings = UfmSettings::from_args(args).expect("settings are valid");
    UfmClient::new(&settings)
        .expect("client builds")
        .with_retry_delays(Duration::from_millis(5), Duration::from_millis(20))
}

pub fn guid(v: u64) -> Guid {
    Guid::new(v).expect("test GUIDs are valid")
}

pub fn pkey(v: u16) -> PKey {
    PKey::new(v).expect("test pkeys are valid")
}

/// `method path` of every logged request, e.g. `POST /ufmRest/resources/pkeys`.
pub fn lines(log: &[RequestRecord]) -> Vec<String> {
    log.iter()
        .map(|r| match &r.query {
            Some(q) => format!("{} {}?{q}", r.method, r.path),
            None => format!("{} {}", r.method, r.path),
        })
        .collect()
}
