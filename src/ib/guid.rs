//! `Guid`: a 64-bit InfiniBand port/node GUID with the textual forms used by Multus, UFM and sysfs.

use std::fmt;
use std::str::FromStr;

/// A 64-bit InfiniBand GUID. Never all-zero and never all-ones: both are reserved
/// (a fresh VF carries zero, ib-sriov-cni writes all-ones to mean "unset").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(u64);

/// Why a string is not a GUID. Every message names the input and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuidError {
    #[error("GUID is empty: write 8 bytes, e.g. 02:00:00:00:00:00:00:01")]
    Empty,
    #[error("GUID {input:?} has {digits} hex digits, a GUID has 16 (e.g. 02:00:00:00:00:00:00:01 or 0200000000000001)")]
    WrongLength { input: String, digits: usize },
    #[error("GUID {input:?} contains {found:?}, which is not a hex digit")]
    NonHex { input: String, found: char },
    #[error(
        "GUID {input:?} mixes separators or groups bytes oddly: use 02:00:00:00:00:00:00:01, 0200:0000:0000:0001 or 0200000000000001"
    )]
    BadGrouping { input: String },
    #[error("GUID {input:?} is all zero, which is reserved (an unprogrammed VF carries it)")]
    Zero { input: String },
    #[error("GUID {input:?} is all ones (FF:FF:FF:FF:FF:FF:FF:FF), which is reserved")]
    AllOnes { input: String },
}

impl GuidError {
    /// Stable, machine-readable reason for Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            GuidError::Empty => "GuidEmpty",
            GuidError::WrongLength { .. } => "GuidWrongLength",
            GuidError::NonHex { .. } => "GuidNonHex",
            GuidError::BadGrouping { .. } => "GuidBadGrouping",
            GuidError::Zero { .. } => "GuidZero",
            GuidError::AllOnes { .. } => "GuidAllOnes",
        }
    }
}

impl Guid {
    /// The smallest and largest values a `Guid` may hold.
    pub const MIN: Guid = Guid(1);
    pub const MAX: Guid = Guid(u64::MAX - 1);

    /// A GUID from its numeric value; `None` for the reserved all-zero and all-ones values.
    pub const fn new(value: u64) -> Option<Guid> {
        if value == 0 || value == u64::MAX { None } else { Some(Guid(value)) }
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    /// The form UFM takes and returns: 16 lowercase hex digits, no separators.
    pub fn to_ufm(self) -> String {
        format!("{:016x}", self.0)
    }

    /// The form sysfs prints node GUIDs in: `xxxx:xxxx:xxxx:xxxx`.
    pub fn to_sysfs(self) -> String {
        let v = self.0;
        format!("{:04x}:{:04x}:{:04x}:{:04x}", (v >> 48) & 0xffff, (v >> 32) & 0xffff, (v >> 16) & 0xffff, v & 0xffff)
    }

    /// The 8 bytes, most significant first (the order netlink's `ifla_vf_guid` carries them in).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

/// Colon form, lowercase: `02:00:00:00:00:00:00:01` (what pod annotations carry).
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = GuidError;

    /// Accepts `02:00:00:00:00:00:00:01` (also with `-`), `0200:0000:0000:0001` (sysfs),
    /// `0200000000000001` and `0x0200000000000001`, in any case.
    fn from_str(input: &str) -> Result<Guid, GuidError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(GuidError::Empty);
        }
        let body = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
        let sep = body.chars().find(|c| matches!(c, ':' | '-' | '.'));
        let digits: String = match sep {
            None => body.to_string(),
            Some(sep) => {
                if body.len() != s.len() {
                    // "0x" followed by a separated form is not a form anyone writes.
                    return Err(GuidError::BadGrouping { input: input.into() });
                }
                let groups: Vec<&str> = body.split(sep).collect();
                let shape_ok = match groups.len() {
                    8 => groups.iter().all(|g| g.len() == 2),
                    4 => groups.iter().all(|g| g.len() == 4),
                    _ => false,
                };
                if let Some(found) = body.chars().find(|c| !c.is_ascii_hexdigit() && *c != sep) {
                    return Err(non_hex_or_grouping(input, found));
                }
                if !shape_ok {
                    let digits = groups.iter().map(|g| g.len()).sum();
                    return Err(if digits == 16 {
                        GuidError::BadGrouping { input: input.into() }
                    } else {
                        GuidError::WrongLength { input: input.into(), digits }
                    });
                }
                groups.concat()
            }
        };
        if let Some(found) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(non_hex_or_grouping(input, found));
        }
        if digits.len() != 16 {
            return Err(GuidError::WrongLength { input: input.into(), digits: digits.len() });
        }
        let value = u64::from_str_radix(&digits, 16)
            .map_err(|_| GuidError::WrongLength { input: input.into(), digits: digits.len() })?;
        match value {
            0 => Err(GuidError::Zero { input: input.into() }),
            u64::MAX => Err(GuidError::AllOnes { input: input.into() }),
            v => Ok(Guid(v)),
        }
    }
}

