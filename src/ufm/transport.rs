//! HTTP to UFM: the reqwest client (rustls, verified TLS unless told otherwise, optional client
//! certificate, timeouts, no redirects), authentication per request from the credentials in
//! force, retries of transient failures, and the metrics hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{FailureContext, Op, Trust, UfmError, excerpt, from_transport};
use super::metrics::{NoopObserver, UfmCounters, UfmObserver};
use crate::config::{ConfigError, CredentialSource, UfmAuth, UfmScheme, UfmSettings};

/// Default pause before the first retry; doubles (with jitter) up to [`MAX_RETRY_DELAY`].
pub(crate) const MIN_RETRY_DELAY: Duration = Duration::from_millis(500);
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// One request, described independently of the API prefix (which depends on the credentials).
pub(crate) struct Call<'a> {
    pub op: Op,
    pub method: Method,
    /// Path below the API prefix, e.g. `/resources/pkeys`.
    pub path: String,
    pub query: Option<&'static str>,
    pub body: Option<Vec<u8>>,
    /// Non-2xx statuses the caller interprets itself (e.g. 404 meaning "absent").
    pub accept: &'a [u16],
}

/// A UFM answer with a 2xx status or one the caller accepted.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

pub(crate) struct Transport {
    http: reqwest::Client,
    base: String,
    target: String,
    credentials: CredentialSource,
    pub(crate) max_attempts: usize,
    pub(crate) retry_delays: (Duration, Duration),
    request_timeout: Duration,
    connect_timeout: Duration,
    pub(crate) trust: Trust,
    pub(crate) observer: Arc<dyn UfmObserver>,
    pub(crate) counters: Arc<UfmCounters>,
}

impl Transport {
    pub fn new(s: &UfmSettings) -> Result<Transport, UfmError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            // A redirect would carry credentials elsewhere; UFM does not redirect its API.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fabric-sync/", env!("CARGO_PKG_VERSION")))
            // Below Apache's default KeepAliveTimeout (5 s), so a pooled connection is not
            // reused just as UFM's Apache closes it.
            .pool_idle_timeout(Duration::from_secs(4));
        let mut trust = Trust::Nothing;
        if s.scheme == UfmScheme::Https {
            trust = if s.insecure_skip_verify {
                tracing::warn!(
                    ufm = %s.base_url(),
                    "UFM_INSECURE_SKIP_VERIFY=true: UFM's TLS certificate is NOT verified; anyone on the path can read the UFM credentials"
                );
                if s.ca_pem.is_some() {
                    tracing::warn!("UFM_CERTIFICATE/UFM_CA_FILE is ignored because UFM_INSECURE_SKIP_VERIFY=true");
                }
                b = b.tls_danger_accept_invalid_certs(true);
                Trust::Nothing
            } else if let Some(pem) = &s.ca_pem {
                b = b.tls_certs_only(ca_certificates(pem)?);
                Trust::Ca("UFM_CERTIFICATE/UFM_CA_FILE".into())
            } else {
                Trust::SystemRoots
            };
            if let Some((cert, key)) = &s.client_cert {
                b = b.identity(client_identity(cert, key)?);
            }
        } else {
            tracing::warn!(
                ufm = %s.base_url(),
                "UFM_HTTP_SCHEMA=http: credentials and partition changes travel unencrypted"
            );
            if s.ca_pem.is_some() || s.client_cert.is_some() || s.insecure_skip_verify {
                tracing::warn!(
                    "TLS settings (CA, client certificate, insecure mode) are ignored with UFM_HTTP_SCHEMA=http"
                );
            }
        }
        let http = b.build().map_err(|e| match trust {
            // The platform verifier loads the system roots now and fails if there are none.
            Trust::SystemRoots => UfmError::Config {
                setting: "UFM_CERTIFICATE",
                detail: format!(
                    "is not set and the system trust store cannot be used ({}): set UFM_CERTIFICATE or UFM_CA_FILE to the CA that signed UFM's certificate",
                    error_chain(&e)
                ),
            },
            _ => UfmError::Config {
                setting: "UFM TLS settings (UFM_CERTIFICATE, UFM_CA_FILE, UFM_CLIENT_CERT_FILE)",
                detail: format!("the HTTP client refused them: {}", error_chain(&e)),
            },
        })?;
        let target = s.base_url().split("://").nth(1).unwrap_or_default().to_string();
        Ok(Transport {
            http,
            base: s.base_url(),
            target,
            credentials: s.credentials.clone(),
            max_attempts: s.max_attempts.max(1),
            retry_delays: (MIN_RETRY_DELAY, MAX_RETRY_DELAY),
            request_timeout: s.request_timeout,
            connect_timeout: s.connect_timeout,
            trust,
            observer: Arc::new(NoopObserver),
            counters: Arc::new(UfmCounters::default()),
        })
    }

    /// `scheme://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends `call`, retrying transient failures up to `max_attempts` attempts in all.
    pub async fn send(&self, call: &Call<'_>) -> Result<Answer, UfmError> {
        let attempt = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.retry_delays.0)
            .with_max_delay(self.retry_delays.1)
            .with_max_times(self.max_attempts.saturating_sub(1));
        (|| self.attempt(call, attempt.fetch_add(1, Ordering::Relaxed) + 1))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(UfmError::is_transient)
            .notify(|e: &UfmError, after: Duration| {
                tracing::warn!(
                    op = call.op.as_str(),
                    reason = e.reason().as_str(),
                    error = %e,
                    retry_in_ms = after.as_millis() as u64,
                    "UFM request failed; retrying"
                );
            })
            .await
    }

    async fn attempt(&self, call: &Call<'_>, attempt: u32) -> Result<Answer, UfmError> {
        let started = Instant::now();
        let result = self.exchange(call).await;
        let elapsed = started.elapsed();
        let status = match &result {
            Ok(a) => a.status.to_string(),
            Err(e) => e.status_label(),
        };
        self.observer.request_done(call.op.as_str(), &status, elapsed);
        self.counters.record(call.op, result.is_err());
        tracing::debug!(
            op = call.op.as_str(),
            method = %call.method,
            path = %call.path,
            status = %status,
            attempt,
            elapsed_ms = elapsed.as_millis() as u64,
            "UFM request"
        );
        result
    }

    async fn exchange(&self, call: &Call<'_>) -> Result<Answer, UfmError> {
        let creds = self.credentials.current().map_err(UfmError::Credentials)?;
        let (prefix, who, secrets) = describe(&creds.auth);
        let query = call.query.map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{}{prefix}{}{query}", self.base, call.path);
        let mut rb = self.http.request(call.method.clone(), url).header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            rb = rb.header(CONTENT_TYPE, "application/json").body(body.clone());
        }
        match &creds.auth {
            UfmAuth::Basic { username, password } => rb = rb.basic_auth(username, Some(password.expose())),
            UfmAuth::Token(token) => {
                // UFM's token scheme is literally "Basic <token>" on /ufmRestV3.
                let mut value = HeaderValue::from_str(&format!("Basic {}", token.expose())).map_err(|_| {
                    UfmError::Credentials(ConfigError::new(
                        "UFM_TOKEN",
                        "ufm-token",
                        "holds characters not allowed in an HTTP header (a pasted newline or quote?)",
                    ))
                })?;
                value.set_sensitive(true);
                rb = rb.header(AUTHORIZATION, value);
            }
            UfmAuth::ClientCertificate => {}
        }
        let cx = FailureContext {
            op: call.op,
            target: &self.target,
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            trust: &self.trust,
        };
        let resp = rb.send().await.map_err(|e| from_transport(&e, &cx))?;
        let status = resp.status();
        let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.bytes().await.map_err(|e| from_transport(&e, &cx))?.to_vec();
        if status.is_success() || call.accept.contains(&status.as_u16()) {
            return Ok(Answer { status: status.as_u16(), body });
        }
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        Err(status_error(call.op, status, &body, who, location, &secrets))
    }
}

