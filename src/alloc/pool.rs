//! `GuidPool`: hands out GUIDs from an inclusive range, next-fit from a cursor so that a
//! released GUID is not the next one handed out, with quarantine for GUIDs the fabric may
//! still list. Memory is proportional to GUIDs in use (runs of them), never to the range.

use std::collections::HashSet;
use std::fmt;

use super::intervals::IntervalSet;
use crate::ib::Guid;

/// An inclusive GUID range; validated at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuidRange {
    start: Guid,
    end: Guid,
}

impl GuidRange {
    /// ib-kubernetes' default: `02:00:00:00:00:00:00:00`–`02:FF:FF:FF:FF:FF:FF:FF`.
    pub const DEFAULT: GuidRange = GuidRange {
        start: match Guid::new(0x0200_0000_0000_0000) {
            Some(g) => g,
            None => Guid::MIN,
        },
        end: match Guid::new(0x02ff_ffff_ffff_ffff) {
            Some(g) => g,
            None => Guid::MAX,
        },
    };

    /// `start` ≤ `end`; zero and all-ones are already impossible for a `Guid`.
    pub fn new(start: Guid, end: Guid) -> Result<GuidRange, PoolError> {
        if start > end {
            return Err(PoolError::InvertedRange { start, end });
        }
        Ok(GuidRange { start, end })
    }

    pub fn start(&self) -> Guid {
        self.start
    }

    pub fn end(&self) -> Guid {
        self.end
    }

    pub fn contains(&self, g: Guid) -> bool {
        self.start <= g && g <= self.end
    }

    /// Number of GUIDs in the range (saturating for a range of all of u64).
    pub fn size(&self) -> u64 {
        (self.end.value() - self.start.value()).saturating_add(1)
    }
}

impl fmt::Display for GuidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.start, self.end)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("GUID range start {start} is after its end {end}: set GUID_POOL_RANGE_START ≤ GUID_POOL_RANGE_END")]
    InvertedRange { start: Guid, end: Guid },
    #[error("GUID pool {range} is exhausted ({in_use} in use or quarantined): widen the range or free GUIDs")]
    Exhausted { range: GuidRange, in_use: u64 },
    #[error("GUID {guid} is outside the pool range {range}")]
    OutOfRange { guid: Guid, range: GuidRange },
    #[error("GUID {guid} is already in use")]
    InUse { guid: Guid },
    #[error("GUID {guid} is quarantined until the fabric confirms its removal")]
    Quarantined { guid: Guid },
    #[error("GUID {guid} is not allocated")]
    NotAllocated { guid: Guid },
}

impl PoolError {
    pub fn reason(&self) -> &'static str {
        match self {
            PoolError::InvertedRange { .. } => "InvalidGuidRange",
            PoolError::Exhausted { .. } => "PoolExhausted",
            PoolError::OutOfRange { .. } => "GuidOutOfRange",
            PoolError::InUse { .. } => "GuidConflict",
            PoolError::Quarantined { .. } => "GuidQuarantined",
            PoolError::NotAllocated { .. } => "GuidNotAllocated",
        }
    }
}

/// Availability of every GUID in a range: free, allocated, or quarantined.
#[derive(Clone, Debug)]
pub struct GuidPool {
    range: GuidRange,
    /// Allocated and quarantined GUIDs together: everything that may not be handed out.
    taken: IntervalSet,
    quarantined: HashSet<u64>,
    /// Next-fit cursor: allocation searches from here and wraps once.
    cursor: u64,
}

impl GuidPool {
    pub fn new(range: GuidRange) -> GuidPool {
        GuidPool { range, taken: IntervalSet::default(), quarantined: HashSet::new(), cursor: range.start.value() }
    }

    pub fn range(&self) -> GuidRange {
        self.range
    }

    /// GUIDs allocated or quarantined.
    pub fn in_use(&self) -> u64 {
        self.taken.len()
    }

    pub fn quarantined(&self) -> usize {
        self.quarantined.len()
    }

