//! One agent pass: scan sysfs, report the summary on the Node, check (in `program` mode also set)
//! the VF GUID of every local attachment, write pod status annotations and Events, and reset VFs
//! no pod holds. It reaches the world only through [`AgentCluster`] and [`VfControl`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AgentError;
use super::cluster::{AgentCluster, AgentEvent, AgentPod, EventTarget};
use super::inventory::{INVENTORY_ANNOTATION, Inventory, LinkLayer, RawGuid};
use super::metrics::AgentMetrics;
use super::netlink::{PfRef, VfControl};
use super::scan::scan;
use super::sysfs::Sysfs;
use super::verify::{
    AGENT_STATUS_ANNOTATION, Assigned, Verdict, VfIndex, VfSlot, assigned_attachments, previous_text,
    status_annotation, unheld_vfs, verdict,
};

/// The VF driver the agent unbinds and binds again after setting a GUID.
pub const REBIND_DRIVER: &str = "mlx5_core";

/// What happened to the VF's driver after a GUID was set.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rebind {
    Rebound,
    /// No driver: the GUID takes effect when one binds.
    Unbound,
    /// Another driver (`vfio-pci`): not touched; the GUID takes effect at the VF's next reset.
    LeftTo(String),
}

impl Rebind {
    fn describe(&self) -> String {
        match self {
            Rebind::Rebound => format!("rebound to {REBIND_DRIVER}"),
            Rebind::Unbound => "not rebound (no driver bound; it applies when one binds)".into(),
            Rebind::LeftTo(d) => format!("not rebound (bound to {d}; it applies at the VF's next reset)"),
        }
    }
}

/// What the agent may do to VFs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentMode {
    /// Read only: report verified, mismatch or unknown.
    #[default]
    Verify,
    /// Also set assigned GUIDs on VFs that carry another one (then rebind the VF), and reset VFs
    /// no pod holds to all-ones.
    Program,
}

/// One attachment's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// `namespace/name` of the pod.
    pub pod: String,
    pub label: String,
    pub verdict: Verdict,
}

/// What a pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub checks: Vec<CheckReport>,
    /// PCI addresses of VFs given their assigned GUID.
    pub programmed: Vec<String>,
    /// PCI addresses of VFs reset because no pod holds them.
    pub reset: Vec<String>,
    pub errors: Vec<String>,
    pub node_annotation_written: bool,
    pub pods_patched: usize,
}

impl PassReport {
    /// Checks with this `result` (`verified`, `mismatch`, `unknown`).
    pub fn count(&self, result: &str) -> usize {
        self.checks.iter().filter(|c| c.verdict.result() == result).count()
    }

    /// No errors and no mismatches.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.count("mismatch") == 0
    }
}

pub struct Agent<C, V> {
    node: String,
    mode: AgentMode,
    sys: Sysfs,
    cluster: C,
    vf: V,
    metrics: Arc<AgentMetrics>,
    last_summary: Option<String>,
    last_warnings: Vec<String>,
    /// VFs found unheld by the previous pass, with their GUID: reset only if still so now.
    unheld: BTreeMap<String, RawGuid>,
}

impl<C: AgentCluster, V: VfControl> Agent<C, V> {
    pub fn new(node: &str, mode: AgentMode, sys: Sysfs, cluster: C, vf: V, metrics: Arc<AgentMetrics>) -> Self {
        Agent {
            node: node.to_string(),
            mode,
            sys,
            cluster,
            vf,
            metrics,
            last_summary: None,
            last_warnings: Vec::new(),
            unheld: BTreeMap::new(),
        }
    }

    pub fn cluster(&self) -> &C {
        &self.cluster
    }

    pub fn vf_control(&self) -> &V {
        &self.vf
    }

    pub async fn pass(&mut self) -> PassReport {
        let mut r = PassReport::default();
        self.metrics.passes.inc();
        let inventory = scan(&self.sys);
        if inventory.warnings != self.last_warnings {
            for w in &inventory.warnings {
                tracing::warn!(warning = %w, "sysfs inventory");
            }
            self.last_warnings = inventory.warnings.clone();
        }
        self.metrics.observe_inventory(&inventory);
        self.report_inventory(&inventory, &mut r).await;
        let pods = match self.cluster.list_pods(&self.node).await {
            Ok(p) => p,
            Err(e) => {
                self.error(&mut r, e);
                return r;
            }
        };
        let mut vfs = VfIndex::new(&inventory);
        for pf in vfs.pfs() {
            self.refresh(&mut vfs, &pf, &mut r).await;
        }
        self.check_pods(&pods, &mut vfs, &mut r).await;
        let unheld = unheld_vfs(&vfs, &pods);
        self.metrics.unheld_vfs_with_guid.set(i64::try_from(unheld.len()).unwrap_or(i64::MAX));
        if self.mode == AgentMode::Program {
            self.reset_unheld(&vfs, unheld, &mut r).await;
        }
        tracing::info!(
            node = %self.node,
            verified = r.count("verified"),
            mismatch = r.count("mismatch"),
            unknown = r.count("unknown"),
            programmed = r.programmed.len(),
            reset = r.reset.len(),
            errors = r.errors.len(),
            "agent pass"
        );
        r
    }

