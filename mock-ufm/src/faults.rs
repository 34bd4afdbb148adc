//! The fault model: rules that add latency, fail, hang, reset or refuse UFM requests, each
//! scoped to a method and/or path prefix, limited by count, time window and probability.
//!
//! [`FaultSet::decide`] is pure given a clock value and a random source; the server carries out
//! the decision. Rules have a flat JSON form used by the admin API (see the crate docs).

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Why a fault rule was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown fault kind {0:?} (expected latency, error, outage, hang, reset, unauthorized)")]
    UnknownKind(String),
    #[error("field `{field}` does not apply to fault kind {kind}")]
    FieldNotAllowed { field: &'static str, kind: String },
    #[error("{0}")]
    Invalid(String),
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Delay the request by a random duration in `min..=max`, then serve it normally.
    Latency { min: Duration, max: Duration },
    /// Answer with one of `statuses` (chosen at random) and an Apache-style HTML body.
    Error { statuses: Vec<u16> },
    /// Answer 503 with Apache's "Service Temporarily Unavailable" page.
    Outage,
    /// Never answer; after `max` (if set) close the connection without a response.
    Hang { max: Option<Duration> },
    /// Drop the TCP connection with a reset (SO_LINGER 0) instead of answering.
    Reset,
    /// Answer 401 as Apache does, whatever the credentials.
    Unauthorized,
}

impl FaultKind {
    fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Error { .. } => "error",
            FaultKind::Outage => "outage",
            FaultKind::Hang { .. } => "hang",
            FaultKind::Reset => "reset",
            FaultKind::Unauthorized => "unauthorized",
        }
    }
}

/// Which requests a rule applies to; empty matches every UFM request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// HTTP method, case-insensitive.
    pub method: Option<String>,
    /// Matched against the path without its `/ufmRest` or `/ufmRestV3` prefix
    /// (`/resources/pkeys`) and against the full path (`/ufmRestV3/`).
    pub path_prefix: Option<String>,
}

impl Scope {
    fn matches(&self, method: &str, endpoint_path: &str, full_path: &str) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_ok =
            self.path_prefix.as_deref().is_none_or(|p| endpoint_path.starts_with(p) || full_path.starts_with(p));
        method_ok && path_ok
    }
}

/// One fault rule. JSON (flat): `{"kind": "error", "statuses": [502], "probability": 0.5,
/// "method": "POST", "path_prefix": "/resources/pkeys", "count": 3, "duration_ms": 1000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct FaultRule {
    pub kind: FaultKind,
    pub scope: Scope,
    /// Chance that a matching request triggers the rule (default 1).
    pub probability: f64,
    /// Fire at most this many times, then the rule is removed.
    pub count: Option<u32>,
    /// The rule is active for this long after it is installed, then removed.
    pub duration: Option<Duration>,
}

impl FaultRule {
    fn of(kind: FaultKind) -> FaultRule {
        FaultRule { kind, scope: Scope::default(), probability: 1.0, count: None, duration: None }
    }

    /// Fixed latency.
    pub fn latency(delay: Duration) -> FaultRule {
        FaultRule::of(FaultKind::Latency { min: delay, max: delay })
    }

    /// Random latency in `min..=max`.
    pub fn latency_between(min: Duration, max: Duration) -> FaultRule {
        FaultRule::of(FaultKind::Latency { min, max })
    }

    /// Fail a fraction `probability` of requests with one of `statuses`.
    pub fn error_rate(probability: f64, statuses: &[u16]) -> FaultRule {
        FaultRule { probability, ..FaultRule::of(FaultKind::Error { statuses: statuses.to_vec() }) }
    }

    /// Answer every request 503 for `window` from now.
    pub fn outage(window: Duration) -> FaultRule {
        FaultRule { duration: Some(window), ..FaultRule::of(FaultKind::Outage) }
    }

    /// Never answer (until the client gives up or the server stops).
    pub fn hang() -> FaultRule {
        FaultRule::of(FaultKind::Hang { max: None })
    }

    /// Drop the connection with a TCP reset.
    pub fn reset() -> FaultRule {
        FaultRule::of(FaultKind::Reset)
    }

    /// Answer 401 to the next `n` requests.
    pub fn unauthorized_next(n: u32) -> FaultRule {
        FaultRule { count: Some(n), ..FaultRule::of(FaultKind::Unauthorized) }
    }

