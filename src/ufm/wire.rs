//! UFM's JSON: the request bodies fabric-sync sends (pkeys as `0x<lowercase hex>`, GUIDs as 16
//! lowercase hex digits) and tolerant parsing of what UFM answers. A GUID or pkey in an answer
//! that does not parse is skipped and logged; it never fails a whole listing.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{FabricListing, FabricMember};
use crate::ib::{Guid, Membership, PKey, PartitionSpec, Qos, ServiceLevel};

/// `POST /resources/pkeys`: make GUIDs members (creates the partition if absent).
#[derive(Debug, Serialize)]
pub(crate) struct AddGuidsBody<'a> {
    pub pkey: String,
    pub guids: Vec<String>,
    pub membership: &'a str,
    pub index0: bool,
    pub ip_over_ib: bool,
}

impl AddGuidsBody<'_> {
    pub fn new(spec: &PartitionSpec, guids: &[Guid]) -> AddGuidsBody<'static> {
        AddGuidsBody {
            pkey: spec.pkey.to_string(),
            guids: guids.iter().map(|g| g.to_ufm()).collect(),
            membership: spec.membership.as_str(),
            index0: spec.index0,
            ip_over_ib: spec.ip_over_ib,
        }
    }
}

/// `POST /actions/remove_guids_from_pkey` (legacy remove).
#[derive(Debug, Serialize)]
pub(crate) struct RemoveGuidsBody {
    pub pkey: String,
    pub guids: Vec<String>,
}

/// `POST /resources/pkeys/add`: an empty partition with its attributes and QoS. QoS fields
/// left `None` are omitted, so UFM applies its defaults.
#[derive(Debug, Serialize)]
pub(crate) struct CreatePkeyBody {
    pub pkey: String,
    pub index0: bool,
    pub ip_over_ib: bool,
    #[serde(flatten)]
    pub qos: QosFields,
    /// UFM 6.22 and later name the partition; older ones ignore the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_name: Option<String>,
}

/// `PUT /resources/pkeys/qos_conf`.
#[derive(Debug, Serialize)]
pub(crate) struct QosBody {
    pub pkey: String,
    #[serde(flatten)]
    pub qos: QosFields,
}

#[derive(Debug, Serialize)]
pub(crate) struct QosFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu_limit: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

impl From<&Qos> for QosFields {
    fn from(q: &Qos) -> QosFields {
        QosFields {
            mtu_limit: q.mtu_limit.map(|m| m.ufm_value()),
            service_level: q.service_level.map(ServiceLevel::value),
            rate_limit: q.rate_limit.map(|r| r.gbps()),
        }
    }
}

/// A partition's QoS as UFM reports it (`qos_conf`); any field may be missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct QosConf {
    pub mtu_limit: Option<u8>,
    pub service_level: Option<u8>,
    pub rate_limit: Option<f64>,
}

impl QosConf {
    /// Whether every attribute `want` sets already has that value here.
    pub fn satisfies(&self, want: &Qos) -> bool {
        let mtu = want.mtu_limit.is_none_or(|m| self.mtu_limit == Some(m.ufm_value()));
        let sl = want.service_level.is_none_or(|s| self.service_level == Some(s.value()));
        let rate = want.rate_limit.is_none_or(|r| self.rate_limit.is_some_and(|have| (have - r.gbps()).abs() < 0.05));
        mtu && sl && rate
    }
}

/// One partition as UFM reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct UfmPartition {
    pub pkey: PKey,
    /// UFM's name for it (`api_pkey_0x5`, `management`).
    pub name: Option<String>,
    pub ip_over_ib: Option<bool>,
    /// Present when asked for (`qos_conf=true`, single pkey reads only).
    pub qos: Option<QosConf>,
    pub members: Vec<FabricMember>,
}

/// Why an answer could not be read at all.
pub(crate) type ParseError = String;

/// `GET /app/ufm_version`.
pub(crate) fn parse_version(body: &[u8]) -> Result<String, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    v.get("ufm_release_version")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "no \"ufm_release_version\" string in it".to_string())
}

/// `GET /resources/pkeys?guids_data=true`: an object keyed by pkey. Read one partition at a
/// time (a fabric of 100k GUIDs is several MB of JSON; its whole `Value` tree would be ten times
/// that), so memory holds the result and one partition's entry, not the document.
pub(crate) fn parse_listing(body: &[u8]) -> Result<BTreeMap<PKey, UfmPartition>, ParseError> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = de.deserialize_any(ListingVisitor).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => e.to_string(),
        _ => format!("not JSON ({e})"),
    })?;
    de.end().map_err(|e| format!("not JSON ({e})"))?;
    Ok(out)
}

struct ListingVisitor;

