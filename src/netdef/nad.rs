//! NetworkAttachmentDefinition config → `IbNetwork`, plus the partition-attribute annotations.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{NetdefError, NetworkKey};
use crate::ib::{AttributeError, Membership, PKey, PartitionSpec, Qos, shown};

/// Longest excerpt of a wrongly typed JSON value quoted in a message.
const VALUE_CHARS: usize = 40;

pub use crate::wire::keys::ANNOTATION_INDEX0;
pub use crate::wire::keys::ANNOTATION_IP_OVER_IB;
pub use crate::wire::keys::ANNOTATION_MEMBERSHIP;
pub use crate::wire::keys::ANNOTATION_MTU_LIMIT;
pub use crate::wire::keys::ANNOTATION_PKEY;
pub use crate::wire::keys::ANNOTATION_RATE_LIMIT;
pub use crate::wire::keys::ANNOTATION_SERVICE_LEVEL;
pub use crate::wire::keys::AUTO_PKEY;

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
    /// `Some` when the network asks for an automatic pkey (`fabric-sync.io/pkey: auto`); then
    /// `partition` is `None` until the engine resolves the pkey from the partition ledger.
    pub auto: Option<AutoPkey>,
    /// The annotations that route its attachments to a fabric ([`FABRIC_ANNOTATION`],
    /// [`RESOURCE_ANNOTATION`]), as the tenant wrote them (issue 17).
    pub fabric_hints: BTreeMap<String, String>,
}

pub use crate::wire::keys::{FABRIC_ANNOTATION, RESOURCE_ANNOTATION};

/// The routing annotations of a network object.
pub fn fabric_hints(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    [FABRIC_ANNOTATION, RESOURCE_ANNOTATION]
        .into_iter()
        .filter_map(|k| annotations.get(k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

impl IbNetwork {
    pub fn pkey(&self) -> Option<PKey> {
        self.partition.map(|p| p.pkey)
    }

    /// This network with the pkey fabric-sync assigned to it (its attributes from the annotations).
    pub fn with_assigned_pkey(&self, pkey: PKey) -> IbNetwork {
        let mut n = self.clone();
        n.partition = self.auto.as_ref().map(|a| a.spec(pkey));
        n
    }
}

/// An automatic network's partition attributes (membership, index0, IPoIB, QoS), waiting for
/// the pkey; and whether its object is being deleted (then its members are removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoPkey {
    /// The attributes; its pkey is a placeholder that [`AutoPkey::spec`] always replaces.
    attributes: PartitionSpec,
    pub deleting: bool,
}

impl AutoPkey {
    /// The partition for `pkey` with this network's attributes.
    pub fn spec(&self, pkey: PKey) -> PartitionSpec {
        PartitionSpec { pkey, ..self.attributes }
    }
}

/// Reads `fabric-sync.io/pkey`. `Ok(None)`: absent (the network's own pkey, if any, applies).
/// `auto` with a pkey in the CNI config, or any other value, is refused naming the fix.
pub(super) fn auto_pkey(
    network: &str,
    pkey_field: &str,
    pkey_text: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<AutoPkey>, NetdefError> {
    let Some(value) = annotations.get(ANNOTATION_PKEY) else {
        return Ok(None);
    };
    let bad = |detail: String| NetdefError::Annotation {
        network: network.into(),
        annotation: ANNOTATION_PKEY.into(),
        value: shown(value),
        detail,
    };
    if value.trim() != AUTO_PKEY {
        return Err(bad(format!(
            "the only value is \"{AUTO_PKEY}\" (fabric-sync assigns a pkey); for a fixed pkey remove the annotation and set {pkey_field}"
        )));
    }
    if let Some(text) = pkey_text {
        return Err(bad(format!(
            "conflicts with {pkey_field} {text:?}: a network has one pkey; remove the annotation or set {pkey_field} to \"\""
        )));
    }
    // Any valid tenant pkey serves as the placeholder: the attributes are what is read here.
    let attributes = partition_spec(network, pkey_field, Some("0x1"), annotations)?
        .unwrap_or_else(|| PartitionSpec::new(PKey::DEFAULT));
    Ok(Some(AutoPkey { attributes, deleting: false }))
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
    let (plugin, path) = match find_ib_sriov(&value) {
        IbSriov::None => return Ok(None),
        IbSriov::One(plugin, path) => (plugin, path),
        IbSriov::Several(paths) => {
            return Err(NetdefError::Field {
                network,
                field: "spec.config.plugins".into(),
                detail: format!(
                    "has {} ib-sriov entries ({}): fabric-sync cannot tell whose pkey and capabilities apply; keep one ib-sriov plugin per NetworkAttachmentDefinition (one NAD per InfiniBand network)",
                    paths.len(),
                    paths.join(", ")
                ),
            });
        }
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
                detail: pkey_not_a_string(other, "\"pkey\": "),
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
                detail: format!("is {}, not true or false", json_excerpt(other)),
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
                detail: format!("is {}, not true or false", json_excerpt(other)),
            });
        }
    };
    let auto = auto_pkey(&network, &field("pkey"), pkey_text, annotations)?;
    let partition = partition_spec(&network, &field("pkey"), pkey_text, annotations)?;
    Ok(Some(IbNetwork {
        key,
        source: NetworkSource::Nad,
        partition,
        guid_via: if capability { GuidVia::RuntimeConfig } else { GuidVia::CniArgs },
        ib_kubernetes_enabled,
        auto,
        fabric_hints: fabric_hints(annotations),
    }))
}