    async fn report_inventory(&mut self, inventory: &Inventory, r: &mut PassReport) {
        let summary = serde_json::to_string(&inventory.summary()).unwrap_or_default();
        if self.last_summary.as_deref() == Some(summary.as_str()) {
            return;
        }
        match self.cluster.patch_node_annotation(&self.node, INVENTORY_ANNOTATION, &summary).await {
            Ok(()) => {
                self.last_summary = Some(summary);
                r.node_annotation_written = true;
            }
            Err(e) => self.error(r, e),
        }
    }

    async fn refresh(&self, vfs: &mut VfIndex, pf: &PfRef, r: &mut PassReport) {
        match self.vf.vf_guids(pf).await {
            Ok(guids) => vfs.apply(pf, &guids),
            Err(e) => self.error(r, e),
        }
    }

    async fn check_pods(&self, pods: &[AgentPod], vfs: &mut VfIndex, r: &mut PassReport) {
        let mut statuses: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
        for a in assigned_attachments(pods) {
            let pod = &pods[a.pod];
            let mut v = verdict(vfs, &a);
            if self.mode == AgentMode::Program {
                v = self.program(pod, &a, v, vfs, r).await;
            }
            self.metrics.checks.with_label_values(&[v.result()]).inc();
            let text = v.text(a.guid);
            let was_mismatch = previous_text(pod, &a.label).is_some_and(|t| t.starts_with("mismatch"));
            if matches!(v, Verdict::Mismatch { .. }) && !was_mismatch {
                let event = AgentEvent {
                    target: pod_target(pod),
                    warning: true,
                    reason: "VfGuidMismatch",
                    action: "VerifyVfGuid",
                    note: format!("{}: {text}", a.label),
                };
                self.publish(&event, r).await;
            }
            statuses.entry(a.pod).or_default().insert(a.label.clone(), text);
            r.checks.push(CheckReport { pod: format!("{}/{}", pod.namespace, pod.name), label: a.label, verdict: v });
        }
        for (i, entries) in statuses {
            let pod = &pods[i];
            let value = status_annotation(&entries);
            if pod.agent_status.as_deref() == Some(value.as_str()) {
                continue;
            }
            match self.cluster.patch_pod_annotation(&pod.namespace, &pod.name, AGENT_STATUS_ANNOTATION, &value).await {
                Ok(()) => r.pods_patched += 1,
                Err(e) => self.error(r, e),
            }
        }
    }

    /// Sets the assigned GUID on a VF found carrying another, then reads it back.
    async fn program(
        &self,
        pod: &AgentPod,
        a: &Assigned,
        v: Verdict,
        vfs: &mut VfIndex,
        r: &mut PassReport,
    ) -> Verdict {
        let Verdict::Mismatch { vf: pci, .. } = &v else { return v };
        let Some(slot) = vfs.by_pci.get(pci).cloned() else { return v };
        let rebind = match self.write_guid(&slot, RawGuid::from(a.guid)).await {
            Ok(rebind) => rebind,
            Err(e) => {
                self.error(r, e);
                return v;
            }
        };
        self.metrics.guid_writes.with_label_values(&["program"]).inc();
        r.programmed.push(slot.pci.clone());
        if let Some(pf) = &slot.pf {
            self.refresh(vfs, pf, r).await;
        }
        let after = verdict(vfs, a);
        if after == Verdict::Verified {
            let event = AgentEvent {
                target: pod_target(pod),
                warning: false,
                reason: "VfGuidProgrammed",
                action: "ProgramVfGuid",
                note: format!(
                    "{}: VF {} ({} vf {}) set to {}, {}",
                    a.label,
                    slot.pci,
                    slot.hca,
                    slot.vf,
                    a.guid,
                    rebind.describe()
                ),
            };
            self.publish(&event, r).await;
        }
        after
    }

