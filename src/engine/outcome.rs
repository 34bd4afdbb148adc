//! Why an attachment is not configured: stable reasons (Event reasons, metric labels) and the
//! status strings written to `fabric-sync.io/status`.

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
}

impl Reason {
    pub const ALL: [Reason; 11] = [
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
    ];

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
