//! VF GUIDs over rtnetlink: the [`VfControl`] seam (read and set a VF's node and port GUID on its
//! PF, unbind and rebind the VF driver), the messages behind it as pure functions, and the real
//! implementation on rtnetlink and sysfs.

use async_trait::async_trait;
use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage, LinkVfInfo, VfInfo, VfInfoGuid};
use rtnetlink::LinkUnspec;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::AgentError;
use super::inventory::RawGuid;
use super::sysfs::Sysfs;

/// The PF netdev VF requests go to (for mlx5 in InfiniBand mode, its IPoIB netdev, e.g. `ib0`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PfRef {
    pub name: String,
    pub ifindex: u32,
}

/// Which of a VF's two GUIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuidKind {
    /// `IFLA_VF_IB_NODE_GUID` (10).
    Node,
    /// `IFLA_VF_IB_PORT_GUID` (11): the GUID UFM puts in partitions.
    Port,
}

/// One VF's GUIDs as the PF reports them. `None` where the driver reports nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfGuids {
    pub vf: u32,
    pub node_guid: Option<RawGuid>,
    pub port_guid: Option<RawGuid>,
}

/// Reads and changes VF GUIDs. The agent's only way to touch VFs, so tests use a fake that
/// records calls.
#[async_trait]
pub trait VfControl: Send + Sync {
    /// The GUIDs of every VF of `pf` (`RTM_GETLINK` with `IFLA_EXT_MASK = RTEXT_FILTER_VF`).
    async fn vf_guids(&self, pf: &PfRef) -> Result<Vec<VfGuids>, AgentError>;
    async fn set_node_guid(&self, pf: &PfRef, vf: u32, guid: RawGuid) -> Result<(), AgentError>;
    async fn set_port_guid(&self, pf: &PfRef, vf: u32, guid: RawGuid) -> Result<(), AgentError>;
    /// Detaches the VF from `driver` (a new GUID takes effect only after a rebind).
    fn unbind(&self, vf_pci: &str, driver: &str) -> Result<(), AgentError>;
    fn bind(&self, vf_pci: &str, driver: &str) -> Result<(), AgentError>;
}

/// `RTM_SETLINK` body for one GUID of one VF: `IFLA_VFINFO_LIST > IFLA_VF_INFO >
/// IFLA_VF_IB_{NODE,PORT}_GUID { u32 vf; u64 guid }`. The u64 is the GUID's 8 bytes read
/// big-endian (`02:00:…:01` is `0x0200…01`), stored in host order as the kernel's struct is.
///
/// One GUID per message: the kernel's `do_setvfinfo` returns after the first GUID attribute
/// of an `IFLA_VF_INFO`, so node and port GUID cannot share one (ib-sriov-cni sends two too).
pub fn set_vf_guid_message(pf_ifindex: u32, vf: u32, kind: GuidKind, guid: RawGuid) -> LinkMessage {
    let g = VfInfoGuid::new(vf, guid.0);
    let info = match kind {
        GuidKind::Node => VfInfo::IbNodeGuid(g),
        GuidKind::Port => VfInfo::IbPortGuid(g),
    };
    LinkUnspec::new_with_index(pf_ifindex)
        .append_extra_attribute(LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![info])]))
        .build()
}

/// The whole netlink request as it goes on the socket (header included): what the kernel sees.
pub fn encode_setlink(message: LinkMessage) -> Vec<u8> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::SetLink(message));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    buf
}

/// The VFs' GUIDs in a link message (an `RTM_NEWLINK` answer). A VF's number comes from its GUID
/// attributes (or its MAC attribute), else its position in the list.
pub fn vf_guids_of(message: &LinkMessage) -> Vec<VfGuids> {
    let mut out = Vec::new();
    for attr in &message.attributes {
        let LinkAttribute::VfInfoList(list) = attr else { continue };
        for (pos, LinkVfInfo(infos)) in list.iter().enumerate() {
            let mut g = VfGuids { vf: u32::try_from(pos).unwrap_or(u32::MAX), node_guid: None, port_guid: None };
            for info in infos {
                match info {
                    VfInfo::IbNodeGuid(x) => {
                        g.vf = x.vf_id;
                        g.node_guid = Some(RawGuid(x.guid));
                    }
                    VfInfo::IbPortGuid(x) => {
                        g.vf = x.vf_id;
                        g.port_guid = Some(RawGuid(x.guid));
                    }
                    VfInfo::Mac(m) => g.vf = m.vf_id,
                    _ => {}
                }
            }
            out.push(g);
        }
    }
    out
}