    /// Resets VFs that were unheld with the same GUID in the previous pass too: one pass of
    /// grace, so a VF a CNI is programming right now for a pod not listed yet is left alone.
    async fn reset_unheld(&mut self, vfs: &VfIndex, unheld: BTreeMap<String, RawGuid>, r: &mut PassReport) {
        let mut next = BTreeMap::new();
        for (pci, guid) in unheld {
            let Some(slot) = vfs.by_pci.get(&pci) else { continue };
            if self.unheld.get(&pci) != Some(&guid) {
                next.insert(pci, guid);
                continue;
            }
            match self.write_guid(slot, RawGuid::RESET).await {
                Ok(rebind) => {
                    self.metrics.guid_writes.with_label_values(&["reset"]).inc();
                    r.reset.push(pci.clone());
                    let event = AgentEvent {
                        target: EventTarget::Node { name: self.node.clone() },
                        warning: false,
                        reason: "VfGuidReset",
                        action: "ResetVfGuid",
                        note: format!(
                            "VF {pci} ({} vf {}) carried {guid}, which no pod on this node holds; reset to {}, {}",
                            slot.hca,
                            slot.vf,
                            RawGuid::RESET,
                            rebind.describe()
                        ),
                    };
                    self.publish(&event, r).await;
                }
                Err(e) => {
                    self.error(r, e);
                    next.insert(pci, guid);
                }
            }
        }
        self.unheld = next;
    }

    /// Node GUID, port GUID, then unbind and bind again: the order ib-sriov-cni and
    /// sriov-network-operator use; the GUID takes effect on rebind. Only `mlx5_core` is rebound:
    /// an unbound VF picks the GUID up when a driver binds it, and unbinding `vfio-pci` under a
    /// running VM would block until the VM lets go.
    async fn write_guid(&self, slot: &VfSlot, guid: RawGuid) -> Result<Rebind, AgentError> {
        let Some(pf) = &slot.pf else {
            return Err(AgentError::Netlink {
                pf: slot.hca.clone(),
                op: "set_vf_guid",
                detail: "the PF has no netdev with an ifindex".into(),
            });
        };
        self.vf.set_node_guid(pf, slot.vf, guid).await?;
        self.vf.set_port_guid(pf, slot.vf, guid).await?;
        match slot.driver.as_deref() {
            Some(REBIND_DRIVER) => {
                self.vf.unbind(&slot.pci, REBIND_DRIVER)?;
                self.vf.bind(&slot.pci, REBIND_DRIVER)?;
                Ok(Rebind::Rebound)
            }
            Some(other) => Ok(Rebind::LeftTo(other.to_string())),
            None => Ok(Rebind::Unbound),
        }
    }

    async fn publish(&self, event: &AgentEvent, r: &mut PassReport) {
        if let Err(e) = self.cluster.publish_event(event).await {
            self.error(r, e);
        }
    }

    fn error(&self, r: &mut PassReport, e: AgentError) {
        tracing::warn!(error = %e, kind = e.kind(), "agent pass");
        self.metrics.errors.with_label_values(&[e.kind()]).inc();
        r.errors.push(e.to_string());
    }
}

fn pod_target(pod: &AgentPod) -> EventTarget {
    EventTarget::Pod { namespace: pod.namespace.clone(), name: pod.name.clone(), uid: pod.uid.clone() }
}

/// Fills VF GUIDs in from netlink (over what sysfs said) for `agent inventory --netlink`;
/// a PF that cannot be read adds a warning.
pub async fn add_netlink_guids(inv: &mut Inventory, vf: &dyn VfControl) {
    let mut warnings = Vec::new();
    for h in inv.hcas.iter_mut().filter(|h| !h.is_vf() && h.link_layer == LinkLayer::Infiniband) {
        let Some(pf) = h.pf_netdev().and_then(|n| n.ifindex.map(|i| PfRef { name: n.name.clone(), ifindex: i })) else {
            continue;
        };
        let Some(sriov) = h.sriov.as_mut().filter(|s| !s.vfs.is_empty()) else { continue };
        match vf.vf_guids(&pf).await {
            Ok(guids) => {
                for v in &mut sriov.vfs {
                    if let Some(g) = guids.iter().find(|g| g.vf == v.vf) {
                        v.node_guid = g.node_guid.or(v.node_guid);
                        v.port_guid = g.port_guid.or(v.port_guid);
                    }
                }
            }
            Err(e) => warnings.push(e.to_string()),
        }
    }
    inv.warnings.extend(warnings);
}
