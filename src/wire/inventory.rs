//! The node inventory document: the agent writes it on its Node as the
//! [`super::keys::INVENTORY_ANNOTATION`] annotation ([`InventorySummary::to_annotation`], the one
//! writer); the controller reads the pkey-table capacity from it ([`pkey_capacity`], the one
//! reader) for its per-node pkey budget. Small on purpose: no per-VF lists.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The document's version; a reader ignores fields it does not know.
pub const VERSION: u32 = 1;

/// What goes into the Node annotation, with stable field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InventorySummary {
    pub version: u32,
    /// Smallest pkey-table capacity over the InfiniBand ports of the node's HCAs (VFs'
    /// own RDMA devices excluded); absent when the node has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkey_capacity: Option<u16>,
    pub hcas: u32,
    pub ib_hcas: u32,
    pub ethernet_hcas: u32,
    pub ib_ports: u32,
    pub ib_ports_active: u32,
    pub vfs_total: u32,
    pub vfs_enabled: u32,
    pub ports: Vec<PortSummary>,
    pub warnings: u32,
}

/// One InfiniBand port of a physical HCA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortSummary {
    pub hca: String,
    pub port: u32,
    pub state: Option<String>,
    pub pkeys_used: u32,
    pub pkeys_capacity: u32,
}

impl InventorySummary {
    /// The annotation's value (compact JSON).
    pub fn to_annotation(&self) -> String {
        // A struct of numbers, strings and lists always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The pkey-table capacity in an inventory annotation: the top-level number `pkey_capacity`
/// (or `min_pkey_capacity`, as older or hand-written documents say; the smaller wins if both are
/// there). A number in a string is accepted; anything else, 0, or more than 65535 means
/// "unknown", and the controller's default capacity applies.
pub fn pkey_capacity(annotation: &str) -> Option<u16> {
    let v: Value = serde_json::from_str(annotation).ok()?;
    let read = |field: &str| -> Option<u16> {
        let n = match v.get(field)? {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) => s.trim().parse::<u64>().ok()?,
            _ => return None,
        };
        u16::try_from(n).ok().filter(|n| *n > 0)
    };
    match (read("pkey_capacity"), read("min_pkey_capacity")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The pkey-table capacity of each physical HCA named in the document's `ports` (the smallest
/// of its InfiniBand ports), for fabrics that name their HCAs (`hcas` in the fabrics file).
/// Entries without a name or with a capacity of 0 or more than 65535 are left out.
pub fn hca_capacities(annotation: &str) -> std::collections::BTreeMap<String, u16> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(v) = serde_json::from_str::<Value>(annotation) else { return out };
    for p in v.get("ports").and_then(Value::as_array).into_iter().flatten() {
        let Some(hca) = p.get("hca").and_then(Value::as_str).filter(|h| !h.trim().is_empty()) else { continue };
        let Some(cap) = p.get("pkeys_capacity").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        if cap > 0 {
            let held = out.entry(hca.to_string()).or_insert(cap);
            *held = (*held).min(cap);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(capacity: Option<u16>) -> InventorySummary {
        InventorySummary {
            version: VERSION,
            pkey_capacity: capacity,
            hcas: 2,
            ib_hcas: 1,
            ethernet_hcas: 1,
            ib_ports: 1,
            ib_ports_active: 1,
            vfs_total: 16,
            vfs_enabled: 8,
            ports: vec![PortSummary {
                hca: "mlx5_0".into(),
                port: 1,
                state: Some("ACTIVE".into()),
                pkeys_used: 3,
                pkeys_capacity: 128,
            }],
            warnings: 0,
        }
    }

    #[test]
    fn what_the_agent_writes_the_controller_reads_back() {
        for capacity in [None, Some(1), Some(32), Some(128), Some(u16::MAX)] {
            let s = summary(capacity);
            let text = s.to_annotation();
            assert_eq!(pkey_capacity(&text), capacity, "{text}");
            assert_eq!(serde_json::from_str::<InventorySummary>(&text).ok(), Some(s), "{text}");
        }
    }

    #[test]
    fn the_field_names_are_the_contract() {
        let text = summary(Some(128)).to_annotation();
        for field in ["\"version\":1", "\"pkey_capacity\":128", "\"pkeys_capacity\":128", "\"vfs_enabled\":8"] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        assert!(!summary(None).to_annotation().contains("pkey_capacity\":"), "absent, not null");
    }

    #[test]
    fn an_unreadable_or_odd_capacity_means_unknown() {
        assert_eq!(pkey_capacity(r#"{"pkey_capacity": 0}"#), None);
        assert_eq!(pkey_capacity(r#"{"pkey_capacity": 70000}"#), None);
        assert_eq!(pkey_capacity(r#"{"pkey_capacity": -1}"#), None);
        assert_eq!(pkey_capacity(r#"{"pkey_capacity": [128]}"#), None);
        assert_eq!(pkey_capacity("garbage"), None);
        assert_eq!(pkey_capacity(r#"{"pkey_capacity": " 64 "}"#), Some(64));
        assert_eq!(pkey_capacity(r#"{"min_pkey_capacity": 32}"#), Some(32));
        assert_eq!(pkey_capacity(r#"{"pkey_capacity": 128, "min_pkey_capacity": 32}"#), Some(32));
    }

    #[test]
    fn per_hca_capacities_take_each_hcas_smallest_port_and_skip_what_is_unusable() {
        let doc = r#"{"version":1,"ports":[
            {"hca":"mlx5_0","port":1,"pkeys_capacity":128},
            {"hca":"mlx5_0","port":2,"pkeys_capacity":64},
            {"hca":"mlx5_4","port":1,"pkeys_capacity":"16"},
            {"hca":"","port":1,"pkeys_capacity":8},
            {"hca":"mlx5_5","port":1,"pkeys_capacity":0},
            {"hca":"mlx5_6","port":1,"pkeys_capacity":70000}]}"#;
        let caps = hca_capacities(doc);
        assert_eq!(caps.get("mlx5_0"), Some(&64));
        assert_eq!(caps.len(), 1, "a string, an empty name, 0 and >65535 are not capacities: {caps:?}");
        assert!(hca_capacities("not json").is_empty());
        // What the agent writes reads back.
        let mut s = summary(Some(32));
        s.ports = vec![PortSummary { hca: "mlx5_2".into(), port: 1, pkeys_capacity: 32, ..PortSummary::default() }];
        assert_eq!(hca_capacities(&s.to_annotation()).get("mlx5_2"), Some(&32));
    }
}
