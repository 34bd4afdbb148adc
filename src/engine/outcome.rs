//! The one vocabulary of reasons: why an attachment is not configured, and every other Event
//! the engine emits. Event reasons, status strings and metric labels all come from [`Reason`].

use std::fmt;

/// Stable reasons; each names what an operator should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The NAD/SMC is not valid (bad pkey, bad JSON, bad annotation).
    InvalidNetwork,
    /// The pod's networks annotation, or a GUID in it, does not parse.
    InvalidAnnotation,
    /// The node's pkey table would overflow.
    PKeyLimitExceeded,
    /// The tenant policy does not let the namespace use the pkey.
    PKeyNotAllowed,
    /// The GUID asked for belongs to another live attachment, or is still being removed.
    GuidConflict,
    /// The GUID asked for is outside the managed pool range.
    GuidOutOfRange,
    /// No free GUID in the pool.
    PoolExhausted,
    /// UFM did not accept the change yet (it is retried).
    FabricUnavailable,
    /// The network the pod names does not exist (yet).
    NetworkNotFound,
    /// The pod's element claims `configured`, a GUID or a pkey the ledger does not back.
    ForgedAnnotation,
    /// The pod was running before fabric-sync configured it: its VF was set up without the GUID.
    StartedUnconfigured,
    /// The pod is not scheduled to a node yet (not written anywhere: passing).
    NotScheduled,
    /// UFM refused the change for good (400: an attribute it does not accept): not retried
    /// until the network changes.
    FabricRejected,
    /// The API server refused our write to the pod for good (403 from RBAC or an admission
    /// policy, 422): not retried hot.
    WriteRefused,
    /// Stale GUIDs no claim explains would have emptied too much of a partition at once.
    MassRemovalRefused,
    /// The node agent found the pod's VF carrying another GUID than its claim's (mirrored).
    VfGuidMismatch,
    /// The pod's pkey did not appear in its VF's pkey table in time (mirrored from the agent).
    FabricReadyTimeout,
    /// The pod's pkey is in its VF's pkey table (mirrored from the agent).
    FabricReady,
    /// The automatic network's managed pkey is not allocated or created in UFM yet (waits).
    PartitionPending,
    /// No free pkey is left in the managed range (`--pkey-range`) for an automatic network.
    PkeyRangeExhausted,
    /// The network asks for an automatic pkey, but automatic partitions are off (`--pkey-range` unset).
    AutoPkeyUnavailable,
    /// A fixed pkey inside the managed range: that range belongs to fabric-sync.
    PkeyReserved,
    /// The NAD's `fabric-sync.io/fabric` names a fabric the fabrics file does not list.
    FabricUnknown,
    /// The attachment's fabric does not reach the pod's node (its labels do not match the
    /// fabric's nodeSelector): a tenant cannot place GUIDs into a fabric its node is not on.
    FabricNotOnNode,
    /// No fabric's nodeSelector matches the pod's node, and the NAD names none.
    FabricNone,
    /// Several fabrics reach the pod's node and the NAD does not say which.
    FabricAmbiguous,
    /// The pod's node has not been seen yet, so its fabric is not known (passing: not written).
    FabricWaitingForNode,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::InvalidNetwork,
        Reason::InvalidAnnotation,
        Reason::PKeyLimitExceeded,
        Reason::PKeyNotAllowed,
        Reason::GuidConflict,
        Reason::GuidOutOfRange,
        Reason::PoolExhausted,
        Reason::FabricUnavailable,
        Reason::NetworkNotFound,
        Reason::ForgedAnnotation,
        Reason::StartedUnconfigured,
        Reason::NotScheduled,
        Reason::FabricRejected,
        Reason::WriteRefused,
        Reason::MassRemovalRefused,
        Reason::PartitionPending,
        Reason::PkeyRangeExhausted,
        Reason::AutoPkeyUnavailable,
        Reason::PkeyReserved,
        Reason::FabricUnknown,
        Reason::FabricNotOnNode,
        Reason::FabricNone,
        Reason::FabricAmbiguous,
        Reason::FabricWaitingForNode,
    ];

    /// The node agent's findings, mirrored onto pods by the controller (not refusals: not in
    /// [`Reason::ALL`], which labels the refusal metrics).
    pub const AGENT: [Reason; 3] = [Reason::VfGuidMismatch, Reason::FabricReadyTimeout, Reason::FabricReady];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidNetwork => "InvalidNetwork",
            Reason::InvalidAnnotation => "InvalidAnnotation",
            Reason::PKeyLimitExceeded => "PKeyLimitExceeded",
            Reason::PKeyNotAllowed => "PKeyNotAllowed",
            Reason::GuidConflict => "GuidConflict",
            Reason::GuidOutOfRange => "GuidOutOfRange",
            Reason::PoolExhausted => "PoolExhausted",
            Reason::FabricUnavailable => "FabricUnavailable",
            Reason::NetworkNotFound => "NetworkNotFound",
            Reason::ForgedAnnotation => "ForgedAnnotation",
            Reason::StartedUnconfigured => "StartedUnconfigured",
            Reason::NotScheduled => "NotScheduled",
            Reason::FabricRejected => "FabricRejected",
            Reason::WriteRefused => "WriteRefused",
            Reason::MassRemovalRefused => "MassRemovalRefused",
            Reason::VfGuidMismatch => "VfGuidMismatch",
            Reason::FabricReadyTimeout => "FabricReadyTimeout",
            Reason::FabricReady => "FabricReady",
            Reason::PartitionPending => "PartitionPending",
            Reason::PkeyRangeExhausted => "PkeyRangeExhausted",
            Reason::AutoPkeyUnavailable => "AutoPkeyUnavailable",
            Reason::PkeyReserved => "PkeyReserved",
            Reason::FabricUnknown => "FabricUnknown",
            Reason::FabricNotOnNode => "FabricNotOnNode",
            Reason::FabricNone => "FabricNone",
            Reason::FabricAmbiguous => "FabricAmbiguous",
            Reason::FabricWaitingForNode => "FabricWaitingForNode",
        }
    }

    /// Reasons that clear by themselves when something else frees up (retried, not final).
    pub fn waits_for_resources(self) -> bool {
        matches!(self, Reason::PKeyLimitExceeded | Reason::PoolExhausted | Reason::GuidConflict)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attachment that cannot be configured now, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }

    /// The value written under the attachment's key in `fabric-sync.io/status`.
    pub fn status(&self) -> String {
        format!("refused: {}: {}", self.reason, self.message)
    }
}

pub const STATUS_CONFIGURED: &str = "configured";
pub const STATUS_PENDING: &str = "pending";
