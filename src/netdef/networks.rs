//! The Multus `k8s.v1.cni.cncf.io/networks` pod annotation: text and JSON forms in, JSON out.
//!
//! Each selection element is kept as its whole JSON object so that fields we do not know
//! (ips, mac, bandwidth, future additions) survive our rewrite untouched.

use serde_json::{Map, Value};

use super::{NetdefError, is_dns1123_label, is_dns1123_subdomain};
use crate::ib::Guid;

pub use crate::wire::keys::NETWORKS_ANNOTATION;
/// Element field that carries a GUID as CNI runtime config (`capabilities.infinibandGUID`).
pub const INFINIBAND_GUID: &str = "infiniband-guid";
pub const CNI_ARG_GUID: &str = "guid";
pub const CNI_ARG_PKEY: &str = "pkey";
/// The flag ib-sriov-cni waits for before it programs the VF.
pub use crate::wire::keys::CNI_ARG_CONFIGURED;
pub const CONFIGURED_VALUE: &str = "configured";

const CNI_ARGS: &str = "cni-args";

/// One element of the networks annotation, kept whole.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSelection {
    fields: Map<String, Value>,
}

impl NetworkSelection {
    pub fn name(&self) -> &str {
        self.str_field("name").unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.str_field("namespace")
    }

    /// Interface name asked for (`@iface` or `"interface"`).
    pub fn interface(&self) -> Option<&str> {
        self.str_field("interface")
    }

    pub fn infiniband_guid(&self) -> Option<&str> {
        self.str_field(INFINIBAND_GUID)
    }

    pub fn cni_arg(&self, key: &str) -> Option<&str> {
        self.fields.get(CNI_ARGS)?.as_object()?.get(key)?.as_str()
    }

    /// Whether ib-kubernetes' `configured` flag is set on this element.
    pub fn is_configured(&self) -> bool {
        self.cni_arg(CNI_ARG_CONFIGURED) == Some(CONFIGURED_VALUE)
    }

    /// The GUID the element asks for: `infiniband-guid` wins over `cni-args.guid`, as in ib-sriov-cni.
    /// `Ok(None)` when neither is set.
    pub fn requested_guid(&self) -> Result<Option<Guid>, NetdefError> {
        let (field, raw) = match (self.infiniband_guid(), self.cni_arg(CNI_ARG_GUID)) {
            (Some(g), _) => (INFINIBAND_GUID, g),
            (None, Some(g)) => ("cni-args.guid", g),
            (None, None) => return Ok(None),
        };
        raw.parse().map(Some).map_err(|source| NetdefError::Guid {
            element: format!("network {:?}", self.name()),
            field: field.into(),
            source,
        })
    }

    pub fn set_cni_arg(&mut self, key: &str, value: &str) {
        let args = self.fields.entry(CNI_ARGS).or_insert_with(|| Value::Object(Map::new()));
        if !args.is_object() {
            *args = Value::Object(Map::new());
        }
        if let Value::Object(map) = args {
            map.insert(key.to_string(), Value::String(value.to_string()));
        }
    }

    pub fn remove_cni_arg(&mut self, key: &str) {
        if let Some(Value::Object(map)) = self.fields.get_mut(CNI_ARGS) {
            map.remove(key);
        }
    }

    pub fn set_infiniband_guid(&mut self, guid: Option<Guid>) {
        match guid {
            Some(g) => self.fields.insert(INFINIBAND_GUID.into(), Value::String(g.to_string())),
            None => self.fields.remove(INFINIBAND_GUID),
        };
    }