    /// Answer 401 to every request for `window` from now.
    pub fn unauthorized_for(window: Duration) -> FaultRule {
        FaultRule { duration: Some(window), ..FaultRule::of(FaultKind::Unauthorized) }
    }

    /// Restrict to one HTTP method.
    pub fn method(mut self, method: &str) -> FaultRule {
        self.scope.method = Some(method.to_string());
        self
    }

    /// Restrict to paths starting with `prefix` (e.g. `/resources/pkeys`).
    pub fn path(mut self, prefix: &str) -> FaultRule {
        self.scope.path_prefix = Some(prefix.to_string());
        self
    }

    /// Fire at most `n` times.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.count = Some(n);
        self
    }

    /// Stay active for `window` after installation.
    pub fn for_duration(mut self, window: Duration) -> FaultRule {
        self.duration = Some(window);
        self
    }

    /// Fire on a fraction of matching requests.
    pub fn with_probability(mut self, p: f64) -> FaultRule {
        self.probability = p;
        self
    }
}

/// The flat JSON form of a rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    statuses: Option<Vec<u16>>,
}

impl TryFrom<RawRule> for FaultRule {
    type Error = FaultError;

    fn try_from(raw: RawRule) -> Result<FaultRule, FaultError> {
        let not_for = |field: &'static str| FaultError::FieldNotAllowed { field, kind: raw.kind.clone() };
        let latency_fields = raw.ms.is_some() || raw.min_ms.is_some() || raw.max_ms.is_some();
        if raw.kind != "latency" && raw.kind != "hang" && latency_fields {
            return Err(not_for("ms/min_ms/max_ms"));
        }
        if raw.kind != "error" && raw.statuses.is_some() {
            return Err(not_for("statuses"));
        }
        let kind = match raw.kind.as_str() {
            "latency" => {
                let (min, max) = match (raw.ms, raw.min_ms, raw.max_ms) {
                    (Some(ms), None, None) => (ms, ms),
                    (None, Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                    _ => {
                        return Err(FaultError::Invalid("latency needs `ms`, or `min_ms` <= `max_ms`".to_string()));
                    }
                };
                FaultKind::Latency { min: Duration::from_millis(min), max: Duration::from_millis(max) }
            }
            "error" => {
                let statuses = raw.statuses.clone().unwrap_or_else(|| vec![500]);
                if statuses.is_empty() || statuses.iter().any(|s| !(400..=599).contains(s)) {
                    return Err(FaultError::Invalid(
                        "`statuses` must be a non-empty list of 4xx/5xx codes".to_string(),
                    ));
                }
                FaultKind::Error { statuses }
            }
            "outage" => {
                if raw.duration_ms.is_none() {
                    return Err(FaultError::Invalid("outage needs `duration_ms`".to_string()));
                }
                FaultKind::Outage
            }
            "hang" => {
                if raw.min_ms.is_some() || raw.max_ms.is_some() {
                    return Err(not_for("min_ms/max_ms"));
                }
                FaultKind::Hang { max: raw.ms.map(Duration::from_millis) }
            }
            "reset" => FaultKind::Reset,
            "unauthorized" => FaultKind::Unauthorized,
            other => return Err(FaultError::UnknownKind(other.to_string())),
        };
        let probability = raw.probability.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&probability) {
            return Err(FaultError::Invalid("`probability` must be between 0 and 1".to_string()));
        }
        Ok(FaultRule {
            kind,
            scope: Scope { method: raw.method, path_prefix: raw.path_prefix },
            probability,
            count: raw.count,
            duration: raw.duration_ms.map(Duration::from_millis),
        })
    }
}

impl From<FaultRule> for RawRule {
    fn from(rule: FaultRule) -> RawRule {
        let mut raw = RawRule {
            kind: rule.kind.name().to_string(),
            method: rule.scope.method,
            path_prefix: rule.scope.path_prefix,
            probability: (rule.probability != 1.0).then_some(rule.probability),
            count: rule.count,
            duration_ms: rule.duration.map(|d| d.as_millis() as u64),
            ..RawRule::default()
        };
        match rule.kind {
            FaultKind::Latency { min, max } if min == max => raw.ms = Some(min.as_millis() as u64),
            FaultKind::Latency { min, max } => {
                raw.min_ms = Some(min.as_millis() as u64);
                raw.max_ms = Some(max.as_millis() as u64);
            }
            FaultKind::Error { statuses } => raw.statuses = Some(statuses),
            FaultKind::Hang { max } => raw.ms = max.map(|d| d.as_millis() as u64),
            FaultKind::Outage | FaultKind::Reset | FaultKind::Unauthorized => {}
        }
        raw
    }
}

