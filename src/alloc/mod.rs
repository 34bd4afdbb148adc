//! Allocators: the GUID pool (which GUIDs may be handed out) and the per-node pkey budget
//! (how many distinct pkeys a node's HCA port can hold).

mod budget;
mod intervals;
mod pool;

pub use budget::{BudgetRefusal, DEFAULT_PKEY_CAPACITY, DEFAULT_RESERVED_SLOTS, PkeyBudget};
pub use pool::{GuidPool, GuidRange, PoolError};
