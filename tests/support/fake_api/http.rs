//! The wire protocol: Kubernetes REST paths (`/api/v1/...`, `/apis/<group>/<version>/...`),
//! list/get/create/replace/patch/delete, watch streams as JSON lines, and `Status` errors.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::json::{Selector, query_params};
use super::store::{ApiError, DeleteOptions, Filter, RequestRecord, Res, Store, WatchStart, partial_meta};
use super::types::verb_of;

pub type Shared = Arc<Mutex<Store>>;

/// What a path names.
pub struct Target {
    res: Res,
    namespace: Option<String>,
    name: Option<String>,
}

pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let res = Res::find(group, version, plural)?;
    Some(Target { res, namespace: namespace.map(str::to_string), name: name.map(str::to_string) })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn handle(State(shared): State<Shared>, req: Request) -> Response {
    let at = std::time::Instant::now();
    let (seq, latency) = {
        let mut s = lock(&shared);
        s.arrivals += 1;
        (s.arrivals, s.latency)
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20).await.unwrap_or_default();
    let client = header_str(&headers, header::USER_AGENT.as_str()).to_string();
    let target = parse_path(&path);
    let watch = query_params(&query).iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let verb = target.as_ref().and_then(|t| verb_of(method.as_str(), t.name.is_some(), watch));
    if !watch && !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let request =
        Incoming { method: &method, path: &path, query: &query, headers: &headers, body: &body, client: &client };
    let (status, response) = respond(&shared, target.as_ref(), verb, &request);
    lock(&shared).log.push(RequestRecord {
        seq,
        method: method.to_string(),
        path,
        query,
        body: (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
        client,
        status,
        res: target.map(|t| t.res),
        verb,
        at,
        done: std::time::Instant::now(),
    });
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A request, read.
struct Incoming<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    client: &'a str,
}

fn respond(shared: &Shared, target: Option<&Target>, verb: Option<&str>, req: &Incoming) -> (u16, Response) {
    let Incoming { method, path, query, headers, body, client } = *req;
    if path == "/version" {
        return (
            200,
            json_response(200, &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fabric-sync-fake"})),
        );
    }
    let not_found = ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let Some(t) = target else {
        return (404, error_response(&not_found));
    };
    let mut store = lock(shared);
    if store.absent.contains(&t.res) {
        return (404, error_response(&not_found));
    }
    if let Some(fault) = store.take_fault(method.as_str(), path, client, Some(t.res), verb) {
        let e = fault.error();
        let mut response = error_response(&e);
        if let Some(s) = fault.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        return (e.code, response);
    }
    let params = query_params(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let meta_only = header_str(headers, header::ACCEPT.as_str()).contains("as=PartialObjectMetadata");
    let ns = t.namespace.clone().unwrap_or_default();
    let result: Result<Value, ApiError> = match (method, t.name.as_deref()) {
        (&Method::GET, None) => {
            if store.outage.contains(&t.res)
                || (param("watch").is_some_and(|w| w == "true" || w == "1") && store.watch_outage)
            {
                Err(ApiError::new(500, "InternalError", "the fake API server is in an outage"))
            } else {
                let filter = Filter {
                    namespace: t.namespace.clone(),
                    labels: Selector::parse(param("labelSelector").unwrap_or("")),
                    fields: Selector::parse(param("fieldSelector").unwrap_or("")),
                    meta_only,
                };
                if param("watch").is_some_and(|w| w == "true" || w == "1") {
                    let rv = param("resourceVersion").and_then(|v| v.parse::<u64>().ok());
                    let bookmarks = param("allowWatchBookmarks") == Some("true");
                    return match store.watch(t.res, filter, rv, bookmarks) {
                        WatchStart::Gone(line) => (200, stream_response(Body::from(line))),
                        WatchStart::Stream(rx) => {
                            let stream = futures::stream::unfold(rx, |mut rx| async move {
                                rx.recv().await.map(|l| (Ok::<Bytes, Infallible>(Bytes::from(l)), rx))
                            });
                            (200, stream_response(Body::from_stream(stream)))
                        }
                    };
                }
                let items = store.list(t.res, &filter);
                let (kind, api_version) = if meta_only {
                    ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string())
                } else {
                    (format!("{}List", t.res.info().kind), t.res.api_version())
                };
                Ok(json!({"kind": kind, "apiVersion": api_version,
                          "metadata": {"resourceVersion": store.rv().to_string()}, "items": items}))
            }
        }
        (&Method::GET, Some(name)) => store.get(t.res, &ns, name).map(|o| if meta_only { partial_meta(&o) } else { o }),
        (&Method::POST, None) => match serde_json::from_slice::<Value>(body) {
            Ok(obj) => store.create(t.res, &ns, obj, false),
            Err(e) => Err(ApiError::new(400, "BadRequest", format!("bad JSON: {e}"))),
        },
        (&Method::PUT, Some(name)) => match serde_json::from_slice::<Value>(body) {
            Ok(obj) => {
                store.run_concurrent_change(t.res, &ns, name);
                store.replace(t.res, &ns, name, obj)
            }
            Err(e) => Err(ApiError::new(400, "BadRequest", format!("bad JSON: {e}"))),
        },
        (&Method::PATCH, Some(name)) => {
            let content_type = header_str(headers, header::CONTENT_TYPE.as_str());
            let merge = match content_type {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => Some(true),
                "application/json-patch+json" => Some(false),
                _ => None,
            };
            match (merge, serde_json::from_slice::<Value>(body)) {
                (None, _) => Err(ApiError::new(415, "UnsupportedMediaType", format!("patch type {content_type:?}"))),
                (_, Err(e)) => Err(ApiError::new(400, "BadRequest", format!("bad JSON: {e}"))),
                (Some(merge), Ok(patch)) => {
                    store.run_concurrent_change(t.res, &ns, name);
                    store.patch(t.res, &ns, name, merge, &patch).map(|o| if meta_only { partial_meta(&o) } else { o })
                }
            }
        }
        (&Method::DELETE, Some(name)) => {
            DeleteOptions::parse(body).and_then(|opts| store.delete_with(t.res, &ns, name, &opts))
        }
        _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{method} is not supported here"))),
    };
    match result {
        Ok(v) => {
            let code = if *method == Method::POST { 201 } else { 200 };
            (code, json_response(code, &v))
        }
        Err(e) => (e.code, error_response(&e)),
    }
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_default()
}
