//! What the node holds: HCAs, ports, pkey tables, SR-IOV functions and VF GUIDs, as plain data;
//! the small summary written to the Node annotation; and the human table of `agent inventory`.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Serialize, Serializer};

pub use crate::wire::keys::INVENTORY_ANNOTATION;
pub use crate::wire::{InventorySummary, PortSummary};

/// A VF GUID as the hardware holds it: any 64-bit value, including the all-zero value of a fresh
/// VF and the all-ones value ib-sriov-cni writes for "unset" (which [`crate::ib::Guid`] refuses).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawGuid(pub u64);

impl RawGuid {
    /// What an unprogrammed VF carries.
    pub const ZERO: RawGuid = RawGuid(0);
    /// The value VFs no pod holds are reset to: not routable, and what ib-sriov-cni uses for "unset".
    pub const RESET: RawGuid = RawGuid(u64::MAX);

    /// Zero or all-ones: a value no port on the fabric can be reached by.
    pub fn is_unset(self) -> bool {
        self == RawGuid::ZERO || self == RawGuid::RESET
    }
}

impl From<crate::ib::Guid> for RawGuid {
    fn from(g: crate::ib::Guid) -> RawGuid {
        RawGuid(g.value())
    }
}

/// Colon form, lowercase: `02:00:00:00:00:00:00:01`.
impl fmt::Display for RawGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl fmt::Debug for RawGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawGuid({self})")
    }
}

impl FromStr for RawGuid {
    type Err = String;

    /// Accepts 16 hex digits with or without `:`/`-` separators, as OFED's sysfs and `ip link` print.
    fn from_str(s: &str) -> Result<RawGuid, String> {
        let digits: String = s.trim().chars().filter(|c| !matches!(c, ':' | '-')).collect();
        if digits.len() != 16 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a GUID (16 hex digits)"));
        }
        u64::from_str_radix(&digits, 16).map(RawGuid).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl Serialize for RawGuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Everything found under the sysfs root, with the problems met on the way.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Inventory {
    pub hcas: Vec<Hca>,
    /// Missing or odd files, escaping symlinks: the scan goes on and reports them here.
    pub warnings: Vec<String>,
}

/// Link layer of a port, or of an HCA (InfiniBand if any port is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkLayer {
    Infiniband,
    Ethernet,
    Unknown,
}

/// One RDMA device in `class/infiniband`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hca {
    pub name: String,
    pub link_layer: LinkLayer,
    /// As sysfs prints it: `0c42:a103:0016:5e40`.
    pub node_guid: Option<String>,
    /// The PCI function behind the device.
    pub pci_address: Option<String>,
    /// Set when this RDMA device is itself a VF: the PCI address of its PF. Such devices are
    /// listed but not counted as HCAs, and their pkey tables do not bound the node's capacity.
    pub physfn: Option<String>,
    pub netdevs: Vec<Netdev>,
    pub ports: Vec<Port>,
    /// SR-IOV of the PCI function; absent when it has no SR-IOV capability.
    pub sriov: Option<Sriov>,
}

impl Hca {
    pub fn is_vf(&self) -> bool {
        self.physfn.is_some()
    }

