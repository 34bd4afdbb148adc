//! Spiderpool SpiderMultusConfig (`cniType: ib-sriov`) → `IbNetwork`, validated with errors
//! that name the SMC and the field.

use std::collections::BTreeMap;

use serde_json::Value;

use super::nad::{RESOURCE_ANNOTATION, auto_pkey, fabric_hints, json_excerpt, partition_spec, pkey_not_a_string};
use super::{GuidVia, IbNetwork, NetdefError, NetworkKey, NetworkSource};

pub const SMC_API_VERSION: &str = "spiderpool.spidernet.io/v2beta1";
pub const SMC_KIND: &str = "SpiderMultusConfig";

/// Reads a SpiderMultusConfig's `spec`. `Ok(None)` when its `cniType` is not `ib-sriov`.
/// The NAD Spiderpool renders from it has the SMC's name and carries the same pkey.
pub fn parse_smc(
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
    spec: &Value,
) -> Result<Option<IbNetwork>, NetdefError> {
    if spec.get("cniType").and_then(Value::as_str) != Some("ib-sriov") {
        return Ok(None);
    }
    let network = format!("{SMC_KIND} {namespace}/{name}");
    let field_err =
        |field: &str, detail: String| NetdefError::Field { network: network.clone(), field: field.into(), detail };
    let ib = match spec.get("ibsriov") {
        None | Some(Value::Null) => &Value::Null,
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(field_err("spec.ibsriov", "must be an object".into())),
    };
    let pkey = match ib.get("pkey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(field_err("spec.ibsriov.pkey", pkey_not_a_string(other, "pkey: ")));
        }
    };
    let mut enabled = false;
    for key in ["enableIbKubernetes", "ibKubernetesEnabled"] {
        match ib.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => enabled |= *b,
            Some(other) => {
                return Err(field_err(
                    &format!("spec.ibsriov.{key}"),
                    format!("is {}, not true or false", json_excerpt(other)),
                ));
            }
        }
    }
    let auto = auto_pkey(&network, "spec.ibsriov.pkey", pkey, annotations)?;
    let partition = partition_spec(&network, "spec.ibsriov.pkey", pkey, annotations)?;
    Ok(Some(IbNetwork {
        key: NetworkKey::new(namespace, name),
        source: NetworkSource::SpiderMultusConfig,
        partition,
        // Spiderpool renders no capabilities, so the GUID travels in cni-args.
        guid_via: GuidVia::CniArgs,
        ib_kubernetes_enabled: enabled,
        auto,
        fabric_hints: smc_hints(annotations, ib),
    }))
}

/// The SMC's routing hints: its annotations, and `spec.ibsriov.resourceName` (what Spiderpool
/// renders into the NAD's resourceName annotation) unless the annotation names one.
fn smc_hints(annotations: &BTreeMap<String, String>, ib: &Value) -> BTreeMap<String, String> {
    let mut hints = fabric_hints(annotations);
    if let Some(res) = ib.get("resourceName").and_then(Value::as_str).filter(|r| !r.trim().is_empty()) {
        hints.entry(RESOURCE_ANNOTATION.to_string()).or_insert_with(|| res.to_string());
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smc(spec: Value) -> Result<Option<IbNetwork>, NetdefError> {
        parse_smc("gpu", "ib-net", &BTreeMap::new(), &spec)
    }

    #[test]
    fn ib_sriov_smc_becomes_a_network() {
        let n = smc(json!({"cniType":"ib-sriov","ibsriov":{"resourceName":"nvidia.com/ib","pkey":"0x1000","enableIbKubernetes":true}}))
            .unwrap()
            .unwrap();
        assert_eq!(n.key, NetworkKey::new("gpu", "ib-net"));
        assert_eq!(n.pkey().map(|p| p.value()), Some(0x1000));
        assert!(n.ib_kubernetes_enabled);
        assert_eq!(n.source, NetworkSource::SpiderMultusConfig);
    }

    #[test]
    fn old_field_name_is_accepted_and_other_types_ignored() {
        let n = smc(json!({"cniType":"ib-sriov","ibsriov":{"pkey":"","ibKubernetesEnabled":true}})).unwrap().unwrap();
        assert!(n.ib_kubernetes_enabled && n.partition.is_none());
        assert_eq!(smc(json!({"cniType":"macvlan"})), Ok(None));
    }

    #[test]
    fn unquoted_documentation_pkey_is_refused_naming_smc_and_field() {
        let err = smc(json!({"cniType":"ib-sriov","ibsriov":{"pkey":1000}})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("SpiderMultusConfig gpu/ib-net") && msg.contains("spec.ibsriov.pkey"), "{msg}");
        let err = smc(json!({"cniType":"ib-sriov","ibsriov":{"pkey":"1000"}})).unwrap_err();
        assert!(err.to_string().contains("spec.ibsriov.pkey") && err.to_string().contains("0x1000"), "{err}");
        let err = smc(json!({"cniType":"ib-sriov","ibsriov":{"pkey":["0x6"]}})).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(r#"a network has exactly one pkey; write it as a string, not a list: pkey: "0x6""#),
            "{err}"
        );
    }
}
