//! The agent's decisions as pure functions: which local attachments have an assigned GUID and
//! which VF each sits on (network-status `device-info` PCI address), what that VF carries, the
//! verdict, the pod's status annotation, and which VFs no pod holds.

use std::collections::{BTreeMap, BTreeSet};

use super::cluster::AgentPod;
use super::inventory::{Inventory, LinkLayer, RawGuid};
use super::netlink::{PfRef, VfGuids};
use crate::engine::{AttachmentRequest, Slot};
use crate::ib::Guid;
use crate::netdef::{NetworkStatus, parse_network_status, parse_networks};

/// Pod annotation: attachment label (`ns/net`, `ns/net@iface`, `ns/net#2`) → verdict text.
pub const AGENT_STATUS_ANNOTATION: &str = "fabric-sync.io/agent-status";

/// One VF of a local HCA, with the GUIDs it carries as far as they could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfSlot {
    pub hca: String,
    pub pf: Option<PfRef>,
    pub vf: u32,
    pub pci: String,
    pub driver: Option<String>,
    pub infiniband: bool,
    pub node_guid: Option<RawGuid>,
    pub port_guid: Option<RawGuid>,
}

impl VfSlot {
    /// The GUID the fabric sees this VF by: the port GUID, else the node GUID.
    pub fn current(&self) -> Option<RawGuid> {
        self.port_guid.or(self.node_guid)
    }
}

/// The node's VFs by PCI address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VfIndex {
    pub by_pci: BTreeMap<String, VfSlot>,
}

impl VfIndex {
    pub fn new(inv: &Inventory) -> VfIndex {
        let mut by_pci = BTreeMap::new();
        for h in inv.pf_hcas() {
            let Some(sriov) = &h.sriov else { continue };
            let pf = h.pf_netdev().and_then(|n| n.ifindex.map(|i| PfRef { name: n.name.clone(), ifindex: i }));
            for v in &sriov.vfs {
                by_pci.insert(
                    v.pci_address.clone(),
                    VfSlot {
                        hca: h.name.clone(),
                        pf: pf.clone(),
                        vf: v.vf,
                        pci: v.pci_address.clone(),
                        driver: v.driver.clone(),
                        infiniband: h.link_layer == LinkLayer::Infiniband,
                        node_guid: v.node_guid,
                        port_guid: v.port_guid,
                    },
                );
            }
        }
        VfIndex { by_pci }
    }

    /// PFs of InfiniBand HCAs with VFs: where netlink GUID reads go.
    pub fn pfs(&self) -> BTreeSet<PfRef> {
        self.by_pci.values().filter(|s| s.infiniband).filter_map(|s| s.pf.clone()).collect()
    }

    /// Takes what netlink reported for `pf`'s VFs (over what sysfs said).
    pub fn apply(&mut self, pf: &PfRef, guids: &[VfGuids]) {
        for slot in self.by_pci.values_mut().filter(|s| s.pf.as_ref() == Some(pf)) {
            if let Some(g) = guids.iter().find(|g| g.vf == slot.vf) {
                slot.node_guid = g.node_guid.or(slot.node_guid);
                slot.port_guid = g.port_guid.or(slot.port_guid);
            }
        }
    }
}

/// One local attachment whose GUID the controller assigned (`configured`, with a GUID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// Index into the pod list.
    pub pod: usize,
    pub label: String,
    pub guid: Guid,
    /// The VF's PCI address, or why it is not known.
    pub device: Result<String, String>,
}

/// Attachments to check, over all pods (finished and deleting pods are skipped).
pub fn assigned_attachments(pods: &[AgentPod]) -> Vec<Assigned> {
    let mut out = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        if pod.finished || pod.deleting {
            continue;
        }
        let Some(requests) = requests(pod) else { continue };
        let statuses: Result<Vec<NetworkStatus>, String> = match &pod.network_status {
            None => Err("no network-status annotation yet".into()),
            Some(text) => parse_network_status(text).map_err(|e| format!("network-status annotation unreadable: {e}")),
        };
        for (j, r) in requests.iter().enumerate() {
            let (true, Some(Ok(guid))) = (r.configured, &r.guid) else { continue };
            let device = match &statuses {
                Err(e) => Err(e.clone()),
                Ok(st) => device_of(&requests, j, st),
            };
            out.push(Assigned { pod: i, label: format!("{}{}", r.network, r.slot), guid: *guid, device });
        }
    }
    out
}

