//! The admin HTTP server on its own port: `/metrics` (Prometheus text), `/healthz` (the process
//! serves) and `/readyz` (every initial list is in and, for the leader, UFM has answered).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;
use crate::engine::EngineStats;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub stats: Arc<EngineStats>,
    pub metrics: Arc<Metrics>,
}

/// Ready once caches are synced; the leader also needs UFM to have answered a listing.
/// A follower is ready when synced: it is a warm standby and should stay in the Service.
/// With several fabrics, each is a component: the message names those whose UFM has not
/// answered yet.
pub fn readiness(stats: &EngineStats) -> Result<(), String> {
    if !stats.caches_synced() {
        return Err("waiting for the initial lists of pods, networks, nodes and namespaces".into());
    }
    if stats.is_leader() && stats.fabric_auth_failing() {
        return Err("leader: UFM refuses the credentials (401/403); UFM traffic is paused; check the UFM Secret".into());
    }
    if stats.is_leader() && !stats.fabric_reached() {
        let unreached = stats.fabrics_unreached();
        if !unreached.is_empty() {
            return Err(format!("leader: the UFM of fabric {} has not answered a listing yet", unreached.join(", ")));
        }
        return Err("leader: UFM has not answered a listing yet".into());
    }
    Ok(())
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// Serves `router` (the controller's [`router`] or the agent's) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let body = s.metrics.render(&s.stats);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn ready(State(s): State<AdminState>) -> Response {
    match readiness(&s.stats) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_needs_the_fabric_and_a_follower_only_the_caches() {
        let s = EngineStats::default();
        assert!(readiness(&s).is_err());
        s.set_caches_synced(true);
        assert_eq!(readiness(&s), Ok(()));
        s.set_leader(true);
        assert!(readiness(&s).unwrap_err().contains("UFM"));
        let fabrics = s.register_fabrics(["compute", "storage"]);
        fabrics[0].reached.set(true);
        assert!(readiness(&s).unwrap_err().contains("fabric storage"), "the unreached fabric is named");
        fabrics[1].reached.set(true);
        assert_eq!(readiness(&s), Ok(()));
        fabrics[1].auth_failing.set(true);
        assert!(readiness(&s).unwrap_err().contains("credentials"));
    }
}
