//! Counters the engine keeps while it runs; the admin server and the simulator read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::outcome::Reason;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
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
    pub events_emitted: Counter,
    pub configured: Counter,
    pub breaker_trips: Counter,
    refusals: [Counter; Reason::ALL.len()],
    leader: AtomicBool,
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
}
