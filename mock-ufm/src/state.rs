//! UFM's partition (pkey) table as plain data: the vocabulary (`PKey`, `Guid`, `Membership`,
//! `Qos`), the mutations UFM's REST API can make, and the rules that accept or refuse them.
//!
//! Nothing here does I/O or reads a clock; the HTTP layer parses requests into [`Mutation`]s and
//! [`crate::fabric`] decides when they become visible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU64;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a pkey, GUID or mutation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error("invalid pkey {input:?}: {reason}")]
    InvalidPKey { input: String, reason: &'static str },
    #[error("invalid guid {input:?}: {reason}")]
    InvalidGuid { input: String, reason: &'static str },
    #[error("invalid membership {0:?}: expected \"full\" or \"limited\"")]
    InvalidMembership(String),
    #[error("pkey {0} is the predefined management partition and is read-only")]
    ReadOnly(PKey),
    #[error("guids must not be empty")]
    EmptyGuids,
    #[error("guid {0} is listed more than once")]
    DuplicateGuid(Guid),
    #[error("invalid qos: {0}")]
    InvalidQos(String),
    #[error("invalid partition name {0:?}")]
    InvalidName(String),
    #[error("pkey {0} not found")]
    NotFound(PKey),
    #[error("pkey {0} already exists")]
    AlreadyExists(PKey),
}

impl StateError {
    /// A stable, machine-readable reason for logs and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            StateError::InvalidPKey { .. } => "invalid_pkey",
            StateError::InvalidGuid { .. } => "invalid_guid",
            StateError::InvalidMembership(_) => "invalid_membership",
            StateError::ReadOnly(_) => "read_only",
            StateError::EmptyGuids => "empty_guids",
            StateError::DuplicateGuid(_) => "duplicate_guid",
            StateError::InvalidQos(_) => "invalid_qos",
            StateError::InvalidName(_) => "invalid_name",
            StateError::NotFound(_) => "not_found",
            StateError::AlreadyExists(_) => "already_exists",
        }
    }
}

/// A 15-bit partition key, `0x1..=0x7fff` (the membership bit is not part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PKey(u16);

impl PKey {
    /// The predefined, read-only "management" partition.
    pub const MANAGEMENT: PKey = PKey(0x7fff);

    /// A pkey from its numeric value; `0` and values above `0x7fff` are invalid.
    pub fn new(value: u16) -> Result<PKey, StateError> {
        if value == 0 || value > 0x7fff {
            return Err(StateError::InvalidPKey {
                input: format!("{value:#x}"),
                reason: "must be between 0x1 and 0x7fff",
            });
        }
        Ok(PKey(value))
    }

    /// Parses `0x5`, `0x0005` or `0X0005` (a `0x` prefix and 1 to 4 hex digits).
    pub fn parse(input: &str) -> Result<PKey, StateError> {
        let bad = |reason| StateError::InvalidPKey { input: input.to_string(), reason };
        let digits =
            input.strip_prefix("0x").or_else(|| input.strip_prefix("0X")).ok_or_else(|| bad("must start with 0x"))?;
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("must be 1 to 4 hex digits after 0x"));
        }
        let value = u16::from_str_radix(digits, 16).map_err(|_| bad("not a hex number"))?;
        if value == 0 || value > 0x7fff {
            return Err(bad("must be between 0x1 and 0x7fff"));
        }
        Ok(PKey(value))
    }

    /// The numeric value.
    pub fn value(self) -> u16 {
        self.0
    }

    /// Whether this is the read-only management partition `0x7fff`.
    pub fn is_management(self) -> bool {
        self == PKey::MANAGEMENT
    }

    /// The name UFM gives partitions created through the REST API.
    pub fn api_name(self) -> String {
        format!("api_pkey_{self}")
    }

    fn writable(self) -> Result<PKey, StateError> {
        if self.is_management() { Err(StateError::ReadOnly(self)) } else { Ok(self) }
    }
}

impl fmt::Display for PKey {
    /// Lowercase and unpadded, as UFM returns it: `0x5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

impl Serialize for PKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A 64-bit InfiniBand port GUID; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(u64);

impl Guid {
    /// A GUID from its numeric value; zero is invalid.
    pub fn new(value: u64) -> Result<Guid, StateError> {
        if value == 0 {
            return Err(StateError::InvalidGuid {
                input: format!("{value:016x}"),
                reason: "the all-zero guid is invalid",
            });
        }
        Ok(Guid(value))
    }

