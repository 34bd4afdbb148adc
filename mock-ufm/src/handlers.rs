//! The UFM REST endpoints, as served under both `/ufmRest` and `/ufmRestV3`. Requests arrive
//! here already authenticated (see [`crate::pipeline`]); paths are relative to the API prefix.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;

use crate::app::App;
use crate::auth::Principal;
use crate::pages;
use crate::ports;
use crate::state::{PKey, StateError};
use crate::wire::{self, ReadFlags, WireError};

/// Largest request body accepted (100k GUIDs fit comfortably).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a UFM request failed; answered as JSON `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::State(StateError::NotFound(_))
            | ApiError::Wire(WireError::State(StateError::NotFound(_)))
            | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.to_string() }).to_string();
        json_response(self.status(), body.into_bytes())
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

fn ok_json(body: Vec<u8>) -> Response {
    json_response(StatusCode::OK, body)
}

fn ok_empty() -> Response {
    ok_json(b"{}".to_vec())
}

/// The router for one API prefix (mounted by the pipeline after stripping it).
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/app/ufm_version", get(version))
        .route("/app/tokens", get(list_tokens).post(create_token))
        .route("/app/tokens/", get(list_tokens).post(create_token))
        .route("/app/tokens/revoke", post(revoke_token))
        .route("/resources/pkeys", get(list_pkeys).post(add_guids).put(set_guids))
        .route("/resources/pkeys/", get(list_pkeys).post(add_guids).put(set_guids))
        .route("/resources/pkeys/last_updated", get(last_updated))
        .route("/resources/pkeys/qos_conf", put(update_qos))
        .route("/resources/pkeys/add", post(create_empty))
        .route("/resources/pkeys/{pkey}", get(get_pkey).delete(delete_pkey))
        .route("/resources/pkeys/{pkey}/guids/{guids}", delete(remove_guids_path))
        .route("/actions/remove_guids_from_pkey", post(remove_guids_legacy))
        .route("/resources/ports", get(list_ports))
        .route("/resources/ports/", get(list_ports))
        .fallback(|| async { pages::response(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { pages::response(StatusCode::METHOD_NOT_ALLOWED) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn version(State(app): State<Arc<App>>) -> Response {
    let v = app.settings().ufm_version;
    ok_json(json!({ "ufm_release_version": v }).to_string().into_bytes())
}

async fn list_tokens(State(app): State<Arc<App>>) -> Response {
    let tokens = app.creds().tokens();
    ok_json(serde_json::to_vec(&tokens).unwrap_or_default())
}

async fn create_token(State(app): State<Arc<App>>, Extension(who): Extension<Principal>) -> Response {
    let token = app.issue_token(&who.user);
    ok_json(serde_json::to_vec(&token).unwrap_or_default())
}

/// The `token` field of a multipart, URL-encoded or JSON body.
fn token_field(content_type: &str, body: &str) -> Option<String> {
    if content_type.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        return v.get("token")?.as_str().map(str::to_string);
    }
    if content_type.starts_with("multipart/form-data") {
        let start = body.find("name=\"token\"")?;
        let rest = &body[start..];
        let value_start = rest.find("\r\n\r\n").map(|i| i + 4)?;
        let value = &rest[value_start..];
        let end = value.find("\r\n").unwrap_or(value.len());
        return Some(value[..end].to_string());
    }
    body.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == "token").map(|(_, v)| v.to_string())
}

async fn revoke_token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(token) = token_field(ct, &String::from_utf8_lossy(&body)) else {
        return ApiError::BadRequest("missing form field `token`".to_string()).into_response();
    };
    if app.revoke_token(&token) {
        ok_empty()
    } else {
        ApiError::NotFound("token not found".to_string()).into_response()
    }
}

async fn list_pkeys(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let flags = wire::parse_flags(query.as_deref())?;
    if flags.guids_data && flags.qos_conf {
        // Real UFM returns a broken answer for this combination; refuse it loudly.
        return Err(ApiError::BadRequest(
            "guids_data and qos_conf cannot be combined when listing all pkeys".to_string(),
        ));
    }
    let f = app.fabric();
    let body = if flags == ReadFlags::default() {
        wire::render_names(f.visible())
    } else {
        wire::render_list(f.visible(), flags)
    };
    Ok(ok_json(body))
}

async fn get_pkey(
    State(app): State<Arc<App>>,
    Path(pkey): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pkey = PKey::parse(&pkey)?;
    let flags = wire::parse_flags(query.as_deref())?;
    let unknown_404 = app.settings().unknown_pkey_404;
    let f = app.fabric();
    match f.visible().get(pkey) {
        Some(p) => Ok(ok_json(wire::render_one(pkey, p, flags))),
        None if unknown_404 => Err(ApiError::NotFound(format!("pkey {pkey} not found"))),
        // UFM's usual answer for an unknown pkey.
        None => Ok(ok_empty()),
    }
}

async fn last_updated(State(app): State<Arc<App>>) -> Response {
    let value = app.last_updated();
    ok_json(json!({ "last_updated": value }).to_string().into_bytes())
}

async fn add_guids(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    app.submit(wire::parse_guids_body(&body, false)?)?;
    Ok(ok_empty())
}

async fn set_guids(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    app.submit(wire::parse_guids_body(&body, true)?)?;
    Ok(ok_empty())
}

async fn create_empty(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let m = wire::parse_create(&body)?;
    check_rate(&app, &body)?;
    app.submit(m)?;
    Ok(ok_empty())
}

async fn update_qos(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let m = wire::parse_qos(&body)?;
    check_rate(&app, &body)?;
    app.submit(m)?;
    Ok(ok_empty())
}

/// Refuses a rate limit this UFM does not support (the configured list may be shorter than
/// every rate UFM knows, which the state checks).
fn check_rate(app: &App, body: &[u8]) -> Result<(), StateError> {
    match wire::explicit_rate(body) {
        Some(rate) => crate::state::check_rate(rate, app.rate_limits()),
        None => Ok(()),
    }
}

async fn remove_guids_legacy(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    app.submit(wire::parse_remove(&body)?)?;
    Ok(ok_empty())
}

async fn remove_guids_path(
    State(app): State<Arc<App>>,
    Path((pkey, guids)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app.submit(wire::parse_guid_list(&pkey, &guids)?)?;
    Ok(ok_empty())
}

async fn delete_pkey(State(app): State<Arc<App>>, Path(pkey): Path<String>) -> Result<Response, ApiError> {
    let pkey = PKey::parse(&pkey)?;
    app.submit(crate::state::Mutation::Delete { pkey })?;
    Ok(ok_empty())
}

async fn list_ports(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let sys_type = query.as_deref().and_then(|q| {
        q.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == "sys_type").map(|(_, v)| v.to_string())
    });
    let all = app.ports();
    let selected = ports::filter(&all, sys_type.as_deref());
    ok_json(serde_json::to_vec(&selected).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_field_reads_every_form_encoding() {
        assert_eq!(token_field("application/json", r#"{"token":"abc"}"#).as_deref(), Some("abc"));
        assert_eq!(token_field("application/x-www-form-urlencoded", "x=1&token=abc").as_deref(), Some("abc"));
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nabc\r\n--b--\r\n";
        assert_eq!(token_field("multipart/form-data; boundary=b", multipart).as_deref(), Some("abc"));
        assert_eq!(token_field("text/plain", "nothing"), None);
    }

    #[test]
    fn not_found_errors_map_to_404_and_the_rest_to_400() {
        let pkey = PKey::new(5).unwrap();
        assert_eq!(ApiError::State(StateError::NotFound(pkey)).status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::State(StateError::ReadOnly(PKey::MANAGEMENT)).status(), StatusCode::BAD_REQUEST);
    }
}
