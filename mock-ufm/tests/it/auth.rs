//! Authentication paths (Basic, tokens, client certificates, viewers) and TLS verification.

use std::time::Duration;

use mock_ufm::{AuthKind, ClientAuth, Config, TestPki, TlsMode};
use reqwest::{Certificate, Client, StatusCode};
use serde_json::{Value, json};

use crate::common::{Harness, PASS, USER, client_for, into_resp, start};

const VERSION: &str = "/app/ufm_version";

#[tokio::test]
async fn basic_auth_good_bad_and_missing() {
    let h = Harness::start().await;
    let url = h.url(&format!("/ufmRest{VERSION}"));
    let good = h.http.get(&url).basic_auth(USER, Some(PASS)).send().await.unwrap();
    assert_eq!(good.status(), StatusCode::OK);

    for req in [
        h.http.get(&url).basic_auth(USER, Some("wrong")),
        h.http.get(&url).basic_auth("nobody", Some(PASS)),
        h.http.get(&url).header("Authorization", "Bearer abc"),
        h.http.get(&url),
    ] {
        let r = req.send().await.unwrap();
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        let r = into_resp(r).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.is_html(), "{}", r.text);
        assert!(r.text.contains("401 Unauthorized"));
    }
    let kinds: Vec<(AuthKind, Option<u16>)> = h.ufm.requests().iter().map(|r| (r.auth, r.status)).collect();
    assert_eq!(
        kinds,
        vec![
            (AuthKind::Basic, Some(200)),
            (AuthKind::Basic, Some(401)),
            (AuthKind::Basic, Some(401)),
            (AuthKind::Basic, Some(401)),
            (AuthKind::None, Some(401)),
        ]
    );
    assert_eq!(h.ufm.requests()[0].user.as_deref(), Some("admin"));
}

