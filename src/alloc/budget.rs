//! `PkeyBudget`: distinct pkeys per node against the node's pkey-table capacity, so that no
//! node is asked to hold more partitions than its HCA port's 128-entry table allows.

use std::collections::{BTreeMap, HashMap};

use crate::ib::PKey;

/// ConnectX firmware reports 128 pkey-table entries per port.
pub const DEFAULT_PKEY_CAPACITY: u16 = 128;
/// Slots kept for the default partition (0x7fff/0xffff) that every port carries.
pub const DEFAULT_RESERVED_SLOTS: u16 = 1;

/// Why a pkey cannot go on a node, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} already uses {used} distinct pkeys, its limit ({capacity} table entries minus {reserved} reserved); pkey {pkey} would exceed it"
)]
pub struct BudgetRefusal {
    pub node: String,
    pub pkey: PKey,
    pub used: usize,
    pub capacity: u16,
    pub reserved: u16,
}

#[derive(Clone, Debug, Default)]
struct NodeBudget {
    /// From the node agent's inventory; `None` means the default.
    capacity: Option<u16>,
    /// pkey → number of attachments on the node using it.
    pkeys: BTreeMap<PKey, u32>,
}

#[derive(Clone, Debug)]
pub struct PkeyBudget {
    default_capacity: u16,
    reserved: u16,
    nodes: HashMap<String, NodeBudget>,
}

impl PkeyBudget {
    pub fn new(default_capacity: u16, reserved: u16) -> PkeyBudget {
        PkeyBudget { default_capacity, reserved, nodes: HashMap::new() }
    }

    /// Capacity reported for a node (e.g. the smallest pkey table of its IB ports).
    pub fn set_capacity(&mut self, node: &str, capacity: Option<u16>) {
        self.nodes.entry(node.to_string()).or_default().capacity = capacity;
    }

    pub fn capacity(&self, node: &str) -> u16 {
        self.nodes.get(node).and_then(|n| n.capacity).unwrap_or(self.default_capacity)
    }

    /// Distinct tenant pkeys a node may hold.
    pub fn limit(&self, node: &str) -> usize {
        usize::from(self.capacity(node).saturating_sub(self.reserved))
    }

    pub fn used(&self, node: &str) -> usize {
        self.nodes.get(node).map_or(0, |n| n.pkeys.len())
    }

    /// Whether one more attachment of `pkey` fits on `node`.
    pub fn admit(&self, node: &str, pkey: PKey) -> Result<(), BudgetRefusal> {
        let used = self.used(node);
        let present = self.nodes.get(node).is_some_and(|n| n.pkeys.contains_key(&pkey));
        if present || used < self.limit(node) {
            Ok(())
        } else {
            Err(BudgetRefusal {
                node: node.to_string(),
                pkey,
                used,
                capacity: self.capacity(node),
                reserved: self.reserved,
            })
        }
    }

    /// Admits and counts one attachment of `pkey` on `node`.
    pub fn acquire(&mut self, node: &str, pkey: PKey) -> Result<(), BudgetRefusal> {
        self.admit(node, pkey)?;
        *self.nodes.entry(node.to_string()).or_default().pkeys.entry(pkey).or_insert(0) += 1;
        Ok(())
    }

    /// Forgets one attachment of `pkey` on `node`.
    pub fn release(&mut self, node: &str, pkey: PKey) {
        if let Some(n) = self.nodes.get_mut(node) {
            if let Some(count) = n.pkeys.get_mut(&pkey) {
                *count -= 1;
                if *count == 0 {
                    n.pkeys.remove(&pkey);
                }
            }
        }
    }

    /// Forgets every node's pkey usage, keeping the capacities nodes reported (a new leader term
    /// rebuilds usage; capacities came from watched Node annotations and stay true).
    pub fn clear_usage(&mut self) {
        for n in self.nodes.values_mut() {
            n.pkeys.clear();
        }
    }

    /// Nodes whose distinct pkeys have reached their limit.
    pub fn nodes_at_limit(&self) -> usize {
        self.nodes.keys().filter(|n| self.used(n) >= self.limit(n)).count()
    }

    /// Nodes holding more distinct pkeys than their limit (must stay 0 for new admissions).
    pub fn nodes_over_limit(&self) -> usize {
        self.nodes.keys().filter(|n| self.used(n) > self.limit(n)).count()
    }
}

impl Default for PkeyBudget {
    fn default() -> PkeyBudget {
        PkeyBudget::new(DEFAULT_PKEY_CAPACITY, DEFAULT_RESERVED_SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(v: u16) -> PKey {
        PKey::new(v).unwrap()
    }

    #[test]
    fn default_node_takes_127_tenant_pkeys() {
        let mut b = PkeyBudget::default();
        for v in 1..=127 {
            b.acquire("n1", p(v)).unwrap();
        }
        let refusal = b.acquire("n1", p(200)).unwrap_err();
        assert_eq!((refusal.used, refusal.capacity, refusal.reserved), (127, 128, 1));
        assert!(refusal.to_string().contains("n1"));
        // An existing pkey still fits: it takes no new table entry.
        b.acquire("n1", p(5)).unwrap();
        assert_eq!(b.nodes_at_limit(), 1);
    }

    #[test]
    fn reported_capacity_overrides_the_default() {
        let mut b = PkeyBudget::default();
        b.set_capacity("small", Some(3));
        b.acquire("small", p(1)).unwrap();
        b.acquire("small", p(2)).unwrap();
        assert!(b.acquire("small", p(3)).is_err());
        b.release("small", p(1));
        b.acquire("small", p(3)).unwrap();
    }

    proptest! {
        #[test]
        fn never_admits_past_capacity(
            cap in 1u16..8,
            ops in proptest::collection::vec((any::<bool>(), 0usize..3, 1u16..12), 0..300)
        ) {
            let mut b = PkeyBudget::new(cap, 1);
            let nodes = ["a", "b", "c"];
            let mut held: Vec<(usize, u16)> = Vec::new();
            for (add, n, v) in ops {
                if add {
                    if b.acquire(nodes[n], p(v)).is_ok() {
                        held.push((n, v));
                    }
                } else if let Some(i) = held.iter().position(|&(hn, hv)| hn == n && hv == v) {
                    held.swap_remove(i);
                    b.release(nodes[n], p(v));
                }
                for node in nodes {
                    prop_assert!(b.used(node) <= usize::from(cap - 1));
                }
                prop_assert_eq!(b.nodes_over_limit(), 0);
            }
        }
    }
}
