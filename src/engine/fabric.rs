//! The `Fabric` port: what the engine needs from a subnet manager. `src/ufm` implements it
//! over UFM's REST API; `NoopFabric` (in `src/ufm`) accepts everything and lists nothing.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::ib::{Guid, Membership, PKey, PartitionSpec};

/// A member of a partition as the fabric reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FabricMember {
    pub guid: Guid,
    pub membership: Membership,
    pub index0: bool,
}

/// Every partition the fabric holds, with its members. The default partition may be included;
/// the engine only ever looks at pkeys its networks name and GUIDs inside its pool range.
pub type FabricListing = BTreeMap<PKey, Vec<FabricMember>>;

/// Why a fabric call failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FabricError {
    /// Timeouts, connection errors, 5xx: worth another attempt later.
    pub retryable: bool,
    /// Stable label for Events and metrics, e.g. `UfmUnavailable`, `UfmUnauthorized`, `UfmRejected`.
    pub reason: &'static str,
    /// What happened, for a person: includes UFM's answer (trimmed), never credentials.
    pub message: String,
}

#[async_trait]
pub trait Fabric: Send + Sync {
    /// Makes `guids` members of the partition (created if absent) with the spec's attributes.
    /// Adding a GUID that is already a member is not an error.
    async fn add_guids(&self, spec: &PartitionSpec, guids: &[Guid]) -> Result<(), FabricError>;

    /// Removes `guids` from the partition. Removing a non-member is not an error.
    async fn remove_guids(&self, pkey: PKey, guids: &[Guid]) -> Result<(), FabricError>;

    /// Every partition and its members.
    async fn list(&self) -> Result<FabricListing, FabricError>;

    /// Reachability, TLS and credentials; returns the subnet manager's version.
    async fn check(&self) -> Result<String, FabricError>;
}