    /// The netdev to address netlink VF requests to: the first one with an ifindex.
    pub fn pf_netdev(&self) -> Option<&Netdev> {
        self.netdevs.iter().find(|n| n.ifindex.is_some())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Netdev {
    pub name: String,
    pub ifindex: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Port {
    pub port: u32,
    pub link_layer: LinkLayer,
    /// `ACTIVE`, `DOWN`, … (the name sysfs prints after the number).
    pub state: Option<String>,
    /// `LinkUp`, `Disabled`, …
    pub phys_state: Option<String>,
    pub lid: Option<u16>,
    /// From `gids/0` (InfiniBand ports only).
    pub port_guid: Option<String>,
    /// InfiniBand ports only; Ethernet (RoCE) ports are not partitioned.
    pub pkeys: Option<PkeyTable>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PkeyTable {
    /// Entries in the table (files in `pkeys/`).
    pub capacity: u32,
    /// Entries holding a pkey (not `0x0000`).
    pub used: u32,
    pub entries: Vec<PkeyEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PkeyEntry {
    pub index: u32,
    /// `0xffff`, `0x8005`: the full-membership bit included, as the table holds it.
    pub pkey: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sriov {
    pub total_vfs: u32,
    pub num_vfs: u32,
    pub vfs: Vec<Vf>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vf {
    pub vf: u32,
    pub pci_address: String,
    /// `mlx5_core`, `vfio-pci`; none when unbound.
    pub driver: Option<String>,
    pub netdevs: Vec<String>,
    pub rdma_device: Option<String>,
    /// From OFED's `device/sriov/<vf>/node|port`, or netlink when asked.
    pub node_guid: Option<RawGuid>,
    pub port_guid: Option<RawGuid>,
}

impl Inventory {
    /// HCAs that are physical functions (not a VF's own RDMA device).
    pub fn pf_hcas(&self) -> impl Iterator<Item = &Hca> {
        self.hcas.iter().filter(|h| !h.is_vf())
    }

    pub fn summary(&self) -> InventorySummary {
        let mut s = InventorySummary {
            version: crate::wire::inventory::VERSION,
            pkey_capacity: None,
            hcas: 0,
            ib_hcas: 0,
            ethernet_hcas: 0,
            ib_ports: 0,
            ib_ports_active: 0,
            vfs_total: 0,
            vfs_enabled: 0,
            ports: Vec::new(),
            warnings: u32::try_from(self.warnings.len()).unwrap_or(u32::MAX),
        };
        for h in self.pf_hcas() {
            s.hcas += 1;
            match h.link_layer {
                LinkLayer::Infiniband => s.ib_hcas += 1,
                LinkLayer::Ethernet => s.ethernet_hcas += 1,
                LinkLayer::Unknown => {}
            }
            if let Some(sr) = &h.sriov {
                s.vfs_total += sr.total_vfs;
                s.vfs_enabled += sr.num_vfs;
            }
            for p in h.ports.iter().filter(|p| p.link_layer == LinkLayer::Infiniband) {
                s.ib_ports += 1;
                if p.state.as_deref() == Some("ACTIVE") {
                    s.ib_ports_active += 1;
                }
                let (used, capacity) = p.pkeys.as_ref().map(|t| (t.used, t.capacity)).unwrap_or((0, 0));
                if p.pkeys.is_some() {
                    let cap = u16::try_from(capacity).unwrap_or(u16::MAX);
                    s.pkey_capacity = Some(s.pkey_capacity.map_or(cap, |c| c.min(cap)));
                }
                s.ports.push(PortSummary {
                    hca: h.name.clone(),
                    port: p.port,
                    state: p.state.clone(),
                    pkeys_used: used,
                    pkeys_capacity: capacity,
                });
            }
        }
        s
    }

    /// The `agent inventory` table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<10} {:<11} {:<20} {:<13} {:<12} VFS", "HCA", "LINK", "NODE GUID", "PCI", "NETDEV");
        for h in &self.hcas {
            let link = match h.link_layer {
                LinkLayer::Infiniband => "infiniband",
                LinkLayer::Ethernet => "ethernet",
                LinkLayer::Unknown => "unknown",
            };
            let netdevs: Vec<&str> = h.netdevs.iter().map(|n| n.name.as_str()).collect();
            let vfs = match (&h.sriov, &h.physfn) {
                (_, Some(pf)) => format!("(VF of {pf})"),
                (Some(s), None) => format!("{}/{}", s.num_vfs, s.total_vfs),
                (None, None) => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<10} {:<11} {:<20} {:<13} {:<12} {}",
                h.name,
                link,
                h.node_guid.as_deref().unwrap_or("-"),
                h.pci_address.as_deref().unwrap_or("-"),
                if netdevs.is_empty() { "-".to_string() } else { netdevs.join(",") },
                vfs
            );
            for p in &h.ports {
                let pkeys = match &p.pkeys {
                    Some(t) => format!("pkeys {}/{}", t.used, t.capacity),
                    None if p.link_layer == LinkLayer::Ethernet => "pkeys n/a (Ethernet)".into(),
                    None => "pkeys ?".into(),
                };
                let _ = writeln!(
                    out,
                    "  port {:<3} {:<8} {:<10} lid {:<6} {:<14} port guid {}",
                    p.port,
                    p.state.as_deref().unwrap_or("?"),
                    p.phys_state.as_deref().unwrap_or("?"),
                    p.lid.map_or("-".to_string(), |l| l.to_string()),
                    pkeys,
                    p.port_guid.as_deref().unwrap_or("-")
                );
            }
            for v in h.sriov.iter().flat_map(|s| &s.vfs) {
                let _ = writeln!(
                    out,
                    "  vf {:<5} {:<13} driver {:<10} netdev {:<8} node {} port {}",
                    v.vf,
                    v.pci_address,
                    v.driver.as_deref().unwrap_or("-"),
                    if v.netdevs.is_empty() { "-".to_string() } else { v.netdevs.join(",") },
                    v.node_guid.map_or("-".to_string(), |g| g.to_string()),
                    v.port_guid.map_or("-".to_string(), |g| g.to_string()),
                );
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "warnings:");
            for w in &self.warnings {
                let _ = writeln!(out, "  {w}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_guids_take_reserved_values_and_print_colon_form() {
        assert_eq!("ff:ff:ff:ff:ff:ff:ff:ff".parse::<RawGuid>(), Ok(RawGuid::RESET));
        assert_eq!("0000000000000000".parse::<RawGuid>(), Ok(RawGuid::ZERO));
        assert_eq!(RawGuid(0x0200_0000_0000_00ab).to_string(), "02:00:00:00:00:00:00:ab");
        assert!(RawGuid::RESET.is_unset() && RawGuid::ZERO.is_unset() && !RawGuid(2).is_unset());
        assert!("02:00".parse::<RawGuid>().is_err());
        assert!("zz:00:00:00:00:00:00:00".parse::<RawGuid>().is_err());
    }
}
