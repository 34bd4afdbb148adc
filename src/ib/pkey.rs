//! `PKey`: a 15-bit InfiniBand partition key and its membership bit, parsed from the text
//! people write, with errors that suggest what to write instead.

use std::fmt;
use std::str::FromStr;

use super::partition::{Membership, shown};

/// A partition key without its membership bit: `0x0001`..=`0x7fff`.
/// `0x7fff` is the default (management) partition; tenants get `0x0001`..=`0x7ffe`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PKey(u16);

/// Why a string is not a usable pkey. Messages say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PKeyError {
    #[error("pkey is empty: write a hex value such as \"0x1000\"")]
    Empty,
    /// Digits without `0x`. `hint` suggests the hex and decimal readings that are valid pkeys.
    #[error(
        "pkey {input:?} has no 0x prefix; bare numbers are ambiguous (decimal or hex?) and a wrong pkey joins another tenant's partition: {hint}"
    )]
    MissingHexPrefix { input: String, hint: String },
    #[error("pkey {input:?} is not a hex number: write 0x followed by 1 to 4 hex digits, e.g. \"0x1000\"")]
    NotHex { input: String },
    #[error(
        "pkey {input:?} does not fit in 16 bits: tenant pkeys are 0x0001..0x7ffe (0x8000 is the full-membership bit)"
    )]
    TooLarge { input: String },
    #[error(
        "pkey {input:?} is 0x0000 without the 0x8000 membership bit, which is invalid in InfiniBand: use 0x0001..0x7ffe"
    )]
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

    /// The error for hex digits written without `0x`, suggesting only readings that are
    /// usable tenant pkeys (never a value that would be refused in turn).
    fn missing_prefix(digits: &str) -> PKeyError {
        let tenant = |v: u32| (1..=0x7ffe).contains(&(v & 0x7fff)) && v <= 0xffff;
        let as_hex = u32::from_str_radix(digits, 16).ok().filter(|v| digits.len() <= 4 && tenant(*v));
        let as_dec = digits.parse::<u32>().ok().filter(|v| tenant(*v));
        let hint = match (as_hex, as_dec) {
            (Some(_), Some(d)) if format!("{d:x}") == digits.trim_start_matches('0') => {
                format!("write \"0x{digits}\"")
            }
            (Some(_), Some(d)) => {
                format!("write \"0x{digits}\" if you meant hex, or \"0x{d:x}\" if you meant decimal {d}")
            }
            (Some(_), None) => format!("write \"0x{digits}\" if you meant hex"),
            (None, Some(d)) => format!("write \"0x{d:x}\" if you meant decimal {d}"),
            (None, None) => "write 0x followed by 1 to 4 hex digits in 0x0001..0x7ffe, e.g. \"0x1000\"".to_string(),
        };
        PKeyError::MissingHexPrefix { input: shown(digits), hint }
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
                PKeyError::missing_prefix(s)
            } else {
                PKeyError::NotHex { input: shown(s) }
            });
        };
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PKeyError::NotHex { input: shown(s) });
        }
        let trimmed = hex.trim_start_matches('0');
        if trimmed.len() > 4 {
            return Err(PKeyError::TooLarge { input: shown(s) });
        }
        let raw = if trimmed.is_empty() {
            0
        } else {
            u16::from_str_radix(trimmed, 16).map_err(|_| PKeyError::TooLarge { input: shown(s) })?
        };
        let membership = (raw & PKey::FULL_BIT != 0).then_some(Membership::Full);
        match raw & !PKey::FULL_BIT {
            0 => Err(PKeyError::Zero { input: shown(s) }),
            v => Ok((PKey(v), membership)),
        }
    }

    /// Parses a pkey a tenant network may use: like [`PKey::parse_with_membership`], and not 0x7fff.
    pub fn parse_tenant(input: &str) -> Result<(PKey, Option<Membership>), PKeyError> {
        let parsed = PKey::parse_with_membership(input)?;
        if parsed.0.is_default() {
            return Err(PKeyError::DefaultPartition { input: shown(input) });
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
        assert_eq!(err.reason(), "PKeyNotHexPrefixed");
        let msg = err.to_string();
        assert!(
            msg.contains("\"0x1000\" if you meant hex") && msg.contains("\"0x3e8\" if you meant decimal 1000"),
            "{msg}"
        );
    }

    #[test]
    fn suggestions_for_bare_digits_are_only_usable_pkeys() {
        let hint = |s: &str| match s.parse::<PKey>() {
            Err(PKeyError::MissingHexPrefix { hint, .. }) => hint,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(hint("5"), "write \"0x5\"");
        assert_eq!(hint("ff"), "write \"0xff\" if you meant hex");
        assert_eq!(hint("20000"), "write \"0x4e20\" if you meant decimal 20000");
        for hopeless in ["0", "7fff", "32767", "99999", "123456789abcdef"] {
            assert!(hint(hopeless).starts_with("write 0x followed by"), "{hopeless}: {}", hint(hopeless));
        }
        // Every suggestion parses back to a tenant pkey.
        for s in ["1", "10", "999", "1000", "4096", "8005", "ab", "7ffe", "32766"] {
            let h = hint(s);
            for quoted in h.split('"').skip(1).step_by(2) {
                assert!(PKey::parse_tenant(quoted).is_ok(), "{s}: suggested {quoted}");
            }
        }
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
