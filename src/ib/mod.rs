//! InfiniBand vocabulary: GUIDs, partition keys, membership and partition attributes.
//!
//! Values are parsed once at the edge and are valid by construction inside the program.

mod guid;
mod pkey;

pub use guid::{Guid, GuidError};
pub use pkey::{Membership, MtuLimit, PKey, PKeyError, PartitionSpec, Qos, RateLimit};
