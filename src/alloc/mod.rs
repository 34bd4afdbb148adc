//! Allocators: the GUID pool (which GUIDs may be handed out) and the per-node pkey budget
//! (how many distinct pkeys a node's HCA port can hold).

mod budget;
mod intervals;
mod pkey_range;
mod pool;

pub use budget::{BudgetRefusal, DEFAULT_PKEY_CAPACITY, DEFAULT_RESERVED_SLOTS, PkeyBudget};
pub use pkey_range::{
    Exhausted, MAX_PARTITION_NAME, PKEY_RANGE_SETTING, PkeyRange, PkeyRangeError, claim_name, namespace_partition_name,
    partition_name,
};
pub use pool::{GuidPool, GuidRange, PoolError};
