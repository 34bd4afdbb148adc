//! The ownership ledger in the API server: `GuidClaim` objects of `fabric-sync.io/v1alpha1`
//! (docs/ledger.md), read into the engine's [`Claim`] and written from it. A claim is named
//! after its pod's UID, lives in the pod's namespace, is owned by the pod (Kubernetes deletes it
//! with the pod, also while the controller is down) and holds the cleanup finalizer until the
//! controller confirmed the removal of its GUIDs from UFM.

use std::sync::Arc;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use serde_json::{Value, json};

use super::cache::WatchCache;
use super::writer::write_error;
use crate::engine::{CLAIM_FINALIZER, Claim, ClaimOutcome, ClaimedAttachment, ObjectKey, PodUid, Slot, WriteError};
use crate::ib::{Guid, PKey};
use crate::netdef::NetworkKey;

pub use crate::wire::keys::GROUP as CLAIM_GROUP;
pub const CLAIM_VERSION: &str = "v1alpha1";
pub const CLAIM_KIND: &str = "GuidClaim";
pub const CLAIM_PLURAL: &str = "guidclaims";

/// `fabric-sync.io/v1alpha1` GuidClaim.
pub fn claim_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(CLAIM_GROUP, CLAIM_VERSION, CLAIM_KIND), CLAIM_PLURAL)
}

/// The engine's claim from a GuidClaim object; `None` when it is not one of ours (no pod UID,
/// no namespace). Attachments that do not parse are left out with a warning: the controller
/// is the only writer, so this means someone else wrote it.
pub fn claim_from_object(obj: &DynamicObject) -> Option<Claim> {
    let namespace = obj.metadata.namespace.as_deref()?;
    let spec = obj.data.get("spec")?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let pod_uid = text(spec, "podUid").or_else(|| obj.metadata.name.clone()).filter(|u| !u.is_empty())?;
    let pod = text(spec, "pod").unwrap_or_default();
    let mut attachments = Vec::new();
    for a in spec.get("attachments").and_then(Value::as_array).into_iter().flatten() {
        match attachment_from_value(a) {
            Some(r) => attachments.push(r),
            None => tracing::warn!(claim = ?obj.metadata.name, namespace, attachment = %a,
                "ledger entry that does not parse ignored (only the controller should write GuidClaims)"),
        }
    }
    Some(Claim {
        pod_uid: PodUid::new(&pod_uid),
        pod: ObjectKey { namespace: namespace.to_string(), name: pod },
        node: Arc::from(text(spec, "node").unwrap_or_default()),
        migrated: spec.get("migrated").and_then(Value::as_bool).unwrap_or(false),
        deleting: obj.metadata.deletion_timestamp.is_some(),
        attachments,
    })
}

