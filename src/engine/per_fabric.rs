//! What the engine holds per InfiniBand fabric (issue 17, docs/fabrics.md): its GUID pool, what
//! its UFM last listed, its pkey budgets per node, whether it was listed in this leader term.
//! Pools never overlap (the fabrics file is validated), so a GUID belongs to one fabric.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::fabrics::FabricRoute;
use super::knowledge::Knowledge;
use crate::alloc::{GuidPool, GuidRange, PkeyBudget};
use crate::ib::Guid;

/// The name of the one fabric made from the single-UFM settings (no fabrics file).
pub const DEFAULT_FABRIC: &str = "default";

/// A fabric's place in the engine: the order of the fabrics file (cheap to copy and compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FabricId(pub u16);

impl FabricId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One fabric as the engine's settings describe it (built by the adapter from the fabrics file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FabricSpec {
    pub route: FabricRoute,
    pub guid_range: GuidRange,
    /// The node HCAs cabled to this fabric (`hcas` in the fabrics file); empty = not said, and
    /// the node's smallest pkey table is this fabric's budget.
    pub hcas: Vec<String>,
}

impl FabricSpec {
    /// The `default` fabric: every node, the given pool.
    pub fn default_fabric(guid_range: GuidRange) -> FabricSpec {
        FabricSpec {
            route: FabricRoute {
                name: DEFAULT_FABRIC.to_string(),
                node_selector: BTreeMap::new(),
                resource_names: Vec::new(),
            },
            guid_range,
            hcas: Vec::new(),
        }
    }
}

/// A fabric's share of the engine's state.
pub struct FabricState {
    pub name: Arc<str>,
    pub route: FabricRoute,
    pub range: GuidRange,
    pub pool: GuidPool,
    pub knowledge: Knowledge,
    /// Distinct pkeys per node in this fabric: a node's HCAs on different fabrics have
    /// separate pkey tables.
    pub budget: PkeyBudget,
    /// The HCAs the fabrics file says are on this fabric (see [`FabricSpec::hcas`]).
    pub hcas: Vec<String>,
    /// Its UFM has been listed at least once since this state was built: only then are its
    /// GUIDs handed out or its partitions changed.
    pub listed: bool,
}

impl FabricState {
    pub fn new(spec: &FabricSpec, pkey_capacity: u16, reserved: u16) -> FabricState {
        FabricState {
            name: Arc::from(spec.route.name.as_str()),
            route: spec.route.clone(),
            range: spec.guid_range,
            pool: GuidPool::new(spec.guid_range),
            knowledge: Knowledge::default(),
            budget: PkeyBudget::new(pkey_capacity, reserved),
            hcas: spec.hcas.clone(),
            listed: false,
        }
    }

    /// This fabric's pkey-table capacity on a node: the smallest table of its named HCAs the
    /// node's agent reported; the node's smallest port when the fabric names none or the agent
    /// reported none of them (an older agent, or the node has other device names).
    pub fn capacity_on(&self, node_smallest: Option<u16>, per_hca: &BTreeMap<String, u16>) -> Option<u16> {
        self.hcas.iter().filter_map(|h| per_hca.get(h).copied()).min().or(node_smallest)
    }

    /// Drops what only a leader holds; node capacities came from watched annotations and stay.
    pub fn reset(&mut self) {
        self.pool = GuidPool::new(self.range);
        self.knowledge = Knowledge::default();
        self.budget.clear_usage();
        self.listed = false;
    }

    /// Quarantined GUIDs whose removal a listing has yet to confirm.
    pub fn awaiting_confirmation(&self) -> usize {
        self.pool.quarantined_guids().filter(|g| !self.knowledge.is_listed(*g)).count()
    }
}

impl fmt::Debug for FabricState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FabricState").field("name", &self.name).field("range", &self.range).finish_non_exhaustive()
    }
}

/// The fabric whose pool holds `g`, if any.
pub fn range_fabric(fabrics: &[FabricState], g: Guid) -> Option<FabricId> {
    fabrics.iter().position(|f| f.range.contains(g)).and_then(|i| u16::try_from(i).ok()).map(FabricId)
}
