//! Client-side protection of the API server: every request of the controller's `kube::Client`
//! passes one token bucket (`--kube-api-qps`, `--kube-api-burst`), as a tower layer, and
//! 429/503/504 answers are retried here (kube's own retry is switched off, so that every
//! attempt takes a token and a `Retry-After` is waited out once, not twice).
//!
//! Priorities when the budget is short: Lease requests take a token but never wait (a leader
//! that cannot renew stops writing); pod, ledger and every other request wait their turn in
//! order; Events only take a token nobody else has reserved, wait at most [`EVENT_MAX_WAIT`],
//! and are dropped (counted in `fabric_sync_kube_api_events_dropped_total`) after that.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use kube::client::Body;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt as _};

use crate::ops::Metrics;

/// Longest an Event waits for a token before it is dropped.
pub const EVENT_MAX_WAIT: Duration = Duration::from_secs(10);
/// Attempts of one request answered 429, 503 or 504 (the first included).
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Back-off without `Retry-After`: 250 ms, doubled per attempt, at most 8 s.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// The budget: `qps` tokens a second, at most `burst` saved up. `qps` 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

/// Who waits for whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Leader election: takes a token, never waits.
    Lease,
    /// Pods, ledger, watches, lists: first come, first served.
    Normal,
    /// Events: only spare tokens; dropped after [`EVENT_MAX_WAIT`].
    Event,
}

/// The priority of a request, from its path.
pub fn priority_of(path: &str) -> Priority {
    if path.starts_with("/apis/coordination.k8s.io/") {
        Priority::Lease
    } else if path.starts_with("/apis/events.k8s.io/") || core_resource(path) == Some("events") {
        Priority::Event
    } else {
        Priority::Normal
    }
}

/// The resource a core-group path (`/api/v1/...`) names.
fn core_resource(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.strip_prefix("/api/v1/")?.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["namespaces", _ns, resource, ..] => Some(resource),
        [resource, ..] => Some(resource),
        [] => None,
    }
}

/// A token bucket whose balance may go below zero: a request that finds no token reserves the
/// next one and waits until it is due, so waiting requests are served in arrival order.
#[derive(Debug)]
pub struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(limit: RateLimit, now: Instant) -> Bucket {
        let burst = f64::from(limit.burst.max(1));
        Bucket { qps: limit.qps, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
    }

    /// Takes a token for a request of `priority` at `now`. `Ok(wait)`: taken, send after
    /// `wait`. `Err(wait)` (Events only): nothing taken, look again after `wait`.
    pub fn take(&mut self, priority: Priority, now: Instant) -> Result<Duration, Duration> {
        self.refill(now);
        let due = |deficit: f64, qps: f64| Duration::from_secs_f64((deficit / qps).max(0.0));
        match priority {
            Priority::Lease => {
                self.tokens -= 1.0;
                Ok(Duration::ZERO)
            }
            Priority::Normal => {
                self.tokens -= 1.0;
                Ok(due(-self.tokens, self.qps))
            }
            Priority::Event if self.tokens >= 1.0 => {
                self.tokens -= 1.0;
                Ok(Duration::ZERO)
            }
            // Every waiting request is served first: look again once a spare token is due.
            Priority::Event => Err(due(1.0 - self.tokens, self.qps).max(Duration::from_millis(1))),
        }
    }
}

/// The bucket (none without a limit), shared by every clone of the client.
pub struct Limiter {
    bucket: Option<Mutex<Bucket>>,
    metrics: Option<Arc<Metrics>>,
}

/// An Event that found no spare token in [`EVENT_MAX_WAIT`].
#[derive(Debug, thiserror::Error)]
#[error("Event dropped: the client-side Kubernetes API rate limit (--kube-api-qps) left no spare request")]
pub struct EventDropped;

impl Limiter {
    pub fn new(limit: RateLimit, metrics: Option<Arc<Metrics>>) -> Limiter {
        let bucket = (limit.qps > 0.0).then(|| Mutex::new(Bucket::new(limit, Instant::now())));
        Limiter { bucket, metrics }
    }

    fn take(&self, priority: Priority) -> Option<Result<Duration, Duration>> {
        let bucket = self.bucket.as_ref()?;
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        Some(b.take(priority, Instant::now()))
    }

    /// Waits for a token; an Event may be dropped instead.
    pub async fn acquire(&self, priority: Priority) -> Result<(), EventDropped> {
        let deadline = Instant::now() + EVENT_MAX_WAIT;
        let mut waited = false;
        loop {
            match self.take(priority) {
                None | Some(Ok(Duration::ZERO)) => break,
                Some(Ok(wait)) => {
                    waited = true;
                    tokio::time::sleep(wait).await;
                    break;
                }
                Some(Err(again)) => {
                    if Instant::now() + again > deadline {
                        if let Some(m) = &self.metrics {
                            m.kube_api_event_dropped();
                        }
                        return Err(EventDropped);
                    }
                    waited = true;
                    tokio::time::sleep(again).await;
                }
            }
        }
        if waited {
            if let Some(m) = &self.metrics {
                m.kube_api_throttled();
            }
        }
        Ok(())
    }
}

