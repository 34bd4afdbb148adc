//! The wire contracts the controller and the node agent share with each other and with the
//! rest of the cluster: every annotation, label, finalizer and API group name in one place
//! ([`keys`]), and the node inventory document the agent writes and the controller reads
//! ([`inventory`], one writer and one reader, tied by a round-trip test).
//!
//! Pure data: no I/O, no adapter. The modules that use a key re-export it under its old name,
//! so a reader of `netdef` or `engine` finds it where it is used; it is defined only here.

pub mod inventory;
pub mod keys;

pub use inventory::{InventorySummary, PortSummary};
