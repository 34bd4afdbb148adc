//! The node agent (`fabric-sync agent …`, a DaemonSet on InfiniBand nodes): reads the node's HCAs,
//! ports, pkey tables and SR-IOV VFs from sysfs, reports a summary on the Node, and checks (or, in
//! `program` mode, sets) the GUID on the VF of every local pod attachment the controller assigned.
//!
//! Layout: `sysfs` (root-confined reads), `scan` → `inventory` (plain data), `netlink` (the
//! `VfControl` seam and rtnetlink messages), `cluster` (the `AgentCluster` seam and kube-rs),
//! `claims` (the node's ledger), `verify` and `foreign` (pure decisions), `readiness` (pkey-table
//! waits), `status` (the NodeFabricStatus), `pass` (one pass, orchestrating the seams),
//! `metrics`, `cli`.

pub mod claims;
pub mod cli;
pub mod cluster;
pub mod foreign;
pub mod inventory;
pub mod metrics;
pub mod netlink;
pub mod pass;
pub mod readiness;
pub mod scan;
pub mod status;
pub mod sysfs;
pub mod verify;

pub use claims::{LedgerEntry, NODE_LABEL, NodeLedger};
pub use cluster::{
    AGENT_API_CALLS, AgentCluster, AgentEvent, AgentPod, EventTarget, KubeAgentCluster, status_resource,
};
pub use inventory::{INVENTORY_ANNOTATION, Inventory, InventorySummary, RawGuid};
pub use metrics::AgentMetrics;
pub use netlink::{GuidKind, NetlinkVfControl, PfRef, VfControl, VfGuids};
pub use pass::{Agent, AgentMode, PassReport, REBIND_DRIVER};
pub use readiness::{Readiness, ReadinessSettings, ReadyState, TableRef};
pub use scan::scan;
pub use sysfs::{Sysfs, SysfsError};
pub use verify::Verdict;

use crate::config::ConfigError;

/// Everything that can go wrong in the agent. Each variant has a stable `reason()` (Events) and
/// `kind()` (the `kind` label of `fabric_sync_agent_errors_total`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    #[error("netlink {op} on {pf}: {detail}")]
    Netlink { pf: String, op: &'static str, detail: String },
    #[error("rebinding VF {vf}: {detail}")]
    Rebind { vf: String, detail: String },
    #[error("Kubernetes API, {op}: {detail}")]
    Kube { op: &'static str, detail: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl AgentError {
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Sysfs(_) => "SysfsError",
            AgentError::Netlink { .. } => "NetlinkError",
            AgentError::Rebind { .. } => "RebindError",
            AgentError::Kube { .. } => "KubeApiError",
            AgentError::Config(e) => e.reason(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Sysfs(_) => "sysfs",
            AgentError::Netlink { .. } => "netlink",
            AgentError::Rebind { .. } => "rebind",
            AgentError::Kube { .. } => "kube",
            AgentError::Config(_) => "config",
        }
    }
}