    /// The element's JSON object as it will be written back.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.fields
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    fn from_json(index: usize, value: Value) -> Result<NetworkSelection, NetdefError> {
        let err = |msg: String| NetdefError::Networks(format!("element {index}: {msg}"));
        let Value::Object(fields) = value else {
            return Err(err("is not a JSON object; each element needs at least {\"name\": \"<nad>\"}".into()));
        };
        match fields.get("name") {
            Some(Value::String(n)) if is_dns1123_subdomain(n) => {}
            Some(Value::String(n)) => {
                return Err(err(format!("name {n:?} is not a valid NetworkAttachmentDefinition name")));
            }
            Some(_) => return Err(err("\"name\" must be a string".into())),
            None => return Err(err("has no \"name\"".into())),
        }
        for key in ["namespace", "interface", INFINIBAND_GUID] {
            if let Some(v) = fields.get(key) {
                if !v.is_string() {
                    return Err(err(format!("{key:?} must be a string")));
                }
            }
        }
        if let Some(ns) = fields.get("namespace").and_then(Value::as_str) {
            if !is_dns1123_label(ns) {
                return Err(err(format!("namespace {ns:?} is not a valid namespace name")));
            }
        }
        match fields.get(CNI_ARGS) {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(err("\"cni-args\" must be an object of strings".into())),
        }
        Ok(NetworkSelection { fields })
    }

    fn from_text(index: usize, item: &str) -> Result<NetworkSelection, NetdefError> {
        let err = |msg: String| NetdefError::Networks(format!("element {index} {item:?}: {msg}"));
        let (rest, interface) = match item.split_once('@') {
            Some((r, i)) => (r, Some(i)),
            None => (item, None),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, rest),
        };
        if !is_dns1123_subdomain(name) {
            return Err(err(format!("name {name:?} is not a valid NetworkAttachmentDefinition name")));
        }
        let mut fields = Map::new();
        if let Some(ns) = namespace {
            if !is_dns1123_label(ns) {
                return Err(err(format!("namespace {ns:?} is not a valid namespace name")));
            }
            fields.insert("namespace".into(), Value::String(ns.into()));
        }
        fields.insert("name".into(), Value::String(name.into()));
        if let Some(i) = interface {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', ':']) {
                return Err(err(format!("interface {i:?} is not a valid Linux interface name")));
            }
            fields.insert("interface".into(), Value::String(i.into()));
        }
        Ok(NetworkSelection { fields })
    }
}

/// Parses the annotation as Multus does: JSON when it contains `[`, `{` or `"`, else the
/// comma-separated `[ns/]name[@iface]` text form.
pub fn parse_networks(annotation: &str) -> Result<Vec<NetworkSelection>, NetdefError> {
    let text = annotation.trim();
    if text.contains(['[', '{', '"']) {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| NetdefError::Networks(format!("not valid JSON ({e}); write a JSON list of objects")))?;
        let Value::Array(items) = value else {
            return Err(NetdefError::Networks("JSON form must be a list, e.g. [{\"name\":\"ib-net\"}]".into()));
        };
        items.into_iter().enumerate().map(|(i, v)| NetworkSelection::from_json(i, v)).collect()
    } else {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        text.split(',').enumerate().map(|(i, item)| NetworkSelection::from_text(i, item.trim())).collect()
    }
}

