//! The controller's Prometheus metrics, all in one registry and all listed in [`METRICS`]:
//! UFM traffic (fed by the UFM client's observer), pod configure latency and watch health (fed by
//! the kube adapter), and the engine's counters and levels (copied from `EngineStats` at scrape).
//! No label ever names a pod or a GUID.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::engine::{EngineStats, Reason};
use crate::ufm::UfmObserver;

/// Every metric: name, type, labels, meaning. README's metrics table is written from this list,
/// and a test checks that the registry holds exactly these names.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    (
        "fabric_sync_ufm_requests_total",
        "counter",
        "fabric, operation, code",
        "UFM HTTP attempts (retries count one each) by fabric, operation and HTTP status or failure kind",
    ),
    ("fabric_sync_ufm_request_duration_seconds", "histogram", "fabric, operation, code", "UFM HTTP attempt duration"),
    (
        "fabric_sync_pod_configure_duration_seconds",
        "histogram",
        "",
        "From a pod's creationTimestamp to the patch that first wrote one of its attachments configured",
    ),
    (
        "fabric_sync_attachments",
        "gauge",
        "state",
        "Attachments by state: configured, pending (GUID assigned, not yet configured), not_configured",
    ),
    ("fabric_sync_attachments_not_configured", "gauge", "reason", "Attachments refused or waiting, by reason"),
    ("fabric_sync_refusals_total", "counter", "reason", "Refusals reported (as Events) by reason"),
    ("fabric_sync_guid_pool_used", "gauge", "", "GUIDs of the managed pool in use"),
    ("fabric_sync_guid_pool_quarantined", "gauge", "", "GUIDs waiting for UFM to confirm their removal before reuse"),
    ("fabric_sync_guid_pool_capacity", "gauge", "", "GUIDs in the managed pool range"),
    ("fabric_sync_nodes_at_pkey_limit", "gauge", "", "Nodes whose pkey table is full"),
    ("fabric_sync_ledger_claims", "gauge", "", "Ledger objects (GuidClaims), one per pod holding GUIDs"),
    (
        "fabric_sync_ledger_claims_terminating",
        "gauge",
        "",
        "GuidClaims Kubernetes is deleting, held by their finalizer until UFM confirms the removal (a deleted namespace waits for them)",
    ),
    ("fabric_sync_ledger_writes_total", "counter", "", "Ledger writes (claim creates, updates, releases) started"),
    ("fabric_sync_ledger_write_failures_total", "counter", "", "Ledger writes that failed (retried with back-off)"),
    (
        "fabric_sync_ufm_auth_failing",
        "gauge",
        "",
        "1 while UFM refuses the credentials (401/403): all UFM traffic pauses, growing",
    ),
    (
        "fabric_sync_drift_repairs_total",
        "counter",
        "",
        "GUIDs drift repair changed in UFM (stale removed, lost re-added)",
    ),
    ("fabric_sync_mass_removals_refused_total", "counter", "", "Mass removals the breaker refused"),
    (
        "fabric_sync_fabric_changes_total",
        "counter",
        "operation",
        "Partition changes the engine sent to the fabric (add, remove)",
    ),
    ("fabric_sync_fabric_lists_total", "counter", "", "Fabric listings started (drift repair)"),
    ("fabric_sync_fabric_failures_total", "counter", "", "Fabric changes or listings that failed (retried)"),
    ("fabric_sync_pod_patches_total", "counter", "", "Pod annotation patches the engine started"),
    ("fabric_sync_pod_patch_failures_total", "counter", "", "Pod annotation patches that failed (retried)"),
    ("fabric_sync_pod_patch_conflicts_total", "counter", "", "Pod patches answered 409 Conflict and recomputed"),
    ("fabric_sync_attachments_configured_total", "counter", "", "Attachments written configured"),
    ("fabric_sync_events_total", "counter", "", "Kubernetes Events the engine emitted"),
    ("fabric_sync_leader", "gauge", "", "1 while this replica holds the leader Lease"),
    ("fabric_sync_caches_synced", "gauge", "", "1 once every initial list has been delivered"),
    ("fabric_sync_fabric_reached", "gauge", "", "1 once UFM answered a listing in this leader term"),
    (
        "fabric_sync_watch_errors_total",
        "counter",
        "resource",
        "Watch stream errors (each is followed by a back-off and a resume or relist)",
    ),
    (
        "fabric_sync_watch_relists_total",
        "counter",
        "resource",
        "Full relists after the first list (e.g. after 410 Gone)",
    ),
    (
        "fabric_sync_dry_run_changes_total",
        "counter",
        "kind",
        "controller --dry-run: distinct changes it would have made (ufm_add, ufm_remove, ledger_write, ledger_release, pod_patch, event)",
    ),
    (
        "fabric_sync_kube_api_throttled_total",
        "counter",
        "",
        "Kubernetes API requests that waited for the client-side rate limit (--kube-api-qps, --kube-api-burst)",
    ),
    (
        "fabric_sync_kube_api_retries_total",
        "counter",
        "",
        "Kubernetes API requests sent again after a 429, 503 or 504 (Retry-After honoured)",
    ),
    (
        "fabric_sync_kube_api_events_dropped_total",
        "counter",
        "",
        "Events not sent: the client-side rate limit left no spare request within 10 s (pod and ledger writes go first)",
    ),
];