#[tokio::test]
async fn configured_tokens_work_only_on_ufm_rest_v3() {
    let h = Harness::with(Config { tokens: vec!["static-token".into()], ..Default::default() }).await;
    let v3 = h.url(&format!("/ufmRestV3{VERSION}"));
    let get = |auth: Option<&str>| {
        let mut r = h.http.get(&v3);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    assert_eq!(get(Some("Basic static-token")).await.unwrap().status(), 200);
    assert_eq!(get(Some("Basic other-token")).await.unwrap().status(), 401);
    assert_eq!(get(Some("Bearer static-token")).await.unwrap().status(), 401);
    assert_eq!(get(None).await.unwrap().status(), 401);
    let userpass = h.http.get(&v3).basic_auth(USER, Some(PASS)).send().await.unwrap();
    assert_eq!(userpass.status(), 401, "user:password is not a token");
    let on_v1 = h
        .http
        .get(h.url(&format!("/ufmRest{VERSION}")))
        .header("Authorization", "Basic static-token")
        .send()
        .await
        .unwrap();
    assert_eq!(on_v1.status(), 401, "a token is not user:password");
    assert!(h.ufm.requests().iter().take(3).all(|r| r.auth == AuthKind::Token));
}

#[tokio::test]
async fn tokens_created_through_the_api_authenticate_until_revoked() {
    let h = Harness::start().await;
    let created = h.post("/app/tokens", json!({})).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let t = created.json();
    let token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(t["revoked"], false);
    assert_eq!(t["username"], "admin");
    assert!(t["expires_in"].as_u64().unwrap() > 0);
    assert!(t["issued_at"].is_string());

    let listed = h.get_ok("/app/tokens").await;
    assert!(listed.as_array().unwrap().iter().any(|x| x["access_token"] == token.as_str()));

    let v3 = h.url("/ufmRestV3/resources/pkeys");
    let with_token = || h.http.get(&v3).header("Authorization", format!("Basic {token}")).send();
    assert_eq!(with_token().await.unwrap().status(), 200);

    let revoke = h
        .http
        .post(h.url("/ufmRest/app/tokens/revoke"))
        .basic_auth(USER, Some(PASS))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    assert_eq!(with_token().await.unwrap().status(), 401);
    let unknown = h
        .http
        .post(h.url("/ufmRest/app/tokens/revoke"))
        .basic_auth(USER, Some(PASS))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn viewers_may_read_but_writes_are_forbidden() {
    let h = Harness::with(Config { viewers: vec![("guest".into(), "guest".into())], ..Default::default() }).await;
    let read = h.http.get(h.url("/ufmRest/resources/pkeys")).basic_auth("guest", Some("guest")).send().await.unwrap();
    assert_eq!(read.status(), 200);
    for path in ["/ufmRest/resources/pkeys", "/ufmRest/app/tokens"] {
        let r = h
            .http
            .post(h.url(path))
            .basic_auth("guest", Some("guest"))
            .json(&json!({"pkey": "0x5", "guids": ["0000000000000001"]}))
            .send()
            .await
            .unwrap();
        let r = into_resp(r).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.is_html() && r.text.contains("403 Forbidden"));
    }
    assert_eq!(h.ufm.snapshot().len(), 1);
}

async fn mtls_mock(required: bool) -> (mock_ufm::MockUfm, TestPki) {
    let clients = TestPki::new("fabric-sync client CA").unwrap();
    let ufm = start(Config {
        client_auth: Some(ClientAuth { ca_pem: clients.ca_pem().to_string(), required }),
        ..Default::default()
    })
    .await;
    (ufm, clients)
}

#[tokio::test]
async fn a_client_certificate_authenticates_on_ufm_rest_without_a_header() {
    let (ufm, clients) = mtls_mock(false).await;
    let id = clients.issue_client("fabric-sync").unwrap();
    let with_cert = client_for(&ufm, Some(&id), Duration::from_secs(10));
    let url = format!("{}/ufmRest{VERSION}", ufm.url());
    assert_eq!(with_cert.get(&url).send().await.unwrap().status(), 200);
    let log = ufm.requests();
    assert_eq!(log[0].auth, AuthKind::ClientCert);
    assert_eq!(log[0].user.as_deref(), Some("admin"));

    // A bad header alongside a good certificate is still refused.
    let bad = with_cert.get(&url).basic_auth(USER, Some("wrong")).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    // The token API wants a token even with a certificate.
    let v3 = with_cert.get(format!("{}/ufmRestV3{VERSION}", ufm.url())).send().await.unwrap();
    assert_eq!(v3.status(), 401);
    // Without a certificate a request needs a header again; Basic auth still works.
    let plain = client_for(&ufm, None, Duration::from_secs(10));
    assert_eq!(plain.get(&url).send().await.unwrap().status(), 401);
    let basic = plain.get(&url).basic_auth(USER, Some(PASS)).send().await.unwrap();
    assert_eq!(basic.status(), 200);
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let (ufm, _clients) = mtls_mock(false).await;
    let stranger = TestPki::new("someone else").unwrap();
    let id = stranger.issue_client("fabric-sync").unwrap();
    let c = client_for(&ufm, Some(&id), Duration::from_secs(10));
    let err = c.get(format!("{}/ufmRest{VERSION}", ufm.url())).basic_auth(USER, Some(PASS)).send().await.unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    assert!(ufm.requests().is_empty());
}

#[tokio::test]
async fn required_client_certificates_refuse_anonymous_handshakes() {
    let (ufm, clients) = mtls_mock(true).await;
    let url = format!("{}/ufmRest{VERSION}", ufm.url());
    let anonymous = client_for(&ufm, None, Duration::from_secs(10));
    let err = anonymous.get(&url).basic_auth(USER, Some(PASS)).send().await.unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    let id = clients.issue_client("fabric-sync").unwrap();
    let ok = client_for(&ufm, Some(&id), Duration::from_secs(10));
    assert_eq!(ok.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_server_certificate_is_verified_against_the_ca_and_hostname() {
    let h = Harness::start().await;
    let url = h.url(&format!("/ufmRest{VERSION}"));
    // Trusting only the mock CA works for 127.0.0.1 and localhost.
    assert_eq!(h.http.get(&url).basic_auth(USER, Some(PASS)).send().await.unwrap().status(), 200);
    let ca = Certificate::from_pem(h.ufm.ca_pem().unwrap().as_bytes()).unwrap();
    let by_name = Client::builder().tls_certs_only([ca.clone()]).resolve("localhost", h.ufm.addr()).build().unwrap();
    let local = format!("https://localhost:{}/ufmRest{VERSION}", h.ufm.addr().port());
    assert_eq!(by_name.get(&local).basic_auth(USER, Some(PASS)).send().await.unwrap().status(), 200);
    // Another CA is not trusted.
    let other = TestPki::new("other").unwrap();
    let wrong_ca =
        Client::builder().tls_certs_only([Certificate::from_pem(other.ca_pem().as_bytes()).unwrap()]).build().unwrap();
    assert!(wrong_ca.get(&url).send().await.unwrap_err().is_connect());
}

#[tokio::test]
async fn a_certificate_for_another_hostname_fails_verification() {
    let ufm = start(Config {
        tls: TlsMode::SelfSigned { sans: vec!["ufm.example.net".into()], write_dir: None },
        ..Default::default()
    })
    .await;
    let c = client_for(&ufm, None, Duration::from_secs(10));
    let url = format!("{}/ufmRest{VERSION}", ufm.url());
    let err = c.get(&url).basic_auth(USER, Some(PASS)).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The same certificate is fine for the name it was made for.
    let ca = Certificate::from_pem(ufm.ca_pem().unwrap().as_bytes()).unwrap();
    let named = Client::builder().tls_certs_only([ca]).resolve("ufm.example.net", ufm.addr()).build().unwrap();
    let r = named
        .get(format!("https://ufm.example.net:{}/ufmRest{VERSION}", ufm.addr().port()))
        .basic_auth(USER, Some(PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["ufm_release_version"], "6.19.0-7");
}

#[tokio::test]
async fn supplied_pem_certificates_are_served() {
    let pki = TestPki::new("my CA").unwrap();
    let leaf = pki.issue_server(&["127.0.0.1".to_string()]).unwrap();
    let ufm = start(Config {
        tls: TlsMode::Pem {
            cert_chain_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            ca_pem: Some(pki.ca_pem().to_string()),
        },
        ..Default::default()
    })
    .await;
    assert_eq!(ufm.ca_pem().as_deref(), Some(pki.ca_pem()));
    let c = client_for(&ufm, None, Duration::from_secs(10));
    let r = c.get(format!("{}/ufmRest{VERSION}", ufm.url())).basic_auth(USER, Some(PASS)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
