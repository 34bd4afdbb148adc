//! UFM's JSON on the wire: request bodies parsed strictly into [`Mutation`]s, query flags, and
//! the response shapes for partitions (keys sorted as UFM sorts them).

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::state::{Guid, Member, Membership, Mutation, PKey, PartitionState, Partitions, Qos, StateError};

/// Why a request body or query was refused (answered 400 `{"error": ...}`).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("`membership` and `memberships` are mutually exclusive")]
    MembershipConflict,
    #[error("`memberships` has {got} entries but `guids` has {want}")]
    MembershipsLength { got: usize, want: usize },
    #[error("invalid value {value:?} for query parameter `{name}`: expected true or false")]
    BadFlag { name: String, value: String },
    #[error("{0}")]
    InvalidField(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuidsBody {
    pkey: String,
    guids: Vec<String>,
    #[serde(default)]
    index0: Option<bool>,
    #[serde(default)]
    ip_over_ib: Option<bool>,
    #[serde(default)]
    membership: Option<String>,
    #[serde(default)]
    memberships: Option<Vec<String>>,
    #[serde(default)]
    partition_name: Option<String>,
}

fn parse_guids(guids: &[String]) -> Result<Vec<Guid>, StateError> {
    guids.iter().map(|g| Guid::parse(g)).collect()
}

fn members_of(body: &GuidsBody) -> Result<Vec<(Guid, Member)>, WireError> {
    let guids = parse_guids(&body.guids)?;
    let index0 = body.index0.unwrap_or(false);
    let memberships: Vec<Membership> = match (&body.membership, &body.memberships) {
        (Some(_), Some(_)) => return Err(WireError::MembershipConflict),
        (_, Some(list)) => {
            if list.len() != guids.len() {
                return Err(WireError::MembershipsLength { got: list.len(), want: guids.len() });
            }
            list.iter().map(|m| Membership::parse(m)).collect::<Result<_, _>>()?
        }
        (one, None) => {
            let m = one.as_deref().map_or(Ok(Membership::Full), Membership::parse)?;
            vec![m; guids.len()]
        }
    };
    Ok(guids.into_iter().zip(memberships).map(|(g, membership)| (g, Member { membership, index0 })).collect())
}

/// `POST /resources/pkeys` (add) or, with `replace`, `PUT /resources/pkeys` (set).
pub fn parse_guids_body(bytes: &[u8], replace: bool) -> Result<Mutation, WireError> {
    let body: GuidsBody = serde_json::from_slice(bytes)?;
    let pkey = PKey::parse(&body.pkey)?;
    let members = members_of(&body)?;
    let (ip_over_ib, name) = (body.ip_over_ib, body.partition_name);
    Ok(if replace {
        Mutation::SetGuids { pkey, members, ip_over_ib, name }
    } else {
        Mutation::AddGuids { pkey, members, ip_over_ib, name }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    pkey: String,
    #[serde(default)]
    index0: Option<bool>,
    #[serde(default)]
    ip_over_ib: Option<bool>,
    #[serde(default)]
    mtu_limit: Option<i64>,
    #[serde(default)]
    service_level: Option<i64>,
    #[serde(default)]
    rate_limit: Option<f64>,
    #[serde(default)]
    partition_name: Option<String>,
}

fn small(name: &str, v: Option<i64>) -> Result<Option<u8>, WireError> {
    v.map(|n| u8::try_from(n).map_err(|_| WireError::InvalidField(format!("{name} out of range: {n}")))).transpose()
}

/// `POST /resources/pkeys/add`: an empty partition with QoS.
pub fn parse_create(bytes: &[u8]) -> Result<Mutation, WireError> {
    let body: CreateBody = serde_json::from_slice(bytes)?;
    let pkey = PKey::parse(&body.pkey)?;
    // index0 is accepted for compatibility; an empty partition has no member to apply it to.
    let _ = body.index0;
    let d = Qos::default();
    let qos = Qos {
        mtu_limit: small("mtu_limit", body.mtu_limit)?.unwrap_or(d.mtu_limit),
        service_level: small("service_level", body.service_level)?.unwrap_or(d.service_level),
        rate_limit: body.rate_limit.unwrap_or(d.rate_limit),
    };
    Ok(Mutation::CreateEmpty { pkey, ip_over_ib: body.ip_over_ib.unwrap_or(true), qos, name: body.partition_name })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QosBody {
    pkey: String,
    #[serde(default)]
    mtu_limit: Option<i64>,
    #[serde(default)]
    service_level: Option<i64>,
    #[serde(default)]
    rate_limit: Option<f64>,
}

/// `PUT /resources/pkeys/qos_conf`.
pub fn parse_qos(bytes: &[u8]) -> Result<Mutation, WireError> {
    let body: QosBody = serde_json::from_slice(bytes)?;
    Ok(Mutation::UpdateQos {
        pkey: PKey::parse(&body.pkey)?,
        mtu_limit: small("mtu_limit", body.mtu_limit)?,
        service_level: small("service_level", body.service_level)?,
        rate_limit: body.rate_limit,
    })
}

/// The `rate_limit` a create or QoS body sets explicitly, if any (the body is parsed strictly
/// by [`parse_create`] / [`parse_qos`]; this only looks).
pub fn explicit_rate(bytes: &[u8]) -> Option<f64> {
    #[derive(Deserialize)]
    struct Rate {
        rate_limit: Option<f64>,
    }
    serde_json::from_slice::<Rate>(bytes).ok().and_then(|r| r.rate_limit)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    pkey: String,
    guids: Vec<String>,
}

/// `POST /actions/remove_guids_from_pkey` (legacy).
pub fn parse_remove(bytes: &[u8]) -> Result<Mutation, WireError> {
    let body: RemoveBody = serde_json::from_slice(bytes)?;
    Ok(Mutation::RemoveGuids { pkey: PKey::parse(&body.pkey)?, guids: parse_guids(&body.guids)? })
}

/// The `<g1>,<g2>` path segment of `DELETE /resources/pkeys/<pkey>/guids/<..>`.
pub fn parse_guid_list(pkey: &str, list: &str) -> Result<Mutation, WireError> {
    let guids: Vec<String> = list.split(',').map(str::to_string).collect();
    Ok(Mutation::RemoveGuids { pkey: PKey::parse(pkey)?, guids: parse_guids(&guids)? })
}

/// The read flags of `GET /resources/pkeys[/<pkey>]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadFlags {
    pub guids_data: bool,
    pub qos_conf: bool,
}

/// Parses `guids_data` and `qos_conf` (`true`/`false`, any case); other parameters
/// (`port_info`, `max_ports`, ...) are accepted and ignored.
pub fn parse_flags(query: Option<&str>) -> Result<ReadFlags, WireError> {
    let mut flags = ReadFlags::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "guids_data" => &mut flags.guids_data,
            "qos_conf" => &mut flags.qos_conf,
            _ => continue,
        };
        *slot = if value.eq_ignore_ascii_case("true") {
            true
        } else if value.eq_ignore_ascii_case("false") {
            false
        } else {
            return Err(WireError::BadFlag { name: name.to_string(), value: value.to_string() });
        };
    }
    Ok(flags)
}

#[derive(Serialize)]
struct GuidOut {
    guid: Guid,
    index0: bool,
    membership: Membership,
}

struct GuidList<'a>(&'a PartitionState);