fn attachment_from_value(a: &Value) -> Option<ClaimedAttachment> {
    let (ns, name) = a.get("network")?.as_str()?.split_once('/')?;
    let slot = match a.get("interface").and_then(Value::as_str) {
        Some(i) => Slot::Interface(i.into()),
        None => Slot::Occurrence(u16::try_from(a.get("occurrence").and_then(Value::as_u64).unwrap_or(0)).ok()?),
    };
    let guid: Guid = a.get("guid")?.as_str()?.parse().ok()?;
    let pkey = match a.get("pkey").and_then(Value::as_str) {
        Some(p) => Some(p.parse::<PKey>().ok()?),
        None => None,
    };
    let former_pkeys = a
        .get("formerPkeys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str()?.parse::<PKey>().ok())
        .collect();
    // Absent: the `default` fabric (claims written before issue 17, or without a fabrics file).
    let fabric = a.get("fabric").and_then(Value::as_str).filter(|f| !f.is_empty()).map(str::to_string);
    Some(ClaimedAttachment { network: NetworkKey::new(ns, name), slot, guid, pkey, former_pkeys, fabric })
}

/// The `spec` of a claim.
pub fn claim_spec(claim: &Claim) -> Value {
    let attachments: Vec<Value> = claim
        .attachments
        .iter()
        .map(|a| {
            let mut v = json!({"network": a.network.to_string(), "guid": a.guid.to_string()});
            match &a.slot {
                Slot::Interface(i) => v["interface"] = json!(i.as_ref()),
                Slot::Occurrence(n) => v["occurrence"] = json!(n),
            }
            if let Some(p) = a.pkey {
                v["pkey"] = json!(p.to_string());
            }
            if !a.former_pkeys.is_empty() {
                v["formerPkeys"] = json!(a.former_pkeys.iter().map(PKey::to_string).collect::<Vec<_>>());
            }
            if let Some(f) = &a.fabric {
                v["fabric"] = json!(f);
            }
            v
        })
        .collect();
    json!({
        "pod": claim.pod.name,
        "podUid": claim.pod_uid.as_str(),
        "node": claim.node.as_ref(),
        "migrated": claim.migrated,
        "attachments": attachments,
    })
}

/// A new GuidClaim object: owned by its pod, with the cleanup finalizer.
pub fn claim_object(claim: &Claim) -> DynamicObject {
    let mut obj = DynamicObject::new(claim.pod_uid.as_str(), &claim_resource()).within(&claim.pod.namespace);
    obj.metadata = ObjectMeta {
        name: Some(claim.pod_uid.to_string()),
        namespace: Some(claim.pod.namespace.clone()),
        labels: Some(
            [("app.kubernetes.io/managed-by".to_string(), "fabric-sync".to_string())]
                .into_iter()
                // The node agent lists its node's claims by this label (a node name too long
                // for a label value goes without: the agent then reads the claim by name).
                .chain(
                    (claim.node.len() <= 63 && !claim.node.is_empty())
                        .then(|| (crate::agent::NODE_LABEL.to_string(), claim.node.to_string())),
                )
                .collect(),
        ),
        finalizers: Some(vec![CLAIM_FINALIZER.to_string()]),
        owner_references: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: claim.pod.name.clone(),
            uid: claim.pod_uid.to_string(),
            ..Default::default()
        }]),
        ..ObjectMeta::default()
    };
    obj.data = json!({"spec": claim_spec(claim)});
    obj
}

fn api(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &claim_resource())
}

/// Creates the claim, or replaces the spec of the one that exists, without reading it first:
/// a claim the watch `cache` holds is merge-patched with its resourceVersion as precondition
/// (a 409 costs one fresh read), any other is created (and, if it exists after all, its spec is
/// set by a merge patch: the spec is the controller's alone).
pub async fn write_claim(
    client: &kube::Client,
    cache: Option<&WatchCache>,
    claim: &Claim,
) -> Result<ClaimOutcome, WriteError> {
    let api = api(client, &claim.pod.namespace);
    let name = claim.pod_uid.as_str();
    let remember = |obj: &DynamicObject| {
        if let Some(c) = cache {
            c.claim_written(&obj.metadata);
        }
    };
    let mut known = cache.and_then(|c| c.claim(&claim.pod_uid));
    for _ in 0..2 {
        let Some(rv) = known.take() else { break };
        let body = json!({"metadata": {"resourceVersion": rv}, "spec": claim_spec(claim)});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(obj) => {
                remember(&obj);
                return Ok(ClaimOutcome::Written);
            }
            // Gone meanwhile (the pod was deleted and Kubernetes collected it): create it anew.
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(name).await.map_err(write_error)? {
                Some(obj) => {
                    remember(&obj);
                    known = obj.metadata.resource_version;
                    if known.is_none() {
                        break;
                    }
                }
                None => break,
            },
            Err(e) => return Err(write_error(e)),
        }
    }
    match api.create(&PostParams::default(), &claim_object(claim)).await {
        Ok(_) => return Ok(ClaimOutcome::Written),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(write_error(e)),
    }
    // It exists (an earlier write, or a term of another leader): the spec is ours to set.
    let body = json!({"spec": claim_spec(claim)});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
        Ok(obj) => {
            remember(&obj);
            Ok(ClaimOutcome::Written)
        }
        Err(e) => Err(write_error(e)),
    }
}

