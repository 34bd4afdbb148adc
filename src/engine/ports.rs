//! The engine's ports to the cluster: `ClusterEvent`s in (from the kube adapter or the
//! simulator), `ClusterWriter` out (the ownership ledger, pod annotations, Events).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::fabric::ErrorClass;
use super::ledger::Claim;
use super::model::{ObjectKey, PodUid, PodView, Slot};
use super::outcome::Reason;
use super::partitions::PartitionClaim;
use crate::ib::{Guid, PKey};
use crate::netdef::{GuidVia, IbNetwork, NetdefError, NetworkKey};

/// Where a network definition came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkKind {
    Nad,
    SpiderMultusConfig,
}

/// A change in the cluster.
#[derive(Clone, Debug)]
pub enum ClusterEvent {
    PodApplied(PodView),
    PodDeleted {
        uid: PodUid,
    },
    /// A NAD or SMC was created or changed; `Ok(None)` means it is not an ib-sriov network.
    NetworkApplied {
        key: NetworkKey,
        kind: NetworkKind,
        network: Result<Option<IbNetwork>, NetdefError>,
    },
    NetworkDeleted {
        key: NetworkKey,
        kind: NetworkKind,
    },
    /// A node, its labels (they decide which fabrics reach it) and the pkey-table capacities its
    /// agent reported: the smallest of its IB ports, and per HCA (for fabrics that name theirs).
    NodeApplied {
        name: String,
        labels: BTreeMap<String, String>,
        pkey_capacity: Option<u16>,
        hca_capacities: BTreeMap<String, u16>,
    },
    NodeDeleted {
        name: String,
    },
    NamespaceApplied {
        name: String,
        labels: BTreeMap<String, String>,
    },
    NamespaceDeleted {
        name: String,
    },
    /// A ledger object (`GuidClaim`) was created or changed: the durable record of a pod's GUIDs.
    ClaimApplied(Claim),
    ClaimDeleted {
        pod_uid: PodUid,
    },
    /// A `PartitionClaim` (the durable record of a managed pkey) was created or changed.
    PartitionClaimApplied(PartitionClaim),
    PartitionClaimDeleted {
        name: String,
    },
    /// The partition adapter could not give an automatic network a pkey (`Some(why)`), or can
    /// again (`None`). Not durable: it is said again after a restart.
    PartitionRefused {
        network: NetworkKey,
        message: Option<String>,
    },
    /// Every initial list has been delivered.
    CachesSynced,
}

/// What to write into one attachment's network selection element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentWrite {
    pub network: NetworkKey,
    pub slot: Slot,
    /// The GUID the ledger gives the attachment; `None` removes any GUID from the element.
    pub guid: Option<Guid>,
    pub guid_via: GuidVia,
    /// `true`: mark `configured` with `pkey`. `false`: strip the marker and the pkey (a marker
    /// the ledger does not back, or membership not accepted yet).
    pub configured: bool,
    /// `cni-args.pkey` (none for a network without a pkey).
    pub pkey: Option<PKey>,
}

/// One patch of a pod: our keys in its networks annotation, and its status annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPatch {
    pub uid: PodUid,
    pub pod: ObjectKey,
    /// Attachments to mark configured with their GUID and pkey.
    pub writes: Vec<AttachmentWrite>,
    /// The value of `fabric-sync.io/status`: attachment label → state.
    pub status: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchOutcome {
    Patched,
    /// The pod is gone, or is another pod now (UID changed).
    PodGone,
    /// The attachment is no longer in the pod's annotation.
    AttachmentGone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

/// The kinds of object the engine reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Pod,
    NetworkAttachmentDefinition,
    SpiderMultusConfig,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "Pod",
            ObjectKind::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            ObjectKind::SpiderMultusConfig => "SpiderMultusConfig",
        }
    }

    pub fn of_network(kind: NetworkKind) -> ObjectKind {
        match kind {
            NetworkKind::Nad => ObjectKind::NetworkAttachmentDefinition,
            NetworkKind::SpiderMultusConfig => ObjectKind::SpiderMultusConfig,
        }
    }
}

/// The object an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventObject {
    pub kind: ObjectKind,
    pub key: ObjectKey,
    pub uid: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub object: EventObject,
    pub event_type: EventType,
    pub reason: Reason,
    pub message: String,
}

/// Why a write to the cluster failed, classified where it was detected: throttling, conflicts
/// and server trouble are transient; a refusal (403 from RBAC or an admission policy, 422, 400)
/// is permanent for that object until its input changes; 401 is auth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub class: ErrorClass,
    pub message: String,
}

impl WriteError {
    pub fn transient(message: impl Into<String>) -> WriteError {
        WriteError { class: ErrorClass::Transient, message: message.into() }
    }

    pub fn permanent(message: impl Into<String>) -> WriteError {
        WriteError { class: ErrorClass::Permanent, message: message.into() }
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// What the ledger answered a claim write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claim holds what was written.
    Written,
    /// The claim is gone (released).
    Released,
}

#[async_trait]
pub trait ClusterWriter: Send + Sync {
    /// Makes the pod's ledger object hold `claim` (created with an owner reference to the pod
    /// and the cleanup finalizer if it does not exist). Called before any of its GUIDs is sent
    /// to the fabric.
    async fn write_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError>;
    /// The fabric confirmed the removal of every GUID of the claim: delete it (if not deleted
    /// already) and drop the finalizer.
    async fn release_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError>;
    /// Rewrites our keys in the pod's annotations; re-reads and re-applies on a conflict.
    async fn patch_pod(&self, patch: &PodPatch) -> Result<PatchOutcome, WriteError>;
    async fn emit_event(&self, event: &EventRecord) -> Result<(), WriteError>;
}