/// What to do with one request instead of (or before) serving it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Status(u16),
    Outage,
    Hang(Option<Duration>),
    Reset,
    Unauthorized,
}

impl Action {
    /// The name recorded in the request log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Status(_) => "error",
            Action::Outage => "outage",
            Action::Hang(_) => "hang",
            Action::Reset => "reset",
            Action::Unauthorized => "unauthorized",
        }
    }
}

/// The outcome of the fault rules for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub latency: Duration,
    pub action: Option<Action>,
}

/// An installed rule as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstalledRule {
    pub id: u64,
    #[serde(flatten)]
    pub rule: FaultRule,
    /// How many more times it may fire (if limited).
    pub remaining: Option<u32>,
    /// Milliseconds until it expires (if limited).
    pub expires_in_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Active {
    id: u64,
    rule: FaultRule,
    remaining: Option<u32>,
    expires: Option<Instant>,
}

/// The installed rules.
#[derive(Debug, Clone, Default)]
pub struct FaultSet {
    rules: Vec<Active>,
    next_id: u64,
}

impl FaultSet {
    /// Installs `rule`; its window (if any) starts at `now`. Returns its id.
    pub fn add(&mut self, rule: FaultRule, now: Instant) -> u64 {
        self.next_id += 1;
        self.rules.push(Active {
            id: self.next_id,
            remaining: rule.count,
            expires: rule.duration.map(|d| now + d),
            rule,
        });
        self.next_id
    }

    /// Replaces all rules.
    pub fn replace(&mut self, rules: Vec<FaultRule>, now: Instant) -> Vec<u64> {
        self.rules.clear();
        rules.into_iter().map(|r| self.add(r, now)).collect()
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|a| a.id != id);
        self.rules.len() != before
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules still active at `now`.
    pub fn list(&self, now: Instant) -> Vec<InstalledRule> {
        self.rules
            .iter()
            .filter(|a| a.expires.is_none_or(|e| e > now))
            .map(|a| InstalledRule {
                id: a.id,
                rule: a.rule.clone(),
                remaining: a.remaining,
                expires_in_ms: a.expires.map(|e| e.saturating_duration_since(now).as_millis() as u64),
            })
            .collect()
    }

    /// Decides what happens to one request. Every matching latency rule adds its delay; the
    /// first matching rule of any other kind (in installation order) decides the action.
    pub fn decide(
        &mut self,
        method: &str,
        endpoint_path: &str,
        full_path: &str,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Decision {
        self.rules.retain(|a| a.expires.is_none_or(|e| e > now));
        let mut decision = Decision::default();
        for a in &mut self.rules {
            let terminal = !matches!(a.rule.kind, FaultKind::Latency { .. });
            if terminal && decision.action.is_some() {
                continue;
            }
            if !a.rule.scope.matches(method, endpoint_path, full_path) {
                continue;
            }
            if a.rule.probability < 1.0 && rng.random::<f64>() >= a.rule.probability {
                continue;
            }
            if let Some(n) = a.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
            match &a.rule.kind {
                FaultKind::Latency { min, max } => {
                    decision.latency += if min >= max { *min } else { rng.random_range(*min..=*max) };
                }
                FaultKind::Error { statuses } => {
                    let i = rng.random_range(0..statuses.len().max(1));
                    let status = statuses.get(i).copied().unwrap_or(500);
                    decision.action = Some(Action::Status(status));
                }
                FaultKind::Outage => decision.action = Some(Action::Outage),
                FaultKind::Hang { max } => decision.action = Some(Action::Hang(*max)),
                FaultKind::Reset => decision.action = Some(Action::Reset),
                FaultKind::Unauthorized => decision.action = Some(Action::Unauthorized),
            }
        }
        self.rules.retain(|a| a.remaining != Some(0));
        decision
    }
}

#[cfg(test)]
#[path = "faults_tests.rs"]
mod tests;