const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
const UFM_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The registry and every metric in it. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    ufm_requests: IntCounterVec,
    ufm_duration: HistogramVec,
    pod_configure: Histogram,
    attachments: IntGaugeVec,
    not_configured: IntGaugeVec,
    refusals: IntCounterVec,
    pool_used: IntGauge,
    pool_quarantined: IntGauge,
    pool_capacity: IntGauge,
    nodes_at_limit: IntGauge,
    claims: IntGauge,
    claims_terminating: IntGauge,
    ledger_writes: IntCounter,
    ledger_write_failures: IntCounter,
    ufm_auth_failing: IntGauge,
    drift_repairs: IntCounter,
    breaker_trips: IntCounter,
    fabric_changes: IntCounterVec,
    fabric_lists: IntCounter,
    fabric_failures: IntCounter,
    patches: IntCounter,
    patch_failures: IntCounter,
    patch_conflicts: IntCounter,
    configured: IntCounter,
    events: IntCounter,
    leader: IntGauge,
    caches_synced: IntGauge,
    fabric_reached: IntGauge,
    watch_errors: IntCounterVec,
    watch_relists: IntCounterVec,
    dry_run_changes: IntCounterVec,
    kube_api_throttled: IntCounter,
    kube_api_retries: IntCounter,
    kube_api_events_dropped: IntCounter,
    /// One scrape at a time copies the engine's counters (they are deltas added to ours).
    scrape: Mutex<()>,
}

fn help(name: &str) -> &'static str {
    METRICS.iter().find(|m| m.0 == name).map_or("", |m| m.3)
}

