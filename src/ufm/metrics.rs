//! Hooks for measuring UFM traffic: an observer called after every HTTP attempt (the ops module
//! wires it to Prometheus), and plain atomic counters the simulator reads for its report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::Op;

/// Told about every HTTP attempt the client makes (retries count one each).
pub trait UfmObserver: Send + Sync {
    /// `op` is a stable label (`add_guids`, …); `status` is the HTTP status (`"200"`) or the
    /// kind of failure (`timeout`, `connect`, `tls`, `broken`).
    fn request_done(&self, op: &'static str, status: &str, elapsed: Duration) {
        let _ = (op, status, elapsed);
    }
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl UfmObserver for NoopObserver {}

/// HTTP attempts by kind since the client was built.
#[derive(Debug, Default)]
pub struct UfmCounters {
    add: AtomicU64,
    remove: AtomicU64,
    list: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`UfmCounters`], in the shape of the simulator's `ufm_requests` report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UfmRequestCounts {
    pub add: u64,
    pub remove: u64,
    pub list: u64,
    pub other: u64,
    /// Attempts that got no usable answer (any kind of failure, retried or not).
    pub failed: u64,
}

impl UfmCounters {
    pub(crate) fn record(&self, op: Op, failed: bool) {
        let slot = match op {
            Op::AddGuids => &self.add,
            Op::RemoveGuids | Op::RemoveGuidsLegacy => &self.remove,
            Op::ListPkeys => &self.list,
            Op::Version | Op::GetPkey | Op::CreatePkey | Op::UpdateQos | Op::DeletePkey => &self.other,
        };
        slot.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> UfmRequestCounts {
        UfmRequestCounts {
            add: self.add.load(Ordering::Relaxed),
            remove: self.remove.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_by_kind_and_failures_separately() {
        let c = UfmCounters::default();
        c.record(Op::AddGuids, false);
        c.record(Op::RemoveGuidsLegacy, true);
        c.record(Op::RemoveGuids, false);
        c.record(Op::GetPkey, false);
        c.record(Op::ListPkeys, true);
        assert_eq!(c.snapshot(), UfmRequestCounts { add: 1, remove: 2, list: 1, other: 1, failed: 2 });
    }
}
