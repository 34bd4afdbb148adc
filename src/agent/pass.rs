//! One agent pass: scan sysfs, report the summary on the Node, read the VFs' GUIDs, the node's
//! pods and its GuidClaims, check (in `program` mode also set) the VF GUID of every configured
//! attachment against the ledger, report (and in `program` mode reset) VFs carrying GUIDs the
//! ledger does not give them, watch pkey tables for fabric readiness, and write the node's
//! NodeFabricStatus. It reaches the world only through [`AgentCluster`] and [`VfControl`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::AgentError;
use super::claims::NodeLedger;
use super::cluster::{AgentCluster, AgentEvent, AgentPod, EventTarget};
use super::foreign::{ForeignVf, foreign_vfs};
use super::inventory::{INVENTORY_ANNOTATION, Inventory, RawGuid};
use super::metrics::AgentMetrics;
use super::netlink::{PfRef, VfControl};
use super::readiness::{Readiness, ReadinessSettings, ReadyState, TableRef, Transition};
use super::scan::scan;
use super::status::{AttachmentReport, attachment_entry, foreign_entry, node_status};
use super::sysfs::Sysfs;
use super::verify::{Assigned, Verdict, VfIndex, VfSlot, assigned_attachments, locate, unheld_vfs, verdict};
use crate::alloc::GuidRange;

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
    /// VFs found carrying a GUID the ledger does not give them.
    pub foreign: Vec<ForeignVf>,
    /// The NodeFabricStatus was written in this pass.
    pub status_written: bool,
}

impl PassReport {
    /// Checks with this `result` (`verified`, `mismatch`, `unknown`).
    pub fn count(&self, result: &str) -> usize {
        self.checks.iter().filter(|c| c.verdict.result() == result).count()
    }

    /// No errors, no mismatches, no foreign GUIDs.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.count("mismatch") == 0 && self.foreign.is_empty()
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
    range: GuidRange,
    readiness: Readiness,
    node_uid: Option<String>,
    /// The status last written, as JSON text.
    last_status: Option<String>,
    /// The last pass's attachment reports (for re-writing the status after readiness polls).
    reports: Vec<Reported>,
    foreign_entries: Vec<serde_json::Value>,
    /// Foreign (VF, GUID) pairs already reported by an Event.
    reported_foreign: BTreeSet<(String, u64)>,
    clock: Clock,
}

/// One checked attachment as last reported: (attachment, pod, VF, VF's GUID, verdict).
type Reported = (Assigned, String, Option<String>, Option<String>, Verdict);