fn opts(name: &str) -> Opts {
    Opts::new(name, help(name))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let m = Metrics {
            ufm_requests: IntCounterVec::new(opts("fabric_sync_ufm_requests_total"), &["fabric", "operation", "code"])
                .expect("static metric definition"),
            ufm_duration: HistogramVec::new(
                HistogramOpts::from(opts("fabric_sync_ufm_request_duration_seconds")).buckets(UFM_BUCKETS.to_vec()),
                &["fabric", "operation", "code"],
            )
            .expect("static metric definition"),
            pod_configure: Histogram::with_opts(
                HistogramOpts::from(opts("fabric_sync_pod_configure_duration_seconds"))
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("static metric definition"),
            attachments: IntGaugeVec::new(opts("fabric_sync_attachments"), &["state"])
                .expect("static metric definition"),
            not_configured: IntGaugeVec::new(opts("fabric_sync_attachments_not_configured"), &["reason"])
                .expect("static metric definition"),
            refusals: IntCounterVec::new(opts("fabric_sync_refusals_total"), &["reason"])
                .expect("static metric definition"),
            pool_used: IntGauge::with_opts(opts("fabric_sync_guid_pool_used")).expect("static metric definition"),
            pool_quarantined: IntGauge::with_opts(opts("fabric_sync_guid_pool_quarantined"))
                .expect("static metric definition"),
            pool_capacity: IntGauge::with_opts(opts("fabric_sync_guid_pool_capacity"))
                .expect("static metric definition"),
            nodes_at_limit: IntGauge::with_opts(opts("fabric_sync_nodes_at_pkey_limit"))
                .expect("static metric definition"),
            claims: IntGauge::with_opts(opts("fabric_sync_ledger_claims")).expect("static metric definition"),
            claims_terminating: IntGauge::with_opts(opts("fabric_sync_ledger_claims_terminating"))
                .expect("static metric definition"),
            ledger_writes: IntCounter::with_opts(opts("fabric_sync_ledger_writes_total"))
                .expect("static metric definition"),
            ledger_write_failures: IntCounter::with_opts(opts("fabric_sync_ledger_write_failures_total"))
                .expect("static metric definition"),
            ufm_auth_failing: IntGauge::with_opts(opts("fabric_sync_ufm_auth_failing"))
                .expect("static metric definition"),
            drift_repairs: IntCounter::with_opts(opts("fabric_sync_drift_repairs_total"))
                .expect("static metric definition"),
            breaker_trips: IntCounter::with_opts(opts("fabric_sync_mass_removals_refused_total"))
                .expect("static metric definition"),
            fabric_changes: IntCounterVec::new(opts("fabric_sync_fabric_changes_total"), &["operation"])
                .expect("static metric definition"),
            fabric_lists: IntCounter::with_opts(opts("fabric_sync_fabric_lists_total"))
                .expect("static metric definition"),
            fabric_failures: IntCounter::with_opts(opts("fabric_sync_fabric_failures_total"))
                .expect("static metric definition"),
            patches: IntCounter::with_opts(opts("fabric_sync_pod_patches_total")).expect("static metric definition"),
            patch_failures: IntCounter::with_opts(opts("fabric_sync_pod_patch_failures_total"))
                .expect("static metric definition"),
            patch_conflicts: IntCounter::with_opts(opts("fabric_sync_pod_patch_conflicts_total"))
                .expect("static metric definition"),
            configured: IntCounter::with_opts(opts("fabric_sync_attachments_configured_total"))
                .expect("static metric definition"),
            events: IntCounter::with_opts(opts("fabric_sync_events_total")).expect("static metric definition"),
            leader: IntGauge::with_opts(opts("fabric_sync_leader")).expect("static metric definition"),
            caches_synced: IntGauge::with_opts(opts("fabric_sync_caches_synced")).expect("static metric definition"),
            fabric_reached: IntGauge::with_opts(opts("fabric_sync_fabric_reached")).expect("static metric definition"),
            watch_errors: IntCounterVec::new(opts("fabric_sync_watch_errors_total"), &["resource"])
                .expect("static metric definition"),
            watch_relists: IntCounterVec::new(opts("fabric_sync_watch_relists_total"), &["resource"])
                .expect("static metric definition"),
            dry_run_changes: IntCounterVec::new(opts("fabric_sync_dry_run_changes_total"), &["kind"])
                .expect("static metric definition"),
            kube_api_throttled: IntCounter::with_opts(opts("fabric_sync_kube_api_throttled_total"))
                .expect("static metric definition"),
            kube_api_retries: IntCounter::with_opts(opts("fabric_sync_kube_api_retries_total"))
                .expect("static metric definition"),
            kube_api_events_dropped: IntCounter::with_opts(opts("fabric_sync_kube_api_events_dropped_total"))
                .expect("static metric definition"),
            scrape: Mutex::new(()),
            registry,
        };
        m.register_all();
        for r in Reason::ALL {
            m.refusals.with_label_values(&[r.as_str()]);
            m.not_configured.with_label_values(&[r.as_str()]);
        }
        for op in ["add", "remove"] {
            m.fabric_changes.with_label_values(&[op]);
        }
        for kind in crate::kube::DRY_RUN_KINDS {
            m.dry_run_changes.with_label_values(&[kind]);
        }
        Arc::new(m)
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.ufm_requests.clone()),
            Box::new(self.ufm_duration.clone()),
            Box::new(self.pod_configure.clone()),
            Box::new(self.attachments.clone()),
            Box::new(self.not_configured.clone()),
            Box::new(self.refusals.clone()),
            Box::new(self.pool_used.clone()),
            Box::new(self.pool_quarantined.clone()),
            Box::new(self.pool_capacity.clone()),
            Box::new(self.nodes_at_limit.clone()),
            Box::new(self.claims.clone()),
            Box::new(self.claims_terminating.clone()),
            Box::new(self.ledger_writes.clone()),
            Box::new(self.ledger_write_failures.clone()),
            Box::new(self.ufm_auth_failing.clone()),
            Box::new(self.drift_repairs.clone()),
            Box::new(self.breaker_trips.clone()),
            Box::new(self.fabric_changes.clone()),
            Box::new(self.fabric_lists.clone()),
            Box::new(self.fabric_failures.clone()),
            Box::new(self.patches.clone()),
            Box::new(self.patch_failures.clone()),
            Box::new(self.patch_conflicts.clone()),
            Box::new(self.configured.clone()),
            Box::new(self.events.clone()),
            Box::new(self.leader.clone()),
            Box::new(self.caches_synced.clone()),
            Box::new(self.fabric_reached.clone()),
            Box::new(self.watch_errors.clone()),
            Box::new(self.watch_relists.clone()),
            Box::new(self.dry_run_changes.clone()),
            Box::new(self.kube_api_throttled.clone()),
            Box::new(self.kube_api_retries.clone()),
            Box::new(self.kube_api_events_dropped.clone()),
        ];
        for c in collectors {
            // Names are distinct and static: registration cannot collide.
            let _ = self.registry.register(c);
        }
    }

    /// An attachment was written configured, `age` after its pod was created.
    pub fn pod_configured(&self, age: Duration) {
        self.pod_configure.observe(age.as_secs_f64());
    }

    /// `controller --dry-run` recorded a change of `kind` it did not make.
    pub fn dry_run_change(&self, kind: &str) {
        self.dry_run_changes.with_label_values(&[kind]).inc();
    }

    pub fn pod_patch_conflict(&self) {
        self.patch_conflicts.inc();
    }

    /// A watch stream of `resource` failed (it backs off and resumes or relists).
    pub fn watch_error(&self, resource: &str) {
        self.watch_errors.with_label_values(&[resource]).inc();
    }

    /// `resource` was listed again from scratch (its watch could not resume).
    pub fn watch_relist(&self, resource: &str) {
        self.watch_relists.with_label_values(&[resource]).inc();
    }

    /// A Kubernetes API request waited for the client-side rate limit.
    pub fn kube_api_throttled(&self) {
        self.kube_api_throttled.inc();
    }

    /// A Kubernetes API request is sent again after 429/503/504.
    pub fn kube_api_retry(&self) {
        self.kube_api_retries.inc();
    }

    /// An Event was dropped for want of API budget.
    pub fn kube_api_event_dropped(&self) {
        self.kube_api_events_dropped.inc();
    }

    /// Makes the series for `resource` visible (at 0) before anything happens to it.
    pub fn watch_started(&self, resource: &str) {
        self.watch_errors.with_label_values(&[resource]);
        self.watch_relists.with_label_values(&[resource]);
    }

    /// Copies the engine's counters and levels, then renders the Prometheus text format.
    pub fn render(&self, stats: &EngineStats) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_engine(stats);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    fn sync_engine(&self, s: &EngineStats) {
        advance(&self.drift_repairs, s.drift_repairs.get());
        advance(&self.breaker_trips, s.breaker_trips.get());
        advance(&self.fabric_changes.with_label_values(&["add"]), s.add_requests.get());
        advance(&self.fabric_changes.with_label_values(&["remove"]), s.remove_requests.get());
        advance(&self.fabric_lists, s.lists.get());
        advance(&self.fabric_failures, s.fabric_failures.get());
        advance(&self.patches, s.patches.get());
        advance(&self.patch_failures, s.patch_failures.get());
        advance(&self.configured, s.configured.get());
        advance(&self.events, s.events_emitted.get());
        for r in Reason::ALL {
            advance(&self.refusals.with_label_values(&[r.as_str()]), s.refusals(r));
        }
        let g = s.gauges();
        let not_configured: u64 = g.not_configured.values().sum();
        self.attachments.with_label_values(&["configured"]).set(level(g.configured));
        self.attachments.with_label_values(&["pending"]).set(level(g.pending));
        self.attachments.with_label_values(&["not_configured"]).set(level(not_configured));
        for r in Reason::ALL {
            let n = g.not_configured.get(r.as_str()).copied().unwrap_or(0);
            self.not_configured.with_label_values(&[r.as_str()]).set(level(n));
        }
        for (reason, n) in &g.not_configured {
            self.not_configured.with_label_values(&[reason]).set(level(*n));
        }
        self.pool_used.set(level(g.pool_in_use));
        self.pool_quarantined.set(level(g.pool_quarantined));
        self.pool_capacity.set(level(g.pool_capacity));
        self.nodes_at_limit.set(level(g.nodes_at_pkey_limit));
        self.claims.set(level(g.claims));
        self.claims_terminating.set(level(g.claims_terminating));
        advance(&self.ledger_writes, s.claim_writes.get());
        advance(&self.ledger_write_failures, s.claim_failures.get());
        self.ufm_auth_failing.set(i64::from(s.fabric_auth_failing()));
        self.leader.set(i64::from(s.is_leader()));
        self.caches_synced.set(i64::from(s.caches_synced()));
        self.fabric_reached.set(i64::from(s.fabric_reached()));
    }

    /// Names of the metric families the registry holds.
    pub fn registered_names(&self) -> Vec<String> {
        self.registry.gather().iter().map(|f| f.name().to_string()).collect()
    }
}