impl Serialize for GuidList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.members.iter().map(|(g, m)| GuidOut {
            guid: *g,
            index0: m.index0,
            membership: m.membership,
        }))
    }
}

/// One partition as UFM renders it; keys in alphabetical order.
#[derive(Serialize)]
struct PartitionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    guids: Option<GuidList<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index0: Option<bool>,
    ip_over_ib: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<Membership>,
    partition: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos_conf: Option<&'a Qos>,
}

fn partition_out(pkey: PKey, p: &PartitionState, flags: ReadFlags) -> PartitionOut<'_> {
    // The management partition carries pkey-level membership fields.
    let mgmt = pkey.is_management();
    PartitionOut {
        guids: flags.guids_data.then_some(GuidList(p)),
        index0: mgmt.then_some(false),
        ip_over_ib: p.ip_over_ib,
        membership: mgmt.then_some(Membership::Limited),
        partition: &p.name,
        qos_conf: flags.qos_conf.then_some(&p.qos),
    }
}

/// `GET /resources/pkeys/<pkey>`.
pub fn render_one(pkey: PKey, p: &PartitionState, flags: ReadFlags) -> Vec<u8> {
    serde_json::to_vec(&partition_out(pkey, p, flags)).unwrap_or_else(|_| b"{}".to_vec())
}

struct ListOut<'a>(&'a Partitions, ReadFlags);

impl Serialize for ListOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (pkey, p) in self.0.iter() {
            map.serialize_entry(&pkey, &partition_out(pkey, p, self.1))?;
        }
        map.end()
    }
}

/// `GET /resources/pkeys` with `guids_data` or `qos_conf` (not both).
pub fn render_list(table: &Partitions, flags: ReadFlags) -> Vec<u8> {
    serde_json::to_vec(&ListOut(table, flags)).unwrap_or_else(|_| b"{}".to_vec())
}

/// `GET /resources/pkeys` without flags: the pkeys as a JSON array.
pub fn render_names(table: &Partitions) -> Vec<u8> {
    let keys: Vec<PKey> = table.iter().map(|(k, _)| k).collect();
    serde_json::to_vec(&keys).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
