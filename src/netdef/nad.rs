//! NetworkAttachmentDefinition config → `IbNetwork`, plus the partition-attribute annotations.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{NetdefError, NetworkKey};
use crate::ib::{Membership, PKey, PartitionSpec, Qos};

pub const ANNOTATION_MEMBERSHIP: &str = "fabric-sync.io/membership";
pub const ANNOTATION_INDEX0: &str = "fabric-sync.io/index0";
pub const ANNOTATION_IP_OVER_IB: &str = "fabric-sync.io/ip-over-ib";
pub const ANNOTATION_MTU_LIMIT: &str = "fabric-sync.io/mtu-limit";
pub const ANNOTATION_SERVICE_LEVEL: &str = "fabric-sync.io/service-level";
pub const ANNOTATION_RATE_LIMIT: &str = "fabric-sync.io/rate-limit";

const IB_SRIOV: &str = "ib-sriov";

/// Where the GUID goes in the pod's network selection element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuidVia {
    /// `cni-args.guid` (the plugin does not declare the `infinibandGUID` capability).
    CniArgs,
    /// `infiniband-guid`, delivered as runtime config (`capabilities.infinibandGUID: true`).
    RuntimeConfig,
}

/// Which kind of object defined the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkSource {
    Nad,
    SpiderMultusConfig,
}

/// An InfiniBand SR-IOV network as fabric-sync needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IbNetwork {
    pub key: NetworkKey,
    pub source: NetworkSource,
    /// `None` when the network names no pkey: GUIDs are still assigned, nothing goes to UFM.
    pub partition: Option<PartitionSpec>,
    pub guid_via: GuidVia,
    pub ib_kubernetes_enabled: bool,
}

impl IbNetwork {
    pub fn pkey(&self) -> Option<PKey> {
        self.partition.map(|p| p.pkey)
    }
}

/// Reads a NAD. `Ok(None)`: not an ib-sriov network (not ours, not an error).
/// An unparseable config is ours only if it mentions ib-sriov.
pub fn parse_nad(
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
    config: &str,
) -> Result<Option<IbNetwork>, NetdefError> {
    let key = NetworkKey::new(namespace, name);
    let network = format!("NetworkAttachmentDefinition {key}");
    if config.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = match serde_json::from_str(config) {
        Ok(v) => v,
        Err(e) if config.contains(IB_SRIOV) => {
            return Err(NetdefError::ConfigJson { network, detail: e.to_string() });
        }
        Err(_) => return Ok(None),
    };
    let Some((plugin, path)) = find_ib_sriov(&value) else {
        return Ok(None);
    };
    let field = |f: &str| format!("spec.config{path}.{f}");
    let pkey_text = match plugin.get("pkey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(NetdefError::Field {
                network,
                field: field("pkey"),
                detail: format!("is {other}, not a string: write it quoted, e.g. \"pkey\": \"0x{other}\""),
            });
        }
    };
    let capability = match plugin.get("capabilities").and_then(|c| c.get("infinibandGUID")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(NetdefError::Field {
                network,
                field: field("capabilities.infinibandGUID"),
                detail: format!("is {other}, not true or false"),
            });
        }
    };
    let ib_kubernetes_enabled = match plugin.get("ibKubernetesEnabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(NetdefError::Field {
                network,
                field: field("ibKubernetesEnabled"),
                detail: format!("is {other}, not true or false"),
            });
        }
    };
    let partition = partition_spec(&network, &field("pkey"), pkey_text, annotations)?;
    Ok(Some(IbNetwork {
        key,
        source: NetworkSource::Nad,
        partition,
        guid_via: if capability { GuidVia::RuntimeConfig } else { GuidVia::CniArgs },
        ib_kubernetes_enabled,
    }))
}

/// The ib-sriov plugin object: the config itself, or the first of its `plugins[]`.
fn find_ib_sriov(config: &Value) -> Option<(&Value, String)> {
    if config.get("type").and_then(Value::as_str) == Some(IB_SRIOV) {
        return Some((config, String::new()));
    }
    config.get("plugins")?.as_array()?.iter().enumerate().find_map(|(i, p)| {
        (p.get("type").and_then(Value::as_str) == Some(IB_SRIOV)).then(|| (p, format!(".plugins[{i}]")))
    })
}