impl Metrics {
    /// The observer of one fabric's UFM client: its requests carry `fabric="<name>"`.
    pub fn ufm_observer(self: &Arc<Self>, fabric: &str) -> Arc<dyn UfmObserver> {
        Arc::new(FabricUfmObserver { metrics: self.clone(), fabric: fabric.to_string() })
    }

    fn ufm_request(&self, fabric: &str, op: &str, status: &str, elapsed: Duration) {
        self.ufm_requests.with_label_values(&[fabric, op, status]).inc();
        self.ufm_duration.with_label_values(&[fabric, op, status]).observe(elapsed.as_secs_f64());
    }
}

/// Without a fabric name (one UFM, `fabric-sync ufm`, tests): `fabric="default"`.
impl UfmObserver for Metrics {
    fn request_done(&self, op: &'static str, status: &str, elapsed: Duration) {
        self.ufm_request(crate::engine::DEFAULT_FABRIC, op, status, elapsed);
    }
}

struct FabricUfmObserver {
    metrics: Arc<Metrics>,
    fabric: String,
}

impl UfmObserver for FabricUfmObserver {
    fn request_done(&self, op: &'static str, status: &str, elapsed: Duration) {
        self.metrics.ufm_request(&self.fabric, op, status, elapsed);
    }
}

