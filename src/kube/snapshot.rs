//! A one-shot read of what the controller watches (pods, NADs, SpiderMultusConfigs, nodes,
//! namespaces, GuidClaims), paginated, turned into the same `ClusterEvent`s the watchers send
//! and ending with `CachesSynced`. Lists only: `fabric-sync audit` writes nothing.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectList};
use kube::core::PartialObjectMeta;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::ledger::{claim_from_object, claim_resource};
use super::partition_claims::{partition_claim_resource, stored_claim};
use super::resources::{
    SlimPod, nad_resource, namespace_event, network_event, network_key, node_event, pod_view, smc_resource,
};
use crate::engine::{ClusterEvent, NetworkKind};

/// Objects per list request.
const PAGE: u32 = 500;

/// A list the API server did not answer; the message names the resource.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {resource}: {detail}")]
pub struct SnapshotError {
    pub resource: &'static str,
    pub detail: String,
}

/// What was read, as events, plus what was missing.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub events: Vec<ClusterEvent>,
    /// Optional resources the API server does not serve (CRD not installed).
    pub absent: Vec<&'static str>,
}

/// Lists everything; `progress(resource, objects so far)` is called after each page.
pub async fn snapshot(client: &Client, mut progress: impl FnMut(&str, usize)) -> Result<Snapshot, SnapshotError> {
    let mut out = Snapshot::default();
    let pods: Api<SlimPod> = Api::all(client.clone());
    for pod in list_all(&pods, "pods", false, &mut progress).await?.unwrap_or_default() {
        if let Some(view) = pod_view(&pod).filter(|v| v.has_networks()) {
            out.events.push(ClusterEvent::PodApplied(view));
        }
    }
    for (kind, res, name, optional) in [
        (NetworkKind::Nad, nad_resource(), "network-attachment-definitions", false),
        (NetworkKind::SpiderMultusConfig, smc_resource(), "spidermultusconfigs", true),
    ] {
        match list_dynamic(client, &res, name, optional, &mut progress).await? {
            Some(items) => {
                for obj in items {
                    if let Some(key) = network_key(&obj.metadata) {
                        out.events.push(network_event(kind, key, &obj));
                    }
                }
            }
            None => out.absent.push(name),
        }
    }
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    for n in list_all(&nodes, "nodes", false, &mut progress).await?.unwrap_or_default() {
        out.events.extend(node_event(&n));
    }
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    for n in list_all(&namespaces, "namespaces", false, &mut progress).await?.unwrap_or_default() {
        out.events.extend(namespace_event(&n));
    }
    // The partition ledger (automatic partitions): optional, read as empty when not installed.
    let pclaims = list_dynamic(client, &partition_claim_resource(), "partitionclaims", true, &mut progress).await?;
    for obj in pclaims.unwrap_or_default() {
        if let Some(c) = stored_claim(&obj) {
            out.events.push(ClusterEvent::PartitionClaimApplied(c.claim));
        }
    }
    match list_dynamic(client, &claim_resource(), "guidclaims", true, &mut progress).await? {
        Some(items) => out.events.extend(items.iter().filter_map(claim_from_object).map(ClusterEvent::ClaimApplied)),
        None => out.absent.push("guidclaims"),
    }
    out.events.push(ClusterEvent::CachesSynced);
    Ok(out)
}

async fn list_dynamic(
    client: &Client,
    res: &ApiResource,
    name: &'static str,
    optional: bool,
    progress: &mut impl FnMut(&str, usize),
) -> Result<Option<Vec<DynamicObject>>, SnapshotError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), res);
    list_all(&api, name, optional, progress).await
}

/// Every page of a list. `None`: an optional resource the API server answers 404 for.
async fn list_all<K>(
    api: &Api<K>,
    name: &'static str,
    optional: bool,
    progress: &mut impl FnMut(&str, usize),
) -> Result<Option<Vec<K>>, SnapshotError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page: ObjectList<K> = match api.list(&lp).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if optional && s.code == 404 => return Ok(None),
            Err(e) => return Err(SnapshotError { resource: name, detail: one_line(&e.to_string()) }),
        };
        items.extend(page.items);
        progress(name, items.len());
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(Some(items));
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
