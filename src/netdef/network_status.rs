//! The Multus `k8s.v1.cni.cncf.io/network-status` pod annotation, as far as the node agent needs it:
//! which interface of which network sits on which PCI device.

use serde::Deserialize;

use super::NetdefError;

pub use crate::wire::keys::NETWORK_STATUS_ANNOTATION;

/// One attachment as Multus reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkStatus {
    /// `<namespace>/<name>` of the network.
    pub name: String,
    pub interface: Option<String>,
    pub mac: Option<String>,
    /// PCI address of the device (the VF), e.g. `0000:3b:00.2`.
    pub pci_address: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    name: String,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default, rename = "device-info")]
    device_info: Option<RawDeviceInfo>,
}

#[derive(Deserialize)]
struct RawDeviceInfo {
    #[serde(default)]
    pci: Option<RawPci>,
}

#[derive(Deserialize)]
struct RawPci {
    #[serde(default, rename = "pci-address")]
    pci_address: Option<String>,
}

pub fn parse_network_status(annotation: &str) -> Result<Vec<NetworkStatus>, NetdefError> {
    let raw: Vec<RawStatus> = serde_json::from_str(annotation)
        .map_err(|e| NetdefError::NetworkStatus(format!("not a JSON list of network statuses ({e})")))?;
    raw.into_iter()
        .map(|r| {
            let pci_address = r.device_info.and_then(|d| d.pci).and_then(|p| p.pci_address);
            if let Some(addr) = &pci_address {
                if !is_pci_address(addr) {
                    return Err(NetdefError::NetworkStatus(format!(
                        "network {:?}: device-info pci-address {addr:?} is not of the form 0000:3b:00.2",
                        r.name
                    )));
                }
            }
            Ok(NetworkStatus { name: r.name, interface: r.interface, mac: r.mac, pci_address })
        })
        .collect()
}

/// `dddd:bb:dd.f` in hex, as sysfs names PCI devices.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11].iter().all(|&i| b[i].is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_interface_and_vf_pci_address() {
        let s = r#"[{"name":"cbr0","interface":"eth0","ips":["10.1.0.5"],"default":true},
                   {"name":"gpu/ib-net","interface":"net1","mac":"00:00:10:49:fe:80:00:00:00:00:00:00:02:00:00:00:00:00:00:01",
                    "device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:00.2"}}}]"#;
        let st = parse_network_status(s).unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].pci_address, None);
        assert_eq!(st[1].name, "gpu/ib-net");
        assert_eq!(st[1].interface.as_deref(), Some("net1"));
        assert_eq!(st[1].pci_address.as_deref(), Some("0000:3b:00.2"));
    }

    #[test]
    fn rejects_garbage_and_bad_pci_addresses() {
        assert!(parse_network_status("{}").is_err());
        let err =
            parse_network_status(r#"[{"name":"a","device-info":{"pci":{"pci-address":"3b:00.2"}}}]"#).unwrap_err();
        assert!(err.to_string().contains("3b:00.2"));
    }
}
