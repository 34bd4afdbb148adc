//! InfiniBand vocabulary: GUIDs, partition keys, membership and partition attributes.
//!
//! Values are parsed once at the edge and are valid by construction inside the program.

mod guid;
mod partition;
mod pkey;

pub use guid::{Guid, GuidError};
pub(crate) use partition::shown;
pub use partition::{AttributeError, Membership, MtuLimit, PartitionSpec, Qos, RateLimit, ServiceLevel};
pub use pkey::{PKey, PKeyError};
