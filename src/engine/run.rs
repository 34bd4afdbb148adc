//! The engine task: applies cluster events, closes batches, runs ledger writes, per-(fabric,
//! pkey) UFM jobs and pod patches with bounded concurrency, lists each fabric for drift repair
//! (run_fabric.rs), and obeys leadership. All decisions are made by `State::assign` and `plan`;
//! this file only schedules and awaits.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::fabric::{Fabric, FabricError, FabricListing};
use super::ledger::Claim;
use super::model::PodUid;
use super::per_fabric::FabricId;
use super::plan::{Blocked, Limits, Plan, RemovalWhy, build_patch, plan};
use super::ports::{ClaimOutcome, ClusterEvent, ClusterWriter, EventRecord, PatchOutcome, PodPatch, WriteError};
use super::retry::Backoffs;
use super::state::State;
use super::stats::EngineStats;
use crate::ib::{Guid, PKey, PartitionSpec};

/// Timing and concurrency of the engine loop.
#[derive(Clone, Debug)]
pub struct Timing {
    pub batch_window: Duration,
    pub periodic_update: Duration,
    pub resync_interval: Duration,
    pub max_parallel_pkeys: usize,
    pub patch_concurrency: usize,
    /// Longest pause between retries of a transient failure (permanent ones wait 10 times as long).
    pub retry_max: Duration,
}

impl Timing {
    fn cap(&self, transient: bool) -> Duration {
        if transient { self.retry_max } else { self.retry_max * PERMANENT_FACTOR }
    }
}

#[path = "run_fabric.rs"]
mod run_fabric;

enum Done {
    Job {
        fabric: FabricId,
        pkey: PKey,
        remove: Vec<Guid>,
        why: RemovalWhy,
        removed: Result<(), FabricError>,
        adds: Vec<AddDone>,
    },
    Patch {
        patch: PodPatch,
        result: Result<PatchOutcome, WriteError>,
    },
    Claim {
        claim: Claim,
        release: bool,
        result: Result<ClaimOutcome, WriteError>,
    },
    List {
        fabric: FabricId,
        started: u64,
        result: Result<FabricListing, FabricError>,
    },
    Event,
}

struct AddDone {
    spec: PartitionSpec,
    guids: Vec<Guid>,
    result: Result<(), FabricError>,
}

pub struct Engine {
    pub state: State,
    /// One per fabric, in the order of `state.fabrics`.
    ports: Vec<run_fabric::Port>,
    writer: Arc<dyn ClusterWriter>,
    timing: Timing,
    stats: Arc<EngineStats>,
    tasks: JoinSet<Done>,
    /// Patches and Events wait here and are started as slots free up, so that a burst of
    /// 100k pods holds 100k small values, not 100k parked tasks.
    patch_queue: VecDeque<PodUid>,
    patches_in_flight: usize,
    /// Claim writes (before patches: nothing moves before its claim is written).
    claim_queue: VecDeque<(Claim, bool)>,
    event_queue: VecDeque<EventRecord>,
    events_in_flight: usize,
    busy_pkeys: HashSet<(FabricId, PKey)>,
    backoff_pkeys: Backoffs<(FabricId, PKey)>,
    patching: HashSet<PodUid>,
    backoff_pods: Backoffs<PodUid>,
    claiming: HashSet<PodUid>,
    backoff_claims: Backoffs<PodUid>,
    window: Option<Instant>,
    /// Since when adds wait for claim writes of the same batch (bounded by the periodic update).
    adds_held_since: Option<Instant>,
    next_tick: Instant,
    next_gauges: Instant,
    leader: bool,
}

impl Engine {
    /// An engine for one fabric (`state` has exactly one: no fabrics file).
    pub fn new(
        state: State,
        fabric: Arc<dyn Fabric>,
        writer: Arc<dyn ClusterWriter>,
        timing: Timing,
        stats: Arc<EngineStats>,
    ) -> Engine {
        Engine::with_fabrics(state, vec![fabric], writer, timing, stats)
    }

