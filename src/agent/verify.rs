//! The agent's decisions as pure functions: which local attachments the controller configured,
//! the GUID the ledger gives each (never the pod annotation's), which VF each sits on
//! (network-status `device-info` PCI address, else the VF found carrying that GUID), what the VF
//! carries, the verdict, and which VFs no pod holds.

use std::collections::{BTreeMap, BTreeSet};

use super::claims::{LedgerEntry, NodeLedger};
use super::cluster::AgentPod;
use super::inventory::{Inventory, LinkLayer, RawGuid};
use super::netlink::{PfRef, VfGuids};
use crate::engine::{AttachmentRequest, Slot};
use crate::netdef::{NetworkStatus, parse_network_status, parse_networks};

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
    /// The VF's own RDMA device on the host (none when bound to `vfio-pci`).
    pub rdma_device: Option<String>,
    /// The PF's first InfiniBand port: its pkey table holds every pkey of its VFs.
    pub pf_port: Option<u32>,
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
            let pf_port = h.ports.iter().find(|p| p.link_layer == LinkLayer::Infiniband).map(|p| p.port);
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
                        rdma_device: v.rdma_device.clone(),
                        pf_port,
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

/// One local attachment the controller wrote `configured`, with its ledger record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// Index into the pod list.
    pub pod: usize,
    pub pod_uid: String,
    pub label: String,
    /// The ledger's record of it, or why there is none (the annotation is not trusted).
    pub ledger: Result<LedgerEntry, String>,
    /// The VF's PCI address from network-status, or why it is not known.
    pub device: Result<String, String>,
}

impl Assigned {
    pub fn key(&self) -> (String, String) {
        (self.pod_uid.clone(), self.label.clone())
    }
}

/// Attachments to check, over all pods (finished and deleting pods are skipped): those the
/// pod's annotation marks `configured`, each with the GUID the ledger gives it.
pub fn assigned_attachments(pods: &[AgentPod], ledger: &NodeLedger) -> Vec<Assigned> {
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
            if !r.configured {
                continue;
            }
            let label = format!("{}{}", r.network, r.slot);
            let device = match &statuses {
                Err(e) => Err(e.clone()),
                Ok(st) => device_of(&requests, j, st),
            };
            let entry = ledger.assigned(&pod.uid, &label).cloned().ok_or_else(|| {
                "no GuidClaim records this attachment (the ledger, not the pod annotation, says which GUID it has)"
                    .to_string()
            });
            out.push(Assigned { pod: i, pod_uid: pod.uid.clone(), label, ledger: entry, device });
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

    /// A line for the status and logs.
    pub fn text(&self, assigned: Option<crate::ib::Guid>) -> String {
        match (self, assigned) {
            (Verdict::Verified, _) => "verified".into(),
            (Verdict::Mismatch { vf, found }, Some(g)) => {
                format!("mismatch: VF {vf} has port GUID {found}, assigned {g}")
            }
            (Verdict::Mismatch { vf, found }, None) => format!("mismatch: VF {vf} has port GUID {found}"),
            (Verdict::Unknown(why), _) => format!("unknown: {why}"),
        }
    }
}

/// The VF of an attachment: network-status' PCI address, else (a VFIO VF, or no device-info)
/// the one VF found carrying the ledger's GUID.
pub fn locate(vfs: &VfIndex, a: &Assigned) -> Result<String, String> {
    match (&a.device, &a.ledger) {
        (Ok(pci), _) => Ok(pci.clone()),
        (Err(why), Ok(e)) => {
            let carrying: Vec<&VfSlot> =
                vfs.by_pci.values().filter(|s| s.current() == Some(RawGuid::from(e.guid))).collect();
            match carrying.as_slice() {
                [one] => Ok(one.pci.clone()),
                [] => Err(format!("{why}, and no VF of this node carries {}", e.guid)),
                _ => Err(format!("{why}, and {} VFs carry {}", carrying.len(), e.guid)),
            }
        }
        (Err(why), Err(_)) => Err(why.clone()),
    }
}

/// Compares the VF's port GUID with the one the ledger assigned.
pub fn verdict(vfs: &VfIndex, a: &Assigned) -> Verdict {
    let entry = match &a.ledger {
        Err(why) => return Verdict::Unknown(why.clone()),
        Ok(e) => e,
    };
    let pci = match locate(vfs, a) {
        Err(why) => return Verdict::Unknown(why),
        Ok(pci) => pci,
    };
    let Some(slot) = vfs.by_pci.get(&pci) else {
        return Verdict::Unknown(format!("device {pci} is not a VF of an HCA on this node"));
    };
    match slot.port_guid {
        None => {
            Verdict::Unknown(format!("the port GUID of VF {pci} cannot be read (neither netlink nor sysfs has it)"))
        }
        Some(g) if g == RawGuid::from(entry.guid) => Verdict::Verified,
        Some(found) => Verdict::Mismatch { vf: pci, found },
    }
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

/// InfiniBand VFs carrying a routable GUID that no live pod holds, with that GUID. A GUID the
/// ledger gives to a pod of this node is held too (its network-status may not be written yet).
pub fn unheld_vfs(vfs: &VfIndex, pods: &[AgentPod], ledger: &NodeLedger) -> BTreeMap<String, RawGuid> {
    let (pcis, mut guids) = held(pods);
    guids.extend(
        vfs.by_pci
            .values()
            .filter_map(|s| s.current())
            .filter(|g| crate::ib::Guid::new(g.0).is_some_and(|g| ledger.owner(g).is_some())),
    );
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
        let a = assigned_attachments(&[pod(&nets, Some(status))], &NodeLedger::default());
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
        assert!(assigned_attachments(&[pod(nets, None)], &NodeLedger::default()).is_empty());
        let nets = format!(r#"[{{"name":"ib","cni-args":{CONFIGURED}}}]"#);
        let mut p = pod(&nets, None);
        assert_eq!(
            assigned_attachments(std::slice::from_ref(&p), &NodeLedger::default())[0].device,
            Err("no network-status annotation yet".into())
        );
        p.deleting = true;
        assert!(assigned_attachments(std::slice::from_ref(&p), &NodeLedger::default()).is_empty());
    }

    #[test]
    fn the_ledger_not_the_annotation_gives_the_guid() {
        use crate::engine::{Claim, ClaimedAttachment, ObjectKey, PodUid};
        use crate::netdef::NetworkKey;
        let nets = format!(r#"[{{"name":"ib","cni-args":{CONFIGURED}}}]"#);
        let p = pod(&nets, None);
        let unbacked = assigned_attachments(std::slice::from_ref(&p), &NodeLedger::default());
        assert!(matches!(&unbacked[0].ledger, Err(e) if e.contains("no GuidClaim")));
        let claim = Claim {
            pod_uid: PodUid::new("u"),
            pod: ObjectKey { namespace: "t".into(), name: "p".into() },
            node: "n".into(),
            migrated: false,
            deleting: false,
            attachments: vec![ClaimedAttachment {
                network: NetworkKey::new("t", "ib"),
                slot: Slot::Occurrence(0),
                guid: "02:00:00:00:00:00:00:07".parse().unwrap(),
                pkey: None,
                former_pkeys: vec![],
                fabric: None,
            }],
        };
        let a = assigned_attachments(std::slice::from_ref(&p), &NodeLedger::from_claims([&claim]));
        assert_eq!(a[0].ledger.as_ref().unwrap().guid.to_string(), "02:00:00:00:00:00:00:07");
    }
}