    /// Parses exactly 16 hex digits, optionally `0x`-prefixed, any case, no colons.
    pub fn parse(input: &str) -> Result<Guid, StateError> {
        let bad = |reason| StateError::InvalidGuid { input: input.to_string(), reason };
        let digits = input.strip_prefix("0x").or_else(|| input.strip_prefix("0X")).unwrap_or(input);
        if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("must be exactly 16 hex digits without separators"));
        }
        let value = u64::from_str_radix(digits, 16).map_err(|_| bad("not a hex number"))?;
        if value == 0 {
            return Err(bad("the all-zero guid is invalid"));
        }
        Ok(Guid(value))
    }

    /// The numeric value.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl From<NonZeroU64> for Guid {
    fn from(v: NonZeroU64) -> Guid {
        Guid(v.get())
    }
}

impl fmt::Display for Guid {
    /// 16 lowercase hex digits, as UFM returns it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Guid::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Full or limited partition membership of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    #[default]
    Full,
    Limited,
}

impl Membership {
    /// Parses exactly `full` or `limited`.
    pub fn parse(input: &str) -> Result<Membership, StateError> {
        match input {
            "full" => Ok(Membership::Full),
            "limited" => Ok(Membership::Limited),
            other => Err(StateError::InvalidMembership(other.to_string())),
        }
    }
}

/// How one GUID belongs to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    pub membership: Membership,
    pub index0: bool,
}

/// Rates UFM accepts for `rate_limit` (Gb/s).
pub const RATE_LIMITS: [f64; 17] =
    [2.5, 5.0, 10.0, 14.0, 20.0, 25.0, 30.0, 40.0, 56.0, 60.0, 80.0, 100.0, 112.0, 120.0, 168.0, 200.0, 300.0];

/// A partition's QoS settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Qos {
    /// 2 (2K) or 4 (4K).
    pub mtu_limit: u8,
    /// Whole numbers are written without a fraction (`200`, not `200.0`), as UFM does.
    #[serde(serialize_with = "serialize_rate")]
    pub rate_limit: f64,
    /// 0..=15.
    pub service_level: u8,
}

impl Default for Qos {
    fn default() -> Self {
        Qos { mtu_limit: 2, rate_limit: 2.5, service_level: 0 }
    }
}

fn serialize_rate<S: Serializer>(rate: &f64, s: S) -> Result<S::Ok, S::Error> {
    if rate.fract() == 0.0 && rate.abs() < 1e15 { s.serialize_i64(*rate as i64) } else { s.serialize_f64(*rate) }
}

fn check_qos(mtu: Option<u8>, sl: Option<u8>, rate: Option<f64>) -> Result<(), StateError> {
    if let Some(m) = mtu.filter(|m| *m != 2 && *m != 4) {
        return Err(StateError::InvalidQos(format!("mtu_limit must be 2 or 4, got {m}")));
    }
    if let Some(s) = sl.filter(|s| *s > 15) {
        return Err(StateError::InvalidQos(format!("service_level must be 0..15, got {s}")));
    }
    if let Some(r) = rate {
        check_rate(r, &RATE_LIMITS)?;
    }
    Ok(())
}

/// Refuses a `rate_limit` that is not one of `accepted` (Gb/s); the message lists them.
pub fn check_rate(rate: f64, accepted: &[f64]) -> Result<(), StateError> {
    if accepted.iter().any(|a| (a - rate).abs() < 1e-9) {
        return Ok(());
    }
    let list: Vec<String> = accepted.iter().map(|a| format_rate(*a)).collect();
    Err(StateError::InvalidQos(format!(
        "rate_limit {} is not supported; supported values: {}",
        format_rate(rate),
        list.join(", ")
    )))
}

/// `200`, `2.5`: whole rates without a fraction, as UFM writes them.
fn format_rate(rate: f64) -> String {
    if rate.fract() == 0.0 && rate.abs() < 1e15 { format!("{}", rate as i64) } else { format!("{rate}") }
}

/// One partition as UFM keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// `api_pkey_0x<hex>` for API-created partitions, `management` for 0x7fff.
    pub name: String,
    pub ip_over_ib: bool,
    pub qos: Qos,
    pub members: BTreeMap<Guid, Member>,
}