    /// An engine for several fabrics: `fabrics[i]` is the port of `state.fabrics[i]`.
    ///
    /// # Panics
    /// If the numbers differ (a wiring bug, not input).
    pub fn with_fabrics(
        state: State,
        fabrics: Vec<Arc<dyn Fabric>>,
        writer: Arc<dyn ClusterWriter>,
        timing: Timing,
        stats: Arc<EngineStats>,
    ) -> Engine {
        assert_eq!(fabrics.len(), state.fabrics.len(), "one Fabric port per configured fabric");
        let now = Instant::now();
        let fabric_stats = stats.register_fabrics(state.fabrics.iter().map(|f| &*f.name));
        let ports = fabrics
            .into_iter()
            .zip(fabric_stats)
            .map(|(f, s)| run_fabric::Port::new(f, s, timing.max_parallel_pkeys, now))
            .collect();
        Engine {
            state,
            ports,
            writer,
            patch_queue: VecDeque::new(),
            patches_in_flight: 0,
            claim_queue: VecDeque::new(),
            event_queue: VecDeque::new(),
            events_in_flight: 0,
            next_tick: now + timing.periodic_update,
            next_gauges: now,
            timing,
            stats,
            tasks: JoinSet::new(),
            busy_pkeys: HashSet::new(),
            backoff_pkeys: Backoffs::new(FIRST_RETRY),
            patching: HashSet::new(),
            backoff_pods: Backoffs::new(FIRST_RETRY),
            claiming: HashSet::new(),
            backoff_claims: Backoffs::new(FIRST_RETRY),
            window: None,
            adds_held_since: None,
            leader: false,
        }
    }

