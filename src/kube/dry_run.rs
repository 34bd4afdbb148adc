//! `controller --dry-run`: the real engine behind a writer and a fabric that record instead of
//! writing. Each change the plan makes is logged once at info and counted in
//! `fabric_sync_dry_run_changes_total{kind}`, then answered as accepted, so that the plan moves
//! on exactly as in a real run (claim → UFM add → write-back) and does not loop: recorded UFM
//! changes are laid over every later listing, recorded claims and patches are booked by the
//! engine as written. Reads (UFM listings, pod reads to diff a patch) go through; nothing else.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kube::Client;
use kube::api::Api;

use super::resources::SlimPod;
use super::writer::{PodChange, pod_change};
use crate::engine::{
    Claim, ClaimOutcome, ClusterWriter, EventRecord, Fabric, FabricError, FabricListing, FabricMember, PatchOutcome,
    PodPatch, WriteError,
};
use crate::ib::{Guid, PKey, PartitionSpec};
use crate::ops::Metrics;

/// The kinds of change a dry run records (the metric's `kind` label).
pub const DRY_RUN_KINDS: [&str; 6] = ["ufm_add", "ufm_remove", "ledger_write", "ledger_release", "pod_patch", "event"];

/// Which changes were reported already (each is logged and counted once).
pub struct DryRunLog {
    seen: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
}

impl DryRunLog {
    pub fn new(metrics: Arc<Metrics>) -> Arc<DryRunLog> {
        Arc::new(DryRunLog { seen: Mutex::new(HashSet::new()), metrics })
    }

    /// True the first time `key` is recorded; `undo` forgets the opposite change (a removal
    /// after an add is news, and so is the add again after that).
    fn first(&self, kind: &'static str, key: String, undo: Option<String>) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = undo {
            seen.remove(&u);
        }
        let new = seen.insert(key);
        if new {
            self.metrics.dry_run_change(kind);
        }
        new
    }
}

/// The two wrappers for a dry run of `fabric`.
pub fn dry_run_ports(
    client: Client,
    fabric: Arc<dyn Fabric>,
    metrics: Arc<Metrics>,
) -> (Arc<dyn ClusterWriter>, Arc<dyn Fabric>) {
    let log = DryRunLog::new(metrics);
    (Arc::new(DryRunWriter { client, log: log.clone() }), Arc::new(DryRunFabric::new(fabric, log)))
}

/// Lists through to UFM; records adds and removals and lays them over later listings.
pub struct DryRunFabric {
    inner: Arc<dyn Fabric>,
    log: Arc<DryRunLog>,
    /// pkey → GUID → the member recorded (`None`: recorded as removed).
    overlay: Mutex<BTreeMap<PKey, BTreeMap<Guid, Option<FabricMember>>>>,
}

impl DryRunFabric {
    pub fn new(inner: Arc<dyn Fabric>, log: Arc<DryRunLog>) -> DryRunFabric {
        DryRunFabric { inner, log, overlay: Mutex::new(BTreeMap::new()) }
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, BTreeMap<PKey, BTreeMap<Guid, Option<FabricMember>>>> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Fabric for DryRunFabric {
    async fn add_guids(&self, spec: &PartitionSpec, guids: &[Guid]) -> Result<(), FabricError> {
        let mut overlay = self.overlay();
        let members = overlay.entry(spec.pkey).or_default();
        for &g in guids {
            let (add, remove) = (format!("add {} {g}", spec.pkey), format!("remove {} {g}", spec.pkey));
            if self.log.first("ufm_add", add, Some(remove)) {
                tracing::info!(pkey = %spec.pkey, guid = %g, membership = %spec.membership, index0 = spec.index0,
                    "dry run: would add to UFM");
            }
            members.insert(g, Some(FabricMember { guid: g, membership: spec.membership, index0: spec.index0 }));
        }
        Ok(())
    }

    async fn remove_guids(&self, pkey: PKey, guids: &[Guid]) -> Result<(), FabricError> {
        let mut overlay = self.overlay();
        let members = overlay.entry(pkey).or_default();
        for &g in guids {
            let (remove, add) = (format!("remove {pkey} {g}"), format!("add {pkey} {g}"));
            if self.log.first("ufm_remove", remove, Some(add)) {
                tracing::info!(pkey = %pkey, guid = %g, "dry run: would remove from UFM");
            }
            members.insert(g, None);
        }
        Ok(())
    }

    async fn list(&self) -> Result<FabricListing, FabricError> {
        let mut listing = self.inner.list().await?;
        for (pkey, changes) in self.overlay().iter() {
            let members = listing.entry(*pkey).or_default();
            members.retain(|m| !changes.contains_key(&m.guid));
            members.extend(changes.values().flatten().copied());
            if members.is_empty() {
                listing.remove(pkey);
            }
        }
        Ok(listing)
    }

    async fn check(&self) -> Result<String, FabricError> {
        self.inner.check().await
    }
}

/// Records ledger writes, pod patches (diffed against the pod as it is now, as the real writer
/// does) and Events.
pub struct DryRunWriter {
    client: Client,
    log: Arc<DryRunLog>,
}

#[async_trait]
impl ClusterWriter for DryRunWriter {
    async fn write_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        let mut record: Vec<String> = claim
            .attachments
            .iter()
            .map(|a| format!("{}={}@{}", a.guid, a.pkey.map_or("-".into(), |p| p.to_string()), a.network))
            .collect();
        record.sort();
        let key = format!("claim {} {}", claim.pod_uid, record.join(","));
        if self.log.first("ledger_write", key, Some(format!("release {}", claim.pod_uid))) {
            tracing::info!(pod = %claim.pod, attachments = %record.join(", "), "dry run: would write GuidClaim");
        }
        Ok(ClaimOutcome::Written)
    }

    async fn release_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        if self.log.first("ledger_release", format!("release {}", claim.pod_uid), None) {
            tracing::info!(pod = %claim.pod, "dry run: would release GuidClaim");
        }
        Ok(ClaimOutcome::Released)
    }

    async fn patch_pod(&self, patch: &PodPatch) -> Result<PatchOutcome, WriteError> {
        let api: Api<SlimPod> = Api::namespaced(self.client.clone(), &patch.pod.namespace);
        let pod = match api.get_opt(&patch.pod.name).await {
            Ok(Some(p)) if p.metadata.uid.as_deref() == Some(patch.uid.as_str()) => p,
            Ok(_) => return Ok(PatchOutcome::PodGone),
            Err(e) => return Err(WriteError::transient(format!("reading pod {}: {e}", patch.pod))),
        };
        match pod_change(&pod.metadata, patch)? {
            PodChange::Unchanged => Ok(PatchOutcome::Patched),
            PodChange::Outcome(o) => Ok(o),
            PodChange::Patch { body, newly_configured } => {
                let text = body.to_string();
                if self.log.first("pod_patch", format!("patch {} {text}", patch.uid), None) {
                    tracing::info!(pod = %patch.pod, newly_configured, patch = %text, "dry run: would patch pod");
                }
                Ok(PatchOutcome::Patched)
            }
        }
    }

    async fn emit_event(&self, event: &EventRecord) -> Result<(), WriteError> {
        let object = format!("{} {}", event.object.kind.as_str(), event.object.key);
        let key = format!("event {object} {} {}", event.reason.as_str(), event.message);
        if self.log.first("event", key, None) {
            tracing::info!(object = %object, reason = event.reason.as_str(), note = %event.message,
                "dry run: would emit Event");
        }
        Ok(())
    }
}
