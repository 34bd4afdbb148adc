//! The `Fabric` port: what the engine needs from a subnet manager. `src/ufm` implements it
//! over UFM's REST API; `NoopFabric` (in `src/ufm`) accepts everything and lists nothing.

use std::collections::BTreeMap;
use std::fmt;

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

/// What kind of failure a fabric call met, decided where it was detected; the engine acts on
/// the class and never on the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Timeouts, connection errors, 5xx, 429: the same call may succeed later (back off per item).
    Transient,
    /// The request itself is refused (other 4xx such as 400 "invalid rate limit", a request
    /// we built wrong, an answer that will not change by asking again): retrying will not help
    /// until the input changes.
    Permanent,
    /// UFM does not accept who we are (401, 403, missing or unusable credentials, a TLS peer
    /// that cannot be verified or refuses our certificate): every call will fail the same way,
    /// so all traffic to that UFM pauses.
    Auth,
}

impl ErrorClass {
    /// Stable label for metrics and logs: `transient`, `permanent`, `auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Auth => "auth",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a fabric call failed: one stable vocabulary for Event reasons and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FabricReason {
    /// The client's own settings cannot be used (CA, client certificate, …).
    UfmConfig,
    /// The credentials in force are missing or cannot be read or sent.
    UfmCredentials,
    /// No TCP connection (refused, unresolvable, connect timeout).
    UfmUnreachable,
    /// The TLS handshake failed.
    UfmTls,
    /// No answer within the request timeout.
    UfmTimeout,
    /// The connection broke before a whole answer arrived.
    UfmConnectionLost,
    /// 401.
    UfmUnauthorized,
    /// 403.
    UfmForbidden,
    /// Another 4xx: UFM refused the request itself.
    UfmRejected,
    /// 5xx, 429, 408.
    UfmUnavailable,
    /// A 3xx: the settings point at something that is not UFM's API.
    UfmRedirected,
    /// A 2xx answer that is not what UFM sends.
    UfmMalformedAnswer,
    /// Not sent: this replica's leader lease was not renewed in time (the fence).
    NotLeader,
}

impl FabricReason {
    /// The label, e.g. `UfmUnavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            FabricReason::UfmConfig => "UfmConfig",
            FabricReason::UfmCredentials => "UfmCredentials",
            FabricReason::UfmUnreachable => "UfmUnreachable",
            FabricReason::UfmTls => "UfmTls",
            FabricReason::UfmTimeout => "UfmTimeout",
            FabricReason::UfmConnectionLost => "UfmConnectionLost",
            FabricReason::UfmUnauthorized => "UfmUnauthorized",
            FabricReason::UfmForbidden => "UfmForbidden",
            FabricReason::UfmRejected => "UfmRejected",
            FabricReason::UfmUnavailable => "UfmUnavailable",
            FabricReason::UfmRedirected => "UfmRedirected",
            FabricReason::UfmMalformedAnswer => "UfmMalformedAnswer",
            FabricReason::NotLeader => "NotLeader",
        }
    }

    /// Every reason, for metrics that pre-register their label values.
    pub const ALL: [FabricReason; 13] = [
        FabricReason::UfmConfig,
        FabricReason::UfmCredentials,
        FabricReason::UfmUnreachable,
        FabricReason::UfmTls,
        FabricReason::UfmTimeout,
        FabricReason::UfmConnectionLost,
        FabricReason::UfmUnauthorized,
        FabricReason::UfmForbidden,
        FabricReason::UfmRejected,
        FabricReason::UfmUnavailable,
        FabricReason::UfmRedirected,
        FabricReason::UfmMalformedAnswer,
        FabricReason::NotLeader,
    ];
}

impl fmt::Display for FabricReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a fabric call failed, classified where it was detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FabricError {
    pub class: ErrorClass,
    pub reason: FabricReason,
    /// What happened, for a person: includes UFM's answer (trimmed), never credentials.
    pub message: String,
}

impl FabricError {
    pub fn new(class: ErrorClass, reason: FabricReason, message: impl Into<String>) -> FabricError {
        FabricError { class, reason, message: message.into() }
    }

    /// Worth another attempt later, per item, with back-off.
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// UFM refuses who we are: pause all traffic to it.
    pub fn is_auth(&self) -> bool {
        self.class == ErrorClass::Auth
    }

    /// The request will be refused again until its input changes.
    pub fn is_permanent(&self) -> bool {
        self.class == ErrorClass::Permanent
    }
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
