//! `PKey`: a 15-bit InfiniBand partition key, its membership bit, and a partition's UFM attributes.

use std::fmt;
use std::str::FromStr;

/// A partition key without its membership bit: `0x0001`..=`0x7fff`.
/// `0x7fff` is the default (management) partition; tenants get `0x0001`..=`0x7ffe`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PKey(u16);

/// Why a string is not a usable pkey. Messages say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PKeyError {
    #[error("pkey is empty: write a hex value such as \"0x1000\"")]
    Empty,
    #[error(
        "pkey {input:?} has no 0x prefix; bare numbers are ambiguous (decimal or hex?) and a wrong pkey joins another tenant's partition: write \"0x{input}\" if you meant hex"
    )]
    MissingHexPrefix { input: String },
    #[error("pkey {input:?} is not a hex number: write 0x followed by 1 to 4 hex digits, e.g. \"0x1000\"")]
    NotHex { input: String },
    #[error("pkey {input:?} does not fit in 16 bits: the largest pkey is 0x7fff (0xffff with the full-membership bit)")]
    TooLarge { input: String },
    #[error("pkey {input:?} is 0x0000, which is invalid in InfiniBand: use 0x0001..0x7ffe")]
    Zero { input: String },
    #[error(
        "pkey {input:?} is the default (management) partition 0x7fff, which tenants cannot use: pick one in 0x0001..0x7ffe"
    )]
    DefaultPartition { input: String },
}

impl PKeyError {
    /// Stable, machine-readable reason for Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            PKeyError::Empty => "PKeyEmpty",
            PKeyError::MissingHexPrefix { .. } => "PKeyNotHexPrefixed",
            PKeyError::NotHex { .. } => "PKeyNotHex",
            PKeyError::TooLarge { .. } => "PKeyTooLarge",
            PKeyError::Zero { .. } => "PKeyZero",
            PKeyError::DefaultPartition { .. } => "PKeyDefaultPartition",
        }
    }
}

impl PKey {
    /// The default (management) partition.
    pub const DEFAULT: PKey = PKey(0x7fff);
    const FULL_BIT: u16 = 0x8000;

    /// A pkey from its 15-bit value (`0x0001`..=`0x7fff`); the membership bit must be clear.
    pub const fn new(value: u16) -> Option<PKey> {
        if value == 0 || value & PKey::FULL_BIT != 0 { None } else { Some(PKey(value)) }
    }

    pub const fn value(self) -> u16 {
        self.0
    }

    pub const fn is_default(self) -> bool {
        self.0 == PKey::DEFAULT.0
    }

    /// Parses `0x…` text; the 0x8000 full-membership bit is accepted and returned separately.
    /// The default partition parses (UFM lists it); use [`PKey::parse_tenant`] for a tenant's network.
    pub fn parse_with_membership(input: &str) -> Result<(PKey, Option<Membership>), PKeyError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(PKeyError::Empty);
        }
        let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) else {
            return Err(if s.chars().all(|c| c.is_ascii_hexdigit()) {
                PKeyError::MissingHexPrefix { input: s.into() }
            } else {
                PKeyError::NotHex { input: s.into() }
            });
        };
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PKeyError::NotHex { input: s.into() });
        }
        let trimmed = hex.trim_start_matches('0');
        if trimmed.len() > 4 {
            return Err(PKeyError::TooLarge { input: s.into() });
        }
        let raw = if trimmed.is_empty() {
            0
        } else {
            u16::from_str_radix(trimmed, 16).map_err(|_| PKeyError::TooLarge { input: s.into() })?
        };
        let membership = (raw & PKey::FULL_BIT != 0).then_some(Membership::Full);
        match raw & !PKey::FULL_BIT {
            0 => Err(PKeyError::Zero { input: s.into() }),
            v => Ok((PKey(v), membership)),
        }
    }

    /// Parses a pkey a tenant network may use: like [`PKey::parse_with_membership`], and not 0x7fff.
    pub fn parse_tenant(input: &str) -> Result<(PKey, Option<Membership>), PKeyError> {
        let parsed = PKey::parse_with_membership(input)?;
        if parsed.0.is_default() {
            return Err(PKeyError::DefaultPartition { input: input.trim().into() });
        }
        Ok(parsed)
    }
}

