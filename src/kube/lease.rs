//! Leader election on a `coordination.k8s.io/v1` Lease, with get/create/replace and optimistic
//! concurrency on `resourceVersion` (as client-go's leaderelection). Expiry is judged on this
//! process's monotonic clock from when the current record was first seen, never on the
//! holder's timestamps, so clock skew between replicas cannot shorten a term. A leader that
//! cannot renew for `renew_deadline` stops being leader at once, before the lease (longer by
//! `duration - renew_deadline`) can expire for anyone else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};

/// Where the Lease is, who we are, and the timing (client-go's defaults are 15 s / 10 s / 2 s).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// `<node>_<pod uid>`, as ib-kubernetes.
    pub identity: String,
    /// How long a holder's term lasts without renewal (whole seconds on the wire).
    pub duration: Duration,
    /// A leader that could not renew for this long steps down; must be below `duration`.
    pub renew_deadline: Duration,
    /// Pause between attempts (renewals by the leader, polls by followers).
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);
    pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration: Self::DEFAULT_DURATION,
            renew_deadline: Self::DEFAULT_RENEW_DEADLINE,
            retry_period: Self::DEFAULT_RETRY_PERIOD,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Someone else holds an unexpired term.
    HeldBy(String),
    /// Write this spec (a renewal of our term, or the start of a new one).
    Write(LeaseSpec),
}

/// Decides from the current spec, when that record was first seen, and the clocks (pure).
pub fn decide(s: &LeaseSettings, spec: &LeaseSpec, seen_at: Instant, now: Instant, wall: Timestamp) -> Decision {
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    let term = spec.lease_duration_seconds.and_then(|d| u64::try_from(d).ok()).map_or(s.duration, Duration::from_secs);
    match holder {
        Some(h) if h == s.identity => Decision::Write(LeaseSpec {
            renew_time: Some(MicroTime(wall)),
            lease_duration_seconds: Some(s.duration_seconds()),
            ..spec.clone()
        }),
        Some(h) if now < seen_at + term => Decision::HeldBy(h.to_string()),
        _ => Decision::Write(LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(s.duration_seconds()),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..spec.clone()
        }),
    }
}

/// A leader's right to write, by this process's monotonic clock: it lasts until the last
/// successful renewal plus the renew deadline. Writers check it right before every request, so
/// a process frozen past its term (SIGSTOP, starvation) writes nothing when it wakes up, even
/// before its engine has seen leadership go.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

impl Fence {
    pub(crate) fn set(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// `Ok` while the term is valid; else why not, for the refused write's error.
    pub fn check(&self) -> Result<(), String> {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            Some(t) if Instant::now() < t => Ok(()),
            Some(_) => Err("not writing: the leader lease was not renewed within the renew deadline".into()),
            None => Err("not writing: this replica does not hold the leader lease".into()),
        }
    }
}

/// Acquires, renews and releases one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    s: LeaseSettings,
    /// The record last read and when it was first seen.
    observed: Option<(LeaseSpec, Instant)>,
    fence: Fence,
}

impl LeaderElector {
    pub fn new(client: Client, s: LeaseSettings) -> LeaderElector {
        LeaderElector { api: Api::namespaced(client, &s.namespace), s, observed: None, fence: Fence::default() }
    }