/// Brings a counter up to the engine's monotonic total.
fn advance(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

fn level(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_registry_holds_exactly_the_listed_metrics() {
        let m = Metrics::new();
        m.request_done("add_guids", "200", Duration::from_millis(3));
        m.pod_configured(Duration::from_secs(1));
        m.watch_error("pods");
        m.watch_relist("pods");
        let stats = EngineStats::default();
        let _ = m.render(&stats);
        let registered: BTreeSet<String> = m.registered_names().into_iter().collect();
        let listed: BTreeSet<String> = METRICS.iter().map(|x| x.0.to_string()).collect();
        assert_eq!(registered, listed);
        for (name, kind, _, help) in METRICS {
            assert!(name.starts_with("fabric_sync_"), "{name}");
            assert!(["counter", "gauge", "histogram"].contains(kind), "{name}");
            assert!(!help.is_empty(), "{name}");
        }
    }

    #[test]
    fn engine_counters_are_copied_as_monotonic_totals() {
        let m = Metrics::new();
        let stats = EngineStats::default();
        stats.drift_repairs.inc();
        stats.drift_repairs.inc();
        stats.refusal(Reason::PKeyLimitExceeded);
        stats.set_leader(true);
        let text = m.render(&stats);
        assert!(text.contains("fabric_sync_drift_repairs_total 2"), "{text}");
        assert!(text.contains("fabric_sync_refusals_total{reason=\"PKeyLimitExceeded\"} 1"), "{text}");
        assert!(text.contains("fabric_sync_leader 1"), "{text}");
        // A second scrape adds nothing new.
        let text = m.render(&stats);
        assert!(text.contains("fabric_sync_drift_repairs_total 2"), "{text}");
    }
}
