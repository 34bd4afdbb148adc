//! What happens to every request before and after a handler: route `/mock/` to the admin API;
//! for `/ufmRest*`, apply faults (latency, errors, outages, 401s, hangs, resets), authenticate,
//! authorise, serve, and record the request.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Uri, header};
use axum::response::Response;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::app::App;
use crate::auth::{Api, Credentials, Role};
use crate::clock;
use crate::faults::Action;
use crate::handlers::MAX_BODY;
use crate::pages;
use crate::reqlog::{RequestRecord, endpoint_key};

/// How long a `hang` fault without its own limit keeps a request open.
const DEFAULT_HANG: Duration = Duration::from_secs(600);
/// Request bodies longer than this are cut in the log.
const LOGGED_BODY: usize = 64 * 1024;

/// Per-connection facts and the means to kill the connection from inside a request.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// The client presented a certificate the verifier accepted.
    pub client_cert: bool,
    pub kill: Arc<Kill>,
}

/// Signals the connection task to drop the connection, optionally with a TCP reset.
#[derive(Default)]
pub(crate) struct Kill {
    pub reset: Arc<AtomicBool>,
    pub notify: Notify,
}

impl Kill {
    fn fire(&self, reset: bool) {
        if reset {
            self.reset.store(true, Ordering::SeqCst);
        }
        self.notify.notify_one();
    }
}

/// The routers every connection shares.
#[derive(Clone)]
pub(crate) struct Routes {
    pub app: Arc<App>,
    pub ufm: Router,
    pub admin: Router,
}

fn split_api(path: &str) -> Option<(Api, &str)> {
    for api in [Api::Token, Api::Basic] {
        match path.strip_prefix(api.prefix()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => return Some((api, rest)),
            _ => {}
        }
    }
    None
}

/// Serves one request; never fails (errors are responses).
pub(crate) async fn dispatch(routes: Routes, conn: ConnInfo, req: Request<Body>) -> Result<Response, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/mock" || path.starts_with("/mock/") {
        return routes.admin.oneshot(req).await;
    }
    match split_api(&path) {
        Some((api, rest)) => {
            let rest = rest.to_string();
            Ok(ufm(routes, conn, api, rest, req).await)
        }
        None => Ok(pages::response(StatusCode::NOT_FOUND)),
    }
}

async fn ufm(routes: Routes, conn: ConnInfo, api: Api, rest: String, req: Request<Body>) -> Response {
    let app = routes.app.clone();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let full_path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let auth_header =
        parts.headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut record = RequestRecord {
        seq: 0,
        time_ms: clock::unix_ms(SystemTime::now()),
        method: method.to_string(),
        path: full_path.clone(),
        query: query.clone(),
        body: None,
        auth: Credentials::presented(api, auth_header.as_deref(), conn.client_cert),
        user: None,
        status: None,
        fault: None,
        latency_ms: 0,
        endpoint: endpoint_key(method.as_str(), &rest),
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return finish(&app, record, pages::response(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    if !bytes.is_empty() {
        let cut = &bytes[..bytes.len().min(LOGGED_BODY)];
        record.body = Some(String::from_utf8_lossy(cut).into_owned());
    }

    let decision = app.decide(method.as_str(), &rest, &full_path);
    record.latency_ms = decision.latency.as_millis() as u64;
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if let Some(action) = decision.action {
        record.fault = Some(action.name().to_string());
        match action {
            Action::Status(code) => return finish(&app, record, pages::response_for(code)),
            Action::Outage => {
                return finish(&app, record, pages::response(StatusCode::SERVICE_UNAVAILABLE));
            }
            Action::Unauthorized => {
                return finish(&app, record, pages::response(StatusCode::UNAUTHORIZED));
            }
            Action::Reset => {
                tracing::info!(path = %full_path, "fault: resetting connection");
                app.log().push(record);
                conn.kill.fire(true);
                return std::future::pending().await;
            }
            Action::Hang(max) => {
                tracing::info!(path = %full_path, "fault: hanging request");
                app.log().push(record);
                tokio::time::sleep(max.unwrap_or(DEFAULT_HANG)).await;
                conn.kill.fire(false);
                return std::future::pending().await;
            }
        }
    }

    let principal = match app.creds().authenticate(api, auth_header.as_deref(), conn.client_cert) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(path = %full_path, error = %e, "unauthenticated");
            return finish(&app, record, pages::response(StatusCode::UNAUTHORIZED));
        }
    };
    record.user = Some(principal.user.clone());
    let read_only = matches!(parts.method, Method::GET | Method::HEAD);
    if principal.role == Role::Viewer && !read_only {
        return finish(&app, record, pages::response(StatusCode::FORBIDDEN));
    }

    let path_and_query = match &query {
        Some(q) => format!("{rest}?{q}"),
        None => rest.clone(),
    };
    parts.uri = match Uri::try_from(if path_and_query.is_empty() { "/".to_string() } else { path_and_query }) {
        Ok(u) => u,
        Err(_) => return finish(&app, record, pages::response(StatusCode::BAD_REQUEST)),
    };
    parts.extensions.insert(principal);
    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = match routes.ufm.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    finish(&app, record, resp)
}

fn finish(app: &App, mut record: RequestRecord, resp: Response) -> Response {
    record.status = Some(resp.status().as_u16());
    tracing::debug!(
        method = %record.method,
        path = %record.path,
        status = resp.status().as_u16(),
        auth = ?record.auth,
        fault = record.fault.as_deref().unwrap_or(""),
        "ufm request"
    );
    app.log().push(record);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefixes_split_exactly() {
        assert_eq!(split_api("/ufmRest/resources/pkeys"), Some((Api::Basic, "/resources/pkeys")));
        assert_eq!(split_api("/ufmRestV3/app/ufm_version"), Some((Api::Token, "/app/ufm_version")));
        assert_eq!(split_api("/ufmRestV2/app/ufm_version"), None);
        assert_eq!(split_api("/ufmRestX"), None);
        assert_eq!(split_api("/ufmRest"), Some((Api::Basic, "")));
    }
}