    /// The fence writers check; valid while this elector's renewals are.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.s
    }

    /// Runs forever (cancel by dropping), publishing leadership on `leader`. `true` is sent
    /// after a successful acquire or renewal; `false` as soon as another holder is seen or the
    /// renew deadline passes without a renewal.
    pub async fn run(&mut self, leader: &watch::Sender<bool>) {
        let mut renewed_at: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let is_leader = *leader.borrow();
            // An attempt never outlives the current term's renew deadline.
            let deadline = match renewed_at {
                Some(t) if is_leader => t + self.s.renew_deadline,
                _ => started + self.s.renew_deadline,
            };
            match timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(None)) => {
                    renewed_at = Some(started);
                    // Measured from before the request: the term may be counted from then.
                    self.fence.set(Some(started + self.s.renew_deadline));
                    if !is_leader {
                        tracing::info!(lease = %self.s.name, identity = %self.s.identity, "acquired the leader lease");
                        leader.send_replace(true);
                    }
                }
                Ok(Ok(Some(holder))) => {
                    renewed_at = None;
                    self.fence.set(None);
                    if is_leader {
                        tracing::warn!(lease = %self.s.name, holder = %holder, "the leader lease is held by another replica; stepping down");
                        leader.send_replace(false);
                    }
                }
                Ok(Err(e)) => tracing::warn!(lease = %self.s.name, error = %e, "leader lease request failed"),
                Err(_) => tracing::warn!(lease = %self.s.name, "leader lease request timed out"),
            }
            if *leader.borrow() && renewed_at.is_none_or(|t| t.elapsed() >= self.s.renew_deadline) {
                tracing::warn!(lease = %self.s.name, deadline_ms = self.s.renew_deadline.as_millis() as u64,
                    "could not renew the leader lease in time; stepping down");
                leader.send_replace(false);
                renewed_at = None;
                self.fence.set(None);
            }
            let mut next = started + self.s.retry_period;
            if let (true, Some(t)) = (*leader.borrow(), renewed_at) {
                next = next.min(t + self.s.renew_deadline);
            }
            sleep_until(next).await;
        }
    }

    /// One attempt: `Ok(None)` when we hold the lease now, `Ok(Some(holder))` when another
    /// replica does.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Option<String>, kube::Error> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.s.name).await? else {
            let spec = match decide(&self.s, &LeaseSpec::default(), now, now, wall) {
                Decision::Write(spec) => LeaseSpec { lease_transitions: Some(0), ..spec },
                Decision::HeldBy(h) => return Ok(Some(h)),
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.s.name.clone()),
                    namespace: Some(self.s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            let created = self.api.create(&PostParams::default(), &lease).await?;
            self.observe(created.spec.unwrap_or_default(), now);
            return Ok(None);
        };
        let spec = lease.spec.take().unwrap_or_default();
        let seen_at = self.observe(spec.clone(), now);
        match decide(&self.s, &spec, seen_at, now, wall) {
            Decision::HeldBy(h) => Ok(Some(h)),
            Decision::Write(new) => {
                lease.spec = Some(new);
                // The resourceVersion from the read makes a concurrent writer's change a 409.
                let written = self.api.replace(&self.s.name, &PostParams::default(), &lease).await?;
                self.observe(written.spec.unwrap_or_default(), now);
                Ok(None)
            }
        }
    }

    /// Records `spec`; returns when the record was first seen.
    fn observe(&mut self, spec: LeaseSpec, now: Instant) -> Instant {
        match &self.observed {
            Some((old, at)) if *old == spec => *at,
            _ => {
                self.observed = Some((spec, now));
                now
            }
        }
    }

    /// Gives the lease up if we hold it (holder cleared, 1 s term), so a standby takes over
    /// at once. Call only after this replica stopped writing. Returns whether it released.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        self.fence.set(None);
        let Some(mut lease) = self.api.get_opt(&self.s.name).await? else { return Ok(false) };
        let spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.s.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..spec
        });
        self.api.replace(&self.s.name, &PostParams::default(), &lease).await?;
        tracing::info!(lease = %self.s.name, identity = %self.s.identity, "released the leader lease");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings::new("kube-system", "l", "me")
    }

    fn held_by(h: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(h.into()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_holder_is_respected_until_its_term_has_passed_on_our_clock() {
        let s = settings();
        let seen = Instant::now();
        let wall = Timestamp::now();
        let spec = held_by("other", 3);
        assert_eq!(decide(&s, &spec, seen, seen + Duration::from_secs(14), wall), Decision::HeldBy("other".into()));
        let Decision::Write(new) = decide(&s, &spec, seen, seen + Duration::from_secs(15), wall) else {
            panic!("expired term is taken over");
        };
        assert_eq!(new.holder_identity.as_deref(), Some("me"));
        assert_eq!(new.lease_transitions, Some(4));
        assert!(new.acquire_time.is_some());
    }

    #[test]
    fn our_own_term_is_renewed_keeping_acquire_time_and_transitions() {
        let s = settings();
        let now = Instant::now();
        let mut spec = held_by("me", 2);
        spec.acquire_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
        let Decision::Write(new) = decide(&s, &spec, now, now, Timestamp::now()) else { panic!("renew") };
        assert_eq!(new.acquire_time, spec.acquire_time);
        assert_eq!(new.lease_transitions, Some(2));
        assert_ne!(new.renew_time, spec.renew_time);
    }

    #[test]
    fn a_released_or_new_lease_is_taken_at_once() {
        let s = settings();
        let now = Instant::now();
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            lease_transitions: Some(5),
            ..LeaseSpec::default()
        };
        let Decision::Write(new) = decide(&s, &released, now, now, Timestamp::now()) else { panic!("take") };
        assert_eq!(new.holder_identity.as_deref(), Some("me"));
        assert_eq!(new.lease_transitions, Some(6));
        assert!(matches!(decide(&s, &LeaseSpec::default(), now, now, Timestamp::now()), Decision::Write(_)));
    }
}