fn requests(pod: &AgentPod) -> Option<Vec<AttachmentRequest>> {
    let elements = parse_networks(pod.networks.as_deref()?).ok()?;
    Some(AttachmentRequest::from_selections(&pod.namespace, &elements))
}

/// The network-status entry of request `j`: by interface when one was asked for, else the n-th
/// entry of the network among those no explicit interface claims (Multus keeps their order).
fn device_of(requests: &[AttachmentRequest], j: usize, statuses: &[NetworkStatus]) -> Result<String, String> {
    let r = &requests[j];
    let name = r.network.to_string();
    let claimed: BTreeSet<&str> = requests
        .iter()
        .filter(|o| o.network == r.network)
        .filter_map(|o| match &o.slot {
            Slot::Interface(i) => Some(&**i),
            Slot::Occurrence(_) => None,
        })
        .collect();
    let entry = match &r.slot {
        Slot::Interface(iface) => statuses.iter().find(|s| s.name == name && s.interface.as_deref() == Some(&**iface)),
        Slot::Occurrence(n) => statuses
            .iter()
            .filter(|s| s.name == name && !s.interface.as_deref().is_some_and(|i| claimed.contains(i)))
            .nth(usize::from(*n)),
    };
    match entry {
        None => Err("no network-status entry for this attachment yet".into()),
        Some(s) => s.pci_address.clone().ok_or_else(|| {
            format!("network-status entry for {} has no device-info PCI address", s.interface.as_deref().unwrap_or("?"))
        }),
    }
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    Mismatch { vf: String, found: RawGuid },
    Unknown(String),
}

impl Verdict {
    /// The `result` label of `fabric_sync_agent_vf_guid_checks_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Mismatch { .. } => "mismatch",
            Verdict::Unknown(_) => "unknown",
        }
    }

    /// The value written under the attachment's label in the pod's status annotation.
    pub fn text(&self, assigned: Guid) -> String {
        match self {
            Verdict::Verified => "verified".into(),
            Verdict::Mismatch { vf, found } => format!("mismatch: VF {vf} has port GUID {found}, assigned {assigned}"),
            Verdict::Unknown(why) => format!("unknown: {why}"),
        }
    }
}

/// Compares the VF's port GUID with the assigned one.
pub fn verdict(vfs: &VfIndex, a: &Assigned) -> Verdict {
    let pci = match &a.device {
        Err(why) => return Verdict::Unknown(why.clone()),
        Ok(pci) => pci,
    };
    let Some(slot) = vfs.by_pci.get(pci) else {
        return Verdict::Unknown(format!("device {pci} is not a VF of an HCA on this node"));
    };
    match slot.port_guid {
        None => {
            Verdict::Unknown(format!("the port GUID of VF {pci} cannot be read (neither netlink nor sysfs has it)"))
        }
        Some(g) if g == RawGuid::from(a.guid) => Verdict::Verified,
        Some(found) => Verdict::Mismatch { vf: pci.clone(), found },
    }
}

/// A pod's status annotation value: label → text, as compact JSON with sorted keys.
pub fn status_annotation(entries: &BTreeMap<String, String>) -> String {
    serde_json::to_string(entries).unwrap_or_else(|_| "{}".into())
}

/// The verdict text a pod's current status annotation holds for `label`, if any.
pub fn previous_text(pod: &AgentPod, label: &str) -> Option<String> {
    let map: BTreeMap<String, String> = serde_json::from_str(pod.agent_status.as_deref()?).ok()?;
    map.get(label).cloned()
}