/// `0x` and lowercase hex without padding, as UFM returns pkeys (`0x5`, `0x7fff`).
impl fmt::Display for PKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

impl fmt::Debug for PKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PKey({self})")
    }
}

/// Parses like [`PKey::parse_with_membership`] and drops the membership bit.
impl FromStr for PKey {
    type Err = PKeyError;
    fn from_str(s: &str) -> Result<PKey, PKeyError> {
        PKey::parse_with_membership(s).map(|(p, _)| p)
    }
}

impl serde::Serialize for PKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PKey, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Partition membership of a GUID. Full members talk to everyone in the partition;
/// limited members only to full members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    #[default]
    Full,
    Limited,
}

impl Membership {
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Full => "full",
            Membership::Limited => "limited",
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Membership {
    type Err = String;
    fn from_str(s: &str) -> Result<Membership, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Membership::Full),
            "limited" => Ok(Membership::Limited),
            other => Err(format!("membership {other:?} is neither \"full\" nor \"limited\"")),
        }
    }
}

/// UFM's partition MTU limit: 2 (2048 bytes) or 4 (4096 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MtuLimit {
    Mtu2k,
    Mtu4k,
}

impl MtuLimit {
    /// The number UFM's `mtu_limit` field carries.
    pub fn ufm_value(self) -> u8 {
        match self {
            MtuLimit::Mtu2k => 2,
            MtuLimit::Mtu4k => 4,
        }
    }
}

impl FromStr for MtuLimit {
    type Err = String;
    /// `2` or `2048`, `4` or `4096`.
    fn from_str(s: &str) -> Result<MtuLimit, String> {
        match s.trim() {
            "2" | "2048" => Ok(MtuLimit::Mtu2k),
            "4" | "4096" => Ok(MtuLimit::Mtu4k),
            other => Err(format!("MTU limit {other:?} is not one of 2, 4, 2048 or 4096")),
        }
    }
}

/// A partition rate limit in Gb/s, kept in tenths so that it can be compared and hashed (2.5 = 25).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateLimit(u32);

impl RateLimit {
    /// Largest rate accepted: well above any InfiniBand link speed (XDR is 800 Gb/s).
    const MAX_TENTHS: u32 = 16_000;

    pub fn gbps(self) -> f64 {
        f64::from(self.0) / 10.0
    }
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<RateLimit, String> {
        let v: f64 =
            s.trim().parse().map_err(|_| format!("rate limit {s:?} is not a number of Gb/s such as 2.5 or 200"))?;
        let tenths = (v * 10.0).round();
        if !v.is_finite() || v <= 0.0 || tenths > f64::from(RateLimit::MAX_TENTHS) {
            return Err(format!("rate limit {s:?} must be above 0 and at most 1600 Gb/s"));
        }
        if (tenths - v * 10.0).abs() > 1e-6 {
            return Err(format!("rate limit {s:?} has more than one decimal place"));
        }
        Ok(RateLimit(tenths as u32))
    }
}

/// Quality-of-service attributes of a partition; `None` leaves UFM's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Qos {
    pub mtu_limit: Option<MtuLimit>,
    /// Service level, 0..=15.
    pub service_level: Option<u8>,
    pub rate_limit: Option<RateLimit>,
}

impl Qos {
    pub fn is_default(&self) -> bool {
        *self == Qos::default()
    }
}

/// Everything UFM needs to make GUIDs members of a partition.
/// Defaults match ib-kubernetes: full membership, index0 and IPoIB on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionSpec {
    pub pkey: PKey,
    pub membership: Membership,
    pub index0: bool,
    pub ip_over_ib: bool,
    pub qos: Qos,
}

