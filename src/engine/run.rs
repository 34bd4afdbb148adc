//! The engine task: applies cluster events, closes batches, runs ledger writes, per-pkey fabric
//! jobs and pod patches with bounded concurrency, lists the fabric for drift repair, and obeys
//! leadership. All decisions are made by `State::assign` and `plan`; this file only schedules
//! and awaits.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::fabric::{Fabric, FabricError, FabricListing};
use super::ledger::Claim;
use super::model::PodUid;
use super::plan::{Blocked, Limits, PkeyJob, Plan, RemovalWhy, build_patch, plan};
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

enum Done {
    Job { pkey: PKey, remove: Vec<Guid>, why: RemovalWhy, removed: Result<(), FabricError>, adds: Vec<AddDone> },
    Patch { patch: PodPatch, result: Result<PatchOutcome, WriteError> },
    Claim { claim: Claim, release: bool, result: Result<ClaimOutcome, WriteError> },
    List { started: u64, result: Result<FabricListing, FabricError> },
    Event,
}

struct AddDone {
    spec: PartitionSpec,
    guids: Vec<Guid>,
    result: Result<(), FabricError>,
}

pub struct Engine {
    pub state: State,
    fabric: Arc<dyn Fabric>,
    writer: Arc<dyn ClusterWriter>,
    timing: Timing,
    stats: Arc<EngineStats>,
    tasks: JoinSet<Done>,
    pkey_slots: Arc<Semaphore>,
    /// Patches and Events wait here and are started as slots free up, so that a burst of
    /// 100k pods holds 100k small values, not 100k parked tasks.
    patch_queue: VecDeque<PodUid>,
    patches_in_flight: usize,
    /// Claim writes (before patches: nothing moves before its claim is written).
    claim_queue: VecDeque<(Claim, bool)>,
    event_queue: VecDeque<EventRecord>,
    events_in_flight: usize,
    busy_pkeys: HashSet<PKey>,
    backoff_pkeys: Backoffs<PKey>,
    patching: HashSet<PodUid>,
    backoff_pods: Backoffs<PodUid>,
    claiming: HashSet<PodUid>,
    backoff_claims: Backoffs<PodUid>,
    list_failures: Backoffs<()>,
    /// UFM refused the credentials: every UFM request waits.
    auth_pause: Backoffs<()>,
    window: Option<Instant>,
    /// Since when adds wait for claim writes of the same batch (bounded by the periodic update).
    adds_held_since: Option<Instant>,
    list_in_flight: bool,
    next_resync: Instant,
    next_tick: Instant,
    next_gauges: Instant,
    leader: bool,
}

