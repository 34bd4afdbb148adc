//! The sync engine: cluster events in, a plan out, ports to the world.

mod fabric;

pub use fabric::{Fabric, FabricError, FabricListing, FabricMember};
