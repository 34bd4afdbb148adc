//! The Kubernetes adapter (kube-rs): watchers that turn pods, NADs, SpiderMultusConfigs, nodes
//! and namespaces into the engine's `ClusterEvent`s; the `ClusterWriter` (pod patches with
//! optimistic concurrency, de-duplicated Events, node annotations); and Lease leader election.

mod cache;
mod dry_run;
mod events;
mod fenced;
mod lease;
mod ledger;
pub mod node_status;
mod partition_book;
mod partition_claims;
mod partition_release;
mod partitions;
pub mod ratelimit;
pub mod release;
mod resources;
mod snapshot;
mod watch;
mod writer;

use std::path::Path;

use axum::http::{HeaderValue, header};

pub use cache::{PodBase, WatchCache};
pub use dry_run::{DRY_RUN_KINDS, DryRunFabric, DryRunLog, DryRunWriter, dry_run_ports};
pub use events::{DEDUP_WINDOW, EventNote, EventPublisher, EventSender, REPORTING_CONTROLLER};
pub use fenced::{FencedFabric, FencedWriter};
pub use lease::{Decision, Fence, LeaderElector, LeaseSettings, decide};
pub use ledger::{
    CLAIM_GROUP, CLAIM_KIND, CLAIM_PLURAL, CLAIM_VERSION, claim_from_object, claim_object, claim_resource,
};
pub use partition_claims::{
    ASSIGNED_PKEY_ANNOTATION, IB_KUBERNETES_PKEY_ANNOTATION, NAD_FINALIZER, PARTITION_CLAIM_FINALIZER,
    PARTITION_CLAIM_KIND, PARTITION_CLAIM_PLURAL, PartitionFabric, StoredClaim, UfmPartitionInfo,
    claim_object as partition_claim_object, partition_claim_resource, stored_claim,
};
pub use partitions::{PartitionReconciler, PartitionSettings};
pub use ratelimit::{RateLimit, limited_client};
pub use resources::{INVENTORY_ANNOTATION, SlimPod, SlimPodSpec, SlimPodStatus, nad_resource, pod_view, smc_resource};
pub use snapshot::{Snapshot, SnapshotError, snapshot};
pub use watch::{NetworkUids, WatchSettings, network_kind_name, spawn_watchers};
pub use writer::{KubeWriter, MAX_CONFLICT_RETRIES, PodChange, pod_change, pod_change_from};

use crate::config::ConfigError;

/// Every API call the controller makes: (API group, resource, verb). The RBAC in `deploy/`
/// must grant exactly these (a test compares the fake API server's request log against it).
pub const API_CALLS: &[(&str, &str, &str)] = &[
    // Watchers: an initial list, then a watch (relisted after 410 Gone).
    ("", "pods", "list"),
    ("", "pods", "watch"),
    // Pod write-back: a merge patch of our annotations computed from the watch cache, with its
    // resourceVersion as precondition; read only after a 409 or for a pod the cache lacks.
    ("", "pods", "get"),
    ("", "pods", "patch"),
    ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
    ("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
    ("spiderpool.spidernet.io", "spidermultusconfigs", "list"),
    ("spiderpool.spidernet.io", "spidermultusconfigs", "watch"),
    // Node agent inventory (metadata only).
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    // Namespace labels for the tenant policy (metadata only).
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    // Events: created, then their series count patched when they repeat.
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    // The ownership ledger: watched; created before a GUID goes to UFM; its spec patched when
    // a network moves (read only after a 409); deleted and its finalizer removed once UFM
    // confirmed the removal.
    ("fabric-sync.io", "guidclaims", "list"),
    ("fabric-sync.io", "guidclaims", "watch"),
    ("fabric-sync.io", "guidclaims", "create"),
    ("fabric-sync.io", "guidclaims", "patch"),
    ("fabric-sync.io", "guidclaims", "delete"),
    // The node agents' reports, mirrored onto pods as Events (node_status.rs).
    ("fabric-sync.io", "nodefabricstatuses", "list"),
    ("fabric-sync.io", "nodefabricstatuses", "watch"),
    // Automatic partitions (--pkey-range; partitions.rs): the partition ledger is watched,
    // created before UFM is asked, its status patched, deleted once UFM dropped the partition;
    // automatic NADs get the assigned pkey and the finalizer by a merge patch; a namespace's
    // labels are read for the policy's autoPkey rules.
    ("fabric-sync.io", "partitionclaims", "list"),
    ("fabric-sync.io", "partitionclaims", "watch"),
    ("fabric-sync.io", "partitionclaims", "create"),
    ("fabric-sync.io", "partitionclaims", "patch"),
    ("fabric-sync.io", "partitionclaims", "delete"),
    ("k8s.cni.cncf.io", "network-attachment-definitions", "patch"),
    ("", "namespaces", "get"),
    // Leader election.
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
];

/// The client configuration: the kubeconfig file when one is given (`KUBECONFIG` /
/// `--kubeconfig`), else the in-cluster service account. Requests carry a User-Agent naming
/// this replica, so the API server's audit log tells replicas apart.
pub async fn client_config(kubeconfig: Option<&Path>, identity: &str) -> Result<kube::Config, ConfigError> {
    let setting = |detail: String| ConfigError { setting: "KUBECONFIG (--kubeconfig)".into(), detail };
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| setting(format!("cannot read {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| setting(format!("{} is not usable: {e}", path.display())))?
        }
        None => kube::Config::incluster()
            .map_err(|e| setting(format!("unset, and not running in a cluster ({e}): set it to a kubeconfig file")))?,
    };
    let agent = format!("fabric-sync/{} ({identity})", env!("CARGO_PKG_VERSION"));
    let agent = HeaderValue::from_str(&agent)
        .unwrap_or_else(|_| HeaderValue::from_static(concat!("fabric-sync/", env!("CARGO_PKG_VERSION"))));
    config.headers.push((header::USER_AGENT, agent));
    Ok(config)
}