/// Writes the annotation back in its JSON form (what ib-sriov-cni's contract expects).
pub fn encode_networks(elements: &[NetworkSelection]) -> String {
    let list: Vec<&Map<String, Value>> = elements.iter().map(|e| &e.fields).collect();
    // Serialising maps of JSON values cannot fail.
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form_parses_namespace_name_and_interface() {
        let nets = parse_networks("tenant-a/ib-net@net1, ib-net2").unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!(
            (nets[0].namespace(), nets[0].name(), nets[0].interface()),
            (Some("tenant-a"), "ib-net", Some("net1"))
        );
        assert_eq!((nets[1].namespace(), nets[1].name(), nets[1].interface()), (None, "ib-net2", None));
    }

    #[test]
    fn json_form_keeps_unknown_fields_and_types() {
        let src = r#"[{"name":"ib","ips":["10.0.0.1/24"],"bandwidth":{"ingressRate":1},"x-future":[1,{"a":null}],"cni-args":{"guid":"02:00:00:00:00:00:00:01","n":5}}]"#;
        let mut nets = parse_networks(src).unwrap();
        nets[0].set_cni_arg(CNI_ARG_CONFIGURED, CONFIGURED_VALUE);
        let back: Value = serde_json::from_str(&encode_networks(&nets)).unwrap();
        assert_eq!(back[0]["ips"], serde_json::json!(["10.0.0.1/24"]));
        assert_eq!(back[0]["x-future"], serde_json::json!([1, {"a": null}]));
        assert_eq!(back[0]["cni-args"]["n"], serde_json::json!(5));
        assert_eq!(back[0]["cni-args"]["mellanox.infiniband.app"], serde_json::json!("configured"));
    }

    #[test]
    fn unknown_numbers_survive_a_rewrite_exactly() {
        // Found by fuzzing: without exact float parsing this came back one ULP off.
        let src = r#"[{"name":"ib-sriov","type":-4.9986154364132914e+151,"big":18446744073709551615}]"#;
        let nets = parse_networks(src).unwrap();
        let back = parse_networks(&encode_networks(&nets)).unwrap();
        assert_eq!(back, nets);
        let v: Value = serde_json::from_str(&encode_networks(&nets)).unwrap();
        assert_eq!(v[0]["type"].as_f64(), Some(-4.9986154364132914e+151));
        assert_eq!(v[0]["big"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn requested_guid_prefers_infiniband_guid() {
        let nets = parse_networks(
            r#"[{"name":"a","infiniband-guid":"02:00:00:00:00:00:00:02","cni-args":{"guid":"02:00:00:00:00:00:00:03"}}]"#,
        )
        .unwrap();
        assert_eq!(nets[0].requested_guid().unwrap(), "02:00:00:00:00:00:00:02".parse().ok());
        let bad = parse_networks(r#"[{"name":"a","cni-args":{"guid":"zz"}}]"#).unwrap();
        let err = bad[0].requested_guid().unwrap_err();
        assert!(err.to_string().contains("cni-args.guid"), "{err}");
    }

    #[test]
    fn set_and_clear_guid_fields() {
        let mut nets = parse_networks("ib").unwrap();
        let g: Guid = "02:00:00:00:00:00:00:09".parse().unwrap();
        nets[0].set_infiniband_guid(Some(g));
        nets[0].set_cni_arg(CNI_ARG_GUID, &g.to_string());
        assert_eq!(nets[0].infiniband_guid(), Some("02:00:00:00:00:00:00:09"));
        nets[0].set_infiniband_guid(None);
        nets[0].remove_cni_arg(CNI_ARG_GUID);
        assert_eq!(nets[0].requested_guid().unwrap(), None);
    }

    #[test]
    fn empty_annotation_is_no_networks() {
        assert!(parse_networks("  ").unwrap().is_empty());
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,10}[a-z0-9]"
    }

    proptest! {
        #[test]
        fn text_form_round_trips_through_json(
            items in proptest::collection::vec((proptest::option::of(label()), label(), proptest::option::of("[a-z][a-z0-9]{0,8}")), 1..5)
        ) {
            let text: Vec<String> = items.iter().map(|(ns, n, i)| {
                let mut s = String::new();
                if let Some(ns) = ns { s.push_str(ns); s.push('/'); }
                s.push_str(n);
                if let Some(i) = i { s.push('@'); s.push_str(i); }
                s
            }).collect();
            let parsed = parse_networks(&text.join(",")).unwrap();
            let reparsed = parse_networks(&encode_networks(&parsed)).unwrap();
            prop_assert_eq!(&parsed, &reparsed);
            for ((ns, n, i), e) in items.iter().zip(&parsed) {
                prop_assert_eq!(e.namespace(), ns.as_deref());
                prop_assert_eq!(e.name(), n.as_str());
                prop_assert_eq!(e.interface(), i.as_deref());
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,60}") {
            let _ = parse_networks(&s);
        }
    }
}
