//! A partition's UFM attributes (membership, MTU limit, service level, rate limit), each
//! accepting only the values UFM accepts, so that nothing UFM would refuse gets past parsing.

use std::fmt;
use std::str::FromStr;

use super::PKey;

/// Longest piece of a refused value quoted back in a message.
const SHOWN_CHARS: usize = 40;

/// `input`, trimmed and cut to [`SHOWN_CHARS`] characters (annotations can be very long).
pub(crate) fn shown(input: &str) -> String {
    let s = input.trim();
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Why a partition attribute is not one UFM accepts. Every message lists what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("membership {input:?} is neither \"full\" nor \"limited\"")]
    Membership { input: String },
    #[error(
        "MTU limit {input:?} is not one UFM accepts: use 2 (2048-byte MTU) or 4 (4096-byte MTU); 2048 and 4096 are read as 2 and 4"
    )]
    MtuLimit { input: String },
    #[error("service level {input:?} is not one UFM accepts: use a whole number from 0 to 15")]
    ServiceLevel { input: String },
    #[error("rate limit {input:?} is not a rate UFM accepts: use one of {} (Gb/s)", RateLimit::accepted_list())]
    RateLimit { input: String },
}

impl AttributeError {
    /// Stable, machine-readable reason for Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AttributeError::Membership { .. } => "MembershipInvalid",
            AttributeError::MtuLimit { .. } => "MtuLimitInvalid",
            AttributeError::ServiceLevel { .. } => "ServiceLevelInvalid",
            AttributeError::RateLimit { .. } => "RateLimitInvalid",
        }
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
    type Err = AttributeError;
    fn from_str(s: &str) -> Result<Membership, AttributeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Membership::Full),
            "limited" => Ok(Membership::Limited),
            _ => Err(AttributeError::Membership { input: shown(s) }),
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
    type Err = AttributeError;
    /// `2` or `2048`, `4` or `4096`: UFM's code, or the MTU in bytes it stands for.
    fn from_str(s: &str) -> Result<MtuLimit, AttributeError> {
        match s.trim() {
            "2" | "2048" => Ok(MtuLimit::Mtu2k),
            "4" | "4096" => Ok(MtuLimit::Mtu4k),
            _ => Err(AttributeError::MtuLimit { input: shown(s) }),
        }
    }
}

/// A partition's InfiniBand service level, 0..=15.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceLevel(u8);

impl ServiceLevel {
    pub const MAX: u8 = 15;

    pub const fn new(value: u8) -> Option<ServiceLevel> {
        if value <= ServiceLevel::MAX { Some(ServiceLevel(value)) } else { None }
    }

    pub const fn value(self) -> u8 {
        self.0
    }
}

impl fmt::Display for ServiceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ServiceLevel {
    type Err = AttributeError;
    fn from_str(s: &str) -> Result<ServiceLevel, AttributeError> {
        s.trim()
            .parse::<u8>()
            .ok()
            .and_then(ServiceLevel::new)
            .ok_or_else(|| AttributeError::ServiceLevel { input: shown(s) })
    }
}

/// A partition rate limit UFM accepts, in Gb/s, kept in tenths so that it can be compared and
/// hashed (2.5 = 25). Only UFM's rates exist: anything else would be answered 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateLimit(u16);

impl RateLimit {
    /// UFM's rates (Gb/s × 10): 2.5, 5, 10, 14, 20, 25, 30, 40, 56, 60, 80, 100, 112, 120, 168, 200, 300.
    const ACCEPTED_TENTHS: [u16; 17] =
        [25, 50, 100, 140, 200, 250, 300, 400, 560, 600, 800, 1000, 1120, 1200, 1680, 2000, 3000];

    /// Every rate UFM accepts, lowest first.
    pub fn accepted() -> impl Iterator<Item = RateLimit> {
        RateLimit::ACCEPTED_TENTHS.into_iter().map(RateLimit)
    }

    /// `2.5, 5, 10, …, 300`.
    fn accepted_list() -> String {
        RateLimit::accepted().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
    }

    pub fn gbps(self) -> f64 {
        f64::from(self.0) / 10.0
    }
}

