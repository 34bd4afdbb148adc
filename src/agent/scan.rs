//! Building the [`Inventory`] from sysfs: `class/infiniband/*`, their ports and pkey tables, the
//! PCI function behind each device and its SR-IOV VFs. A missing or odd file becomes a warning
//! and the scan goes on; nothing in here panics on what it reads.

use super::inventory::{Hca, Inventory, LinkLayer, Netdev, PkeyEntry, PkeyTable, Port, RawGuid, Sriov, Vf};
use super::sysfs::{Sysfs, SysfsError};
use crate::ib::Guid;

/// Scans the tree. Warnings are collected in the result, not logged: callers decide how loudly.
pub fn scan(sys: &Sysfs) -> Inventory {
    let mut s = Scan { sys, warnings: Vec::new() };
    let mut hcas = Vec::new();
    let names = match sys.list("class/infiniband") {
        Ok(n) => n,
        Err(SysfsError::Missing { path }) => {
            s.warn(format!("{path}: missing (no RDMA devices, or their drivers are not loaded)"));
            Vec::new()
        }
        Err(e) => {
            s.warn(e.to_string());
            Vec::new()
        }
    };
    for name in names {
        let base = format!("class/infiniband/{name}");
        if let Err(e) = sys.resolve(&base) {
            s.warn(e.to_string());
            continue;
        }
        hcas.push(s.hca(&name, &base));
    }
    Inventory { hcas, warnings: s.warnings }
}

struct Scan<'a> {
    sys: &'a Sysfs,
    warnings: Vec<String>,
}