/// Where the agent reads the time (monotonic); tests pass their own.
pub type Clock = Arc<dyn Fn() -> std::time::Instant + Send + Sync>;

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
            range: GuidRange::DEFAULT,
            readiness: Readiness::new(ReadinessSettings::default()),
            node_uid: None,
            last_status: None,
            reports: Vec::new(),
            foreign_entries: Vec::new(),
            reported_foreign: BTreeSet::new(),
            clock: Arc::new(std::time::Instant::now),
        }
    }

    /// Reads the time from `clock` instead of the system's monotonic clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The managed GUID range (`GUID_POOL_RANGE_*`, as the controller's).
    pub fn with_guid_range(mut self, range: GuidRange) -> Self {
        self.range = range;
        self
    }

    pub fn with_readiness(mut self, settings: ReadinessSettings) -> Self {
        self.readiness = Readiness::new(settings);
        self
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
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
        // VFs first, then pods and claims: a GUID on a VF was claimed before the CNI could
        // program it, so the later listing explains it.
        let mut vfs = VfIndex::new(&inventory);
        for pf in vfs.pfs() {
            self.refresh(&mut vfs, &pf, &mut r).await;
        }
        let pods = match self.cluster.list_pods(&self.node).await {
            Ok(p) => p,
            Err(e) => {
                self.error(&mut r, e);
                return r;
            }
        };
        let Some(ledger) = self.ledger(&pods, &mut r).await else { return r };
        let assigned = self.check_pods(&pods, &ledger, &mut vfs, &mut r).await;
        let located: BTreeMap<usize, String> =
            assigned.iter().enumerate().filter_map(|(i, a)| locate(&vfs, a).ok().map(|p| (i, p))).collect();
        let foreign = foreign_vfs(&vfs, &assigned, &located, &ledger, &self.range);
        self.report_foreign(&pods, &assigned, &foreign, &vfs, &mut r).await;
        self.track_readiness(&assigned, &located, &vfs);
        let transitions = self.readiness.poll(&self.sys, (self.clock)());
        self.observe(&transitions);
        let mut unheld = unheld_vfs(&vfs, &pods, &ledger);
        for f in &foreign {
            unheld.remove(&f.pci);
        }
        self.metrics.unheld_vfs_with_guid.set(i64::try_from(unheld.len()).unwrap_or(i64::MAX));
        if self.mode == AgentMode::Program {
            self.reset_unheld(&vfs, unheld, &mut r).await;
        }
        self.reports = r
            .checks
            .iter()
            .zip(&assigned)
            .map(|(c, a)| {
                let vf = located.iter().find(|(i, _)| assigned.get(**i) == Some(a)).map(|(_, p)| p.clone());
                let vf_guid =
                    vf.as_ref().and_then(|p| vfs.by_pci.get(p)).and_then(|s| s.port_guid).map(|g| g.to_string());
                (a.clone(), c.pod.clone(), vf, vf_guid, c.verdict.clone())
            })
            .collect();
        r.foreign = foreign;
        self.write_status(&mut r).await;
        tracing::info!(
            node = %self.node,
            verified = r.count("verified"),
            mismatch = r.count("mismatch"),
            unknown = r.count("unknown"),
            foreign = r.foreign.len(),
            waiting_for_pkey = self.readiness.waiting(),
            programmed = r.programmed.len(),
            reset = r.reset.len(),
            errors = r.errors.len(),
            "agent pass"
        );
        r
    }

    /// Between passes: reads the pkey tables of attachments still waiting every poll interval
    /// until none waits or `until`.
    pub async fn settle(&mut self, until: tokio::time::Instant) {
        while self.readiness.waiting() > 0 {
            let next = tokio::time::Instant::now() + self.readiness.settings.poll;
            if next > until {
                break;
            }
            tokio::time::sleep_until(next).await;
            self.poll_readiness().await;
        }
    }

    /// Reads the pkey tables of the attachments not ready yet, once, at the clock's time;
    /// writes the status when one became ready or timed out.
    pub async fn poll_readiness(&mut self) -> PassReport {
        let mut r = PassReport::default();
        let transitions = self.readiness.poll(&self.sys, (self.clock)());
        if !transitions.is_empty() {
            self.observe(&transitions);
            self.write_status(&mut r).await;
        }
        r
    }

    /// This node's ledger: the labelled claims, plus (by name) the claim of every local pod
    /// with a configured attachment whose claim was not listed (written before the label).
    async fn ledger(&self, pods: &[AgentPod], r: &mut PassReport) -> Option<NodeLedger> {
        let mut claims = match self.cluster.list_claims(&self.node).await {
            Ok(c) => c,
            Err(e) => {
                self.error(r, e);
                return None;
            }
        };
        let listed: BTreeSet<String> = claims.iter().map(|c| c.pod_uid.to_string()).collect();
        let configured = |p: &AgentPod| p.networks.as_deref().is_some_and(|n| n.contains("configured"));
        for p in pods.iter().filter(|p| !p.finished && !p.deleting && configured(p) && !listed.contains(&p.uid)) {
            match self.cluster.get_claim(&p.namespace, &p.uid).await {
                Ok(Some(c)) => claims.push(c),
                Ok(None) => {}
                Err(e) => {
                    self.error(r, e);
                    return None;
                }
            }
        }
        Some(NodeLedger::from_claims(&claims))
    }

    fn track_readiness(&mut self, assigned: &[Assigned], located: &BTreeMap<usize, String>, vfs: &VfIndex) {
        let now = (self.clock)();
        let mut live = BTreeSet::new();
        for (i, a) in assigned.iter().enumerate() {
            let Some(pkey) = a.ledger.as_ref().ok().and_then(|e| e.pkey) else { continue };
            let Some(pci) = located.get(&i) else { continue };
            let table = match vfs.by_pci.get(pci) {
                Some(VfSlot { rdma_device: Some(dev), .. }) => Ok(TableRef { device: dev.clone(), port: 1, vf: true }),
                Some(VfSlot { hca, pf_port: Some(port), .. }) => {
                    Ok(TableRef { device: hca.clone(), port: *port, vf: false })
                }
                Some(s) => Err(format!("neither VF {pci} nor its PF {} has an InfiniBand port on this host", s.hca)),
                None => Err(format!("device {pci} is not a VF of an HCA on this node")),
            };
            live.insert(a.key());
            self.readiness.track(a.key(), pkey, table, now);
        }
        self.readiness.retain(&live);
    }

    fn observe(&self, transitions: &[Transition]) {
        for t in transitions {
            match &t.state {
                ReadyState::Ready { after, .. } => {
                    self.metrics.fabric_ready_seconds.observe(after.as_secs_f64());
                    tracing::info!(pod_uid = %t.key.0, attachment = %t.key.1, seconds = after.as_secs_f64(), "fabric ready");
                }
                ReadyState::TimedOut { after } => {
                    self.metrics.fabric_ready_timeouts.inc();
                    tracing::warn!(pod_uid = %t.key.0, attachment = %t.key.1, seconds = after.as_secs_f64(),
                        "fabric-ready timeout: the pkey did not appear in the pkey table");
                }
                ReadyState::Waiting => {}
            }
        }
        self.metrics.fabric_ready_waiting.set(i64::try_from(self.readiness.waiting()).unwrap_or(i64::MAX));
    }

    async fn write_status(&mut self, r: &mut PassReport) {
        let attachments = self
            .reports
            .iter()
            .map(|(a, pod, vf, vf_guid, v)| {
                attachment_entry(&AttachmentReport {
                    assigned: a,
                    pod: pod.clone(),
                    vf: vf.clone(),
                    vf_guid: vf_guid.clone(),
                    verdict: v,
                    watch: self.readiness.get(&a.key()),
                })
            })
            .collect();
        let mode = match self.mode {
            AgentMode::Verify => "verify",
            AgentMode::Program => "program",
        };
        let status = node_status(mode, attachments, self.foreign_entries.clone());
        let text = status.to_string();
        if self.last_status.as_deref() == Some(text.as_str()) {
            return;
        }
        let Some(uid) = self.node_uid.clone() else {
            self.error(
                r,
                AgentError::Kube {
                    op: "write nodefabricstatus",
                    detail: "the Node's UID is not known yet (its inventory patch failed)".into(),
                },
            );
            return;
        };
        match self.cluster.write_fabric_status(&self.node, &uid, &status).await {
            Ok(()) => {
                self.metrics.status_writes.inc();
                self.last_status = Some(text);
                r.status_written = true;
            }
            Err(e) => self.error(r, e),
        }
    }

    /// Events (about the Node; the controller mirrors them onto pods), metrics and status
    /// entries for foreign GUIDs; in program mode an unheld VF is reset at once (a held one was
    /// given its assigned GUID by the check).
    async fn report_foreign(
        &mut self,
        pods: &[AgentPod],
        assigned: &[Assigned],
        foreign: &[ForeignVf],
        vfs: &VfIndex,
        r: &mut PassReport,
    ) {
        let names: Vec<String> = pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for f in foreign {
            let key = (f.pci.clone(), f.guid.value());
            seen.insert(key.clone());
            let fresh = !self.reported_foreign.contains(&key);
            let mut action = "reported";
            if self.mode == AgentMode::Program {
                if f.holder.is_some() {
                    action = "programmed the assigned GUID";
                } else if let Some(slot) = vfs.by_pci.get(&f.pci) {
                    match self.write_guid(slot, RawGuid::RESET).await {
                        Ok(_) => {
                            self.metrics.guid_writes.with_label_values(&["reset"]).inc();
                            r.reset.push(f.pci.clone());
                            action = "reset";
                        }
                        Err(e) => self.error(r, e),
                    }
                }
            }
            if fresh {
                self.metrics.foreign_vf_guids.with_label_values(&[f.kind.label()]).inc();
                let event = AgentEvent {
                    target: EventTarget::Node { name: self.node.clone() },
                    warning: true,
                    reason: f.kind.reason(),
                    action: "VerifyVfGuid",
                    note: format!("{}; {action}", f.describe(assigned)),
                };
                self.publish(&event, r).await;
            }
            entries.push(foreign_entry(f, assigned, &names, action));
        }
        self.reported_foreign = seen;
        self.foreign_entries = entries;
    }

    async fn report_inventory(&mut self, inventory: &Inventory, r: &mut PassReport) {
        let summary = inventory.summary().to_annotation();
        if self.last_summary.as_deref() == Some(summary.as_str()) {
            return;
        }
        match self.cluster.patch_node_annotation(&self.node, INVENTORY_ANNOTATION, &summary).await {
            Ok(uid) => {
                self.node_uid = uid.or(self.node_uid.take());
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

    async fn check_pods(
        &self,
        pods: &[AgentPod],
        ledger: &NodeLedger,
        vfs: &mut VfIndex,
        r: &mut PassReport,
    ) -> Vec<Assigned> {
        let assigned = assigned_attachments(pods, ledger);
        for a in &assigned {
            let pod = &pods[a.pod];
            let mut v = verdict(vfs, a);
            if self.mode == AgentMode::Program {
                v = self.program(a, v, vfs, r).await;
            }
            self.metrics.checks.with_label_values(&[v.result()]).inc();
            r.checks.push(CheckReport {
                pod: format!("{}/{}", pod.namespace, pod.name),
                label: a.label.clone(),
                verdict: v,
            });
        }
        assigned
    }

    /// Sets the assigned GUID on a VF found carrying another, then reads it back.
    async fn program(&self, a: &Assigned, v: Verdict, vfs: &mut VfIndex, r: &mut PassReport) -> Verdict {
        let Verdict::Mismatch { vf: pci, .. } = &v else { return v };
        let Ok(entry) = &a.ledger else { return v };
        let Some(slot) = vfs.by_pci.get(pci).cloned() else { return v };
        let rebind = match self.write_guid(&slot, RawGuid::from(entry.guid)).await {
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
                target: EventTarget::Node { name: self.node.clone() },
                warning: false,
                reason: "VfGuidProgrammed",
                action: "ProgramVfGuid",
                note: format!(
                    "{} of pod {}: VF {} ({} vf {}) set to {}, {}",
                    a.label,
                    entry.pod,
                    slot.pci,
                    slot.hca,
                    slot.vf,
                    entry.guid,
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
