//! Counters the engine keeps while it runs; the admin server and the simulator read them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub struct EngineStats {
    pub events_applied: Counter,
    pub add_requests: Counter,
    pub remove_requests: Counter,
    pub lists: Counter,
    pub fabric_failures: Counter,
    pub patches: Counter,
    pub patch_failures: Counter,
    /// Ledger (claim) writes and releases sent, and those that failed.
    pub claim_writes: Counter,
    pub claim_failures: Counter,
    pub events_emitted: Counter,
    pub configured: Counter,
    pub breaker_trips: Counter,
    /// GUIDs drift repair changed: stale ones removed, lost ones re-added.
    pub drift_repairs: Counter,
    refusals: [Counter; Reason::ALL.len()],
    leader: AtomicBool,
    caches_synced: AtomicBool,
    fabric_reached: AtomicBool,
    fabric_auth_failing: AtomicBool,
    /// Fabrics (of several) whose UFM has not answered a listing in this leader term.
    fabrics_unreached: Mutex<Vec<String>>,
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
    pub pool_in_use: u64,
    pub pool_quarantined: u64,
    pub pool_capacity: u64,
    pub nodes_at_pkey_limit: u64,
    /// Ledger objects, and those Kubernetes is deleting (held by their finalizer until UFM
    /// confirms the removal: a namespace being deleted waits for them).
    pub claims: u64,
    pub claims_terminating: u64,
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
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn set_caches_synced(&self, v: bool) {
        self.caches_synced.store(v, Ordering::Relaxed);
    }

    /// Every initial list has been delivered to the engine.
    pub fn caches_synced(&self) -> bool {
        self.caches_synced.load(Ordering::Relaxed)
    }

    pub fn set_fabric_reached(&self, v: bool) {
        self.fabric_reached.store(v, Ordering::Relaxed);
    }

    /// The fabric answered a listing in this leader term.
    pub fn set_fabric_auth_failing(&self, v: bool) {
        self.fabric_auth_failing.store(v, Ordering::Relaxed);
    }

    /// UFM refuses the credentials: all UFM traffic pauses.
    pub fn fabric_auth_failing(&self) -> bool {
        self.fabric_auth_failing.load(Ordering::Relaxed)
    }

    pub fn fabric_reached(&self) -> bool {
        self.fabric_reached.load(Ordering::Relaxed)
    }

    /// The fabrics not listed yet in this term (only when there are several: `/readyz` names them).
    pub fn set_fabrics_unreached(&self, names: Vec<String>) {
        *self.fabrics_unreached.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }

    pub fn fabrics_unreached(&self) -> Vec<String> {
        self.fabrics_unreached.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_gauges(&self, g: Gauges) {
        *self.gauges.lock().unwrap_or_else(|p| p.into_inner()) = g;
    }

    pub fn gauges(&self) -> Gauges {
        self.gauges.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
