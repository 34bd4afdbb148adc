//! The partition ledger in the API server: cluster-scoped `PartitionClaim` objects of
//! `fabric-sync.io/v1alpha1` (docs/partitions.md), one per managed pkey and named after it, so
//! that the API server's AlreadyExists on create decides a race for a pkey. Also the UFM side the
//! partition reconciler needs (named create, delete, a listing with names), as a port.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::alloc::claim_name;
use crate::engine::{FabricError, PartitionClaim, PartitionPhase, PartitionScope};
use crate::ib::{Guid, PKey, PartitionSpec};
use crate::netdef::NetworkKey;
use crate::ufm::UfmClient;

pub const PARTITION_CLAIM_KIND: &str = "PartitionClaim";
pub const PARTITION_CLAIM_PLURAL: &str = "partitionclaims";
pub use crate::wire::keys::{
    ASSIGNED_PKEY_ANNOTATION, IB_KUBERNETES_PKEY_ANNOTATION, NAD_PARTITION_FINALIZER as NAD_FINALIZER,
    PARTITION_CLAIM_FINALIZER,
};
/// The fabric of the claim (several fabrics: docs/fabrics.md).
pub const DEFAULT_FABRIC: &str = "default";

/// `fabric-sync.io/v1alpha1` PartitionClaim (cluster-scoped).
pub fn partition_claim_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(super::CLAIM_GROUP, super::CLAIM_VERSION, PARTITION_CLAIM_KIND),
        PARTITION_CLAIM_PLURAL,
    )
}

/// A claim as stored, with what the engine does not need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredClaim {
    pub claim: PartitionClaim,
    pub partition_name: String,
    /// UFM's partition was created (or adopted by its exact name) by fabric-sync.
    pub created_in_ufm: bool,
}

/// The claim in a PartitionClaim object; `None` when it is not one of ours (its name is not
/// `pkey-0x…` of its own pkey, or a field does not parse): only the controller writes them.
pub fn stored_claim(obj: &DynamicObject) -> Option<StoredClaim> {
    let name = obj.metadata.name.clone()?;
    let spec = obj.data.get("spec")?;
    let pkey: PKey = spec.get("pkey")?.as_str()?.parse().ok()?;
    if claim_name(pkey) != name {
        tracing::warn!(claim = %name, "PartitionClaim not named after its pkey ignored (only the controller writes them)");
        return None;
    }
    let scope = spec.get("scope")?;
    let scope = match (scope.get("network").and_then(Value::as_str), scope.get("namespace").and_then(Value::as_str)) {
        (Some(n), None) => {
            let (ns, nad) = n.split_once('/')?;
            PartitionScope::Network(NetworkKey::new(ns, nad))
        }
        (None, Some(ns)) => PartitionScope::Namespace(ns.to_string()),
        _ => return None,
    };
    let status = obj.data.get("status");
    let phase = status
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .and_then(PartitionPhase::parse)
        .unwrap_or(PartitionPhase::Allocated);
    Some(StoredClaim {
        claim: PartitionClaim { name, pkey, scope, phase, deleting: obj.metadata.deletion_timestamp.is_some() },
        partition_name: spec.get("partitionName").and_then(Value::as_str).unwrap_or_default().to_string(),
        created_in_ufm: status.and_then(|s| s.get("createdInUfm")).and_then(Value::as_bool).unwrap_or(false),
    })
}

/// A new claim object (phase Allocated), written before anything goes to UFM.
pub fn claim_object(pkey: PKey, scope: &PartitionScope, partition_name: &str) -> DynamicObject {
    let scope = match scope {
        PartitionScope::Network(k) => json!({"network": k.to_string()}),
        PartitionScope::Namespace(ns) => json!({"namespace": ns}),
    };
    let mut obj = DynamicObject::new(&claim_name(pkey), &partition_claim_resource());
    obj.metadata.finalizers = Some(vec![PARTITION_CLAIM_FINALIZER.to_string()]);
    obj.metadata.labels =
        Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "fabric-sync".to_string())]));
    obj.data = json!({
        // Four hex digits, as in the name (the CRD's pattern and its name rule).
        "spec": {"pkey": format!("0x{:04x}", pkey.value()), "scope": scope, "partitionName": partition_name, "fabric": DEFAULT_FABRIC},
        "status": {"phase": PartitionPhase::Allocated.as_str(), "createdInUfm": false}
    });
    obj
}

/// One partition as UFM lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UfmPartitionInfo {
    pub name: Option<String>,
    pub members: BTreeSet<Guid>,
}

/// What the partition reconciler needs from UFM.
#[async_trait]
pub trait PartitionFabric: Send + Sync {
    /// Every partition, with its name and members.
    async fn partitions(&self) -> Result<BTreeMap<PKey, UfmPartitionInfo>, FabricError>;
    /// Creates the empty partition with the spec's attributes and `name`.
    async fn create(&self, spec: &PartitionSpec, name: &str) -> Result<(), FabricError>;
    /// Deletes the partition (absent already: not an error).
    async fn delete(&self, pkey: PKey) -> Result<(), FabricError>;
}

#[async_trait]
impl PartitionFabric for UfmClient {
    async fn partitions(&self) -> Result<BTreeMap<PKey, UfmPartitionInfo>, FabricError> {
        let list = self.list_pkeys().await?;
        Ok(list
            .into_iter()
            .map(|(p, u)| (p, UfmPartitionInfo { name: u.name, members: u.members.iter().map(|m| m.guid).collect() }))
            .collect())
    }

    async fn create(&self, spec: &PartitionSpec, name: &str) -> Result<(), FabricError> {
        if self.create_named_pkey(spec, Some(name)).await? {
            return Ok(());
        }
        Err(FabricError::new(
            crate::engine::ErrorClass::Permanent,
            crate::engine::FabricReason::UfmRejected,
            "this UFM cannot create empty partitions (POST /resources/pkeys/add needs UFM 6.15 or later); \
             automatic partitions need it: unset FABRIC_SYNC_PKEY_RANGE or upgrade UFM",
        ))
    }

    async fn delete(&self, pkey: PKey) -> Result<(), FabricError> {
        self.delete_pkey(pkey).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_object_reads_back_as_written() {
        let pkey = PKey::new(0x1001).unwrap();
        let scope = PartitionScope::Network(NetworkKey::new("t", "ib"));
        let obj = claim_object(pkey, &scope, "fs_t_ib_1001");
        let back = stored_claim(&obj).unwrap();
        assert_eq!(back.claim.name, "pkey-0x1001");
        assert_eq!((back.claim.pkey, &back.claim.scope, back.claim.phase), (pkey, &scope, PartitionPhase::Allocated));
        assert_eq!(back.partition_name, "fs_t_ib_1001");
        assert!(!back.created_in_ufm && !back.claim.deleting);
        let ns = claim_object(pkey, &PartitionScope::Namespace("t".into()), "x");
        assert_eq!(stored_claim(&ns).unwrap().claim.scope, PartitionScope::Namespace("t".into()));
    }

    #[test]
    fn a_claim_not_named_after_its_pkey_is_not_ours() {
        let mut obj = claim_object(PKey::new(0x1001).unwrap(), &PartitionScope::Namespace("t".into()), "x");
        obj.metadata.name = Some("pkey-0x1002".into());
        assert!(stored_claim(&obj).is_none());
        let mut bad_scope = claim_object(PKey::new(0x1001).unwrap(), &PartitionScope::Namespace("t".into()), "x");
        bad_scope.data["spec"]["scope"] = json!({"network": "no-slash"});
        assert!(stored_claim(&bad_scope).is_none());
    }
}