impl<'de> serde::de::Visitor<'de> for ListingVisitor {
    type Value = BTreeMap<PKey, UfmPartition>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object keyed by pkey")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            let pkey = match PKey::parse_with_membership(&key) {
                Ok((p, _)) => p,
                Err(e) => {
                    tracing::warn!(pkey = %key, error = %e, "UFM listed a pkey that does not parse; skipped");
                    continue;
                }
            };
            let Value::Object(fields) = value else {
                tracing::warn!(%pkey, "UFM listed a pkey whose entry is not an object; skipped");
                continue;
            };
            out.insert(pkey, partition(pkey, &fields));
        }
        Ok(out)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom("a JSON boolean instead of an object keyed by pkey"))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom("a JSON number instead of an object keyed by pkey"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom("a JSON number instead of an object keyed by pkey"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom("a JSON number instead of an object keyed by pkey"))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom("a JSON string instead of an object keyed by pkey"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom("a JSON null instead of an object keyed by pkey"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(serde::de::Error::custom("a list of pkey names instead of the pkey table (was guids_data=true ignored?)"))
    }
}

/// `GET /resources/pkeys/<pkey>`: `None` for UFM's `200 {}` meaning "no such pkey".
pub(crate) fn parse_one(pkey: PKey, body: &[u8]) -> Result<Option<UfmPartition>, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    match v {
        Value::Object(map) if map.is_empty() => Ok(None),
        Value::Object(map) => Ok(Some(partition(pkey, &map))),
        other => Err(format!("a JSON {} instead of an object", kind(&other))),
    }
}

fn partition(pkey: PKey, fields: &Map<String, Value>) -> UfmPartition {
    let members = match fields.get("guids") {
        Some(Value::Array(items)) => items.iter().filter_map(|item| member(pkey, item)).collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            tracing::warn!(%pkey, "UFM's \"guids\" of this pkey is not a list; read as no members");
            Vec::new()
        }
    };
    let qos = fields.get("qos_conf").and_then(Value::as_object).map(|q| QosConf {
        mtu_limit: q.get("mtu_limit").and_then(Value::as_u64).and_then(|n| u8::try_from(n).ok()),
        service_level: q.get("service_level").and_then(Value::as_u64).and_then(|n| u8::try_from(n).ok()),
        rate_limit: q.get("rate_limit").and_then(Value::as_f64),
    });
    UfmPartition {
        pkey,
        name: fields.get("partition").and_then(Value::as_str).map(str::to_string),
        ip_over_ib: fields.get("ip_over_ib").and_then(Value::as_bool),
        qos,
        members,
    }
}

/// One entry of `guids`: `{"guid": "…", "membership": "full", "index0": true}` (or a bare string).
fn member(pkey: PKey, item: &Value) -> Option<FabricMember> {
    let (text, fields) = match item {
        Value::String(s) => (s.as_str(), None),
        Value::Object(o) => match o.get("guid").and_then(Value::as_str) {
            Some(s) => (s, Some(o)),
            None => {
                tracing::warn!(%pkey, "UFM listed a member without a \"guid\"; skipped");
                return None;
            }
        },
        _ => {
            tracing::warn!(%pkey, "UFM listed a member that is neither an object nor a string; skipped");
            return None;
        }
    };
    let guid: Guid = match text.parse() {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(%pkey, guid = %text, error = %e, "UFM listed a GUID that does not parse; skipped");
            return None;
        }
    };
    let membership = match fields.and_then(|f| f.get("membership")).and_then(Value::as_str) {
        None => Membership::Full,
        Some(m) => m.parse().unwrap_or_else(|e| {
            tracing::warn!(%pkey, %guid, error = %e, "unknown membership; read as full");
            Membership::Full
        }),
    };
    let index0 = fields.and_then(|f| f.get("index0")).and_then(Value::as_bool).unwrap_or(false);
    Some(FabricMember { guid, membership, index0 })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The engine's view of a listing: members per pkey.