impl PartitionState {
    fn new(pkey: PKey, name: Option<&str>, ip_over_ib: bool) -> PartitionState {
        PartitionState {
            name: name.map_or_else(|| pkey.api_name(), str::to_string),
            ip_over_ib,
            qos: Qos::default(),
            members: BTreeMap::new(),
        }
    }

    fn management() -> PartitionState {
        PartitionState {
            name: "management".to_string(),
            ip_over_ib: true,
            qos: Qos::default(),
            members: BTreeMap::new(),
        }
    }
}

/// A change UFM's REST API can make to the partition table.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// `POST /resources/pkeys`: add (or update) members, creating the partition if absent.
    AddGuids {
        pkey: PKey,
        members: Vec<(Guid, Member)>,
        /// `None` keeps an existing partition's value (a new one gets `true`).
        ip_over_ib: Option<bool>,
        /// Only used when the partition is created.
        name: Option<String>,
    },
    /// `PUT /resources/pkeys`: replace the member set, creating the partition if absent.
    SetGuids { pkey: PKey, members: Vec<(Guid, Member)>, ip_over_ib: Option<bool>, name: Option<String> },
    /// `POST /resources/pkeys/add`: create an empty partition.
    CreateEmpty { pkey: PKey, ip_over_ib: bool, qos: Qos, name: Option<String> },
    /// `DELETE /resources/pkeys/<pkey>/guids/<..>` or the legacy remove action.
    RemoveGuids { pkey: PKey, guids: Vec<Guid> },
    /// `DELETE /resources/pkeys/<pkey>`.
    Delete { pkey: PKey },
    /// `PUT /resources/pkeys/qos_conf`: `None` fields keep their value.
    UpdateQos { pkey: PKey, mtu_limit: Option<u8>, service_level: Option<u8>, rate_limit: Option<f64> },
}

impl Mutation {
    /// The partition this mutation targets.
    pub fn pkey(&self) -> PKey {
        match self {
            Mutation::AddGuids { pkey, .. }
            | Mutation::SetGuids { pkey, .. }
            | Mutation::CreateEmpty { pkey, .. }
            | Mutation::RemoveGuids { pkey, .. }
            | Mutation::Delete { pkey }
            | Mutation::UpdateQos { pkey, .. } => *pkey,
        }
    }

    /// Checks what can be checked without looking at the table.
    fn validate(&self) -> Result<(), StateError> {
        self.pkey().writable()?;
        match self {
            Mutation::AddGuids { members, name, .. } | Mutation::SetGuids { members, name, .. } => {
                if members.is_empty() {
                    return Err(StateError::EmptyGuids);
                }
                no_duplicates(members.iter().map(|(g, _)| *g))?;
                check_name(name.as_deref())
            }
            Mutation::CreateEmpty { qos, name, .. } => {
                check_qos(Some(qos.mtu_limit), Some(qos.service_level), Some(qos.rate_limit))?;
                check_name(name.as_deref())
            }
            Mutation::RemoveGuids { guids, .. } => {
                if guids.is_empty() {
                    return Err(StateError::EmptyGuids);
                }
                no_duplicates(guids.iter().copied())
            }
            Mutation::Delete { .. } => Ok(()),
            Mutation::UpdateQos { mtu_limit, service_level, rate_limit, .. } => {
                check_qos(*mtu_limit, *service_level, *rate_limit)
            }
        }
    }
}

fn no_duplicates(guids: impl Iterator<Item = Guid>) -> Result<(), StateError> {
    let mut seen = BTreeSet::new();
    for g in guids {
        if !seen.insert(g) {
            return Err(StateError::DuplicateGuid(g));
        }
    }
    Ok(())
}

fn check_name(name: Option<&str>) -> Result<(), StateError> {
    match name {
        Some(n)
            if n.is_empty()
                || n.len() > 64
                || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') =>
        {
            Err(StateError::InvalidName(n.to_string()))
        }
        _ => Ok(()),
    }
}

/// The partition table, always holding the management partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partitions {
    map: BTreeMap<PKey, PartitionState>,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions::new()
    }
}

impl Partitions {
    /// A table holding only the management partition 0x7fff.
    pub fn new() -> Partitions {
        let mut map = BTreeMap::new();
        map.insert(PKey::MANAGEMENT, PartitionState::management());
        Partitions { map }
    }