/// Where a NAD config holds its ib-sriov plugin.
enum IbSriov<'a> {
    None,
    /// The plugin object and its path below `spec.config` (`""` or `.plugins[i]`).
    One(&'a Value, String),
    /// More than one: the paths of all of them.
    Several(Vec<String>),
}

/// The ib-sriov plugin object: the config itself, or the one of its `plugins[]`.
fn find_ib_sriov(config: &Value) -> IbSriov<'_> {
    let is_ib = |v: &Value| v.get("type").and_then(Value::as_str) == Some(IB_SRIOV);
    let mut found: Vec<(&Value, String)> = Vec::new();
    if is_ib(config) {
        found.push((config, String::new()));
    }
    if let Some(plugins) = config.get("plugins").and_then(Value::as_array) {
        found.extend(plugins.iter().enumerate().filter(|(_, p)| is_ib(p)).map(|(i, p)| (p, format!(".plugins[{i}]"))));
    }
    match found.len() {
        0 => IbSriov::None,
        1 => {
            let (plugin, path) = found.swap_remove(0);
            IbSriov::One(plugin, path)
        }
        _ => IbSriov::Several(
            found
                .into_iter()
                .map(|(_, p)| if p.is_empty() { "spec.config".into() } else { format!("spec.config{p}") })
                .collect(),
        ),
    }
}

