//! The partition half of `fabric-sync ledger release --all` (uninstall): with the controller
//! scaled to 0 and the GUIDs already removed, deletes from UFM every partition a PartitionClaim
//! says fabric-sync created (if UFM lists no member in it any more), releases every claim, and
//! drops the `fabric-sync.io/partition` finalizer from every NAD, so that neither the CRD nor a
//! NAD waits for a controller that is gone. A partition that still has members stays in UFM.

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use super::partition_claims::{NAD_FINALIZER, partition_claim_resource, stored_claim};
use super::resources::nad_resource;
use crate::ufm::UfmClient;

/// What the release did (or, dry, would do).
#[derive(Debug, Default)]
pub struct PartitionRelease {
    pub deleted: usize,
    pub left_in_ufm: usize,
    pub claims_released: usize,
    pub nads_released: usize,
    pub failures: usize,
}

pub async fn release_partitions(client: &kube::Client, ufm: Option<&UfmClient>, dry_run: bool) -> PartitionRelease {
    let mut out = PartitionRelease::default();
    let claims_api: Api<DynamicObject> = Api::all_with(client.clone(), &partition_claim_resource());
    let claims = match claims_api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        // Automatic partitions never installed.
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => {
            eprintln!("cannot list PartitionClaims: {e}");
            out.failures += 1;
            Vec::new()
        }
    };
    let listing = match ufm {
        Some(u) if !claims.is_empty() => match u.list_pkeys().await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("cannot list UFM's partitions ({e}); partitions are left in UFM");
                out.failures += 1;
                None
            }
        },
        _ => None,
    };
    for obj in &claims {
        let Some(c) = stored_claim(obj) else { continue };
        let (pkey, name) = (c.claim.pkey, c.partition_name.as_str());
        let in_ufm = listing.as_ref().and_then(|l| l.get(&pkey));
        let ours = in_ufm.is_some_and(|p| {
            p.name.as_deref() == Some(name) || p.name.as_deref() == Some(format!("api_pkey_{pkey}").as_str())
        });
        match (in_ufm, ufm) {
            (Some(p), Some(u)) if c.created_in_ufm && ours && p.members.is_empty() => {
                if dry_run {
                    println!("would delete partition {pkey} ({name}) from UFM");
                    out.deleted += 1;
                } else {
                    match u.delete_pkey(pkey).await {
                        Ok(_) => {
                            println!("deleted partition {pkey} ({name}) from UFM");
                            out.deleted += 1;
                        }
                        Err(e) => {
                            eprintln!("partition {pkey}: UFM refused the delete: {e}");
                            out.failures += 1;
                            continue;
                        }
                    }
                }
            }
            (Some(p), _) => {
                println!(
                    "partition {pkey} left in UFM ({} members, {})",
                    p.members.len(),
                    p.name.as_deref().unwrap_or("unnamed")
                );
                out.left_in_ufm += 1;
            }
            (None, _) => {}
        }
        if dry_run {
            out.claims_released += 1;
            continue;
        }
        let claim_name = c.claim.name.as_str();
        let gone = claims_api.delete(claim_name, &Default::default()).await;
        let unheld = claims_api
            .patch(claim_name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": null}})))
            .await;
        match (gone, unheld) {
            (Err(kube::Error::Api(s)), _) if s.code != 404 => {
                eprintln!("PartitionClaim {claim_name}: {}", s.message);
                out.failures += 1;
            }
            (_, Err(kube::Error::Api(s))) if s.code != 404 => {
                eprintln!("PartitionClaim {claim_name}: {}", s.message);
                out.failures += 1;
            }
            _ => out.claims_released += 1,
        }
    }
    let nads_api: Api<DynamicObject> = Api::all_with(client.clone(), &nad_resource());
    let nads = match nads_api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            eprintln!("cannot list NetworkAttachmentDefinitions: {e}");
            out.failures += 1;
            Vec::new()
        }
    };
    for nad in nads.iter().filter(|n| n.metadata.finalizers.iter().flatten().any(|f| f == NAD_FINALIZER)) {
        let (Some(ns), Some(name)) = (nad.metadata.namespace.as_deref(), nad.metadata.name.as_deref()) else {
            continue;
        };
        out.nads_released += 1;
        if dry_run {
            continue;
        }
        let rest: Vec<&String> = nad.metadata.finalizers.iter().flatten().filter(|f| *f != NAD_FINALIZER).collect();
        let body = json!({"metadata": {"resourceVersion": nad.metadata.resource_version, "finalizers": rest}});
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &nad_resource());
        if let Err(e) = api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
            eprintln!("NetworkAttachmentDefinition {ns}/{name}: {e}");
            out.failures += 1;
            out.nads_released -= 1;
        }
    }
    out
}