/// Builds the partition from a pkey text and the `fabric-sync.io/*` annotations.
/// Shared by NADs and SpiderMultusConfigs.
pub(super) fn partition_spec(
    network: &str,
    pkey_field: &str,
    pkey_text: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<PartitionSpec>, NetdefError> {
    let Some(text) = pkey_text else {
        return Ok(None);
    };
    let (pkey, bit) = PKey::parse_tenant(text).map_err(|source| NetdefError::PKey {
        network: network.into(),
        field: pkey_field.into(),
        source,
    })?;
    let ann = |key: &'static str| annotations.get(key).map(|v| (key, v.as_str()));
    let bad = |key: &str, value: &str, detail: String| NetdefError::Annotation {
        network: network.into(),
        annotation: key.into(),
        value: value.into(),
        detail,
    };
    let mut spec = PartitionSpec::new(pkey);
    if let Some((k, v)) = ann(ANNOTATION_MEMBERSHIP) {
        spec.membership = v.parse().map_err(|e| bad(k, v, e))?;
        if bit == Some(Membership::Full) && spec.membership == Membership::Limited {
            return Err(bad(
                k,
                v,
                format!(
                    "conflicts with pkey {text:?}, whose 0x8000 bit means full membership; drop the bit or the annotation"
                ),
            ));
        }
    }
    if let Some((k, v)) = ann(ANNOTATION_INDEX0) {
        spec.index0 = parse_bool(v).map_err(|e| bad(k, v, e))?;
    }
    if let Some((k, v)) = ann(ANNOTATION_IP_OVER_IB) {
        spec.ip_over_ib = parse_bool(v).map_err(|e| bad(k, v, e))?;
    }
    let mut qos = Qos::default();
    if let Some((k, v)) = ann(ANNOTATION_MTU_LIMIT) {
        qos.mtu_limit = Some(v.parse().map_err(|e| bad(k, v, e))?);
    }
    if let Some((k, v)) = ann(ANNOTATION_SERVICE_LEVEL) {
        qos.service_level = Some(match v.trim().parse::<u8>() {
            Ok(sl) if sl <= 15 => sl,
            _ => return Err(bad(k, v, "must be a service level from 0 to 15".into())),
        });
    }
    if let Some((k, v)) = ann(ANNOTATION_RATE_LIMIT) {
        qos.rate_limit = Some(v.parse().map_err(|e| bad(k, v, e))?);
    }
    spec.qos = qos;
    Ok(Some(spec))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be \"true\" or \"false\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ib::{MtuLimit, RateLimit};

    fn nad(config: &str) -> Result<Option<IbNetwork>, NetdefError> {
        parse_nad("ns", "ib", &BTreeMap::new(), config)
    }

    #[test]
    fn top_level_ib_sriov_with_defaults_like_ib_kubernetes() {
        let n = nad(r#"{"cniVersion":"0.3.1","type":"ib-sriov","pkey":"0x1000"}"#).unwrap().unwrap();
        let p = n.partition.unwrap();
        assert_eq!(p.pkey.value(), 0x1000);
        assert_eq!((p.membership, p.index0, p.ip_over_ib), (Membership::Full, true, true));
        assert_eq!(n.guid_via, GuidVia::CniArgs);
        assert!(!n.ib_kubernetes_enabled);
    }

    #[test]
    fn ib_sriov_inside_plugins_with_capability() {
        let n = nad(r#"{"plugins":[{"type":"tuning"},{"type":"ib-sriov","pkey":"0x5","ibKubernetesEnabled":true,"capabilities":{"infinibandGUID":true}}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(n.pkey().map(PKey::value), Some(5));
        assert_eq!(n.guid_via, GuidVia::RuntimeConfig);
        assert!(n.ib_kubernetes_enabled);
    }

    #[test]
    fn empty_pkey_means_no_partition() {
        let n = nad(r#"{"type":"ib-sriov","pkey":""}"#).unwrap().unwrap();
        assert_eq!(n.partition, None);
    }

    #[test]
    fn other_cni_types_and_file_backed_nads_are_not_ours() {
        assert_eq!(nad(r#"{"type":"macvlan","master":"eth0"}"#), Ok(None));
        assert_eq!(nad(""), Ok(None));
        assert_eq!(nad("not json at all"), Ok(None));
        assert!(matches!(nad(r#"{"type":"ib-sriov","#), Err(NetdefError::ConfigJson { .. })));
    }

    #[test]
    fn annotations_set_partition_attributes() {
        let ann: BTreeMap<String, String> = [
            (ANNOTATION_MEMBERSHIP, "limited"),
            (ANNOTATION_INDEX0, "false"),
            (ANNOTATION_IP_OVER_IB, "False"),
            (ANNOTATION_MTU_LIMIT, "4096"),
            (ANNOTATION_SERVICE_LEVEL, "3"),
            (ANNOTATION_RATE_LIMIT, "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let n = parse_nad("ns", "ib", &ann, r#"{"type":"ib-sriov","pkey":"0x10"}"#).unwrap().unwrap();
        let p = n.partition.unwrap();
        assert_eq!((p.membership, p.index0, p.ip_over_ib), (Membership::Limited, false, false));
        assert_eq!(p.qos.mtu_limit, Some(MtuLimit::Mtu4k));
        assert_eq!(p.qos.service_level, Some(3));
        assert_eq!(p.qos.rate_limit, "200".parse::<RateLimit>().ok());
    }

    #[test]
    fn errors_name_the_field_and_network() {
        let err = nad(r#"{"type":"ib-sriov","pkey":1000}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ns/ib") && msg.contains("spec.config.pkey") && msg.contains("\"0x1000\""), "{msg}");
        let err = nad(r#"{"plugins":[{"type":"ib-sriov","pkey":"1000"}]}"#).unwrap_err();
        assert!(err.to_string().contains("spec.config.plugins[0].pkey"), "{err}");
        assert_eq!(err.reason(), "InvalidPKey");
    }
}