impl Engine {
    pub fn new(
        state: State,
        fabric: Arc<dyn Fabric>,
        writer: Arc<dyn ClusterWriter>,
        timing: Timing,
        stats: Arc<EngineStats>,
    ) -> Engine {
        let now = Instant::now();
        Engine {
            state,
            fabric,
            writer,
            pkey_slots: Arc::new(Semaphore::new(timing.max_parallel_pkeys)),
            patch_queue: VecDeque::new(),
            patches_in_flight: 0,
            claim_queue: VecDeque::new(),
            event_queue: VecDeque::new(),
            events_in_flight: 0,
            next_tick: now + timing.periodic_update,
            next_resync: now,
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
            list_failures: Backoffs::new(FIRST_RETRY),
            auth_pause: Backoffs::new(FIRST_AUTH_PAUSE),
            window: None,
            adds_held_since: None,
            list_in_flight: false,
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
        self.list_in_flight = false;
        self.state.reset_leader_state();
        self.stats.set_fabric_reached(false);
        self.next_resync = Instant::now();
    }

    fn on_event(&mut self, ev: ClusterEvent) {
        self.stats.events_applied.inc();
        match &ev {
            ClusterEvent::CachesSynced => self.stats.set_caches_synced(true),
            // A changed network is new input: a permanent refusal of its pkey is tried again.
            ClusterEvent::NetworkApplied { network: Ok(Some(n)), .. } => {
                if let Some(p) = n.pkey() {
                    self.backoff_pkeys.succeeded(&p);
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
        let mut wake = self.next_tick.min(self.next_resync).min(self.next_gauges);
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
            self.next_resync = now + self.timing.resync_interval;
            return;
        }
        if now >= self.next_resync && self.state.caches_synced && !self.list_in_flight && !self.fabric_paused(now) {
            self.start_list();
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

    fn start_list(&mut self) {
        self.list_in_flight = true;
        self.stats.lists.inc();
        let started = self.state.knowledge.list_started();
        let fabric = self.fabric.clone();
        self.tasks.spawn(async move { Done::List { started, result: fabric.list().await } });
        // Quarantined GUIDs are confirmed by a list: come back sooner while any wait.
        let every = if self.state.awaiting_confirmation() > 0 {
            self.timing.periodic_update.min(self.timing.resync_interval)
        } else {
            self.timing.resync_interval
        };
        self.next_resync = Instant::now() + every;
    }

    /// Assigns, plans and launches work. With `only`, plans write-backs and status for those
    /// GUIDs alone (UFM just accepted them); fabric work waits for the batch window.
    fn flush(&mut self, only: Option<&[Guid]>) {
        if only.is_none() {
            self.state.assign();
        }
        let now = Instant::now();
        let writes_only = only.is_some() || self.fabric_paused(now);
        // Asked only when adds may go: a writes-only flush must not use up the end of a hold.
        let hold_adds = !writes_only && self.hold_adds(now);
        let blocked_pkeys: HashSet<PKey> =
            self.busy_pkeys.iter().chain(self.backoff_pkeys.blocked(now)).copied().collect();
        let blocked_pods = Blocked { busy: &self.patching, backoff: Some(&self.backoff_pods), now };
        let blocked_claims = Blocked { busy: &self.claiming, backoff: Some(&self.backoff_claims), now };
        let candidates: Vec<Guid> = match only {
            Some(guids) => guids.to_vec(),
            None => self.state.dirty_guids.iter().copied().collect(),
        };
        let limits = Limits { blocked_pkeys: &blocked_pkeys, blocked_pods, blocked_claims, writes_only, hold_adds };
        let plan = plan(&self.state, &candidates, &limits);
        self.commit(plan);
        self.emit_events();
    }

    fn commit(&mut self, plan: Plan) {
        self.state.commit(&plan);
        self.stats.drift_repairs.add(plan.stale_removals as u64);
        self.stats.breaker_trips.add(plan.breaker.len() as u64);
        for trip in &plan.breaker {
            tracing::warn!(pkey = %trip.pkey, stale = trip.stale, members = trip.members,
                "mass removal refused: stale GUIDs exceed the allowed share of the partition");
        }
        for claim in plan.write_claims {
            self.launch_claim(claim, false);
        }
        for claim in plan.release_claims {
            self.launch_claim(claim, true);
        }
        for (pkey, job) in plan.jobs {
            self.launch_job(pkey, job);
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

    fn launch_job(&mut self, pkey: PKey, job: PkeyJob) {
        self.busy_pkeys.insert(pkey);
        let fabric = self.fabric.clone();
        let slots = self.pkey_slots.clone();
        let stats = self.stats.clone();
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
            Done::Job { pkey, remove: job.remove, why: job.why, removed, adds }
        });
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
            Done::Job { pkey, remove, why, removed, adds } => {
                let touched: Vec<Guid> =
                    remove.iter().chain(adds.iter().flat_map(|a| a.guids.iter())).copied().collect();
                self.job_done(pkey, remove, why, removed, adds);
                // Accepted GUIDs are written back at once; the pkey's next change waits for
                // the window, or goes now if nothing else is collecting.
                if self.window.is_some() {
                    self.flush(Some(&touched));
                } else {
                    self.flush(None);
                }
            }
            Done::List { started, result } => self.list_done(started, result),
        }
    }

    fn job_done(
        &mut self,
        pkey: PKey,
        remove: Vec<Guid>,
        why: RemovalWhy,
        removed: Result<(), FabricError>,
        adds: Vec<AddDone>,
    ) {
        self.busy_pkeys.remove(&pkey);
        if !remove.is_empty() {
            // The audit trail: every UFM change once, at info, with its cause and outcome.
            let outcome = removed.as_ref().map_or_else(|e| e.reason.as_str(), |_| "ok");
            tracing::info!(pkey = %pkey, guids = remove.len(), owner_gone = why.owner_gone, moved = why.moved,
                stale = why.stale, outcome, "UFM: remove");
        }
        self.state.remove_result(pkey, &remove, removed.as_ref().map(|_| ()));
        let freed = removed.is_ok() && !remove.is_empty();
        let mut failed = removed.err();
        for add in adds {
            let outcome = add.result.as_ref().map_or_else(|e| e.reason.as_str(), |_| "ok");
            tracing::info!(pkey = %pkey, guids = add.guids.len(), membership = %add.spec.membership,
                index0 = add.spec.index0, outcome, "UFM: add for pods");
            self.state.add_result(&add.spec, &add.guids, add.result.as_ref().map(|_| ()));
            if let Err(e) = add.result {
                failed = Some(e);
            }
        }
        match failed {
            None => {
                self.backoff_pkeys.succeeded(&pkey);
                self.fabric_answered();
            }
            Some(e) => {
                self.stats.fabric_failures.inc();
                self.fabric_failed(&e);
                let now = Instant::now();
                let delay = if e.is_permanent() {
                    // Not retried until a network naming the pkey changes (or after a long pause).
                    self.backoff_pkeys.refused(pkey, self.timing.cap(false), now)
                } else {
                    self.backoff_pkeys.failed(pkey, self.timing.cap(e.is_transient()), now)
                };
                tracing::warn!(pkey = %pkey, reason = e.reason.as_str(), class = e.class.as_str(), error = %e,
                    retry_in_ms = delay.as_millis() as u64, "UFM change failed; retrying");
            }
        }
        if freed && self.state.waits_for_guids() {
            // Something waits for a GUID: confirm the removal with a listing now rather than at
            // the next resync, so that reuse follows within a second or two.
            self.next_resync = self.next_resync.min(Instant::now() + CONFIRM_AFTER);
        }
    }

    /// Any UFM answer that is not an auth failure ends the auth pause.
    fn fabric_answered(&mut self) {
        if !self.auth_pause.is_empty() {
            tracing::info!("UFM accepts the credentials again; resuming UFM traffic");
        }
        self.auth_pause.succeeded(&());
        self.stats.set_fabric_auth_failing(false);
    }

    /// A 401/403 from UFM pauses every UFM request (lists and changes) for a growing time:
    /// real UFMs lock accounts after repeated failed logins.
    fn fabric_failed(&mut self, e: &FabricError) {
        if !e.is_auth() {
            return;
        }
        let pause = self.auth_pause.failed((), self.timing.retry_max, Instant::now());
        self.stats.set_fabric_auth_failing(true);
        tracing::warn!(reason = e.reason.as_str(), error = %e, pause_ms = pause.as_millis() as u64,
            "UFM refuses the credentials; pausing all UFM traffic (check the UFM Secret)");
        self.next_resync = self.next_resync.max(Instant::now() + pause);
    }

    fn fabric_paused(&self, now: Instant) -> bool {
        self.auth_pause.blocks(&(), now)
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

    fn list_done(&mut self, started: u64, result: Result<FabricListing, FabricError>) {
        self.list_in_flight = false;
        match result {
            Ok(listing) => {
                self.list_failures.succeeded(&());
                self.fabric_answered();
                let first = !self.state.fabric_listed;
                self.stats.set_fabric_reached(true);
                let lost = self.state.list_result(started, &listing);
                self.stats.drift_repairs.add(lost as u64);
                let g = self.state.gauges();
                tracing::info!(
                    partitions = listing.len(),
                    managed_guids = self.state.knowledge.guids().count(),
                    lost_readded = lost,
                    quarantined = g.pool_quarantined,
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
                self.stats.fabric_failures.inc();
                let delay = self.list_failures.failed((), self.timing.cap(e.is_transient()), Instant::now());
                tracing::warn!(reason = e.reason.as_str(), error = %e, retry_in_ms = delay.as_millis() as u64,
                    "listing UFM failed; retrying");
                self.next_resync = Instant::now() + delay;
                // An auth failure may push it further out.
                self.fabric_failed(&e);
            }
        }
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