    /// Runs until the event channel closes. Only while `leader` is true does it write anything.
    pub async fn run(mut self, mut events: mpsc::Receiver<ClusterEvent>, mut leader: watch::Receiver<bool>) {
        self.set_leader(*leader.borrow_and_update());
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                changed = leader.changed() => {
                    if changed.is_err() { break; }
                    let is_leader = *leader.borrow_and_update();
                    self.set_leader(is_leader);
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    self.on_event(ev);
                    // Drain what is queued without waiting: bursts land in one batch.
                    while let Ok(ev) = events.try_recv() {
                        self.on_event(ev);
                    }
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(done) = done {
                        self.on_done(done);
                    }
                }
                _ = sleep_until(wake) => {}
            }
            self.tick();
        }
        self.tasks.abort_all();
    }

    fn set_leader(&mut self, leader: bool) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        self.stats.set_leader(leader);
        // Whether gaining or losing leadership, in-flight work belongs to the old term.
        self.tasks.abort_all();
        self.busy_pkeys.clear();
        self.patching.clear();
        self.patch_queue.clear();
        self.patches_in_flight = 0;
        self.claim_queue.clear();
        self.claiming.clear();
        self.backoff_claims.clear();
        self.event_queue.clear();
        self.events_in_flight = 0;
        let now = Instant::now();
        for port in &mut self.ports {
            port.list_in_flight = false;
            port.next_resync = now;
        }
        self.state.reset_leader_state();
        self.publish_reached();
    }

    fn on_event(&mut self, ev: ClusterEvent) {
        self.stats.events_applied.inc();
        match &ev {
            ClusterEvent::CachesSynced => self.stats.set_caches_synced(true),
            // A changed network is new input: a permanent refusal of its pkey is tried again.
            ClusterEvent::NetworkApplied { network: Ok(Some(n)), .. } => {
                if let Some(p) = n.pkey() {
                    for f in self.state.fabric_ids() {
                        self.backoff_pkeys.succeeded(&(f, p));
                    }
                }
            }
            _ => {}
        }
        self.state.apply(ev);
        if self.window.is_none() {
            self.window = Some(Instant::now() + self.timing.batch_window);
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_tick.min(self.next_gauges);
        for port in &self.ports {
            wake = wake.min(port.next_resync);
        }
        if let Some(w) = self.window {
            wake = wake.min(w);
        }
        let expiries =
            [&self.backoff_pkeys.next_expiry(), &self.backoff_pods.next_expiry(), &self.backoff_claims.next_expiry()];
        for until in expiries.into_iter().flatten() {
            wake = wake.min(*until);
        }
        wake
    }

    /// Decides what is due: a list, a full flush (window closed or periodic tick), or nothing.
    fn tick(&mut self) {
        let now = Instant::now();
        // Each expiry is looked at once; every call runs, none short-circuits the others.
        let expired = [self.backoff_pkeys.expire(now), self.backoff_pods.expire(now), self.backoff_claims.expire(now)];
        let backoff_expired = expired.contains(&true);
        if now >= self.next_gauges {
            self.next_gauges = now + GAUGE_PERIOD;
            self.stats.set_gauges(self.state.gauges());
        }
        if !self.leader {
            // A follower reports nothing; a new leader reports what it knows afresh.
            self.state.events.clear();
            self.window = None;
            self.next_tick = now + self.timing.periodic_update;
            for port in &mut self.ports {
                port.next_resync = now + self.timing.resync_interval;
            }
            return;
        }
        if self.state.caches_synced {
            self.start_lists(now);
        }
        let window_closed = self.window.is_some_and(|w| now >= w) || self.batch_full();
        let periodic = now >= self.next_tick;
        if window_closed || periodic || backoff_expired {
            self.window = None;
            self.next_tick = now + self.timing.periodic_update;
            self.flush(None);
        }
    }

    /// Adds wait while claims are being written, for at most the periodic update at a time: a
    /// burst whose claims take longer (100,000 pods) sends one add per pkey per period, not one
    /// per batch window.
    fn hold_adds(&mut self, now: Instant) -> bool {
        if self.claiming.is_empty() {
            self.adds_held_since = None;
            return false;
        }
        let since = *self.adds_held_since.get_or_insert(now);
        if now < since + self.timing.periodic_update {
            return true;
        }
        // This flush sends what waited; the next hold starts now.
        self.adds_held_since = Some(now);
        false
    }

    fn batch_full(&self) -> bool {
        self.state.dirty_attachments.len() >= self.state.cfg.batch_max_guids
    }

    /// Assigns, plans and launches work. With `only`, plans write-backs and status for those
    /// GUIDs alone (UFM just accepted them); fabric work waits for the batch window.
    fn flush(&mut self, only: Option<&[Guid]>) {
        if only.is_none() {
            self.state.assign();
        }
        let now = Instant::now();
        let paused_fabrics = self.paused_fabrics(now);
        let writes_only = only.is_some() || paused_fabrics.len() == self.ports.len();
        // Asked only when adds may go: a writes-only flush must not use up the end of a hold.
        let hold_adds = !writes_only && self.hold_adds(now);
        let blocked_pkeys: HashSet<(FabricId, PKey)> =
            self.busy_pkeys.iter().chain(self.backoff_pkeys.blocked(now)).copied().collect();
        let blocked_pods = Blocked { busy: &self.patching, backoff: Some(&self.backoff_pods), now };
        let blocked_claims = Blocked { busy: &self.claiming, backoff: Some(&self.backoff_claims), now };
        let candidates: Vec<Guid> = match only {
            Some(guids) => guids.to_vec(),
            None => self.state.dirty_guids.iter().copied().collect(),
        };
        let limits = Limits {
            blocked_pkeys: &blocked_pkeys,
            paused_fabrics: &paused_fabrics,
            blocked_pods,
            blocked_claims,
            writes_only,
            hold_adds,
        };
        let plan = plan(&self.state, &candidates, &limits);
        self.commit(plan);
        self.emit_events();
    }

    fn commit(&mut self, plan: Plan) {
        self.state.commit(&plan);
        for (f, n) in &plan.stale_removals {
            self.ports[f.index()].stats.drift_repairs.add(*n as u64);
        }
        for trip in &plan.breaker {
            self.ports[trip.fabric.index()].stats.breaker_trips.inc();
            tracing::warn!(fabric = %self.state.fabric(trip.fabric).name, pkey = %trip.pkey, stale = trip.stale,
                members = trip.members, "mass removal refused: stale GUIDs exceed the allowed share of the partition");
        }
        for claim in plan.write_claims {
            self.launch_claim(claim, false);
        }
        for claim in plan.release_claims {
            self.launch_claim(claim, true);
        }
        for ((fabric, pkey), job) in plan.jobs {
            self.launch_job(fabric, pkey, job);
        }
        for uid in plan.write_pods {
            self.launch_patch(uid);
        }
    }

    fn launch_claim(&mut self, claim: Claim, release: bool) {
        if self.claiming.insert(claim.pod_uid.clone()) {
            self.claim_queue.push_back((claim, release));
        }
        self.pump();
    }

    fn launch_patch(&mut self, uid: PodUid) {
        // `patching` holds queued and in-flight pods: one patch per pod at a time.
        if self.patching.insert(uid.clone()) {
            self.patch_queue.push_back(uid);
        }
        self.pump();
    }

    /// Starts queued claim writes, patches and Events while slots are free.
    fn pump(&mut self) {
        while self.patches_in_flight < self.timing.patch_concurrency {
            let Some((claim, release)) = self.claim_queue.pop_front() else { break };
            self.patches_in_flight += 1;
            let writer = self.writer.clone();
            let stats = self.stats.clone();
            self.tasks.spawn(async move {
                stats.claim_writes.inc();
                let result =
                    if release { writer.release_claim(&claim).await } else { writer.write_claim(&claim).await };
                Done::Claim { claim, release, result }
            });
        }
        while self.patches_in_flight < self.timing.patch_concurrency {
            let Some(uid) = self.patch_queue.pop_front() else { break };
            let patch = match build_patch(&self.state, &uid) {
                Some(p) if !p.writes.is_empty() || !p.status.is_empty() => p,
                _ => {
                    self.patching.remove(&uid);
                    continue;
                }
            };
            self.patches_in_flight += 1;
            let writer = self.writer.clone();
            let stats = self.stats.clone();
            self.tasks.spawn(async move {
                stats.patches.inc();
                let result = writer.patch_pod(&patch).await;
                Done::Patch { patch, result }
            });
        }
        while self.events_in_flight < EVENT_CONCURRENCY {
            let Some(record) = self.event_queue.pop_front() else { break };
            self.events_in_flight += 1;
            let writer = self.writer.clone();
            self.stats.events_emitted.inc();
            self.tasks.spawn(async move {
                if let Err(e) = writer.emit_event(&record).await {
                    tracing::debug!(error = %e, reason = record.reason.as_str(), "event not recorded");
                }
                Done::Event
            });
        }
    }

    fn emit_events(&mut self) {
        for record in std::mem::take(&mut self.state.events) {
            self.stats.refusal(record.reason);
            self.event_queue.push_back(record);
        }
        self.pump();
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Event => {
                self.events_in_flight = self.events_in_flight.saturating_sub(1);
                self.pump();
            }
            Done::Patch { patch, result } => {
                self.patches_in_flight = self.patches_in_flight.saturating_sub(1);
                self.patch_done(patch, result);
                self.pump();
            }
            Done::Claim { claim, release, result } => {
                self.patches_in_flight = self.patches_in_flight.saturating_sub(1);
                self.claim_done(claim, release, result);
                // Its GUIDs may go to the fabric now: with the next batch, once the batch's
                // claims are all written, so that a burst still makes one add per pkey.
                if self.claiming.is_empty() {
                    self.flush(None);
                } else if self.window.is_none() {
                    self.window = Some(Instant::now() + self.timing.batch_window);
                }
                self.pump();
            }
            Done::Job { fabric, pkey, remove, why, removed, adds } => {
                let touched: Vec<Guid> =
                    remove.iter().chain(adds.iter().flat_map(|a| a.guids.iter())).copied().collect();
                self.job_done(fabric, pkey, remove, why, removed, adds);
                // Accepted GUIDs are written back at once; the pkey's next change waits for
                // the window, or goes now if nothing else is collecting. While other jobs are
                // still out (several fabrics answer one after another), a window opens instead,
                // so that their answers share one full plan rather than one each.
                if self.window.is_some() {
                    self.flush(Some(&touched));
                } else if self.ports.len() > 1 && !self.busy_pkeys.is_empty() {
                    self.window = Some(Instant::now() + self.timing.batch_window);
                    self.flush(Some(&touched));
                } else {
                    self.flush(None);
                }
            }
            Done::List { fabric, started, result } => self.list_done(fabric, started, result),
        }
    }

    fn patch_done(&mut self, patch: PodPatch, result: Result<PatchOutcome, WriteError>) {
        self.patching.remove(&patch.uid);
        if let Err(e) = &result {
            self.stats.patch_failures.inc();
            if !e.is_transient() && !self.backoff_pods.is_failing(&patch.uid) {
                // Refused for good (RBAC, an admission policy, too large): the status cannot be
                // written, so the refusal goes into an Event; retried slowly.
                self.state.report_write_refused(&patch.uid, &e.message);
                self.emit_events();
            }
            let delay = self.backoff_pods.failed(patch.uid.clone(), self.timing.cap(e.is_transient()), Instant::now());
            tracing::warn!(pod = %patch.pod, error = %e, class = e.class.as_str(), retry_in_ms = delay.as_millis() as u64,
                "pod patch failed; retrying");
        } else {
            self.backoff_pods.succeeded(&patch.uid);
        }
        let configured = self.state.patch_result(&patch, result.map_err(|_| ()));
        self.stats.configured.add(configured as u64);
    }

    fn claim_done(&mut self, claim: Claim, release: bool, result: Result<ClaimOutcome, WriteError>) {
        self.claiming.remove(&claim.pod_uid);
        match &result {
            Ok(_) => self.backoff_claims.succeeded(&claim.pod_uid),
            Err(e) => {
                self.stats.claim_failures.inc();
                let delay = self.backoff_claims.failed(
                    claim.pod_uid.clone(),
                    self.timing.cap(e.is_transient()),
                    Instant::now(),
                );
                tracing::warn!(pod = %claim.pod, release, error = %e, class = e.class.as_str(),
                    retry_in_ms = delay.as_millis() as u64, "ledger write failed; retrying");
            }
        }
        self.state.claim_result(&claim, result.map_err(|_| ()));
    }
}

/// How often the gauges (attachments by state, pool, nodes at limit) are recomputed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// Events in flight at once (they are few; keep the API server's load low).
const EVENT_CONCURRENCY: usize = 4;

/// The first pause after a failure; it doubles on every further failure.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// The first pause of all UFM traffic after UFM refused the credentials.
const FIRST_AUTH_PAUSE: Duration = Duration::from_secs(1);

/// A removal something waits for is confirmed by a listing this soon (several are batched).
const CONFIRM_AFTER: Duration = Duration::from_millis(300);

/// A permanent refusal waits this many times the transient cap before it is tried again
/// (or until its input changes).
const PERMANENT_FACTOR: u32 = 10;
