//! The agent's metrics (its own Prometheus registry) and its admin server: `/metrics` and
//! `/healthz` on axum.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::inventory::{Inventory, LinkLayer};

pub struct AgentMetrics {
    registry: Registry,
    /// `result`: verified, mismatch, unknown.
    pub checks: IntCounterVec,
    /// `hca`, `port`.
    pub pkey_used: IntGaugeVec,
    pub pkey_capacity: IntGaugeVec,
    pub passes: IntCounter,
    /// `kind`: netlink, rebind, kube (sysfs problems are inventory warnings instead).
    pub errors: IntCounterVec,
    /// `action`: program, reset.
    pub guid_writes: IntCounterVec,
    pub inventory_warnings: IntGauge,
    pub unheld_vfs_with_guid: IntGauge,
    /// The attachment seen configured → its pkey visible in the pkey table.
    pub fabric_ready_seconds: Histogram,
    pub fabric_ready_timeouts: IntCounter,
    /// Attachments waiting for their pkey now (timed-out ones not included).
    pub fabric_ready_waiting: IntGauge,
    /// `kind`: of_another_pod, unexplained.
    pub foreign_vf_guids: IntCounterVec,
    pub status_writes: IntCounter,
}

impl AgentMetrics {
    pub fn new() -> Result<AgentMetrics, prometheus::Error> {
        let registry = Registry::new();
        let checks = IntCounterVec::new(
            Opts::new("fabric_sync_agent_vf_guid_checks_total", "VF GUID checks of local pod attachments, by result"),
            &["result"],
        )?;
        let pkey_used = IntGaugeVec::new(
            Opts::new("fabric_sync_agent_pkey_table_used", "Non-zero entries in an InfiniBand port's pkey table"),
            &["hca", "port"],
        )?;
        let pkey_capacity = IntGaugeVec::new(
            Opts::new("fabric_sync_agent_pkey_table_capacity", "Entries in an InfiniBand port's pkey table"),
            &["hca", "port"],
        )?;
        let passes = IntCounter::new("fabric_sync_agent_passes_total", "Agent passes run")?;
        let errors = IntCounterVec::new(
            Opts::new(
                "fabric_sync_agent_errors_total",
                "Agent errors, by kind (netlink, rebind, kube); sysfs problems are inventory warnings",
            ),
            &["kind"],
        )?;
        let guid_writes = IntCounterVec::new(
            Opts::new(
                "fabric_sync_agent_vf_guid_writes_total",
                "VF GUIDs set by the agent (program: assigned GUID; reset: unheld VF set to all-ones)",
            ),
            &["action"],
        )?;
        let inventory_warnings =
            IntGauge::new("fabric_sync_agent_inventory_warnings", "Warnings of the last sysfs inventory")?;
        let unheld_vfs_with_guid = IntGauge::new(
            "fabric_sync_agent_unheld_vfs_with_guid",
            "InfiniBand VFs carrying a routable GUID that no pod on the node holds",
        )?;
        let fabric_ready_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fabric_sync_agent_fabric_ready_seconds",
                "From the agent seeing an attachment configured (UFM accepted its GUID) to its pkey in the pkey table",
            )
            .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
        )?;
        let fabric_ready_timeouts = IntCounter::new(
            "fabric_sync_agent_fabric_ready_timeouts_total",
            "Attachments whose pkey did not appear in the pkey table within the fabric-ready timeout",
        )?;
        let fabric_ready_waiting =
            IntGauge::new("fabric_sync_agent_fabric_ready_waiting", "Attachments waiting for their pkey now")?;
        let foreign_vf_guids = IntCounterVec::new(
            Opts::new(
                "fabric_sync_agent_foreign_vf_guids_total",
                "VFs found carrying a managed-range GUID the ledger gives to another attachment or does not explain",
            ),
            &["kind"],
        )?;
        let status_writes =
            IntCounter::new("fabric_sync_agent_status_writes_total", "Writes of the node's NodeFabricStatus")?;
        registry.register(Box::new(fabric_ready_seconds.clone()))?;
        registry.register(Box::new(fabric_ready_timeouts.clone()))?;
        registry.register(Box::new(fabric_ready_waiting.clone()))?;
        registry.register(Box::new(foreign_vf_guids.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        for k in ["of_another_pod", "unexplained"] {
            foreign_vf_guids.with_label_values(&[k]);
        }
        for c in [&checks, &errors, &guid_writes] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&pkey_used, &pkey_capacity] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(passes.clone()))?;
        registry.register(Box::new(inventory_warnings.clone()))?;
        registry.register(Box::new(unheld_vfs_with_guid.clone()))?;
        for r in ["verified", "mismatch", "unknown"] {
            checks.with_label_values(&[r]);
        }
        for k in ["netlink", "rebind", "kube"] {
            errors.with_label_values(&[k]);
        }
        for a in ["program", "reset"] {
            guid_writes.with_label_values(&[a]);
        }
        Ok(AgentMetrics {
            registry,
            checks,
            pkey_used,
            pkey_capacity,
            passes,
            errors,
            guid_writes,
            inventory_warnings,
            unheld_vfs_with_guid,
            fabric_ready_seconds,
            fabric_ready_timeouts,
            fabric_ready_waiting,
            foreign_vf_guids,
            status_writes,
        })
    }

    /// Sets the per-port gauges from a fresh inventory (ports that went away disappear).
    pub fn observe_inventory(&self, inv: &Inventory) {
        self.pkey_used.reset();
        self.pkey_capacity.reset();
        for h in inv.pf_hcas() {
            for p in h.ports.iter().filter(|p| p.link_layer == LinkLayer::Infiniband) {
                if let Some(t) = &p.pkeys {
                    let port = p.port.to_string();
                    self.pkey_used.with_label_values(&[h.name.as_str(), &port]).set(i64::from(t.used));
                    self.pkey_capacity.with_label_values(&[h.name.as_str(), &port]).set(i64::from(t.capacity));
                }
            }
        }
        self.inventory_warnings.set(i64::try_from(inv.warnings.len()).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

/// Liveness: the loop is alive while passes keep finishing.
pub struct Health {
    started: Instant,
    last_pass: Mutex<Option<Instant>>,
    stale_after: Duration,
}

impl Health {
    /// Unhealthy once no pass has finished for `stale_after` (counted from `started` at first).
    pub fn new(started: Instant, stale_after: Duration) -> Health {
        Health { started, last_pass: Mutex::new(None), stale_after }
    }

    pub fn pass_finished(&self, at: Instant) {
        if let Ok(mut last) = self.last_pass.lock() {
            *last = Some(at);
        }
    }

    pub fn is_healthy_at(&self, now: Instant) -> bool {
        let last = self.last_pass.lock().ok().and_then(|l| *l).unwrap_or(self.started);
        now.saturating_duration_since(last) <= self.stale_after
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<AgentMetrics>,
    health: Arc<Health>,
}

/// `/metrics` and `/healthz`.
pub fn admin_router(metrics: Arc<AgentMetrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .with_state(AdminState { metrics, health })
}

async fn serve_metrics(State(s): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn serve_health(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.is_healthy_at(Instant::now()) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no agent pass finished recently\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_goes_stale_when_passes_stop() {
        let t0 = Instant::now();
        let h = Health::new(t0, Duration::from_secs(100));
        assert!(h.is_healthy_at(t0 + Duration::from_secs(100)));
        assert!(!h.is_healthy_at(t0 + Duration::from_secs(101)));
        h.pass_finished(t0 + Duration::from_secs(90));
        assert!(h.is_healthy_at(t0 + Duration::from_secs(150)));
        assert!(!h.is_healthy_at(t0 + Duration::from_secs(191)));
    }

    #[test]
    fn every_check_result_is_exported_from_the_start() {
        let m = AgentMetrics::new().unwrap();
        let text = m.render();
        for r in ["verified", "mismatch", "unknown"] {
            assert!(text.contains(&format!("fabric_sync_agent_vf_guid_checks_total{{result=\"{r}\"}} 0")), "{text}");
        }
        assert!(text.contains("fabric_sync_agent_passes_total 0"));
    }
}