/// What live pods hold: VF PCI addresses from their network-status, and every GUID their
/// networks annotations name (a CNI may have programmed a VF before Multus wrote the status).
pub fn held(pods: &[AgentPod]) -> (BTreeSet<String>, BTreeSet<RawGuid>) {
    let mut pcis = BTreeSet::new();
    let mut guids = BTreeSet::new();
    for pod in pods.iter().filter(|p| !p.finished) {
        if let Some(Ok(st)) = pod.network_status.as_deref().map(parse_network_status) {
            pcis.extend(st.into_iter().filter_map(|s| s.pci_address));
        }
        for r in requests(pod).unwrap_or_default() {
            if let Some(Ok(g)) = r.guid {
                guids.insert(RawGuid::from(g));
            }
        }
    }
    (pcis, guids)
}

/// InfiniBand VFs carrying a routable GUID that no live pod holds, with that GUID.
pub fn unheld_vfs(vfs: &VfIndex, pods: &[AgentPod]) -> BTreeMap<String, RawGuid> {
    let (pcis, guids) = held(pods);
    vfs.by_pci
        .values()
        .filter(|s| s.infiniband && s.pf.is_some() && !pcis.contains(&s.pci))
        .filter_map(|s| {
            let g = s.current()?;
            let routable = !g.is_unset() || s.node_guid.is_some_and(|n| !n.is_unset());
            (routable && !guids.contains(&g)).then(|| (s.pci.clone(), g))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(networks: &str, status: Option<&str>) -> AgentPod {
        AgentPod {
            namespace: "t".into(),
            name: "p".into(),
            uid: "u".into(),
            networks: Some(networks.into()),
            network_status: status.map(str::to_string),
            ..AgentPod::default()
        }
    }

    const CONFIGURED: &str = r#"{"mellanox.infiniband.app":"configured","guid":"02:00:00:00:00:00:00:01"}"#;

    #[test]
    fn interfaces_and_occurrences_find_their_own_status_entries() {
        let nets = format!(
            r#"[{{"name":"ib","cni-args":{CONFIGURED}}},{{"name":"ib","interface":"net9","cni-args":{CONFIGURED}}},{{"name":"ib","cni-args":{CONFIGURED}}}]"#
        );
        let status = r#"[{"name":"cbr0","interface":"eth0"},
            {"name":"t/ib","interface":"net1","device-info":{"pci":{"pci-address":"0000:3b:00.2"}}},
            {"name":"t/ib","interface":"net9","device-info":{"pci":{"pci-address":"0000:3b:00.3"}}},
            {"name":"t/ib","interface":"net3"}]"#;
        let a = assigned_attachments(&[pod(&nets, Some(status))]);
        let got: Vec<(&str, Result<&str, &str>)> =
            a.iter().map(|x| (x.label.as_str(), x.device.as_deref().map_err(|e| e.as_str()))).collect();
        assert_eq!(
            got,
            vec![
                ("t/ib", Ok("0000:3b:00.2")),
                ("t/ib@net9", Ok("0000:3b:00.3")),
                ("t/ib#1", Err("network-status entry for net3 has no device-info PCI address")),
            ]
        );
    }

    #[test]
    fn unconfigured_finished_and_deleting_pods_are_not_checked() {
        let nets = r#"[{"name":"ib","cni-args":{"guid":"02:00:00:00:00:00:00:01"}}]"#;
        assert!(assigned_attachments(&[pod(nets, None)]).is_empty());
        let nets = format!(r#"[{{"name":"ib","cni-args":{CONFIGURED}}}]"#);
        let mut p = pod(&nets, None);
        assert_eq!(
            assigned_attachments(std::slice::from_ref(&p))[0].device,
            Err("no network-status annotation yet".into())
        );
        p.deleting = true;
        assert!(assigned_attachments(std::slice::from_ref(&p)).is_empty());
    }

    #[test]
    fn previous_text_reads_the_pods_status_annotation() {
        let mut p = pod("ib", None);
        p.agent_status = Some(r#"{"t/ib":"verified"}"#.into());
        assert_eq!(previous_text(&p, "t/ib").as_deref(), Some("verified"));
        assert_eq!(previous_text(&p, "t/other"), None);
        p.agent_status = Some("garbage".into());
        assert_eq!(previous_text(&p, "t/ib"), None);
    }
}
