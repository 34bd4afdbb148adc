//! The engine task's side of each fabric (issue 17): one `Port` per fabric with its own UFM
//! client, pkey-job slots, listing schedule, listing back-off and auth pause, so that a fabric in
//! outage or back-off holds nothing another fabric needs. Jobs are keyed (fabric, pkey).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::super::fabric::{Fabric, FabricError, FabricListing};
use super::super::per_fabric::FabricId;
use super::super::plan::{PkeyJob, RemovalWhy};
use super::super::retry::Backoffs;
use super::super::stats::FabricStats;
use super::{AddDone, CONFIRM_AFTER, Done, Engine, FIRST_AUTH_PAUSE, FIRST_RETRY};
use crate::ib::{Guid, PKey};

/// One fabric's UFM as the engine task drives it.
pub(super) struct Port {
    pub(super) fabric: Arc<dyn Fabric>,
    /// Its counters and flags (`fabric="<name>"` on a scrape).
    pub(super) stats: Arc<FabricStats>,
    /// `FABRIC_SYNC_MAX_PARALLEL_PKEYS` for this fabric alone.
    pub(super) slots: Arc<Semaphore>,
    pub(super) list_in_flight: bool,
    pub(super) next_resync: Instant,
    pub(super) list_failures: Backoffs<()>,
    /// This UFM refused the credentials: every request to it waits.
    pub(super) auth_pause: Backoffs<()>,
}

impl Port {
    pub(super) fn new(fabric: Arc<dyn Fabric>, stats: Arc<FabricStats>, slots: usize, now: Instant) -> Port {
        Port {
            fabric,
            stats,
            slots: Arc::new(Semaphore::new(slots)),
            list_in_flight: false,
            next_resync: now,
            list_failures: Backoffs::new(FIRST_RETRY),
            auth_pause: Backoffs::new(FIRST_AUTH_PAUSE),
        }
    }

    pub(super) fn paused(&self, now: Instant) -> bool {
        self.auth_pause.blocks(&(), now)
    }
}

impl Engine {
    pub(super) fn port(&mut self, f: FabricId) -> &mut Port {
        &mut self.ports[f.index()]
    }

    /// Fabrics whose UFM traffic is paused now.
    pub(super) fn paused_fabrics(&self, now: Instant) -> std::collections::HashSet<FabricId> {
        self.state.fabric_ids().filter(|f| self.ports[f.index()].paused(now)).collect()
    }

    /// Lists every fabric that is due, not listing already and not paused.
    pub(super) fn start_lists(&mut self, now: Instant) {
        for f in self.state.fabric_ids() {
            let p = &self.ports[f.index()];
            if now >= p.next_resync && !p.list_in_flight && !p.paused(now) {
                self.start_list(f);
            }
        }
    }

    fn start_list(&mut self, f: FabricId) {
        self.ports[f.index()].stats.lists.inc();
        let started = self.state.fabric(f).knowledge.list_started();
        // Quarantined GUIDs are confirmed by a list: come back sooner while any wait.
        let every = if self.state.fabric(f).awaiting_confirmation() > 0 {
            self.timing.periodic_update.min(self.timing.resync_interval)
        } else {
            self.timing.resync_interval
        };
        let port = self.port(f);
        port.list_in_flight = true;
        port.next_resync = Instant::now() + every;
        let fabric = port.fabric.clone();
        self.tasks.spawn(async move { Done::List { fabric: f, started, result: fabric.list().await } });
    }

    pub(super) fn launch_job(&mut self, f: FabricId, pkey: PKey, job: PkeyJob) {
        self.busy_pkeys.insert((f, pkey));
        let port = &self.ports[f.index()];
        let fabric = port.fabric.clone();
        let slots = port.slots.clone();
        let stats = port.stats.clone();
        self.tasks.spawn(async move {
            let _permit = slots.acquire_owned().await;
            let removed = if job.remove.is_empty() {
                Ok(())
            } else {
                stats.remove_requests.inc();
                fabric.remove_guids(pkey, &job.remove).await
            };
            let mut adds = Vec::with_capacity(job.add.len());
            for (spec, guids) in job.add {
                stats.add_requests.inc();
                let result = fabric.add_guids(&spec, &guids).await;
                adds.push(AddDone { spec, guids, result });
            }
            Done::Job { fabric: f, pkey, remove: job.remove, why: job.why, removed, adds }
        });
    }

