//! A set of u64 values stored as disjoint, non-adjacent inclusive runs, so that long runs of
//! consecutive allocations cost one entry and "first free value at or after x" is O(log n).

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub(super) struct IntervalSet {
    /// start → end (inclusive). Runs never touch: end + 1 < next start.
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl IntervalSet {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn contains(&self, v: u64) -> bool {
        self.run_containing(v).is_some()
    }

    fn run_containing(&self, v: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.runs.range(..=v).next_back()?;
        (v <= e).then_some((s, e))
    }

    /// Adds `v`; false if it was already there.
    pub fn insert(&mut self, v: u64) -> bool {
        if self.contains(v) {
            return false;
        }
        let left = v.checked_sub(1).and_then(|p| self.run_containing(p));
        let right = v.checked_add(1).and_then(|n| self.runs.get(&n).map(|&e| (n, e)));
        match (left, right) {
            (Some((ls, _)), Some((rs, re))) => {
                self.runs.remove(&rs);
                self.runs.insert(ls, re);
            }
            (Some((ls, _)), None) => {
                self.runs.insert(ls, v);
            }
            (None, Some((rs, re))) => {
                self.runs.remove(&rs);
                self.runs.insert(v, re);
            }
            (None, None) => {
                self.runs.insert(v, v);
            }
        }
        self.len += 1;
        true
    }

    /// Removes `v`; false if it was not there.
    pub fn remove(&mut self, v: u64) -> bool {
        let Some((s, e)) = self.run_containing(v) else {
            return false;
        };
        self.runs.remove(&s);
        if s < v {
            self.runs.insert(s, v - 1);
        }
        if v < e {
            self.runs.insert(v + 1, e);
        }
        self.len -= 1;
        true
    }

    /// The smallest value in `from..=to` not in the set.
    pub fn first_gap(&self, from: u64, to: u64) -> Option<u64> {
        if from > to {
            return None;
        }
        let candidate = match self.run_containing(from) {
            None => from,
            Some((_, e)) => e.checked_add(1)?,
        };
        // Runs never touch, so the value after a run is free.
        (candidate <= to).then_some(candidate)
    }

    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..64), 0..300)) {
            let mut set = IntervalSet::default();
            let mut model = BTreeSet::new();
            for (add, v) in ops {
                if add {
                    prop_assert_eq!(set.insert(v), model.insert(v));
                } else {
                    prop_assert_eq!(set.remove(v), model.remove(&v));
                }
                prop_assert_eq!(set.len(), model.len() as u64);
                for from in 0..66 {
                    let want = (from..=65).find(|x| !model.contains(x));
                    prop_assert_eq!(set.first_gap(from, 65), want);
                }
            }
            // Runs are maximal: never more runs than values, and merged when adjacent.
            prop_assert!(set.runs() as u64 <= set.len());
        }
    }

    #[test]
    fn handles_the_ends_of_u64() {
        let mut s = IntervalSet::default();
        assert!(s.insert(u64::MAX));
        assert!(s.insert(0));
        assert_eq!(s.first_gap(u64::MAX, u64::MAX), None);
        assert_eq!(s.first_gap(0, 5), Some(1));
        assert!(s.remove(u64::MAX));
    }
}
