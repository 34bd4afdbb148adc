//! Counters the engine keeps while it runs; the admin server and the simulator read them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::outcome::Reason;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A yes/no level a scrape shows as 0 or 1.
#[derive(Debug, Default)]
pub struct Flag(AtomicBool);

impl Flag {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, v: bool) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// One fabric's counters and flags (issue 17): a scrape shows them with `fabric="<name>"`
/// (`default` without a fabrics file).
#[derive(Debug, Default)]
pub struct FabricStats {
    pub name: String,
    pub add_requests: Counter,
    pub remove_requests: Counter,
    pub lists: Counter,
    /// Changes or listings of this fabric that failed.
    pub failures: Counter,
    pub breaker_trips: Counter,
    /// GUIDs drift repair changed: stale ones removed, lost ones re-added.
    pub drift_repairs: Counter,
    /// Its UFM answered a listing in this leader term.
    pub reached: Flag,
    /// Its UFM refuses the credentials: all traffic to it pauses.
    pub auth_failing: Flag,
}

#[derive(Debug, Default)]
pub struct EngineStats {
    pub events_applied: Counter,
    pub patches: Counter,
    pub patch_failures: Counter,
    /// Ledger (claim) writes and releases sent, and those that failed.
    pub claim_writes: Counter,
    pub claim_failures: Counter,
    pub events_emitted: Counter,
    pub configured: Counter,
    refusals: [Counter; Reason::ALL.len()],
    leader: Flag,
    caches_synced: Flag,
    /// Per fabric, in the fabrics file's order; kept across engines (leader terms) by name so
    /// that counters only grow.
    fabrics: Mutex<Vec<Arc<FabricStats>>>,
    gauges: Mutex<Gauges>,
}

/// Levels the engine publishes about once a second (computing them walks the ledger).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Attachments written `configured`.
    pub configured: u64,
    /// Attachments with a GUID, not yet configured.
    pub pending: u64,
    /// Attachments refused or waiting, by reason.
    pub not_configured: BTreeMap<&'static str, u64>,
    /// Pool and pkey-table levels per fabric, in the fabrics file's order.
    pub fabrics: Vec<FabricGauges>,
    /// Ledger objects, and those Kubernetes is deleting (held by their finalizer until UFM
    /// confirms the removal: a namespace being deleted waits for them).
    pub claims: u64,
    pub claims_terminating: u64,
}

/// One fabric's GUID pool and pkey-table levels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FabricGauges {
    pub name: String,
    pub pool_in_use: u64,
    pub pool_quarantined: u64,
    pub pool_capacity: u64,
    /// Nodes whose pkey table on this fabric is full.
    pub nodes_at_pkey_limit: u64,
}

impl Gauges {
    fn total(&self, pick: fn(&FabricGauges) -> u64) -> u64 {
        self.fabrics.iter().map(pick).sum()
    }

    pub fn pool_in_use(&self) -> u64 {
        self.total(|f| f.pool_in_use)
    }

    pub fn pool_quarantined(&self) -> u64 {
        self.total(|f| f.pool_quarantined)
    }

    pub fn pool_capacity(&self) -> u64 {
        self.total(|f| f.pool_capacity)
    }

    pub fn nodes_at_pkey_limit(&self) -> u64 {
        self.total(|f| f.nodes_at_pkey_limit)
    }
}

impl EngineStats {
    pub fn refusal(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.refusals[i].inc();
        }
    }

    pub fn refusals(&self, reason: Reason) -> u64 {
        Reason::ALL.iter().position(|r| *r == reason).map_or(0, |i| self.refusals[i].get())
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(leader);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.get()
    }

    pub fn set_caches_synced(&self, v: bool) {
        self.caches_synced.set(v);
    }

    /// Every initial list has been delivered to the engine.
    pub fn caches_synced(&self) -> bool {
        self.caches_synced.get()
    }

    /// The stats of these fabrics, in this order: an existing fabric's are kept (its counters go
    /// on growing across leader terms), a new name starts at zero, a name no longer given is
    /// dropped.
    pub fn register_fabrics<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<Arc<FabricStats>> {
        let mut held = self.fabrics.lock().unwrap_or_else(|p| p.into_inner());
        let next: Vec<Arc<FabricStats>> = names
            .into_iter()
            .map(|n| {
                held.iter()
                    .find(|f| f.name == n)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(FabricStats { name: n.to_string(), ..FabricStats::default() }))
            })
            .collect();
        *held = next.clone();
        next
    }

    /// Every fabric's stats, in the fabrics file's order.
    pub fn fabrics(&self) -> Vec<Arc<FabricStats>> {
        self.fabrics.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A fabric counter summed over the fabrics.
    pub fn fabric_total(&self, pick: fn(&FabricStats) -> &Counter) -> u64 {
        self.fabrics().iter().map(|f| pick(f).get()).sum()
    }

    /// Every fabric answered a listing in this leader term.
    pub fn fabric_reached(&self) -> bool {
        let fabrics = self.fabrics();
        !fabrics.is_empty() && fabrics.iter().all(|f| f.reached.get())
    }

    /// Some UFM refuses the credentials.
    pub fn fabric_auth_failing(&self) -> bool {
        self.fabrics().iter().any(|f| f.auth_failing.get())
    }

    /// The fabrics not listed yet in this term (`/readyz` names them when there are several).
    pub fn fabrics_unreached(&self) -> Vec<String> {
        let fabrics = self.fabrics();
        if fabrics.len() < 2 {
            return Vec::new();
        }
        fabrics.iter().filter(|f| !f.reached.get()).map(|f| f.name.clone()).collect()
    }

    pub fn set_gauges(&self, g: Gauges) {
        *self.gauges.lock().unwrap_or_else(|p| p.into_inner()) = g;
    }

    pub fn gauges(&self) -> Gauges {
        self.gauges.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