/// The real thing: rtnetlink on the host's network namespace (hostNetwork), sysfs for rebinding.
pub struct NetlinkVfControl {
    handle: rtnetlink::Handle,
    sys: Sysfs,
}

impl NetlinkVfControl {
    /// Opens an rtnetlink socket; its connection runs as a task on the current tokio runtime.
    pub fn connect(sys: Sysfs) -> Result<NetlinkVfControl, AgentError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| AgentError::Netlink {
            pf: "-".into(),
            op: "connect",
            detail: e.to_string(),
        })?;
        tokio::spawn(connection);
        Ok(NetlinkVfControl { handle, sys })
    }

    async fn set(&self, pf: &PfRef, vf: u32, kind: GuidKind, guid: RawGuid) -> Result<(), AgentError> {
        let op = match kind {
            GuidKind::Node => "set_node_guid",
            GuidKind::Port => "set_port_guid",
        };
        self.handle
            .link()
            .set(set_vf_guid_message(pf.ifindex, vf, kind, guid))
            .execute()
            .await
            .map_err(|e| AgentError::Netlink { pf: pf.name.clone(), op, detail: e.to_string() })
    }

    fn driver_file(&self, vf_pci: &str, driver: &str, file: &str) -> Result<(), AgentError> {
        if !is_pci_address(vf_pci) || driver.is_empty() || driver.contains(['/', '.']) {
            return Err(AgentError::Rebind {
                vf: vf_pci.to_string(),
                detail: format!("refusing to write {vf_pci:?} to driver {driver:?}"),
            });
        }
        self.sys
            .write(&format!("bus/pci/drivers/{driver}/{file}"), vf_pci)
            .map_err(|e| AgentError::Rebind { vf: vf_pci.to_string(), detail: e.to_string() })
    }
}

#[async_trait]
impl VfControl for NetlinkVfControl {
    async fn vf_guids(&self, pf: &PfRef) -> Result<Vec<VfGuids>, AgentError> {
        let err = |detail: String| AgentError::Netlink { pf: pf.name.clone(), op: "get_vf_info", detail };
        let mut answers = self
            .handle
            .link()
            .get()
            .match_index(pf.ifindex)
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::Vf])
            .execute();
        match answers.try_next().await {
            Ok(Some(msg)) => Ok(vf_guids_of(&msg)),
            Ok(None) => Err(err(format!("no answer for ifindex {}", pf.ifindex))),
            Err(e) => Err(err(e.to_string())),
        }
    }

    async fn set_node_guid(&self, pf: &PfRef, vf: u32, guid: RawGuid) -> Result<(), AgentError> {
        self.set(pf, vf, GuidKind::Node, guid).await
    }

    async fn set_port_guid(&self, pf: &PfRef, vf: u32, guid: RawGuid) -> Result<(), AgentError> {
        self.set(pf, vf, GuidKind::Port, guid).await
    }

    fn unbind(&self, vf_pci: &str, driver: &str) -> Result<(), AgentError> {
        self.driver_file(vf_pci, driver, "unbind")
    }

    fn bind(&self, vf_pci: &str, driver: &str) -> Result<(), AgentError> {
        self.driver_file(vf_pci, driver, "bind")
    }
}

/// Fills VF GUIDs in from netlink (over what sysfs said) for `agent inventory --netlink`;
/// a PF that cannot be read adds a warning.
pub async fn add_netlink_guids(inv: &mut super::inventory::Inventory, vf: &dyn VfControl) {
    let mut warnings = Vec::new();
    for h in inv.hcas.iter_mut().filter(|h| !h.is_vf() && h.link_layer == super::inventory::LinkLayer::Infiniband) {
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

pub use crate::netdef::is_pci_address;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_checked_before_they_reach_a_driver_file() {
        assert!(is_pci_address("0000:3b:00.2"));
        assert!(!is_pci_address("0000:3b:00.2\n0000:3b:00.0"));
        assert!(!is_pci_address("../../etc"));
    }
}