impl Scan<'_> {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// The attribute's text; a warning (and `None`) when it is missing or unreadable.
    fn read(&mut self, rel: &str) -> Option<String> {
        match self.sys.read(rel) {
            Ok(s) => Some(s),
            Err(e) => {
                self.warn(e.to_string());
                None
            }
        }
    }

    /// Like [`Scan::read`], but a missing attribute is normal and silent.
    fn read_optional(&mut self, rel: &str) -> Option<String> {
        match self.sys.read_optional(rel) {
            Ok(s) => s,
            Err(e) => {
                self.warn(e.to_string());
                None
            }
        }
    }

    fn link_name(&mut self, rel: &str) -> Option<String> {
        match self.sys.link_name(rel) {
            Ok(n) => n,
            Err(e) => {
                self.warn(e.to_string());
                None
            }
        }
    }

    fn list_optional(&mut self, rel: &str) -> Vec<String> {
        match self.sys.list_optional(rel) {
            Ok(n) => n,
            Err(e) => {
                self.warn(e.to_string());
                Vec::new()
            }
        }
    }

    fn parse_u32(&mut self, rel: &str, text: &str) -> Option<u32> {
        match text.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.warn(format!("{rel}: {text:?} is not a whole number"));
                None
            }
        }
    }

    fn hca(&mut self, name: &str, base: &str) -> Hca {
        let node_guid = self.read(&format!("{base}/node_guid")).and_then(|text| match text.parse::<Guid>() {
            Ok(g) => Some(g.to_sysfs()),
            Err(e) => {
                self.warn(format!("{base}/node_guid: {e}"));
                None
            }
        });
        let device = format!("{base}/device");
        let pci_address = match self.sys.link_name(&device) {
            Ok(Some(pci)) => Some(pci),
            Ok(None) => {
                self.warn(format!("{device}: missing (no PCI device behind {name})"));
                None
            }
            Err(e) => {
                self.warn(e.to_string());
                None
            }
        };
        let (physfn, netdevs, sriov) = match &pci_address {
            Some(_) => {
                let physfn = self.link_name(&format!("{device}/physfn"));
                let netdevs = self.netdevs(&format!("{device}/net"));
                let sriov = if physfn.is_none() { self.sriov(&device) } else { None };
                (physfn, netdevs, sriov)
            }
            None => (None, Vec::new(), None),
        };
        let ports = self.ports(base);
        let link_layer = if ports.iter().any(|p| p.link_layer == LinkLayer::Infiniband) {
            LinkLayer::Infiniband
        } else if !ports.is_empty() && ports.iter().all(|p| p.link_layer == LinkLayer::Ethernet) {
            LinkLayer::Ethernet
        } else {
            LinkLayer::Unknown
        };
        Hca { name: name.to_string(), link_layer, node_guid, pci_address, physfn, netdevs, ports, sriov }
    }

    fn netdevs(&mut self, dir: &str) -> Vec<Netdev> {
        let names = self.list_optional(dir);
        names
            .into_iter()
            .map(|n| {
                let rel = format!("{dir}/{n}/ifindex");
                let ifindex = self.read(&rel).and_then(|t| self.parse_u32(&rel, &t));
                Netdev { name: n, ifindex }
            })
            .collect()
    }

    fn ports(&mut self, base: &str) -> Vec<Port> {
        let dir = format!("{base}/ports");
        let names = match self.sys.list(&dir) {
            Ok(n) => n,
            Err(e) => {
                self.warn(e.to_string());
                return Vec::new();
            }
        };
        let mut numbers = self.numbered(&dir, names.iter().map(|n| (n.as_str(), n.as_str())));
        numbers.sort();
        numbers.into_iter().map(|n| self.port(&format!("{dir}/{n}"), n)).collect()
    }

    /// Names that are numbers (`"3"` → 3) with a warning for each that is not.
    fn numbered<'n>(&mut self, dir: &str, names: impl Iterator<Item = (&'n str, &'n str)>) -> Vec<u32> {
        let mut out = Vec::new();
        for (name, digits) in names {
            match digits.parse::<u32>() {
                Ok(n) => out.push(n),
                Err(_) => self.warn(format!("{dir}/{name}: unexpected entry, ignored")),
            }
        }
        out
    }

    fn port(&mut self, pb: &str, port: u32) -> Port {
        let link_layer = match self.read(&format!("{pb}/link_layer")).as_deref() {
            Some("InfiniBand") => LinkLayer::Infiniband,
            Some("Ethernet") => LinkLayer::Ethernet,
            Some(other) => {
                self.warn(format!("{pb}/link_layer: {other:?} is neither InfiniBand nor Ethernet"));
                LinkLayer::Unknown
            }
            None => LinkLayer::Unknown,
        };
        let state = self.numbered_state(&format!("{pb}/state"));
        let phys_state = self.numbered_state(&format!("{pb}/phys_state"));
        if link_layer != LinkLayer::Infiniband {
            return Port { port, link_layer, state, phys_state, lid: None, port_guid: None, pkeys: None };
        }
        let lid_rel = format!("{pb}/lid");
        let lid = self.read(&lid_rel).and_then(|t| {
            let parsed = t.strip_prefix("0x").and_then(|h| u16::from_str_radix(h, 16).ok());
            if parsed.is_none() {
                self.warn(format!("{lid_rel}: {t:?} is not a LID such as 0x11"));
            }
            parsed
        });
        let gid_rel = format!("{pb}/gids/0");
        let port_guid = self.read(&gid_rel).and_then(|gid| match port_guid_of_gid(&gid) {
            Some(g) => Some(g.to_sysfs()),
            None => {
                self.warn(format!("{gid_rel}: {gid:?} is not a GID such as fe80:0000:0000:0000:0c42:a103:0016:5e40"));
                None
            }
        });
        let pkeys = self.pkeys(&format!("{pb}/pkeys"));
        Port { port, link_layer, state, phys_state, lid, port_guid, pkeys }
    }

    /// `4: ACTIVE` → `ACTIVE`.
    fn numbered_state(&mut self, rel: &str) -> Option<String> {
        let text = self.read(rel)?;
        match text.split_once(':') {
            Some((n, name)) if n.trim().parse::<u32>().is_ok() && !name.trim().is_empty() => {
                Some(name.trim().to_string())
            }
            _ => {
                self.warn(format!("{rel}: {text:?} is not of the form \"4: ACTIVE\""));
                None
            }
        }
    }

    fn pkeys(&mut self, dir: &str) -> Option<PkeyTable> {
        let names = match self.sys.list(dir) {
            Ok(n) => n,
            Err(e) => {
                self.warn(e.to_string());
                return None;
            }
        };
        let mut indexes = self.numbered(dir, names.iter().map(|n| (n.as_str(), n.as_str())));
        indexes.sort();
        let mut table = PkeyTable { capacity: 0, used: 0, entries: Vec::new() };
        for index in indexes {
            table.capacity += 1;
            let rel = format!("{dir}/{index}");
            let Some(text) = self.read(&rel) else { continue };
            match text.strip_prefix("0x").and_then(|h| u16::from_str_radix(h, 16).ok()) {
                Some(0) => {}
                Some(v) => {
                    table.used += 1;
                    table.entries.push(PkeyEntry { index, pkey: format!("{v:#06x}") });
                }
                None => self.warn(format!("{rel}: {text:?} is not a pkey such as 0xffff")),
            }
        }
        Some(table)
    }

    fn sriov(&mut self, device: &str) -> Option<Sriov> {
        let total_rel = format!("{device}/sriov_totalvfs");
        let total_text = self.read_optional(&total_rel)?;
        let total_vfs = self.parse_u32(&total_rel, &total_text).unwrap_or(0);
        let num_rel = format!("{device}/sriov_numvfs");
        let num_vfs = self.read(&num_rel).and_then(|t| self.parse_u32(&num_rel, &t)).unwrap_or(0);
        let names = self.list_optional(device);
        let mut indexes =
            self.numbered(device, names.iter().filter_map(|n| n.strip_prefix("virtfn").map(|d| (n.as_str(), d))));
        indexes.sort();
        let mut vfs = Vec::new();
        for vf in indexes {
            let link = format!("{device}/virtfn{vf}");
            let pci_address = match self.sys.link_name(&link) {
                Ok(Some(pci)) => pci,
                Ok(None) => {
                    self.warn(format!("{link}: link to a missing device"));
                    continue;
                }
                Err(e) => {
                    self.warn(e.to_string());
                    continue;
                }
            };
            let driver = self.link_name(&format!("{link}/driver"));
            let netdevs = self.list_optional(&format!("{link}/net"));
            let rdma_device = self.list_optional(&format!("{link}/infiniband")).into_iter().next();
            let node_guid = self.ofed_guid(device, vf, &["node", "node_guid"]);
            let port_guid = self.ofed_guid(device, vf, &["port", "port_guid"]);
            vfs.push(Vf { vf, pci_address, driver, netdevs, rdma_device, node_guid, port_guid });
        }
        if usize::try_from(num_vfs) != Ok(vfs.len()) {
            self.warn(format!("{device}: sriov_numvfs is {num_vfs} but {} VF link(s) were found", vfs.len()));
        }
        Some(Sriov { total_vfs, num_vfs, vfs })
    }

    /// MLNX_OFED's `device/sriov/<vf>/node` (or `node_guid` in some versions); upstream kernels
    /// have neither, and netlink is the source then.
    fn ofed_guid(&mut self, device: &str, vf: u32, names: &[&str]) -> Option<RawGuid> {
        for name in names {
            let rel = format!("{device}/sriov/{vf}/{name}");
            if let Some(text) = self.read_optional(&rel) {
                return match text.parse::<RawGuid>() {
                    Ok(g) => Some(g),
                    Err(e) => {
                        self.warn(format!("{rel}: {e}"));
                        None
                    }
                };
            }
        }
        None
    }
}

/// The port GUID is the interface identifier of GID 0: its last 64 bits.
fn port_guid_of_gid(gid: &str) -> Option<Guid> {
    let groups: Vec<&str> = gid.split(':').collect();
    if groups.len() != 8 || !groups.iter().all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_hexdigit())) {
        return None;
    }
    groups[4..].join("").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_guid_is_the_low_half_of_gid0() {
        assert_eq!(
            port_guid_of_gid("fe80:0000:0000:0000:0c42:a103:0016:5e40").map(|g| g.to_sysfs()).as_deref(),
            Some("0c42:a103:0016:5e40")
        );
        assert_eq!(port_guid_of_gid("fe80::1"), None);
        assert_eq!(port_guid_of_gid("fe80:0000:0000:0000:0000:0000:0000:0000"), None);
    }
}
