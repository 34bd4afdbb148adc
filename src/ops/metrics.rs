//! The controller's Prometheus metrics, all declared in [`METRICS`] (name, type, labels, help)
//! and each counted where it happens: UFM traffic by the UFM client's observer, pod configure
//! latency, watch health and API budget by the kube adapter (into this registry), the engine's
//! counters and levels by the engine (into its `EngineStats` atomics, which a scrape reads as they
//! are: there is no second copy to keep in step). No label ever names a pod or a GUID.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::engine::{EngineStats, FabricGauges, FabricStats, Gauges, Reason};
use crate::ufm::UfmObserver;

/// The (operation, result) series of `fabric_sync_partition_operations_total`, shown from the start.
pub const PARTITION_OPS: [(&str, &str); 11] = [
    ("allocate", "ok"),
    ("allocate", "conflict"),
    ("allocate", "exhausted"),
    ("create", "ok"),
    ("create", "error"),
    ("create", "foreign"),
    ("adopt", "ok"),
    ("delete", "ok"),
    ("delete", "error"),
    ("delete", "not_ours"),
    ("release", "ok"),
];

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
    ("fabric_sync_guid_pool_used", "gauge", "fabric", "GUIDs of the managed pool in use"),
    (
        "fabric_sync_guid_pool_quarantined",
        "gauge",
        "fabric",
        "GUIDs waiting for UFM to confirm their removal before reuse",
    ),
    ("fabric_sync_guid_pool_capacity", "gauge", "fabric", "GUIDs in the managed pool range"),
    ("fabric_sync_nodes_at_pkey_limit", "gauge", "fabric", "Nodes whose pkey table on the fabric is full"),
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
        "fabric",
        "1 while the fabric's UFM refuses the credentials (401/403): all UFM traffic pauses, growing",
    ),
    (
        "fabric_sync_drift_repairs_total",
        "counter",
        "fabric",
        "GUIDs drift repair changed in UFM (stale removed, lost re-added)",
    ),
    ("fabric_sync_mass_removals_refused_total", "counter", "fabric", "Mass removals the breaker refused"),
    (
        "fabric_sync_fabric_changes_total",
        "counter",
        "fabric, operation",
        "Partition changes the engine sent to the fabric (add, remove)",
    ),
    ("fabric_sync_fabric_lists_total", "counter", "fabric", "Fabric listings started (drift repair)"),
    ("fabric_sync_fabric_failures_total", "counter", "fabric", "Fabric changes or listings that failed (retried)"),
    ("fabric_sync_pod_patches_total", "counter", "", "Pod annotation patches the engine started"),
    ("fabric_sync_pod_patch_failures_total", "counter", "", "Pod annotation patches that failed (retried)"),
    ("fabric_sync_pod_patch_conflicts_total", "counter", "", "Pod patches answered 409 Conflict and recomputed"),
    ("fabric_sync_attachments_configured_total", "counter", "", "Attachments written configured"),
    ("fabric_sync_events_total", "counter", "", "Kubernetes Events the engine emitted"),
    ("fabric_sync_leader", "gauge", "", "1 while this replica holds the leader Lease"),
    ("fabric_sync_caches_synced", "gauge", "", "1 once every initial list has been delivered"),
    ("fabric_sync_fabric_reached", "gauge", "fabric", "1 once the fabric's UFM answered a listing in this leader term"),
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
    (
        "fabric_sync_pkey_range_size",
        "gauge",
        "",
        "pkeys in the managed range (--pkey-range); 0 when automatic partitions are off",
    ),
    ("fabric_sync_pkey_range_used", "gauge", "", "pkeys of the managed range held by a PartitionClaim"),
    (
        "fabric_sync_partition_operations_total",
        "counter",
        "operation, result",
        "Automatic partition steps: allocate (ok, conflict, exhausted), create (ok, error, foreign), adopt, delete (ok, error, not_ours), release",
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
    patch_conflicts: IntCounter,
    watch_errors: IntCounterVec,
    watch_relists: IntCounterVec,
    dry_run_changes: IntCounterVec,
    kube_api_throttled: IntCounter,
    kube_api_retries: IntCounter,
    kube_api_events_dropped: IntCounter,
    pkey_range_size: IntGauge,
    pkey_range_used: IntGauge,
    partition_ops: IntCounterVec,
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
            patch_conflicts: IntCounter::with_opts(opts("fabric_sync_pod_patch_conflicts_total"))
                .expect("static metric definition"),
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
            pkey_range_size: IntGauge::with_opts(opts("fabric_sync_pkey_range_size"))
                .expect("static metric definition"),
            pkey_range_used: IntGauge::with_opts(opts("fabric_sync_pkey_range_used"))
                .expect("static metric definition"),
            partition_ops: IntCounterVec::new(opts("fabric_sync_partition_operations_total"), &["operation", "result"])
                .expect("static metric definition"),
            registry,
        };
        m.register_all();
        for kind in crate::kube::DRY_RUN_KINDS {
            m.dry_run_changes.with_label_values(&[kind]);
        }
        for (op, result) in PARTITION_OPS {
            m.partition_ops.with_label_values(&[op, result]);
        }
        Arc::new(m)
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.ufm_requests.clone()),
            Box::new(self.ufm_duration.clone()),
            Box::new(self.pod_configure.clone()),
            Box::new(self.patch_conflicts.clone()),
            Box::new(self.watch_errors.clone()),
            Box::new(self.watch_relists.clone()),
            Box::new(self.dry_run_changes.clone()),
            Box::new(self.kube_api_throttled.clone()),
            Box::new(self.kube_api_retries.clone()),
            Box::new(self.kube_api_events_dropped.clone()),
            Box::new(self.pkey_range_size.clone()),
            Box::new(self.pkey_range_used.clone()),
            Box::new(self.partition_ops.clone()),
        ];
        for c in collectors {
            // Names are distinct and static (the_registry_holds_exactly_the_listed_metrics):
            // a collision is a programming error, reported rather than dropped.
            if let Err(e) = self.registry.register(c) {
                tracing::error!(error = %e, "a metric could not be registered");
            }
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

    /// The managed pkey range's size and how many of its pkeys PartitionClaims hold.
    pub fn pkey_range(&self, size: u32, used: u32) {
        self.pkey_range_size.set(i64::from(size));
        self.pkey_range_used.set(i64::from(used));
    }

    /// An automatic partition step (`allocate`, `create`, `adopt`, `delete`, `release`) and its result.
    pub fn partition_op(&self, operation: &str, result: &str) {
        self.partition_ops.with_label_values(&[operation, result]).inc();
    }

    /// Makes the series for `resource` visible (at 0) before anything happens to it.
    pub fn watch_started(&self, resource: &str) {
        self.watch_errors.with_label_values(&[resource]);
        self.watch_relists.with_label_values(&[resource]);
    }

    /// The Prometheus text format: this registry's metrics and the engine's, read from `stats`
    /// as they are now.
    pub fn render(&self, stats: &EngineStats) -> String {
        let mut families = self.registry.gather();
        families.extend(engine_families(stats));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new().encode_to_string(&families).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// Names of the metric families a scrape shows.
    pub fn registered_names(&self) -> Vec<String> {
        let stats = EngineStats::default();
        stats.register_fabrics([crate::engine::DEFAULT_FABRIC]);
        self.registry.gather().iter().chain(&engine_families(&stats)).map(|f| f.name().to_string()).collect()
    }
}

/// The engine's metrics as `stats` holds them: each family is built at scrape from the value the
/// engine counted where it happened (the way a Prometheus collector reads an exporter's own
/// counters), so nothing is copied or kept in step between scrapes.
fn engine_families(s: &EngineStats) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut counter = |name: &str, v: u64| {
        if let Ok(c) = IntCounter::with_opts(opts(name)) {
            c.inc_by(v);
            out.extend(c.collect());
        }
    };
    counter("fabric_sync_pod_patches_total", s.patches.get());
    counter("fabric_sync_pod_patch_failures_total", s.patch_failures.get());
    counter("fabric_sync_attachments_configured_total", s.configured.get());
    counter("fabric_sync_events_total", s.events_emitted.get());
    counter("fabric_sync_ledger_writes_total", s.claim_writes.get());
    counter("fabric_sync_ledger_write_failures_total", s.claim_failures.get());
    let g = s.gauges();
    let flag = |b: bool| u64::from(b);
    let mut gauge = |name: &str, v: u64| {
        if let Ok(c) = IntGauge::with_opts(opts(name)) {
            c.set(level(v));
            out.extend(c.collect());
        }
    };
    gauge("fabric_sync_ledger_claims", g.claims);
    gauge("fabric_sync_ledger_claims_terminating", g.claims_terminating);
    gauge("fabric_sync_leader", flag(s.is_leader()));
    gauge("fabric_sync_caches_synced", flag(s.caches_synced()));
    out.extend(fabric_families(s, &g));
    if let Ok(v) = IntCounterVec::new(opts("fabric_sync_refusals_total"), &["reason"]) {
        for r in Reason::ALL {
            v.with_label_values(&[r.as_str()]).inc_by(s.refusals(r));
        }
        out.extend(v.collect());
    }
    if let Ok(v) = IntGaugeVec::new(opts("fabric_sync_attachments"), &["state"]) {
        let not_configured: u64 = g.not_configured.values().sum();
        v.with_label_values(&["configured"]).set(level(g.configured));
        v.with_label_values(&["pending"]).set(level(g.pending));
        v.with_label_values(&["not_configured"]).set(level(not_configured));
        out.extend(v.collect());
    }
    if let Ok(v) = IntGaugeVec::new(opts("fabric_sync_attachments_not_configured"), &["reason"]) {
        for r in Reason::ALL {
            v.with_label_values(&[r.as_str()]).set(level(g.not_configured.get(r.as_str()).copied().unwrap_or(0)));
        }
        for (reason, n) in &g.not_configured {
            v.with_label_values(&[reason]).set(level(*n));
        }
        out.extend(v.collect());
    }
    out
}

