//! The sync engine: cluster events in, a plan out, ports to the world.
//!
//! `State` holds what the engine knows; `State::assign` decides GUIDs and refusals; `plan`
//! (pure) turns state into fabric jobs and pod patches; `Engine` (run.rs) schedules them.

mod assign;
mod fabric;
mod fabrics;
mod knowledge;
mod ledger;
mod model;
mod outcome;
mod partitions;
mod per_fabric;
mod plan;
mod policy;
mod ports;
mod records;
mod results;
mod retry;
mod run;
mod state;
mod state_view;
mod stats;
mod writeback;

pub use fabric::{ErrorClass, Fabric, FabricError, FabricListing, FabricMember, FabricReason};
pub use fabrics::{FABRIC_ANNOTATION, FabricRoute, RESOURCE_ANNOTATION, Unrouted, resolve as resolve_fabric};
pub use knowledge::{Knowledge, Member};
pub use ledger::{CLAIM_FINALIZER, Claim, ClaimedAttachment, Migration};
pub use model::{AttachmentId, AttachmentRequest, ObjectKey, PodMeta, PodPhase, PodUid, PodView, Slot};
pub use outcome::{Reason, Refusal, STATUS_CONFIGURED, STATUS_PENDING};
pub use partitions::{AutoResolution, PartitionClaim, PartitionPhase, PartitionScope, covering_claim};
pub use per_fabric::{DEFAULT_FABRIC, FabricId, FabricSpec, FabricState};
pub use plan::{Blocked, BreakerTrip, Limits, PkeyJob, Plan, RemovalWhy, build_patch, plan};
pub use policy::{Policy, PolicyError, PolicyMode};
pub use ports::{
    AttachmentWrite, ClaimOutcome, ClusterEvent, ClusterWriter, EventObject, EventRecord, EventType, NetworkKind,
    ObjectKind, PatchOutcome, PodPatch, WriteError,
};
pub use retry::Backoffs;
pub use run::{Engine, Timing};
pub use state::{Assignment, Desired, Effective, EngineConfig, NetworkDefs, Standing, State};
pub use stats::{Counter, EngineStats, FabricGauges, FabricStats, Gauges};
pub use writeback::{STATUS_ANNOTATION, apply_writes};

#[cfg(test)]
mod tests;