/// Deletes the claim (unless Kubernetes did already) and drops the cleanup finalizer.
pub async fn release_claim(client: &kube::Client, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
    let api = api(client, &claim.pod.namespace);
    let name = claim.pod_uid.as_str();
    if !claim.deleting {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(ClaimOutcome::Released),
            Err(e) => return Err(write_error(e)),
        }
    }
    // Only our finalizer (the usual case): one JSON patch guarded by a test. Else read, keep
    // the others, and write the rest back with the read's resourceVersion.
    let ops = json!([{"op": "test", "path": "/metadata/finalizers", "value": [CLAIM_FINALIZER]},
                     {"op": "remove", "path": "/metadata/finalizers"}]);
    let patch: Patch<Value> = Patch::Json(
        serde_json::from_value(ops).map_err(|e| WriteError::permanent(format!("building the finalizer patch: {e}")))?,
    );
    match api.patch(name, &PatchParams::default(), &patch).await {
        Ok(_) => return Ok(ClaimOutcome::Released),
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(ClaimOutcome::Released),
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {}
        Err(e) => return Err(write_error(e)),
    }
    let Some(current) = api.get_opt(name).await.map_err(write_error)? else {
        return Ok(ClaimOutcome::Released);
    };
    let finalizers: Vec<String> =
        current.metadata.finalizers.unwrap_or_default().into_iter().filter(|f| f != CLAIM_FINALIZER).collect();
    let body = json!({"metadata": {"resourceVersion": current.metadata.resource_version, "finalizers": finalizers}});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
        Ok(_) => Ok(ClaimOutcome::Released),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(ClaimOutcome::Released),
        Err(e) => Err(write_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            pod_uid: PodUid::new("uid-1"),
            pod: ObjectKey { namespace: "t".into(), name: "p".into() },
            node: Arc::from("n1"),
            migrated: true,
            deleting: false,
            attachments: vec![
                ClaimedAttachment {
                    network: NetworkKey::new("t", "ib"),
                    slot: Slot::Occurrence(1),
                    guid: "02:00:00:00:00:00:00:2a".parse().unwrap(),
                    pkey: Some("0x1000".parse().unwrap()),
                    former_pkeys: vec!["0xfff".parse().unwrap()],
                    fabric: Some("storage".into()),
                },
                ClaimedAttachment {
                    network: NetworkKey::new("u", "ib2"),
                    slot: Slot::Interface("net2".into()),
                    guid: "02:00:00:00:00:00:00:2b".parse().unwrap(),
                    pkey: None,
                    former_pkeys: vec![],
                    fabric: None,
                },
            ],
        }
    }

    #[test]
    fn a_claim_round_trips_through_its_object_with_owner_and_finalizer() {
        let obj = claim_object(&claim());
        assert_eq!(obj.metadata.name.as_deref(), Some("uid-1"));
        assert_eq!(obj.metadata.finalizers, Some(vec![CLAIM_FINALIZER.to_string()]));
        let owner = &obj.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.name.as_str()), ("Pod", "uid-1", "p"));
        assert_eq!(obj.data["spec"]["attachments"][0]["pkey"], "0x1000");
        assert_eq!(obj.data["spec"]["attachments"][1]["interface"], "net2");
        assert_eq!(claim_from_object(&obj), Some(claim()));
    }

    #[test]
    fn an_entry_that_does_not_parse_is_left_out_and_deletion_is_seen() {
        let mut obj = claim_object(&claim());
        obj.data["spec"]["attachments"][1]["guid"] = json!("00:00");
        obj.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let c = claim_from_object(&obj).unwrap();
        assert_eq!(c.attachments.len(), 1);
        assert!(c.deleting);
    }
}