/// A JSON value as a short excerpt for messages (compact, at most 40 characters).
pub(super) fn json_excerpt(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// What to say about a pkey that is JSON but not a string; `key` is how the example writes
/// the field (`"pkey": ` in a NAD's JSON, `pkey: ` in a SpiderMultusConfig's YAML).
/// Suggestions are only values that parse as tenant pkeys.
pub(super) fn pkey_not_a_string(v: &Value, key: &str) -> String {
    let example = |p: &str| format!("{key}\"{p}\"");
    let generic = format!("write the pkey as a quoted hex string, e.g. {}", example("0x1000"));
    match v {
        Value::Number(n) => {
            let digits = n.to_string();
            let as_hex = (digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("0x{digits}"))
                .filter(|p| PKey::parse_tenant(p).is_ok());
            let as_dec = n.as_u64().map(|d| format!("0x{d:x}")).filter(|p| PKey::parse_tenant(p).is_ok());
            let hint = match (as_hex, as_dec) {
                (Some(h), Some(d)) if h == d => format!("write it quoted: {}", example(&h)),
                (Some(h), Some(d)) => format!(
                    "write it quoted with a 0x prefix: {} if you meant hex, {} if you meant decimal {digits}",
                    example(&h),
                    example(&d)
                ),
                (Some(h), None) => format!("write it quoted with a 0x prefix: {} if you meant hex", example(&h)),
                (None, Some(d)) => {
                    format!("write it quoted with a 0x prefix: {} if you meant decimal {digits}", example(&d))
                }
                (None, None) => generic,
            };
            format!("is the number {}, not a string: {hint}", json_excerpt(v))
        }
        Value::Array(items) => {
            let hint = match items.as_slice() {
                [Value::String(one)] if PKey::parse_tenant(one).is_ok() => {
                    format!("write it as a string, not a list: {}", example(one.trim()))
                }
                _ => generic,
            };
            format!("is a list ({}), not a string: a network has exactly one pkey; {hint}", json_excerpt(v))
        }
        Value::Object(_) => format!("is an object ({}), not a string: {generic}", json_excerpt(v)),
        Value::Bool(b) => format!("is {b}, not a string: {generic}"),
        // Strings and null are handled by the callers.
        Value::String(_) | Value::Null => generic,
    }
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
        value: shown(value),
        detail,
    };
    let mut spec = PartitionSpec::new(pkey);
    if let Some((k, v)) = ann(ANNOTATION_MEMBERSHIP) {
        spec.membership = v.parse().map_err(|e: AttributeError| bad(k, v, e.to_string()))?;
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
        qos.mtu_limit = Some(v.parse().map_err(|e: AttributeError| bad(k, v, e.to_string()))?);
    }
    if let Some((k, v)) = ann(ANNOTATION_SERVICE_LEVEL) {
        qos.service_level = Some(v.parse().map_err(|e: AttributeError| bad(k, v, e.to_string()))?);
    }
    if let Some((k, v)) = ann(ANNOTATION_RATE_LIMIT) {
        qos.rate_limit = Some(v.parse().map_err(|e: AttributeError| bad(k, v, e.to_string()))?);
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
    use crate::ib::{MtuLimit, RateLimit, ServiceLevel};

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
        assert_eq!(p.qos.service_level, ServiceLevel::new(3));
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

    #[test]
    fn two_ib_sriov_plugins_make_the_nad_invalid() {
        let err =
            nad(r#"{"plugins":[{"type":"ib-sriov","pkey":"0x5"},{"type":"tuning"},{"type":"ib-sriov","pkey":"0x6"}]}"#)
                .unwrap_err();
        assert_eq!(err.reason(), "InvalidNetwork");
        let msg = err.to_string();
        assert!(msg.contains("spec.config.plugins has 2 ib-sriov entries"), "{msg}");
        assert!(msg.contains("spec.config.plugins[0], spec.config.plugins[2]"), "{msg}");
        let err = nad(r#"{"type":"ib-sriov","pkey":"0x5","plugins":[{"type":"ib-sriov"}]}"#).unwrap_err();
        assert!(err.to_string().contains("(spec.config, spec.config.plugins[0])"), "{err}");
    }

    #[test]
    fn a_pkey_of_the_wrong_json_type_gets_a_suggestion_that_parses() {
        let detail = |pkey: &str| match nad(&format!(r#"{{"type":"ib-sriov","pkey":{pkey}}}"#)) {
            Err(NetdefError::Field { field, detail, .. }) => {
                assert_eq!(field, "spec.config.pkey");
                detail
            }
            other => panic!("{pkey}: {other:?}"),
        };
        let d = detail(r#"["0x6"]"#);
        assert!(d.starts_with(r#"is a list (["0x6"]), not a string"#) && d.ends_with(r#""pkey": "0x6""#), "{d}");
        assert!(!d.contains("0x["), "{d}");
        assert!(detail(r#"{"value":"0x6"}"#).starts_with("is an object"));
        assert!(detail("true").starts_with("is true, not a string: write the pkey as a quoted hex string"));
        let d = detail("4096");
        assert!(d.contains(r#""pkey": "0x4096" if you meant hex, "pkey": "0x1000" if you meant decimal 4096"#), "{d}");
        assert!(detail("5").ends_with(r#"write it quoted: "pkey": "0x5""#));
        for hopeless in ["0", "-5", "1.5", "99999999", "32767"] {
            assert!(detail(hopeless).ends_with(r#"e.g. "pkey": "0x1000""#), "{hopeless}: {}", detail(hopeless));
        }
        // Every quoted suggestion is a valid tenant pkey.
        for input in [r#"["0x6"]"#, r#"["6"]"#, "10", "4096", "20000", "8005", "[]", "{}", "false"] {
            let d = detail(input);
            for quoted in d.split('"').filter(|q| q.starts_with("0x")) {
                assert!(PKey::parse_tenant(quoted).is_ok(), "{input}: {quoted} in {d}");
            }
        }
        let huge = format!("[{}]", vec!["\"0x6\""; 500].join(","));
        assert!(detail(&huge).len() < 300);
    }

    #[test]
    fn partition_attributes_ufm_refuses_name_the_annotation_value_and_accepted_values() {
        let with = |k: &str, v: &str| {
            let ann: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into_iter().collect();
            parse_nad("ns", "ib", &ann, r#"{"type":"ib-sriov","pkey":"0x10"}"#)
        };
        let msg = with(ANNOTATION_RATE_LIMIT, "150").unwrap_err().to_string();
        assert!(msg.contains(r#"annotation fabric-sync.io/rate-limit="150""#), "{msg}");
        assert!(msg.contains("2.5, 5, 10, 14, 20, 25, 30, 40, 56, 60, 80, 100, 112, 120, 168, 200, 300"), "{msg}");
        let msg = with(ANNOTATION_MTU_LIMIT, "8").unwrap_err().to_string();
        assert!(msg.contains(r#"fabric-sync.io/mtu-limit="8""#) && msg.contains("use 2 (2048-byte MTU) or 4"), "{msg}");
        let msg = with(ANNOTATION_SERVICE_LEVEL, "16").unwrap_err().to_string();
        assert!(msg.contains(r#"fabric-sync.io/service-level="16""#) && msg.contains("0 to 15"), "{msg}");
        for rate in RateLimit::accepted() {
            let n = with(ANNOTATION_RATE_LIMIT, &rate.to_string()).unwrap().unwrap();
            assert_eq!(n.partition.unwrap().qos.rate_limit, Some(rate));
        }
        let long = "7".repeat(5000);
        assert!(with(ANNOTATION_RATE_LIMIT, &long).unwrap_err().to_string().len() < 400);
    }
}