/// API prefix, who is asking (for messages) and the secret strings an answer must not echo.
fn describe(auth: &UfmAuth) -> (&'static str, String, Vec<String>) {
    use base64::Engine;
    match auth {
        UfmAuth::Basic { username, password } => {
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
            ("/ufmRest", format!("user {username}"), vec![password.expose().to_string(), pair])
        }
        UfmAuth::Token(t) => ("/ufmRestV3", "the access token".into(), vec![t.expose().to_string()]),
        UfmAuth::ClientCertificate => ("/ufmRest", "the client certificate".into(), Vec::new()),
    }
}

fn status_error(
    op: Op,
    status: StatusCode,
    body: &[u8],
    who: String,
    location: Option<String>,
    secrets: &[&str],
) -> UfmError {
    let answer = excerpt(body, secrets);
    let code = status.as_u16();
    match code {
        401 => {
            let hint = if who.starts_with("user ") {
                "check UFM_USERNAME/UFM_PASSWORD"
            } else if who.contains("token") {
                "check UFM_TOKEN (revoked, expired or from another UFM?)"
            } else {
                "check that UFM maps this certificate to a user (manage_client_authentication.sh) and UFM_CLIENT_CERT_FILE"
            };
            UfmError::Unauthorized { op, who, hint, answer }
        }
        403 => UfmError::Forbidden { op, who, answer },
        300..=399 => {
            UfmError::Redirected { op, status: code, location: location.unwrap_or_else(|| "(nowhere)".into()) }
        }
        408 | 429 | 500..=599 => UfmError::Unavailable { op, status: code, answer },
        _ => UfmError::Rejected { op, status: code, answer },
    }
}