/// How long to wait before attempt `attempt + 1` of a request answered `status` (`None`: do
/// not retry): the server's `Retry-After` (seconds) when it sent one, else a doubling back-off.
pub fn retry_delay(status: StatusCode, headers: &HeaderMap, attempt: u32) -> Option<Duration> {
    let retryable =
        matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT);
    if !retryable || attempt >= MAX_ATTEMPTS {
        return None;
    }
    let server = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    let backoff = BACKOFF_MIN.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    Some(server.unwrap_or(backoff))
}

/// The tower layer.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    pub fn new(limiter: Arc<Limiter>) -> RateLimitLayer {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited { inner: Arc::new(tokio::sync::Mutex::new(inner)), limiter: self.limiter.clone() }
    }
}

/// The service: kube's stack behind a lock held only to start a request (kube's boxed stack
/// cannot be cloned, and a retry needs it again).
pub struct RateLimited<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    limiter: Arc<Limiter>,
}

impl<S> Clone for RateLimited<S> {
    fn clone(&self) -> Self {
        RateLimited { inner: self.inner.clone(), limiter: self.limiter.clone() }
    }
}

fn copy_request(req: &Request<Body>) -> Option<Request<Body>> {
    let body = req.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

impl<S, B> Service<Request<Body>> for RateLimited<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness of the inner stack is awaited per request, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        Box::pin(async move {
            let priority = priority_of(req.uri().path());
            let mut req = req;
            let mut attempt = 1;
            loop {
                limiter.acquire(priority).await?;
                let again = copy_request(&req);
                let pending = {
                    let mut svc = inner.lock().await;
                    svc.ready().await.map_err(Into::into)?.call(req)
                };
                let response = pending.await.map_err(Into::into)?;
                let delay = retry_delay(response.status(), response.headers(), attempt);
                let (Some(delay), Some(again)) = (delay, again) else { return Ok(response) };
                tracing::debug!(
                    status = response.status().as_u16(),
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "Kubernetes API asked to retry; waiting"
                );
                if let Some(m) = &limiter.metrics {
                    m.kube_api_retry();
                }
                drop(response);
                tokio::time::sleep(delay).await;
                req = again;
                attempt += 1;
            }
        })
    }
}

