//! Per-item back-off for the engine's retries (pkeys, pods, claims): the pause doubles on every
//! failure up to a cap, with jitter, and is forgotten only on success — an expired pause still
//! remembers its length, so a permanent refusal does not restart at the shortest pause.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Entry {
    until: Instant,
    delay: Duration,
    /// Not yet seen expired by [`Backoffs::expire`].
    armed: bool,
}

/// The back-off of every item that failed and has not succeeded since.
#[derive(Debug)]
pub struct Backoffs<K> {
    entries: HashMap<K, Entry>,
    first: Duration,
}

impl<K: Hash + Eq + Clone> Backoffs<K> {
    pub fn new(first: Duration) -> Backoffs<K> {
        Backoffs { entries: HashMap::new(), first }
    }

    /// Records a failure: the next pause is twice the last one (the first is `first`), capped at
    /// `cap`, plus up to 25% jitter. Returns the pause.
    pub fn failed(&mut self, key: K, cap: Duration, now: Instant) -> Duration {
        let delay = match self.entries.get(&key) {
            Some(e) => (e.delay * 2).min(cap),
            None => self.first.min(cap),
        };
        let jitter_ms = (delay.as_millis() as u64 / 4).max(1);
        let pause = delay + Duration::from_millis(rand::random::<u64>() % jitter_ms);
        self.entries.insert(key, Entry { until: now + pause, delay, armed: true });
        pause
    }

    /// Records a refusal that retrying will not change: the item waits `pause` at once (new
    /// input ends the wait early through [`Backoffs::succeeded`]).
    pub fn refused(&mut self, key: K, pause: Duration, now: Instant) -> Duration {
        self.entries.insert(key, Entry { until: now + pause, delay: pause, armed: true });
        pause
    }

    /// Records a success: the item starts from the shortest pause again.
    pub fn succeeded(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Whether the item failed and has not succeeded since.
    pub fn is_failing(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether the item waits now.
    pub fn blocks(&self, key: &K, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|e| e.until > now)
    }

    /// Items waiting now.
    pub fn blocked(&self, now: Instant) -> impl Iterator<Item = &K> {
        self.entries.iter().filter(move |(_, e)| e.until > now).map(|(k, _)| k)
    }

    /// The earliest end of a pause still running.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().filter(|e| e.armed).map(|e| e.until).min()
    }

    /// Whether some pause ended since the last call (its item may be retried now).
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut any = false;
        for e in self.entries.values_mut().filter(|e| e.armed && e.until <= now) {
            e.armed = false;
            any = true;
        }
        any
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_across_expiry_until_the_cap_and_reset_on_success() {
        let mut b: Backoffs<&str> = Backoffs::new(Duration::from_millis(200));
        let cap = Duration::from_secs(2);
        let mut now = Instant::now();
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let pause = b.failed("pod", cap, now);
            pauses.push(pause.as_millis() as u64);
            // The pause runs out before the next failure, as with a permanent refusal.
            now += pause;
            assert!(b.expire(now));
            assert!(!b.blocks(&"pod", now));
        }
        let expected = [200, 400, 800, 1600, 2000, 2000];
        for (got, want) in pauses.iter().zip(expected) {
            assert!((want..=want + want / 4).contains(got), "{pauses:?}");
        }
        b.succeeded(&"pod");
        assert!(b.failed("pod", cap, now) < Duration::from_millis(251));
    }

    #[test]
    fn an_item_is_blocked_only_while_its_pause_runs() {
        let mut b: Backoffs<u32> = Backoffs::new(Duration::from_millis(100));
        let now = Instant::now();
        let pause = b.failed(7, Duration::from_secs(1), now);
        assert!(b.blocks(&7, now));
        assert_eq!(b.blocked(now).count(), 1);
        assert_eq!(b.next_expiry(), Some(now + pause));
        assert!(!b.expire(now));
        assert!(b.expire(now + pause));
        assert!(!b.expire(now + pause), "an expiry is reported once");
        assert_eq!(b.next_expiry(), None);
        assert_eq!(b.len(), 1, "still remembered until a success");
    }
}
