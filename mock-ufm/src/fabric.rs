//! When accepted changes become visible: UFM answers a write at once but OpenSM applies it
//! later, so reads (and `last_updated`) lag writes by the configured apply delay.
//!
//! Writes are checked against the *projected* table (visible plus everything pending) and queued;
//! [`Fabric::apply_due`] moves due ones into the visible table. Time is passed in, never read here.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::state::{Mutation, Partitions, StateError};

#[derive(Debug, Clone)]
struct Pending {
    due: Instant,
    due_wall: SystemTime,
    mutation: Mutation,
}

/// The visible partition table plus the queue of accepted, not yet applied mutations.
#[derive(Debug, Clone)]
pub struct Fabric {
    visible: Partitions,
    projected: Partitions,
    pending: VecDeque<Pending>,
    last_updated: Option<SystemTime>,
    delay: Duration,
    /// Bumped on every visible change; used to decide when to persist.
    version: u64,
}

impl Fabric {
    /// A fabric showing `table`, applying new changes after `delay`.
    pub fn new(table: Partitions, last_updated: Option<SystemTime>, delay: Duration) -> Fabric {
        Fabric { projected: table.clone(), visible: table, pending: VecDeque::new(), last_updated, delay, version: 0 }
    }

    /// The table reads see.
    pub fn visible(&self) -> &Partitions {
        &self.visible
    }

    /// The table once every pending mutation is applied.
    pub fn projected(&self) -> &Partitions {
        &self.projected
    }

    /// When a visible change last happened; `None` before the first one.
    pub fn last_updated(&self) -> Option<SystemTime> {
        self.last_updated
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    pub fn set_delay(&mut self, delay: Duration) {
        self.delay = delay;
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the oldest pending mutation is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.due)
    }

    /// Accepts `m` if the projected table allows it; it becomes visible after the delay.
    /// Returns whether it changed the projected table.
    pub fn submit(&mut self, m: Mutation, now: Instant, wall: SystemTime) -> Result<bool, StateError> {
        self.apply_due(now);
        self.projected.check(&m)?;
        let changed = self.projected.apply_checked(&m);
        if self.delay.is_zero() && self.pending.is_empty() {
            self.apply_visible(&m, wall);
            return Ok(changed);
        }
        // Keep the queue in order even if the delay was shortened meanwhile.
        let mut due = now + self.delay;
        let mut due_wall = wall + self.delay;
        if let Some(last) = self.pending.back() {
            due = due.max(last.due);
            due_wall = due_wall.max(last.due_wall);
        }
        self.pending.push_back(Pending { due, due_wall, mutation: m });
        Ok(changed)
    }

    /// Applies every mutation due at `now`; returns whether the visible table changed.
    pub fn apply_due(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while self.pending.front().is_some_and(|p| p.due <= now) {
            if let Some(p) = self.pending.pop_front() {
                changed |= self.apply_visible(&p.mutation, p.due_wall);
            }
        }
        changed
    }

    /// Applies every pending mutation now, as if its delay had passed.
    pub fn flush(&mut self) -> bool {
        let mut changed = false;
        while let Some(p) = self.pending.pop_front() {
            changed |= self.apply_visible(&p.mutation, p.due_wall);
        }
        changed
    }

    /// Replaces everything (visible, projected, pending, `last_updated`).
    pub fn replace(&mut self, table: Partitions, last_updated: Option<SystemTime>) {
        self.projected = table.clone();
        self.visible = table;
        self.pending.clear();
        self.last_updated = last_updated;
        self.version += 1;
    }

    fn apply_visible(&mut self, m: &Mutation, at: SystemTime) -> bool {
        // The projected table already accepted this mutation against the same history.
        let changed = self.visible.apply_checked(m);
        if changed {
            self.last_updated = Some(at);
            self.version += 1;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Guid, Member, PKey};

    fn add(pkey: u16, guid: u64) -> Mutation {
        Mutation::AddGuids {
            pkey: PKey::new(pkey).unwrap(),
            members: vec![(Guid::new(guid).unwrap(), Member::default())],
            ip_over_ib: None,
            name: None,
        }
    }

    fn remove(pkey: u16, guid: u64) -> Mutation {
        Mutation::RemoveGuids { pkey: PKey::new(pkey).unwrap(), guids: vec![Guid::new(guid).unwrap()] }
    }

    #[test]
    fn without_delay_changes_are_visible_at_once_and_move_last_updated() {
        let (now, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        let mut f = Fabric::new(Partitions::new(), None, Duration::ZERO);
        f.submit(add(5, 1), now, wall).unwrap();
        assert_eq!(f.visible().len(), 2);
        assert_eq!(f.last_updated(), Some(wall));
        assert_eq!(f.pending_len(), 0);
    }

    #[test]
    fn with_delay_changes_appear_only_when_due() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let delay = Duration::from_millis(500);
        let mut f = Fabric::new(Partitions::new(), None, delay);
        f.submit(add(5, 1), now, wall).unwrap();
        assert_eq!(f.visible().len(), 1);
        assert_eq!(f.projected().len(), 2);
        assert_eq!(f.last_updated(), None);
        assert!(!f.apply_due(now + Duration::from_millis(499)));
        assert!(f.apply_due(now + delay));
        assert_eq!(f.visible().len(), 2);
        assert_eq!(f.last_updated(), Some(wall + delay));
    }

    #[test]
    fn writes_are_checked_against_pending_changes() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut f = Fabric::new(Partitions::new(), None, Duration::from_secs(60));
        f.submit(add(5, 1), now, wall).unwrap();
        // Deleting a partition that exists only in the pending queue is accepted...
        f.submit(Mutation::Delete { pkey: PKey::new(5).unwrap() }, now, wall).unwrap();
        // ...and deleting it twice is refused, although nothing is visible yet.
        let again = f.submit(Mutation::Delete { pkey: PKey::new(5).unwrap() }, now, wall);
        assert!(matches!(again, Err(StateError::NotFound(_))));
        assert_eq!(f.pending_len(), 2);
        f.flush();
        assert_eq!(f.visible(), f.projected());
        assert_eq!(f.visible().len(), 1);
    }

    #[test]
    fn no_op_changes_do_not_move_last_updated() {
        let now = Instant::now();
        let mut f = Fabric::new(Partitions::new(), None, Duration::ZERO);
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        f.submit(add(5, 1), now, first).unwrap();
        let later = first + Duration::from_secs(10);
        assert!(!f.submit(remove(5, 99), now, later).unwrap());
        assert_eq!(f.last_updated(), Some(first));
        assert!(f.submit(remove(5, 1), now, later).unwrap());
        assert_eq!(f.last_updated(), Some(later));
    }

    #[test]
    fn shortening_the_delay_keeps_changes_in_order() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut f = Fabric::new(Partitions::new(), None, Duration::from_secs(10));
        f.submit(add(5, 1), now, wall).unwrap();
        f.set_delay(Duration::ZERO);
        f.submit(remove(5, 1), now, wall).unwrap();
        // The removal must not overtake the add it depends on.
        assert_eq!(f.visible().len(), 1);
        assert!(f.apply_due(now + Duration::from_secs(10)));
        assert_eq!(f.visible().len(), 1);
        assert_eq!(f.pending_len(), 0);
    }
}