impl PartitionSpec {
    pub fn new(pkey: PKey) -> PartitionSpec {
        PartitionSpec { pkey, membership: Membership::Full, index0: true, ip_over_ib: true, qos: Qos::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_padded_unpadded_and_uppercase_forms() {
        for s in ["0x5", "0x0005", "0X0005", "0x00005"] {
            assert_eq!(s.parse::<PKey>(), Ok(PKey(5)), "{s}");
        }
        assert_eq!("0xA30".parse::<PKey>(), Ok(PKey(0xa30)));
    }

    #[test]
    fn full_membership_bit_is_split_off() {
        assert_eq!(PKey::parse_with_membership("0x8005"), Ok((PKey(5), Some(Membership::Full))));
        assert_eq!(PKey::parse_with_membership("0x0005"), Ok((PKey(5), None)));
        assert_eq!(PKey::parse_with_membership("0xffff"), Ok((PKey::DEFAULT, Some(Membership::Full))));
    }

    #[test]
    fn bare_decimal_is_rejected_with_a_hex_suggestion() {
        let err = "1000".parse::<PKey>().unwrap_err();
        assert_eq!(err, PKeyError::MissingHexPrefix { input: "1000".into() });
        assert!(err.to_string().contains("\"0x1000\""), "{err}");
    }

    #[test]
    fn rejects_zero_default_and_oversized_values() {
        assert!(matches!("0x0".parse::<PKey>(), Err(PKeyError::Zero { .. })));
        assert!(matches!("0x8000".parse::<PKey>(), Err(PKeyError::Zero { .. })));
        assert!(matches!("0x10000".parse::<PKey>(), Err(PKeyError::TooLarge { .. })));
        assert!(matches!("0x".parse::<PKey>(), Err(PKeyError::NotHex { .. })));
        assert!(matches!("0xzz".parse::<PKey>(), Err(PKeyError::NotHex { .. })));
        assert!(matches!("-5".parse::<PKey>(), Err(PKeyError::NotHex { .. })));
        assert!(matches!(PKey::parse_tenant("0x7fff"), Err(PKeyError::DefaultPartition { .. })));
        assert!(matches!(PKey::parse_tenant("0xffff"), Err(PKeyError::DefaultPartition { .. })));
        assert_eq!(PKey::parse_tenant("0x7ffe"), Ok((PKey(0x7ffe), None)));
    }

    #[test]
    fn prints_like_ufm() {
        assert_eq!(PKey(5).to_string(), "0x5");
        assert_eq!(PKey(0x7fff).to_string(), "0x7fff");
    }

    #[test]
    fn qos_values_parse_and_reject() {
        assert_eq!("4096".parse::<MtuLimit>(), Ok(MtuLimit::Mtu4k));
        assert!("1500".parse::<MtuLimit>().is_err());
        assert_eq!("2.5".parse::<RateLimit>().map(RateLimit::gbps), Ok(2.5));
        assert!("0".parse::<RateLimit>().is_err());
        assert!("2.55".parse::<RateLimit>().is_err());
        assert!("fast".parse::<RateLimit>().is_err());
        assert!("NaN".parse::<RateLimit>().is_err());
        assert_eq!("LIMITED".parse::<Membership>(), Ok(Membership::Limited));
    }

    proptest! {
        #[test]
        fn printed_pkeys_parse_back(v in 1u16..=0x7fff) {
            let p = PKey::new(v).unwrap();
            prop_assert_eq!(p.to_string().parse::<PKey>(), Ok(p));
            prop_assert_eq!(format!("0x{:04X}", v).parse::<PKey>(), Ok(p));
            prop_assert_eq!(PKey::parse_with_membership(&format!("0x{:x}", v | 0x8000)), Ok((p, Some(Membership::Full))));
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,12}") {
            let _ = PKey::parse_with_membership(&s);
        }
    }
}