    /// Builds a table from saved partitions, restoring the management partition if missing.
    pub fn from_map(mut map: BTreeMap<PKey, PartitionState>) -> Partitions {
        map.entry(PKey::MANAGEMENT).or_insert_with(PartitionState::management);
        Partitions { map }
    }

    pub fn get(&self, pkey: PKey) -> Option<&PartitionState> {
        self.map.get(&pkey)
    }

    pub fn iter(&self) -> impl Iterator<Item = (PKey, &PartitionState)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }

    pub fn as_map(&self) -> &BTreeMap<PKey, PartitionState> {
        &self.map
    }

    /// Number of partitions, management included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total number of (pkey, GUID) memberships.
    pub fn guid_count(&self) -> usize {
        self.map.values().map(|p| p.members.len()).sum()
    }

    /// Whether `m` would be accepted against this table.
    pub fn check(&self, m: &Mutation) -> Result<(), StateError> {
        m.validate()?;
        match m {
            Mutation::CreateEmpty { pkey, .. } if self.map.contains_key(pkey) => Err(StateError::AlreadyExists(*pkey)),
            Mutation::Delete { pkey } | Mutation::UpdateQos { pkey, .. } if !self.map.contains_key(pkey) => {
                Err(StateError::NotFound(*pkey))
            }
            _ => Ok(()),
        }
    }

    /// Checks and applies `m`; returns whether anything changed.
    pub fn apply(&mut self, m: &Mutation) -> Result<bool, StateError> {
        self.check(m)?;
        Ok(self.apply_checked(m))
    }

    /// Applies a mutation that passed [`Partitions::check`] against this table.
    pub(crate) fn apply_checked(&mut self, m: &Mutation) -> bool {
        match m {
            Mutation::AddGuids { pkey, members, ip_over_ib, name } => {
                let mut changed = !self.map.contains_key(pkey);
                let p = self
                    .map
                    .entry(*pkey)
                    .or_insert_with(|| PartitionState::new(*pkey, name.as_deref(), ip_over_ib.unwrap_or(true)));
                if let Some(ipoib) = ip_over_ib {
                    changed |= p.ip_over_ib != *ipoib;
                    p.ip_over_ib = *ipoib;
                }
                for (guid, member) in members {
                    changed |= p.members.insert(*guid, *member) != Some(*member);
                }
                changed
            }
            Mutation::SetGuids { pkey, members, ip_over_ib, name } => {
                let mut changed = !self.map.contains_key(pkey);
                let p = self
                    .map
                    .entry(*pkey)
                    .or_insert_with(|| PartitionState::new(*pkey, name.as_deref(), ip_over_ib.unwrap_or(true)));
                if let Some(ipoib) = ip_over_ib {
                    changed |= p.ip_over_ib != *ipoib;
                    p.ip_over_ib = *ipoib;
                }
                let new: BTreeMap<Guid, Member> = members.iter().copied().collect();
                changed |= p.members != new;
                p.members = new;
                changed
            }
            Mutation::CreateEmpty { pkey, ip_over_ib, qos, name } => {
                let mut p = PartitionState::new(*pkey, name.as_deref(), *ip_over_ib);
                p.qos = *qos;
                self.map.insert(*pkey, p);
                true
            }
            Mutation::RemoveGuids { pkey, guids } => {
                let Some(p) = self.map.get_mut(pkey) else {
                    return false;
                };
                let before = p.members.len();
                for g in guids {
                    p.members.remove(g);
                }
                let removed = p.members.len() != before;
                // UFM deletes a partition when its last member is removed.
                if removed && p.members.is_empty() {
                    self.map.remove(pkey);
                }
                removed
            }
            Mutation::Delete { pkey } => self.map.remove(pkey).is_some(),
            Mutation::UpdateQos { pkey, mtu_limit, service_level, rate_limit } => {
                let Some(p) = self.map.get_mut(pkey) else {
                    return false;
                };
                let before = p.qos;
                if let Some(v) = mtu_limit {
                    p.qos.mtu_limit = *v;
                }
                if let Some(v) = service_level {
                    p.qos.service_level = *v;
                }
                if let Some(v) = rate_limit {
                    p.qos.rate_limit = *v;
                }
                p.qos != before
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
