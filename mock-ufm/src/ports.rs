//! Fabric ports as `GET /resources/ports` lists them, with a small fake fabric to start from.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use crate::state::Guid;

/// One port. Field names follow UFM's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub guid: Guid,
    pub name: String,
    #[serde(rename = "systemID")]
    pub system_id: String,
    pub lid: u32,
    pub dname: String,
    pub number: u32,
    pub system_name: String,
    /// e.g. `Computer`, `Switch`; filtered by `?sys_type=`.
    pub sys_type: String,
    pub node_description: String,
    pub physical_state: String,
    pub logical_state: String,
    pub peer_node_name: String,
    pub peer_port_dname: String,
}

fn guid(v: u64) -> Guid {
    // Equal to `v` for every non-zero `v`; the seed only uses non-zero constants.
    Guid::from(NonZeroU64::MIN.saturating_add(v.saturating_sub(1)))
}

/// Four hosts with one HCA port each, cabled to one switch.
pub fn seed_ports() -> Vec<Port> {
    let switch_guid = 0x9803_9b03_0000_1000_u64;
    let mut ports = Vec::new();
    for i in 1..=4u32 {
        let host = format!("host-{i:02}");
        let g = 0x0c42_a103_0000_0000_u64 + u64::from(i);
        ports.push(Port {
            guid: guid(g),
            name: format!("{g:016x}_1"),
            system_id: format!("{:016x}", g - 1),
            lid: i,
            dname: "mlx5_0/1".to_string(),
            number: 1,
            system_name: host.clone(),
            sys_type: "Computer".to_string(),
            node_description: format!("{host} mlx5_0"),
            physical_state: "Link Up".to_string(),
            logical_state: "Active".to_string(),
            peer_node_name: "leaf-01".to_string(),
            peer_port_dname: i.to_string(),
        });
        ports.push(Port {
            guid: guid(switch_guid),
            name: format!("{switch_guid:016x}_{i}"),
            system_id: format!("{switch_guid:016x}"),
            lid: 100,
            dname: i.to_string(),
            number: i,
            system_name: "leaf-01".to_string(),
            sys_type: "Switch".to_string(),
            node_description: "leaf-01".to_string(),
            physical_state: "Link Up".to_string(),
            logical_state: "Active".to_string(),
            peer_node_name: host,
            peer_port_dname: "mlx5_0/1".to_string(),
        });
    }
    ports
}

/// Ports whose `sys_type` matches (case-insensitive), or all.
pub fn filter<'a>(ports: &'a [Port], sys_type: Option<&str>) -> Vec<&'a Port> {
    ports.iter().filter(|p| sys_type.is_none_or(|t| p.sys_type.eq_ignore_ascii_case(t))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_has_hosts_and_switch_ports_filterable_by_type() {
        let ports = seed_ports();
        assert_eq!(filter(&ports, Some("computer")).len(), 4);
        assert_eq!(filter(&ports, Some("Switch")).len(), 4);
        assert_eq!(filter(&ports, None).len(), 8);
        assert!(filter(&ports, Some("Gateway")).is_empty());
        let json = serde_json::to_value(&ports[0]).unwrap();
        assert_eq!(json["guid"], "0c42a10300000001");
        assert_eq!(json["systemID"], "0c42a10300000000");
    }
}