/// A client for `config` whose every request passes the limiter (and its retries). kube's
/// built-in retry is switched off: this layer does it, taking a token per attempt.
pub fn limited_client(
    mut config: kube::Config,
    limit: RateLimit,
    metrics: Option<Arc<Metrics>>,
) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    let limiter = Arc::new(Limiter::new(limit, metrics));
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&RateLimitLayer::new(limiter)).build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn paths_get_their_priority() {
        assert_eq!(priority_of("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x"), Priority::Lease);
        assert_eq!(priority_of("/apis/events.k8s.io/v1/namespaces/t/events"), Priority::Event);
        assert_eq!(priority_of("/apis/events.k8s.io/v1/namespaces/t/events/p.1"), Priority::Event);
        assert_eq!(priority_of("/api/v1/namespaces/t/events"), Priority::Event);
        assert_eq!(priority_of("/api/v1/namespaces/t/pods/p"), Priority::Normal);
        assert_eq!(priority_of("/api/v1/namespaces/events/pods/p"), Priority::Normal);
        assert_eq!(priority_of("/api/v1/namespaces/events"), Priority::Normal);
        assert_eq!(priority_of("/api/v1/events"), Priority::Event);
        assert_eq!(priority_of("/apis/fabric-sync.io/v1alpha1/namespaces/t/guidclaims/u"), Priority::Normal);
    }

    #[test]
    fn retry_after_is_used_once_as_given_and_other_answers_back_off() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_delay(StatusCode::TOO_MANY_REQUESTS, &h, 1), Some(Duration::from_secs(3)));
        assert_eq!(retry_delay(StatusCode::TOO_MANY_REQUESTS, &h, 2), Some(Duration::from_secs(3)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_delay(StatusCode::SERVICE_UNAVAILABLE, &h, 1), Some(MAX_RETRY_AFTER));
        let none = HeaderMap::new();
        assert_eq!(retry_delay(StatusCode::GATEWAY_TIMEOUT, &none, 1), Some(BACKOFF_MIN));
        assert_eq!(retry_delay(StatusCode::GATEWAY_TIMEOUT, &none, 2), Some(BACKOFF_MIN * 2));
        assert_eq!(retry_delay(StatusCode::GATEWAY_TIMEOUT, &none, MAX_ATTEMPTS), None);
        assert_eq!(retry_delay(StatusCode::CONFLICT, &h, 1), None);
        assert_eq!(retry_delay(StatusCode::INTERNAL_SERVER_ERROR, &none, 1), None);
    }

    /// When each of `n` requests of `priority` arriving together at `at` is let through by
    /// `bucket` (an Event that finds no spare token asks again when told): pure, no clock.
    fn release_times(bucket: &mut Bucket, start: Instant, at: Instant, n: usize, priority: Priority) -> Vec<Duration> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut now = at;
            loop {
                match bucket.take(priority, now) {
                    Ok(wait) => break out.push(now + wait - start),
                    Err(again) => now += again,
                }
            }
        }
        out
    }

    fn bucket(start: Instant) -> Bucket {
        Bucket::new(RateLimit { qps: 10.0, burst: 5 }, start)
    }

    #[test]
    fn the_bucket_lets_through_burst_at_once_then_qps_a_second() {
        let start = Instant::now();
        let mut b = bucket(start);
        let mut times = release_times(&mut b, start, start, 45, Priority::Normal);
        times.sort();
        // In every window from the start, at most burst + qps·t requests went through...
        for (i, t) in times.iter().enumerate() {
            let allowed = 5.0 + 10.0 * t.as_secs_f64() + 1e-6;
            assert!((i + 1) as f64 <= allowed, "request {} let through at {t:?}", i + 1);
        }
        // ...and the bucket did not hold back more than it had to.
        assert_eq!(times.iter().filter(|t| t.is_zero()).count(), 5);
        let last = times.last().copied().unwrap_or_default();
        assert!((last.as_secs_f64() - 4.0).abs() < 0.001, "40 tokens at 10/s: {last:?}");
        // A quiet second refills 10 tokens, but the bucket holds at most 5.
        let later = start + Duration::from_secs(10);
        let again = release_times(&mut b, start, later, 6, Priority::Normal);
        assert_eq!(again.iter().filter(|t| **t == later - start).count(), 5);
    }

    #[test]
    fn events_wait_behind_every_reserved_request() {
        let start = Instant::now();
        let mut b = bucket(start);
        // 30 requests hold reservations: the last is due at 2.5 s.
        let normal = release_times(&mut b, start, start, 30, Priority::Normal);
        let last_normal = normal.iter().max().copied().unwrap_or_default();
        assert!((last_normal.as_secs_f64() - 2.5).abs() < 0.001, "{last_normal:?}");
        let event = release_times(&mut b, start, start, 1, Priority::Event)[0];
        assert!(event > last_normal, "the Event ({event:?}) goes after every reservation ({last_normal:?})");
        // A request arriving while the Event waits is still served before it could be.
        let mut b = bucket(start);
        let _ = release_times(&mut b, start, start, 30, Priority::Normal);
        assert!(b.take(Priority::Event, start).is_err());
        assert!(b.take(Priority::Normal, start).is_ok());
    }

    #[test]
    fn lease_requests_never_wait_but_use_the_budget() {
        let start = Instant::now();
        let mut b = bucket(start);
        let normal = release_times(&mut b, start, start, 5, Priority::Normal);
        assert!(normal.iter().all(|t| t.is_zero()));
        let lease = release_times(&mut b, start, start, 3, Priority::Lease);
        assert!(lease.iter().all(|t| t.is_zero()), "{lease:?}");
        // The three Lease requests went into debt: the next request waits for 4 tokens.
        let next = release_times(&mut b, start, start, 1, Priority::Normal);
        assert!((next[0].as_secs_f64() - 0.4).abs() < 0.001, "{next:?}");
    }

    #[tokio::test]
    async fn an_event_with_no_spare_token_in_sight_is_dropped_at_once() {
        let limiter = Limiter::new(RateLimit { qps: 10.0, burst: 5 }, Some(Metrics::new()));
        // Reservations for 20 s ahead: no spare token within the wait limit.
        for _ in 0..200 {
            let _ = limiter.take(Priority::Normal);
        }
        let start = Instant::now();
        assert!(limiter.acquire(Priority::Event).await.is_err());
        assert!(Instant::now() - start < EVENT_MAX_WAIT, "dropped without waiting for the limit");
    }

    #[tokio::test]
    async fn no_limit_lets_everything_through() {
        let limiter = Limiter::new(RateLimit { qps: 0.0, burst: 1 }, None);
        for p in [Priority::Normal, Priority::Event, Priority::Lease] {
            for _ in 0..100 {
                assert!(limiter.acquire(p).await.is_ok());
            }
        }
    }
}
