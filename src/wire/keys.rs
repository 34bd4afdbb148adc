//! Every name fabric-sync reads or writes on a Kubernetes object, defined once.
//!
//! Who may write each one matters (design/ARCHITECTURE.md, "Who may write what"): a tenant can
//! write its pods' and NADs' annotations, so those are requests or reports, never a record of
//! ownership; the records live in objects of the [`GROUP`] API group that only fabric-sync writes.

/// The API group of fabric-sync's own objects (`GuidClaim`, the agent's status objects).
pub const GROUP: &str = "fabric-sync.io";

// --- Pods (tenant-writable) -------------------------------------------------------------

/// Multus' list of a pod's networks; fabric-sync writes its own keys into each element.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Multus' report of the attached networks (written by Multus, read by the agent).
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The `cni-args` key ib-kubernetes sets to `configured` once UFM accepted the membership.
pub const CNI_ARG_CONFIGURED: &str = "mellanox.infiniband.app";
/// The pod's status per attachment, written by the controller (JSON object).
pub const STATUS_ANNOTATION: &str = "fabric-sync.io/status";

// --- Network definitions (NADs and SpiderMultusConfigs: tenant-writable) ----------------

/// The NAD's device-plugin resource (SR-IOV network device plugin).
pub const RESOURCE_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
/// The fabric a network is on, when the cluster has several.
pub const FABRIC_ANNOTATION: &str = "fabric-sync.io/fabric";
pub const ANNOTATION_MEMBERSHIP: &str = "fabric-sync.io/membership";
pub const ANNOTATION_IP_OVER_IB: &str = "fabric-sync.io/ip-over-ib";
pub const ANNOTATION_MTU_LIMIT: &str = "fabric-sync.io/mtu-limit";
pub const ANNOTATION_SERVICE_LEVEL: &str = "fabric-sync.io/service-level";
pub const ANNOTATION_RATE_LIMIT: &str = "fabric-sync.io/rate-limit";
/// `fabric-sync.io/pkey: "auto"`: the network asks fabric-sync for a managed pkey
/// (docs/partitions.md); the pkey it gets is recorded in a `PartitionClaim`, never here.
pub const ANNOTATION_PKEY: &str = "fabric-sync.io/pkey";
/// The only value [`ANNOTATION_PKEY`] takes.
pub const AUTO_PKEY: &str = "auto";
/// UFM's `index0` for the partition's members (`true` by default).
pub const ANNOTATION_INDEX0: &str = "fabric-sync.io/index0";

/// Written on an automatic NAD: the pkey fabric-sync assigned (an output for tools and people;
/// the record is the `PartitionClaim`, never this).
pub const ASSIGNED_PKEY_ANNOTATION: &str = "fabric-sync.io/assigned-pkey";
/// ib-kubernetes' annotation for a partition-aware backend's pkey, written beside it.
pub const IB_KUBERNETES_PKEY_ANNOTATION: &str = "mellanox.infiniband.pkey";
/// Held on an automatic NAD until its members are removed and its partition released.
pub const NAD_PARTITION_FINALIZER: &str = "fabric-sync.io/partition";

// --- Nodes --------------------------------------------------------------------------------

/// The Node annotation holding the agent's [`super::InventorySummary`] as JSON.
pub const INVENTORY_ANNOTATION: &str = "fabric-sync.io/ib-inventory";

// --- fabric-sync's own objects ----------------------------------------------------------

/// The label on a `GuidClaim` naming the pod's node (the agent lists its node's claims by it).
pub const NODE_LABEL: &str = "fabric-sync.io/node";
/// The finalizer a `GuidClaim` holds until UFM confirmed its GUIDs' removal.
pub const CLAIM_FINALIZER: &str = "fabric-sync.io/fabric-cleanup";
/// Held on a `PartitionClaim` until its partition is gone from UFM (or was never ours).
pub const PARTITION_CLAIM_FINALIZER: &str = "fabric-sync.io/partition-cleanup";
/// `reportingController` of the Events the controller raises.
pub const REPORTING_CONTROLLER: &str = "fabric-sync.io/controller";
/// `reportingController` of the Events the node agent raises (`reportingInstance`: its node);
/// unqualified, as it has always been, so that alert rules matching it keep working.
pub const AGENT_REPORTING_CONTROLLER: &str = "fabric-sync-agent";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_keys_are_qualified_names_of_our_group() {
        let ours = [
            STATUS_ANNOTATION,
            FABRIC_ANNOTATION,
            ANNOTATION_MEMBERSHIP,
            ANNOTATION_IP_OVER_IB,
            ANNOTATION_MTU_LIMIT,
            ANNOTATION_SERVICE_LEVEL,
            ANNOTATION_RATE_LIMIT,
            ANNOTATION_INDEX0,
            ANNOTATION_PKEY,
            INVENTORY_ANNOTATION,
            NODE_LABEL,
            CLAIM_FINALIZER,
            ASSIGNED_PKEY_ANNOTATION,
            NAD_PARTITION_FINALIZER,
            PARTITION_CLAIM_FINALIZER,
            REPORTING_CONTROLLER,
        ];
        for key in ours {
            let (prefix, name) = key.split_once('/').expect("prefix/name");
            assert_eq!(prefix, GROUP, "{key}");
            // A Kubernetes qualified name: at most 63 characters, alphanumeric at both ends.
            assert!(!name.is_empty() && name.len() <= 63, "{key}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{key}");
            assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()), "{key}");
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()), "{key}");
        }
        let mut sorted = ours.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ours.len(), "two contracts share a key");
    }
}
