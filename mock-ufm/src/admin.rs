//! The admin API under `/mock/` (no auth, never faulted, never logged): fault injection,
//! request log, counters, state dump/restore, reset and runtime settings. See the crate docs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::{App, ResetScope, Settings};
use crate::clock::TimeFormat;
use crate::faults::{FaultRule, InstalledRule};
use crate::handlers::MAX_BODY;
use crate::persist::SavedState;
use crate::ports::Port;

/// Why an admin request was refused (400 `{"error": ...}`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no fault rule with id {0}")]
    NoSuchRule(u64),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            AdminError::Json(_) => StatusCode::BAD_REQUEST,
            AdminError::NoSuchRule(_) => StatusCode::NOT_FOUND,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    Ok(serde_json::from_slice(body)?)
}

/// `GET /mock/state`.
#[derive(Debug, Serialize)]
struct Dump {
    state: SavedState,
    last_updated: Option<String>,
    pending_changes: usize,
    settings: Settings,
    faults: Vec<InstalledRule>,
    ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultList {
    rules: Vec<FaultRule>,
}

/// `PATCH /mock/settings`: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    ufm_version: Option<String>,
    unknown_pkey_404: Option<bool>,
    last_updated_format: Option<TimeFormat>,
    apply_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Since {
    since: Option<u64>,
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/mock/health", get(|| async { Json(json!({ "ok": true })) }))
        .route("/mock/faults", get(list_faults).post(add_fault).put(replace_faults).delete(clear_faults))
        .route("/mock/faults/{id}", delete(remove_fault))
        .route("/mock/requests", get(requests).delete(clear_requests))
        .route("/mock/counters", get(counters))
        .route("/mock/state", get(dump).put(restore))
        .route("/mock/apply", post(apply))
        .route("/mock/reset", post(reset))
        .route("/mock/settings", get(settings).patch(patch_settings))
        .route("/mock/ports", get(ports).put(set_ports))
        .route("/mock/tokens", post(issue_token))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn list_faults(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({ "rules": app.faults() }))
}

async fn add_fault(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, AdminError> {
    let rule: FaultRule = parse(&body)?;
    tracing::info!(?rule, "fault installed");
    Ok(Json(json!({ "id": app.add_fault(rule) })).into_response())
}

async fn replace_faults(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, AdminError> {
    let list: FaultList = parse(&body)?;
    Ok(Json(json!({ "ids": app.set_faults(list.rules) })).into_response())
}

async fn clear_faults(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    app.clear_faults();
    Json(json!({}))
}

async fn remove_fault(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Result<Json<serde_json::Value>, AdminError> {
    if app.remove_fault(id) { Ok(Json(json!({}))) } else { Err(AdminError::NoSuchRule(id)) }
}

async fn requests(State(app): State<Arc<App>>, Query(q): Query<Since>) -> Response {
    let records = app.log().since(q.since.unwrap_or(0));
    Json(records).into_response()
}

async fn clear_requests(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    app.log().clear();
    Json(json!({}))
}

async fn counters(State(app): State<Arc<App>>) -> Response {
    Json(app.log().counters()).into_response()
}

async fn dump(State(app): State<Arc<App>>) -> Response {
    let pending_changes = app.fabric().pending_len();
    let d = Dump {
        state: app.saved_state(),
        last_updated: app.last_updated(),
        pending_changes,
        settings: app.settings(),
        faults: app.faults(),
        ports: app.ports(),
    };
    Json(d).into_response()
}

async fn restore(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, AdminError> {
    let saved: SavedState = parse(&body)?;
    app.restore(&saved);
    Ok(Json(json!({})).into_response())
}

async fn apply(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({ "changed": app.flush() }))
}

async fn reset(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, AdminError> {
    let scope: ResetScope =
        if body.iter().all(u8::is_ascii_whitespace) { ResetScope::default() } else { parse(&body)? };
    app.reset(scope);
    Ok(Json(json!({})).into_response())
}

async fn settings(State(app): State<Arc<App>>) -> Json<Settings> {
    Json(app.settings())
}

async fn patch_settings(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, AdminError> {
    let patch: SettingsPatch = parse(&body)?;
    let mut s = app.settings();
    if let Some(v) = patch.ufm_version {
        s.ufm_version = v;
    }
    if let Some(v) = patch.unknown_pkey_404 {
        s.unknown_pkey_404 = v;
    }
    if let Some(v) = patch.last_updated_format {
        s.last_updated_format = v;
    }
    if let Some(v) = patch.apply_delay_ms {
        s.apply_delay_ms = v;
    }
    app.set_settings(s.clone());
    Ok(Json(s).into_response())
}

async fn ports(State(app): State<Arc<App>>) -> Json<Vec<Port>> {
    Json(app.ports())
}

async fn set_ports(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, AdminError> {
    let ports: Vec<Port> = parse(&body)?;
    app.set_ports(ports);
    Ok(Json(json!({})).into_response())
}

async fn issue_token(State(app): State<Arc<App>>) -> Response {
    let user = app.admin_user();
    Json(app.issue_token(&user)).into_response()
}