    /// GUIDs waiting for the fabric to confirm their removal.
    pub fn quarantined_guids(&self) -> impl Iterator<Item = Guid> + '_ {
        self.quarantined.iter().filter_map(|&v| Guid::new(v))
    }

    pub fn is_allocated(&self, g: Guid) -> bool {
        self.taken.contains(g.value()) && !self.quarantined.contains(&g.value())
    }

    pub fn is_quarantined(&self, g: Guid) -> bool {
        self.quarantined.contains(&g.value())
    }

    /// The next free GUID at or after the cursor, wrapping once. Never GUID 0: exhaustion is an error.
    pub fn allocate(&mut self) -> Result<Guid, PoolError> {
        let (start, end) = (self.range.start.value(), self.range.end.value());
        let found = self.taken.first_gap(self.cursor, end).or_else(|| self.taken.first_gap(start, end));
        let Some(v) = found else {
            return Err(PoolError::Exhausted { range: self.range, in_use: self.taken.len() });
        };
        self.taken.insert(v);
        self.cursor = if v >= end { start } else { v + 1 };
        // Values in the range are never 0 or all-ones: the range's ends are `Guid`s.
        Guid::new(v).ok_or(PoolError::Exhausted { range: self.range, in_use: self.taken.len() })
    }

    /// Takes a specific GUID (a user's request, or one found in use at rebuild).
    pub fn reserve(&mut self, g: Guid) -> Result<(), PoolError> {
        if !self.range.contains(g) {
            return Err(PoolError::OutOfRange { guid: g, range: self.range });
        }
        if self.quarantined.contains(&g.value()) {
            return Err(PoolError::Quarantined { guid: g });
        }
        if !self.taken.insert(g.value()) {
            return Err(PoolError::InUse { guid: g });
        }
        Ok(())
    }

    /// Returns an allocated GUID to the free set. Quarantined GUIDs leave only through
    /// [`GuidPool::confirm_removed`].
    pub fn release(&mut self, g: Guid) -> Result<(), PoolError> {
        if self.quarantined.contains(&g.value()) {
            return Err(PoolError::Quarantined { guid: g });
        }
        if !self.taken.remove(g.value()) {
            return Err(PoolError::NotAllocated { guid: g });
        }
        Ok(())
    }

    /// Blocks a GUID (allocated or free) until the fabric confirms it is gone from every pkey.
    pub fn quarantine(&mut self, g: Guid) -> Result<(), PoolError> {
        if !self.range.contains(g) {
            return Err(PoolError::OutOfRange { guid: g, range: self.range });
        }
        self.taken.insert(g.value());
        self.quarantined.insert(g.value());
        Ok(())
    }

    /// The fabric no longer lists the GUID: it becomes free.
    pub fn confirm_removed(&mut self, g: Guid) -> bool {
        if self.quarantined.remove(&g.value()) {
            self.taken.remove(g.value());
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn g(v: u64) -> Guid {
        Guid::new(v).unwrap()
    }

    fn small(n: u64) -> GuidPool {
        GuidPool::new(GuidRange::new(g(0x100), g(0x100 + n - 1)).unwrap())
    }

    #[test]
    fn default_range_matches_ib_kubernetes() {
        assert_eq!(GuidRange::DEFAULT.start().to_string(), "02:00:00:00:00:00:00:00");
        assert_eq!(GuidRange::DEFAULT.end().to_string(), "02:ff:ff:ff:ff:ff:ff:ff");
        assert_eq!(GuidRange::DEFAULT.size(), 1 << 56);
    }

    #[test]
    fn inverted_range_is_refused_naming_the_settings() {
        let err = GuidRange::new(g(5), g(4)).unwrap_err();
        assert!(err.to_string().contains("GUID_POOL_RANGE_START"));
    }

    #[test]
    fn released_guid_is_not_the_next_one_handed_out() {
        let mut pool = small(10);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.release(a).unwrap();
        let c = pool.allocate().unwrap();
        assert_ne!(c, a);
        assert!(c > b);
    }

    #[test]
    fn exhaustion_is_an_error_never_guid_zero() {
        let mut pool = small(3);
        for _ in 0..3 {
            pool.allocate().unwrap();
        }
        assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { in_use: 3, .. })));
    }

    #[test]
    fn wraps_to_reuse_freed_guids_when_the_end_is_reached() {
        let mut pool = small(3);
        let first = pool.allocate().unwrap();
        pool.allocate().unwrap();
        pool.allocate().unwrap();
        pool.release(first).unwrap();
        assert_eq!(pool.allocate().unwrap(), first);
    }

    #[test]
    fn quarantined_guid_waits_for_confirmation() {
        let mut pool = small(2);
        let a = pool.allocate().unwrap();
        pool.quarantine(a).unwrap();
        assert_eq!(pool.release(a), Err(PoolError::Quarantined { guid: a }));
        assert_eq!(pool.reserve(a), Err(PoolError::Quarantined { guid: a }));
        let b = pool.allocate().unwrap();
        assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { .. })));
        assert!(pool.confirm_removed(a));
        assert_eq!(pool.allocate().unwrap(), a);
        assert_ne!(a, b);
    }

    #[test]
    fn reserve_checks_range_and_ownership() {
        let mut pool = small(4);
        assert!(matches!(pool.reserve(g(0x99)), Err(PoolError::OutOfRange { .. })));
        pool.reserve(g(0x101)).unwrap();
        assert_eq!(pool.reserve(g(0x101)), Err(PoolError::InUse { guid: g(0x101) }));
        // The allocator skips a reserved GUID.
        assert_eq!(pool.allocate().unwrap(), g(0x100));
        assert_eq!(pool.allocate().unwrap(), g(0x102));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Reserve(u64),
        Release(u64),
        Quarantine(u64),
        Confirm(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Allocate),
            1 => (0x100u64..0x110).prop_map(Op::Reserve),
            2 => (0x100u64..0x110).prop_map(Op::Release),
            1 => (0x100u64..0x110).prop_map(Op::Quarantine),
            1 => (0x100u64..0x110).prop_map(Op::Confirm),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Under any interleaving, a GUID is never handed out (allocate or reserve) while it is
        /// allocated, reserved or quarantined.
        #[test]
        fn never_hands_out_a_guid_twice(ops in proptest::collection::vec(op(), 1..200)) {
            let mut pool = small(12); // 0x100..=0x10b; ops also touch values outside
            let mut owned: BTreeSet<u64> = BTreeSet::new();
            let mut quarantined: BTreeSet<u64> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => match pool.allocate() {
                        Ok(x) => {
                            prop_assert!(pool.range().contains(x));
                            prop_assert!(!owned.contains(&x.value()) && !quarantined.contains(&x.value()));
                            owned.insert(x.value());
                        }
                        Err(PoolError::Exhausted { .. }) => prop_assert_eq!(owned.len() + quarantined.len(), 12),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    },
                    Op::Reserve(v) => {
                        let ok = pool.reserve(g(v)).is_ok();
                        let expect = v <= 0x10b && !owned.contains(&v) && !quarantined.contains(&v);
                        prop_assert_eq!(ok, expect);
                        if ok { owned.insert(v); }
                    }
                    Op::Release(v) => {
                        prop_assert_eq!(pool.release(g(v)).is_ok(), owned.remove(&v));
                    }
                    Op::Quarantine(v) => {
                        if pool.quarantine(g(v)).is_ok() {
                            owned.remove(&v);
                            quarantined.insert(v);
                        } else {
                            prop_assert!(v > 0x10b);
                        }
                    }
                    Op::Confirm(v) => {
                        prop_assert_eq!(pool.confirm_removed(g(v)), quarantined.remove(&v));
                    }
                }
                prop_assert_eq!(pool.in_use(), (owned.len() + quarantined.len()) as u64);
            }
        }
    }
}