pub fn to_fabric_listing(partitions: &BTreeMap<PKey, UfmPartition>) -> FabricListing {
    partitions.iter().map(|(p, part)| (*p, part.members.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ib::{MtuLimit, RateLimit};

    fn g(v: u64) -> Guid {
        Guid::new(v).unwrap()
    }

    #[test]
    fn add_body_uses_ufm_forms() {
        let mut spec = PartitionSpec::new(PKey::new(0xa5).unwrap());
        spec.membership = Membership::Limited;
        let body = serde_json::to_string(&AddGuidsBody::new(&spec, &[g(0x0200_0000_0000_00ab), g(1)])).unwrap();
        assert_eq!(
            body,
            r#"{"pkey":"0xa5","guids":["02000000000000ab","0000000000000001"],"membership":"limited","index0":true,"ip_over_ib":true}"#
        );
    }

    #[test]
    fn qos_bodies_omit_what_the_spec_leaves_to_ufm() {
        let qos =
            Qos { mtu_limit: Some(MtuLimit::Mtu4k), service_level: None, rate_limit: Some("2.5".parse().unwrap()) };
        let body = QosBody { pkey: "0x5".into(), qos: (&qos).into() };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"pkey":"0x5","mtu_limit":4,"rate_limit":2.5}"#);
        let create = CreatePkeyBody {
            pkey: "0x5".into(),
            index0: true,
            ip_over_ib: false,
            qos: (&Qos::default()).into(),
            partition_name: None,
        };
        assert_eq!(serde_json::to_string(&create).unwrap(), r#"{"pkey":"0x5","index0":true,"ip_over_ib":false}"#);
    }

    #[test]
    fn listing_tolerates_uppercase_missing_fields_and_bad_entries() {
        let body = br#"{
            "0x2fb": {"guids": [{"guid": "946DAE03005975C8", "index0": true, "membership": "full"},
                                {"guid": "not-a-guid"},
                                {"guid": "0200000000000002", "membership": "limited"},
                                "0200000000000003",
                                {"index0": true}],
                      "ip_over_ib": true, "partition": "api_pkey_0x2fb"},
            "0x7fff": {"guids": [], "index0": false, "ip_over_ib": true, "membership": "limited", "partition": "management"},
            "0x10": {"partition": "no_guids_key"},
            "bogus": {"guids": []},
            "0x11": "not an object"
        }"#;
        let parts = parse_listing(body).unwrap();
        let keys: Vec<String> = parts.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["0x10", "0x2fb", "0x7fff"]);
        let members = &parts[&PKey::new(0x2fb).unwrap()].members;
        assert_eq!(
            members,
            &[
                FabricMember { guid: g(0x946d_ae03_0059_75c8), membership: Membership::Full, index0: true },
                FabricMember { guid: g(0x0200_0000_0000_0002), membership: Membership::Limited, index0: false },
                FabricMember { guid: g(0x0200_0000_0000_0003), membership: Membership::Full, index0: false },
            ]
        );
        assert!(parts[&PKey::new(0x10).unwrap()].members.is_empty());
        assert_eq!(parts[&PKey::DEFAULT].name.as_deref(), Some("management"));
    }

    #[test]
    fn listing_of_names_or_garbage_is_an_error() {
        assert!(parse_listing(br#"["0x7fff","0x5"]"#).unwrap_err().contains("guids_data"));
        assert!(parse_listing(b"<html>").unwrap_err().contains("not JSON"));
        assert!(parse_listing(b"42").unwrap_err().contains("number"));
    }

    #[test]
    fn single_pkey_empty_object_means_absent() {
        let p = PKey::new(5).unwrap();
        assert_eq!(parse_one(p, b"{}"), Ok(None));
        assert_eq!(parse_one(p, b""), Ok(None));
        let one = parse_one(
            p,
            br#"{"partition":"api_pkey_0x5","ip_over_ib":false,"guids":[],"qos_conf":{"mtu_limit":4,"rate_limit":200,"service_level":3}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(one.ip_over_ib, Some(false));
        let qos = one.qos.unwrap();
        assert_eq!(qos, QosConf { mtu_limit: Some(4), service_level: Some(3), rate_limit: Some(200.0) });
        let want =
            Qos { mtu_limit: Some(MtuLimit::Mtu4k), service_level: None, rate_limit: Some("200".parse().unwrap()) };
        assert!(qos.satisfies(&want));
        let other: RateLimit = "100".parse().unwrap();
        assert!(!qos.satisfies(&Qos { rate_limit: Some(other), ..want }));
        assert!(!QosConf::default().satisfies(&want));
        assert!(QosConf::default().satisfies(&Qos::default()));
    }

    #[test]
    fn version_needs_its_field() {
        assert_eq!(parse_version(br#"{"ufm_release_version":"6.19.0-7"}"#), Ok("6.19.0-7".to_string()));
        assert!(parse_version(b"{}").is_err());
    }

    #[test]
    fn listing_and_single_answers_never_panic_on_arbitrary_bytes() {
        use proptest::prelude::*;
        let cases = std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
        let body = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            ".{0,200}".prop_map(String::into_bytes),
            (prop::collection::btree_map(
                prop_oneof![Just("0x5".to_string()), Just("0x7fff".to_string()), "[0-9a-zx]{0,6}"],
                prop_oneof![
                    Just(serde_json::json!({"guids": [{"guid": "0200000000000001", "membership": "limited", "index0": true}]})),
                    Just(serde_json::json!({"guids": ["0200000000000002", 5, null, {"guid": 7}]})),
                    Just(serde_json::json!({"guids": "nope", "qos_conf": {"mtu_limit": 4096, "rate_limit": "x"}})),
                    Just(serde_json::json!([1, 2])),
                    ".{0,12}".prop_map(serde_json::Value::String),
                ],
                0..6
            ))
            .prop_map(|m| serde_json::to_vec(&m).unwrap_or_default()),
        ];
        let mut runner =
            proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases, ..Default::default() });
        runner
            .run(&body, |b| {
                let _ = parse_listing(&b);
                let _ = parse_one(PKey::new(5).unwrap_or(PKey::DEFAULT), &b);
                let _ = parse_version(&b);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
