//! Credentials never leak: every log line at TRACE level (ours, reqwest's, hyper's, rustls'
//! through the `log` bridge, the mock's) of failing runs, and every error's Display and Debug,
//! are searched for the password, the Basic header value and the token.
//!
//! This binary holds one test because it installs a process-wide subscriber.

mod ufm_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use fabric_sync::config::Secret;
use fabric_sync::engine::{FabricError, FabricReason};
use fabric_sync::ib::PartitionSpec;
use mock_ufm::FaultRule;
use ufm_support::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SECRET_PW: &str = "Sup3r-S3cret-pw!";
const SECRET_TOKEN: &str = "tok-9f8e7d6c5b4a";

#[tokio::test]
async fn no_credential_appears_in_logs_or_errors() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber in this test binary");

    let ufm = start().await;
    let mut shown = Vec::new();

    // Wrong password: 401.
    let mut a = args(&ufm);
    a.password = Some(Secret::new(SECRET_PW));
    let e = client(&a).version().await.unwrap_err();
    assert_eq!(e.reason(), FabricReason::UfmUnauthorized);
    shown.push(format!("{e} {e:?}"));
    shown.push(format!("{:?}", FabricError::from(e)));

    // Right password that is also ours to hide, through an outage, retries and a timeout.
    let ufm2 = start_with(mock_ufm::Config { ..Default::default() }).await;
    ufm2.add_fault(FaultRule::error_rate(1.0, &[503]).times(2));
    let mut b = args(&ufm2);
    b.request_timeout = "300ms".into();
    let c = client(&b);
    c.add_guids(&PartitionSpec::new(pkey(5)), &[guid(0x0200_0000_0000_0001)]).await.unwrap();
    ufm2.add_fault(FaultRule::hang().times(1));
    b.max_attempts = "1".into();
    let e = client(&b).list_pkeys().await.unwrap_err();
    shown.push(format!("{e} {e:?}"));

    // A token that UFM does not know.
    let mut t = args(&ufm);
    t.username = None;
    t.password = None;
    t.token = Some(Secret::new(SECRET_TOKEN));
    let e = client(&t).version().await.unwrap_err();
    shown.push(format!("{e} {e:?}"));
    shown.push(format!("{a:?} {t:?}"));

    // Insecure mode is announced when the client is built.
    let mut insecure = args(&ufm);
    insecure.insecure_skip_verify = "true".into();
    client(&insecure).version().await.unwrap();

    // Every line above was logged by a request this task awaited: the buffer holds them all.
    let logs = String::from_utf8_lossy(&buffer.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(logs.contains("UFM request"), "our request lines were captured");
    assert!(logs.contains("TRACE"), "TRACE-level lines were captured");
    assert!(logs.contains("retrying"), "the retry warnings were captured");
    assert!(
        logs.contains("WARN") && logs.contains("UFM's TLS certificate is NOT verified"),
        "insecure mode is warned about"
    );

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET_PW}"));
    let basic_right = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for needle in [SECRET_PW, basic.as_str(), SECRET_TOKEN, PASSWORD, basic_right.as_str()] {
        assert!(!logs.contains(needle), "{needle:?} appears in the logs");
        for s in &shown {
            assert!(!s.contains(needle), "{needle:?} appears in {s}");
        }
    }
}