/// The CA bundle, checked certificate by certificate so that a bad one is named.
fn ca_certificates(pem: &str) -> Result<Vec<reqwest::Certificate>, UfmError> {
    const SETTING: &str = "UFM_CERTIFICATE/UFM_CA_FILE";
    let mut store = rustls::RootCertStore::empty();
    for (n, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let der = der.map_err(|e| UfmError::Config {
            setting: SETTING,
            detail: format!("PEM block {} does not parse ({e})", n + 1),
        })?;
        store.add(der).map_err(|e| UfmError::Config {
            setting: SETTING,
            detail: format!("certificate {} is not a usable CA certificate ({e})", n + 1),
        })?;
    }
    if store.is_empty() {
        return Err(UfmError::Config { setting: SETTING, detail: "holds no PEM certificate".into() });
    }
    reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| UfmError::Config { setting: SETTING, detail: format!("not accepted: {}", error_chain(&e)) })
}

/// The client certificate chain and key for mutual TLS.
fn client_identity(cert: &std::path::Path, key: &std::path::Path) -> Result<reqwest::Identity, UfmError> {
    let read = |setting: &'static str, path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| UfmError::Config { setting, detail: format!("cannot read {}: {e}", path.display()) })
    };
    let cert_pem = read("UFM_CLIENT_CERT_FILE", cert)?;
    let key_pem = read("UFM_CLIENT_KEY_FILE", key)?;
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| {
        UfmError::Config { setting: "UFM_CLIENT_CERT_FILE", detail: format!("{} does not parse ({e})", cert.display()) }
    })?;
    if certs.is_empty() {
        return Err(UfmError::Config {
            setting: "UFM_CLIENT_CERT_FILE",
            detail: format!("{} holds no PEM certificate", cert.display()),
        });
    }
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| UfmError::Config {
        setting: "UFM_CLIENT_KEY_FILE",
        detail: format!("{} holds no usable unencrypted private key ({e})", key.display()),
    })?;
    reqwest::Identity::from_pem(format!("{}\n{}", cert_pem.trim_end(), key_pem).as_bytes()).map_err(|e| {
        UfmError::Config { setting: "UFM_CLIENT_CERT_FILE", detail: format!("not accepted: {}", error_chain(&e)) }
    })
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut current = e.source();
    while let Some(s) = current {
        parts.push(s.to_string());
        current = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::engine::{ErrorClass, FabricReason};

    #[test]
    fn statuses_map_to_kinds_without_echoing_secrets() {
        let body = b"<html><title>401 Unauthorized</title>pw=hunter2</html>";
        let e = status_error(Op::Version, StatusCode::UNAUTHORIZED, body, "user admin".into(), None, &["hunter2"]);
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("check UFM_USERNAME/UFM_PASSWORD"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(e.class(), ErrorClass::Auth);
        let e = status_error(Op::AddGuids, StatusCode::SERVICE_UNAVAILABLE, b"", "x".into(), None, &[]);
        assert_eq!((e.reason(), e.class()), (FabricReason::UfmUnavailable, ErrorClass::Transient));
        let e = status_error(Op::AddGuids, StatusCode::TOO_MANY_REQUESTS, b"", "x".into(), None, &[]);
        assert_eq!(e.class(), ErrorClass::Transient);
        let e = status_error(Op::AddGuids, StatusCode::FORBIDDEN, b"", "user viewer".into(), None, &[]);
        assert_eq!((e.reason(), e.class()), (FabricReason::UfmForbidden, ErrorClass::Auth));
        let e = status_error(Op::AddGuids, StatusCode::BAD_REQUEST, br#"{"error":"bad guid"}"#, "x".into(), None, &[]);
        assert_eq!((e.reason(), e.class()), (FabricReason::UfmRejected, ErrorClass::Permanent));
        assert!(e.to_string().ends_with("400: bad guid"), "{e}");
        let e = status_error(Op::Version, StatusCode::FOUND, b"", "x".into(), Some("https://sso/login".into()), &[]);
        assert_eq!(e.reason(), FabricReason::UfmRedirected);
    }

    #[test]
    fn token_auth_uses_the_v3_prefix_and_client_certificates_send_no_secret() {
        let (prefix, _, secrets) = describe(&UfmAuth::Token(Secret::new("tok")));
        assert_eq!((prefix, secrets), ("/ufmRestV3", vec!["tok".to_string()]));
        let (prefix, who, secrets) = describe(&UfmAuth::ClientCertificate);
        assert_eq!((prefix, who.as_str()), ("/ufmRest", "the client certificate"));
        assert!(secrets.is_empty());
    }

    #[test]
    fn a_ca_that_is_not_a_certificate_is_refused_by_name() {
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = ca_certificates(bogus).unwrap_err();
        assert_eq!(e.reason(), FabricReason::UfmConfig);
        assert!(e.to_string().starts_with("UFM_CERTIFICATE/UFM_CA_FILE: certificate 1"), "{e}");
        assert!(ca_certificates("nothing here").unwrap_err().to_string().contains("no PEM certificate"));
    }
}