fn non_hex_or_grouping(input: &str, found: char) -> GuidError {
    if matches!(found, ':' | '-' | '.') {
        GuidError::BadGrouping { input: input.into() }
    } else {
        GuidError::NonHex { input: input.into(), found }
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_documented_form_in_any_case() {
        let want = Guid(0x0200_0000_0000_00ab);
        for s in [
            "02:00:00:00:00:00:00:ab",
            "02:00:00:00:00:00:00:AB",
            "02-00-00-00-00-00-00-ab",
            "0200:0000:0000:00ab",
            "02000000000000AB",
            "0x02000000000000ab",
            "0X02000000000000AB",
            " 02000000000000ab ",
        ] {
            assert_eq!(s.parse::<Guid>(), Ok(want), "{s}");
        }
    }

    #[test]
    fn prints_colon_ufm_and_sysfs_forms() {
        let g: Guid = "0x0200000000000001".parse().unwrap();
        assert_eq!(g.to_string(), "02:00:00:00:00:00:00:01");
        assert_eq!(g.to_ufm(), "0200000000000001");
        assert_eq!(g.to_sysfs(), "0200:0000:0000:0001");
    }

    #[test]
    fn rejects_reserved_values_with_the_reason() {
        assert!(matches!("00:00:00:00:00:00:00:00".parse::<Guid>(), Err(GuidError::Zero { .. })));
        assert!(matches!("ffffffffffffffff".parse::<Guid>(), Err(GuidError::AllOnes { .. })));
        assert!(matches!("".parse::<Guid>(), Err(GuidError::Empty)));
        assert!(matches!("02:00:00:00:00:00:01".parse::<Guid>(), Err(GuidError::WrongLength { digits: 14, .. })));
        assert!(matches!("02:00:00:00:00:00:00:0g".parse::<Guid>(), Err(GuidError::NonHex { found: 'g', .. })));
        assert!(matches!("02:00:00:00-00:00:00:01".parse::<Guid>(), Err(GuidError::BadGrouping { .. })));
        assert!(matches!("0200:00:00:00:00:00:01".parse::<Guid>(), Err(GuidError::BadGrouping { .. })));
    }

    #[test]
    fn serde_uses_the_colon_form() {
        let g = Guid(0x0200_0000_0000_0010);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, "\"02:00:00:00:00:00:00:10\"");
        assert_eq!(serde_json::from_str::<Guid>(&json).unwrap(), g);
        assert!(serde_json::from_str::<Guid>("\"nope\"").is_err());
    }

    proptest! {
        #[test]
        fn every_printed_form_parses_back(v in 1u64..u64::MAX) {
            let g = Guid::new(v).unwrap();
            prop_assert_eq!(g.to_string().parse::<Guid>(), Ok(g));
            prop_assert_eq!(g.to_ufm().parse::<Guid>(), Ok(g));
            prop_assert_eq!(g.to_sysfs().parse::<Guid>(), Ok(g));
            prop_assert_eq!(g.to_string().to_uppercase().parse::<Guid>(), Ok(g));
            prop_assert_eq!(format!("0x{}", g.to_ufm()).parse::<Guid>(), Ok(g));
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Guid>();
        }
    }
}