    pub(super) fn job_done(
        &mut self,
        f: FabricId,
        pkey: PKey,
        remove: Vec<Guid>,
        why: RemovalWhy,
        removed: Result<(), FabricError>,
        adds: Vec<AddDone>,
    ) {
        self.busy_pkeys.remove(&(f, pkey));
        let name = self.state.fabric(f).name.clone();
        if !remove.is_empty() {
            // The audit trail: every UFM change once, at info, with its cause and outcome.
            let outcome = removed.as_ref().map_or_else(|e| e.reason.as_str(), |_| "ok");
            tracing::info!(fabric = %name, pkey = %pkey, guids = remove.len(), owner_gone = why.owner_gone,
                moved = why.moved, stale = why.stale, outcome, "UFM: remove");
        }
        self.state.remove_result(f, pkey, &remove, removed.as_ref().map(|_| ()));
        let freed = removed.is_ok() && !remove.is_empty();
        let mut failed = removed.err();
        for add in adds {
            let outcome = add.result.as_ref().map_or_else(|e| e.reason.as_str(), |_| "ok");
            tracing::info!(fabric = %name, pkey = %pkey, guids = add.guids.len(), membership = %add.spec.membership,
                index0 = add.spec.index0, outcome, "UFM: add for pods");
            self.state.add_result(f, &add.spec, &add.guids, add.result.as_ref().map(|_| ()));
            if let Err(e) = add.result {
                failed = Some(e);
            }
        }
        match failed {
            None => {
                self.backoff_pkeys.succeeded(&(f, pkey));
                self.fabric_answered(f);
            }
            Some(e) => {
                self.port(f).stats.failures.inc();
                self.fabric_failed(f, &e);
                let now = Instant::now();
                let delay = if e.is_permanent() {
                    // Not retried until a network naming the pkey changes (or after a long pause).
                    self.backoff_pkeys.refused((f, pkey), self.timing.cap(false), now)
                } else {
                    self.backoff_pkeys.failed((f, pkey), self.timing.cap(e.is_transient()), now)
                };
                tracing::warn!(fabric = %name, pkey = %pkey, reason = e.reason.as_str(), class = e.class.as_str(),
                    error = %e, retry_in_ms = delay.as_millis() as u64, "UFM change failed; retrying");
            }
        }
        if freed && self.state.waits_for_guids() {
            // Something waits for a GUID: confirm the removal with a listing now rather than at
            // the next resync, so that reuse follows within a second or two.
            let port = self.port(f);
            port.next_resync = port.next_resync.min(Instant::now() + CONFIRM_AFTER);
        }
    }

    /// Any answer of this UFM that is not an auth failure ends its auth pause.
    fn fabric_answered(&mut self, f: FabricId) {
        if !self.ports[f.index()].auth_pause.is_empty() {
            tracing::info!(fabric = %self.state.fabric(f).name, "UFM accepts the credentials again; resuming UFM traffic");
        }
        self.port(f).auth_pause.succeeded(&());
        self.publish_auth();
    }

    /// A 401/403 pauses every request to that UFM (lists and changes) for a growing time:
    /// real UFMs lock accounts after repeated failed logins. Other fabrics go on.
    fn fabric_failed(&mut self, f: FabricId, e: &FabricError) {
        if !e.is_auth() {
            return;
        }
        let max = self.timing.retry_max;
        let port = self.port(f);
        let pause = port.auth_pause.failed((), max, Instant::now());
        port.next_resync = port.next_resync.max(Instant::now() + pause);
        self.publish_auth();
        tracing::warn!(fabric = %self.state.fabric(f).name, reason = e.reason.as_str(), error = %e,
            pause_ms = pause.as_millis() as u64,
            "UFM refuses the credentials; pausing all traffic to this UFM (check its Secret)");
    }

    /// Whether every fabric was listed in this term; with several, which were not.
    pub(super) fn publish_reached(&self) {
        for (port, f) in self.ports.iter().zip(&self.state.fabrics) {
            port.stats.reached.set(f.listed);
        }
    }

    fn publish_auth(&self) {
        for port in &self.ports {
            port.stats.auth_failing.set(!port.auth_pause.is_empty());
        }
    }

    pub(super) fn list_done(&mut self, f: FabricId, started: u64, result: Result<FabricListing, FabricError>) {
        self.port(f).list_in_flight = false;
        let name = self.state.fabric(f).name.clone();
        match result {
            Ok(listing) => {
                self.port(f).list_failures.succeeded(&());
                self.fabric_answered(f);
                let first = !self.state.fabric(f).listed;
                let lost = self.state.list_result(f, started, &listing);
                self.publish_reached();
                self.port(f).stats.drift_repairs.add(lost as u64);
                let g = self.state.gauges();
                tracing::info!(
                    fabric = %name,
                    partitions = listing.len(),
                    managed_guids = self.state.fabric(f).knowledge.guids().count(),
                    lost_readded = lost,
                    quarantined = self.state.fabric(f).pool.quarantined(),
                    claims = g.claims,
                    claims_terminating = g.claims_terminating,
                    "resync: UFM listed"
                );
                if first {
                    self.window = None;
                }
                self.flush(None);
            }
            Err(e) => {
                self.port(f).stats.failures.inc();
                let cap = self.timing.cap(e.is_transient());
                let port = self.port(f);
                let delay = port.list_failures.failed((), cap, Instant::now());
                port.next_resync = Instant::now() + delay;
                tracing::warn!(fabric = %name, reason = e.reason.as_str(), error = %e,
                    retry_in_ms = delay.as_millis() as u64, "listing UFM failed; retrying");
                // An auth failure may push it further out.
                self.fabric_failed(f, &e);
            }
        }
    }
}