/// `2.5`, `200`: as UFM prints rates.
impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 % 10 {
            0 => write!(f, "{}", self.0 / 10),
            tenth => write!(f, "{}.{tenth}", self.0 / 10),
        }
    }
}

impl FromStr for RateLimit {
    type Err = AttributeError;
    /// A number of Gb/s (`200`, `200.0`, `2.5`) that UFM accepts.
    fn from_str(s: &str) -> Result<RateLimit, AttributeError> {
        let refused = || AttributeError::RateLimit { input: shown(s) };
        let v: f64 = s.trim().parse().map_err(|_| refused())?;
        if !v.is_finite() {
            return Err(refused());
        }
        let tenths = v * 10.0;
        RateLimit::ACCEPTED_TENTHS
            .into_iter()
            .find(|t| (f64::from(*t) - tenths).abs() < 1e-6)
            .map(RateLimit)
            .ok_or_else(refused)
    }
}

/// Quality-of-service attributes of a partition; `None` leaves UFM's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Qos {
    pub mtu_limit: Option<MtuLimit>,
    pub service_level: Option<ServiceLevel>,
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
    fn only_ufms_rates_parse() {
        let all: Vec<String> = RateLimit::accepted().map(|r| r.to_string()).collect();
        assert_eq!(all.join(" "), "2.5 5 10 14 20 25 30 40 56 60 80 100 112 120 168 200 300");
        for r in RateLimit::accepted() {
            assert_eq!(r.to_string().parse::<RateLimit>(), Ok(r));
            assert_eq!(format!("{:.1}", r.gbps()).parse::<RateLimit>(), Ok(r));
        }
        assert_eq!("2.5".parse::<RateLimit>().map(RateLimit::gbps), Ok(2.5));
        assert_eq!(" 200 ".parse::<RateLimit>().map(RateLimit::gbps), Ok(200.0));
        for bad in ["150", "0", "-5", "2.55", "2.4", "400", "1600", "fast", "NaN", "inf", "", "200Gbps"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        let e = "150".parse::<RateLimit>().unwrap_err();
        assert_eq!(e.reason(), "RateLimitInvalid");
        assert!(e.to_string().contains("\"150\"") && e.to_string().contains("2.5, 5, 10, 14,"), "{e}");
        assert!(e.to_string().contains("168, 200, 300 (Gb/s)"), "{e}");
    }

    #[test]
    fn mtu_and_service_level_take_only_ufms_values() {
        assert_eq!("4096".parse::<MtuLimit>(), Ok(MtuLimit::Mtu4k));
        assert_eq!("2".parse::<MtuLimit>(), Ok(MtuLimit::Mtu2k));
        for bad in ["1500", "1", "3", "8", "4k", ""] {
            let e = bad.parse::<MtuLimit>().unwrap_err();
            assert!(e.to_string().contains("use 2 (2048-byte MTU) or 4"), "{e}");
        }
        assert_eq!("15".parse::<ServiceLevel>().map(ServiceLevel::value), Ok(15));
        assert_eq!("0".parse::<ServiceLevel>().map(ServiceLevel::value), Ok(0));
        for bad in ["16", "-1", "1.5", "high", "256"] {
            let e = bad.parse::<ServiceLevel>().unwrap_err();
            assert!(e.to_string().contains("from 0 to 15"), "{e}");
        }
        assert_eq!("LIMITED".parse::<Membership>(), Ok(Membership::Limited));
        assert!("partial".parse::<Membership>().unwrap_err().to_string().contains("\"full\" nor \"limited\""));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "9".repeat(10_000);
        let e = long.parse::<RateLimit>().unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
        assert!(e.to_string().contains('…'));
    }

    proptest! {
        #[test]
        fn any_text_parses_only_to_accepted_rates(s in ".{0,12}") {
            if let Ok(r) = s.parse::<RateLimit>() {
                prop_assert!(RateLimit::accepted().any(|a| a == r));
            }
            let _ = s.parse::<ServiceLevel>();
            let _ = s.parse::<MtuLimit>();
        }
    }
}
