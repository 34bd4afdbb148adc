//! The records `State` keeps per GUID, per network and per attachment: what membership a GUID
//! should have ([`Desired`]), who holds it ([`Assignment`]), how a network's definitions read
//! ([`NetworkDefs`], [`Effective`]) and where an attachment stands ([`Standing`]).

use super::model::AttachmentId;
use super::outcome::Refusal;
use super::partitions::AutoResolution;
use super::per_fabric::FabricId;
use crate::ib::{PKey, PartitionSpec};
use crate::netdef::{GuidVia, IbNetwork, NetdefError};

/// What membership an assigned GUID should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    /// Member of this partition, then written `configured`.
    Member(PartitionSpec),
    /// The network has no pkey: written `configured` with no fabric change.
    NoPartition,
    /// Keep the GUID, hold no membership (network gone or invalid, policy or budget refusal).
    Nothing,
    /// Keep the GUID and whatever membership UFM holds for it: adopted at migration on a
    /// network fabric-sync cannot read, so nothing may be removed on a guess.
    LeaveAlone,
}

impl Desired {
    pub fn pkey(self) -> Option<PKey> {
        match self {
            Desired::Member(s) => Some(s.pkey),
            _ => None,
        }
    }
}

/// One GUID in the ledger.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// The fabric whose UFM holds (or is to hold) it.
    pub fabric: FabricId,
    /// `None` once the owner is gone: the GUID is being removed from the fabric.
    pub owner: Option<AttachmentId>,
    /// The attachment whose claim (ledger object) records this GUID; kept after the owner is
    /// gone, until the fabric confirmed the removal.
    pub claimed: Option<AttachmentId>,
    pub node: std::sync::Arc<str>,
    pub desired: Desired,
    /// The (node, pkey) this assignment counts against the budget.
    pub budget_pkey: Option<PKey>,
    pub guid_via: GuidVia,
    /// What the pod's annotation holds: `Some(pkey)` once written `configured` (pkey may be none).
    pub written: Option<Option<PKey>>,
    /// An add was sent or UFM listed it: it must be removed (and confirmed) before reuse.
    pub ever_in_fabric: bool,
    /// pkeys a listing confirmed this GUID gone from, after UFM accepted its removal: the claim
    /// drops them next. (A listing may lag behind an add, so absence alone proves nothing, and
    /// an accepted removal alone may be overtaken by a delayed add.)
    pub removed_from: Vec<PKey>,
    /// Accepted removals waiting for a listing started after them: (pkey, knowledge generation).
    pub removals: Vec<(PKey, u64)>,
}

/// A network's definitions: the NAD and/or the SpiderMultusConfig it was rendered from.
#[derive(Clone, Debug, Default)]
pub struct NetworkDefs {
    pub nad: Option<Result<Option<IbNetwork>, NetdefError>>,
    pub smc: Option<Result<Option<IbNetwork>, NetdefError>>,
    /// How an automatic network (or a fixed one in the managed range) resolves (partitions.rs).
    pub auto: Option<AutoResolution>,
}

/// How the engine sees a network.
#[derive(Clone, Debug, PartialEq)]
pub enum Effective<'a> {
    Missing,
    NotOurs,
    Invalid(&'a NetdefError),
    Ours(&'a IbNetwork),
    /// An automatic network whose pkey is not ready yet: attachments wait without membership.
    Waiting(&'a Refusal),
    /// An automatic network that cannot be served, or a fixed pkey inside the managed range.
    Refused(&'a Refusal),
}

impl NetworkDefs {
    /// The NAD wins when present; the SMC speaks for a network Spiderpool has not rendered yet.
    pub fn effective(&self) -> Effective<'_> {
        match (self.raw_ours(), &self.auto) {
            (Some(_), Some(AutoResolution::Ready(n))) => return Effective::Ours(n),
            (Some(_), Some(AutoResolution::Waiting(r))) => return Effective::Waiting(r),
            (Some(_), Some(AutoResolution::Refused(r))) => return Effective::Refused(r),
            _ => {}
        }
        match self.nad.as_ref().or(self.smc.as_ref()) {
            None => Effective::Missing,
            Some(Ok(None)) => Effective::NotOurs,
            Some(Ok(Some(n))) => Effective::Ours(n),
            Some(Err(e)) => Effective::Invalid(e),
        }
    }

    /// The network as its object defines it (before an automatic pkey is resolved).
    pub(super) fn raw_ours(&self) -> Option<&IbNetwork> {
        match self.nad.as_ref().or(self.smc.as_ref()) {
            Some(Ok(Some(n))) => Some(n),
            _ => None,
        }
    }

    pub(super) fn named_pkey(&self) -> Option<PKey> {
        match self.effective() {
            Effective::Ours(n) => n.pkey(),
            _ => None,
        }
    }
}

/// Where an attachment stands, for the status annotation and Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Not actionable yet (network not found): shown in the status annotation.
    Waiting(Refusal),
    /// Passing conditions (not scheduled, UFM retrying): kept for metrics, not written anywhere.
    Quiet(Refusal),
    /// Cannot be configured until something changes: status annotation and one Warning Event.
    Refused(Refusal),
}

impl Standing {
    pub fn refusal(&self) -> &Refusal {
        match self {
            Standing::Waiting(r) | Standing::Quiet(r) | Standing::Refused(r) => r,
        }
    }
}