/// The engine's per-fabric metrics, one series per fabric (`fabric="default"` without a fabrics
/// file). Before the engine registered its fabrics there is no series: the family is left out
/// (the text format has no empty family).
fn fabric_families(s: &EngineStats, g: &Gauges) -> Vec<MetricFamily> {
    let fabrics = s.fabrics();
    let mut out = Vec::new();
    let mut per_fabric = |name: &str, gauge: bool, value: &dyn Fn(&FabricStats) -> u64| {
        if fabrics.is_empty() {
            return;
        }
        if gauge {
            if let Ok(v) = IntGaugeVec::new(opts(name), &["fabric"]) {
                for f in &fabrics {
                    v.with_label_values(&[&f.name]).set(level(value(f)));
                }
                out.extend(v.collect());
            }
        } else if let Ok(v) = IntCounterVec::new(opts(name), &["fabric"]) {
            for f in &fabrics {
                v.with_label_values(&[&f.name]).inc_by(value(f));
            }
            out.extend(v.collect());
        }
    };
    let level_of =
        |f: &FabricStats, pick: fn(&FabricGauges) -> u64| g.fabrics.iter().find(|l| l.name == f.name).map_or(0, pick);
    per_fabric("fabric_sync_drift_repairs_total", false, &|f| f.drift_repairs.get());
    per_fabric("fabric_sync_mass_removals_refused_total", false, &|f| f.breaker_trips.get());
    per_fabric("fabric_sync_fabric_lists_total", false, &|f| f.lists.get());
    per_fabric("fabric_sync_fabric_failures_total", false, &|f| f.failures.get());
    per_fabric("fabric_sync_ufm_auth_failing", true, &|f| u64::from(f.auth_failing.get()));
    per_fabric("fabric_sync_fabric_reached", true, &|f| u64::from(f.reached.get()));
    per_fabric("fabric_sync_guid_pool_used", true, &|f| level_of(f, |l| l.pool_in_use));
    per_fabric("fabric_sync_guid_pool_quarantined", true, &|f| level_of(f, |l| l.pool_quarantined));
    per_fabric("fabric_sync_guid_pool_capacity", true, &|f| level_of(f, |l| l.pool_capacity));
    per_fabric("fabric_sync_nodes_at_pkey_limit", true, &|f| level_of(f, |l| l.nodes_at_pkey_limit));
    if !fabrics.is_empty() {
        if let Ok(v) = IntCounterVec::new(opts("fabric_sync_fabric_changes_total"), &["fabric", "operation"]) {
            for f in &fabrics {
                v.with_label_values(&[&f.name, "add"]).inc_by(f.add_requests.get());
                v.with_label_values(&[&f.name, "remove"]).inc_by(f.remove_requests.get());
            }
            out.extend(v.collect());
        }
    }
    out
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
    fn a_scrape_shows_the_engines_counters_as_they_are_now() {
        let m = Metrics::new();
        let stats = EngineStats::default();
        let fabric = stats.register_fabrics(["default"]).remove(0);
        fabric.drift_repairs.inc();
        fabric.drift_repairs.inc();
        stats.refusal(Reason::PKeyLimitExceeded);
        stats.set_leader(true);
        let text = m.render(&stats);
        assert!(text.contains("fabric_sync_drift_repairs_total{fabric=\"default\"} 2"), "{text}");
        assert!(text.contains("fabric_sync_refusals_total{reason=\"PKeyLimitExceeded\"} 1"), "{text}");
        assert!(text.contains("fabric_sync_refusals_total{reason=\"PoolExhausted\"} 0"), "every reason from 0");
        assert!(text.contains("fabric_sync_leader 1"), "{text}");
        // A second scrape counts nothing twice; what happens between scrapes shows at the next.
        let text = m.render(&stats);
        assert!(text.contains("fabric_sync_drift_repairs_total{fabric=\"default\"} 2"), "{text}");
        fabric.drift_repairs.inc();
        stats.set_leader(false);
        let text = m.render(&stats);
        assert!(text.contains("fabric_sync_drift_repairs_total{fabric=\"default\"} 3"), "{text}");
        assert!(text.contains("fabric_sync_leader 0"), "{text}");
        // Families come out sorted by name, each once, ours and the engine's together.
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn each_fabric_is_its_own_series() {
        let m = Metrics::new();
        let stats = EngineStats::default();
        assert!(!m.render(&stats).contains("fabric_sync_fabric_reached"), "no series before the engine registers");
        let fabrics = stats.register_fabrics(["compute", "storage"]);
        fabrics[1].reached.set(true);
        fabrics[0].lists.inc();
        stats.set_gauges(Gauges {
            fabrics: vec![
                FabricGauges { name: "compute".into(), pool_in_use: 3, ..FabricGauges::default() },
                FabricGauges { name: "storage".into(), pool_in_use: 5, ..FabricGauges::default() },
            ],
            ..Gauges::default()
        });
        let text = m.render(&stats);
        for line in [
            "fabric_sync_fabric_reached{fabric=\"compute\"} 0",
            "fabric_sync_fabric_reached{fabric=\"storage\"} 1",
            "fabric_sync_fabric_lists_total{fabric=\"compute\"} 1",
            "fabric_sync_fabric_lists_total{fabric=\"storage\"} 0",
            "fabric_sync_guid_pool_used{fabric=\"compute\"} 3",
            "fabric_sync_guid_pool_used{fabric=\"storage\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }
}
