//! Shared helpers: start a mock over real TLS and talk to it with reqwest trusting only its CA.

use std::time::Duration;

use mock_ufm::{Config, Issued, MockUfm};
use reqwest::{Certificate, Client, Identity, Method, StatusCode};
use serde_json::Value;

pub const USER: &str = "admin";
pub const PASS: &str = "123456";

pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub async fn start(config: Config) -> MockUfm {
    install_provider();
    MockUfm::start(config).await.unwrap()
}

/// A client trusting only the mock's CA, optionally presenting a client certificate.
pub fn client_for(ufm: &MockUfm, identity: Option<&Issued>, timeout: Duration) -> Client {
    let mut b = Client::builder().timeout(timeout);
    if let Some(ca) = ufm.ca_pem() {
        b = b.tls_certs_only([Certificate::from_pem(ca.as_bytes()).unwrap()]);
    }
    if let Some(id) = identity {
        b = b.identity(Identity::from_pem(id.identity_pem().as_bytes()).unwrap());
    }
    b.build().unwrap()
}

pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.text)).to_string()
    }

    pub fn is_html(&self) -> bool {
        self.content_type.starts_with("text/html") && self.text.contains("<html>")
    }
}

/// A running mock plus a client authenticated as the admin on `/ufmRest`.
pub struct Harness {
    pub ufm: MockUfm,
    pub http: Client,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Config::default()).await
    }

    pub async fn with(config: Config) -> Harness {
        let ufm = start(config).await;
        let http = client_for(&ufm, None, Duration::from_secs(10));
        Harness { ufm, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.ufm.url())
    }

    /// Sends with Basic admin credentials; `path` is relative to `/ufmRest`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method, self.url(&format!("/ufmRest{path}"))).basic_auth(USER, Some(PASS));
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn get_ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        r.json()
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    /// Admin API call (no auth).
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.unwrap()).await
    }
}

pub async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status();
    let content_type =
        r.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = r.text().await.unwrap();
    Resp { status, content_type, text }
}

/// Polls `check` every 20 ms until it holds; fails after 10 s (a hang, not a timing assertion).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

pub fn guid(n: u64) -> String {
    format!("{n:016x}")
}
