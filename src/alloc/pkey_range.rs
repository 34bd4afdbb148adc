//! The managed pkey range (`--pkey-range` / `FABRIC_SYNC_PKEY_RANGE`) for automatic partitions:
//! parsing the setting, choosing a free pkey given the sets of pkeys that must never be taken, and
//! deriving the names fabric-sync uses for what it creates (the UFM partition name and the
//! `PartitionClaim` object name). Pure: the adapter gathers the taken sets and does the I/O.

use std::collections::BTreeSet;
use std::fmt;

use crate::ib::PKey;

/// The setting's name, used in every error so the operator knows what to fix.
pub const PKEY_RANGE_SETTING: &str = "--pkey-range / FABRIC_SYNC_PKEY_RANGE";

/// Longest partition name we create (UFM's names are short identifiers; stay well inside).
pub const MAX_PARTITION_NAME: usize = 60;

/// An inclusive range of tenant pkeys fabric-sync may allocate from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PkeyRange {
    start: PKey,
    end: PKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkeyRangeError(String);

impl fmt::Display for PkeyRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PkeyRangeError {}

/// Why no pkey could be handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub range: PkeyRange,
    pub in_range: u32,
    pub unavailable: u32,
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no free pkey in {PKEY_RANGE_SETTING}={}: {} of {} are in use or reserved; \
             widen the range or delete unused automatic networks",
            self.range, self.unavailable, self.in_range
        )
    }
}

impl fmt::Display for PkeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}-0x{:04x}", self.start.value(), self.end.value())
    }
}

impl PkeyRange {
    /// Parses `0x1000-0x1fff`. Bounds must be tenant pkeys (0x0001..0x7ffe) and start <= end.
    pub fn parse(input: &str) -> Result<PkeyRange, PkeyRangeError> {
        let err = |why: String| PkeyRangeError(format!("{PKEY_RANGE_SETTING}: {why}; write e.g. \"0x1000-0x1fff\""));
        let s = input.trim();
        let Some((a, b)) = s.split_once('-') else {
            return Err(err(format!("{:?} is not START-END", shorten(s))));
        };
        let bound = |t: &str, which: &str| match PKey::parse_tenant(t.trim()) {
            Ok((p, None)) => Ok(p),
            Ok((_, Some(_))) => {
                Err(err(format!("{which} bound {:?} carries the membership bit 0x8000", shorten(t.trim()))))
            }
            Err(e) => Err(err(format!("{which} bound {:?}: {e}", shorten(t.trim())))),
        };
        let (start, end) = (bound(a, "start")?, bound(b, "end")?);
        if start.value() > end.value() {
            return Err(err(format!("start 0x{:04x} is after end 0x{:04x}", start.value(), end.value())));
        }
        Ok(PkeyRange { start, end })
    }

    pub fn start(self) -> PKey {
        self.start
    }

    pub fn end(self) -> PKey {
        self.end
    }

    pub fn len(self) -> u32 {
        u32::from(self.end.value() - self.start.value()) + 1
    }

    pub fn is_empty(self) -> bool {
        false
    }

    pub fn contains(self, p: PKey) -> bool {
        (self.start.value()..=self.end.value()).contains(&p.value())
    }

    /// How many pkeys of the range appear in `taken`.
    pub fn used(self, taken: &BTreeSet<u16>) -> u32 {
        taken.range(self.start.value()..=self.end.value()).count() as u32
    }

    /// The lowest pkey of the range not in `taken` (claims, fixed NAD pkeys, other tenants' policy
    /// pkeys, partitions already in UFM, pkeys found unusable), or the exhaustion refusal.
    pub fn choose(self, taken: &BTreeSet<u16>) -> Result<PKey, Exhausted> {
        let mut next = self.start.value();
        for &t in taken.range(self.start.value()..=self.end.value()) {
            if t != next {
                break;
            }
            next += 1;
        }
        if next <= self.end.value() {
            if let Some(p) = PKey::new(next) {
                return Ok(p);
            }
        }
        Err(Exhausted { range: self, in_range: self.len(), unavailable: self.used(taken) })
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The `PartitionClaim` object name for a pkey: one object per pkey, so the API server's
/// AlreadyExists on create is what makes allocation race-free.
pub fn claim_name(p: PKey) -> String {
    format!("pkey-0x{:04x}", p.value())
}

/// The UFM partition name for an automatic network: `fs_<namespace>_<name>_<pkey>`, characters
/// outside `[A-Za-z0-9_]` replaced by `_`, cut to [`MAX_PARTITION_NAME`]. The pkey suffix keeps it
/// unique even when sanitising or cutting makes two networks' names collide.
pub fn partition_name(namespace: &str, name: &str, p: PKey) -> String {
    let suffix = format!("_{:04x}", p.value());
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
    let mut base = format!("fs_{}_{}", clean(namespace), clean(name));
    base.truncate(MAX_PARTITION_NAME - suffix.len());
    base + &suffix
}

/// The UFM partition name for the automatic networks of a namespace that share one pkey
/// (`autoPkey: namespace`): `fs_<namespace>_<pkey>`, sanitised and bounded as [`partition_name`].
pub fn namespace_partition_name(namespace: &str, p: PKey) -> String {
    let suffix = format!("_{:04x}", p.value());
    let clean: String = namespace.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let mut base = format!("fs_{clean}");
    base.truncate(MAX_PARTITION_NAME - suffix.len());
    base + &suffix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u16]) -> BTreeSet<u16> {
        v.iter().copied().collect()
    }

    #[test]
    fn parses_and_refuses_with_the_setting_named() {
        let r = PkeyRange::parse(" 0x1000-0x1fff ").unwrap();
        assert_eq!((r.start().value(), r.end().value(), r.len()), (0x1000, 0x1fff, 0x1000));
        assert_eq!(r.to_string(), "0x1000-0x1fff");
        for bad in ["", "0x1000", "0x2000-0x1000", "0x0-0x10", "0x1-0x7fff", "0x1-0x8000", "1000-2000", "x-y"] {
            let e = PkeyRange::parse(bad).unwrap_err().to_string();
            assert!(e.contains("FABRIC_SYNC_PKEY_RANGE"), "{bad}: {e}");
        }
        assert!(PkeyRange::parse("0x1-0x7ffe").is_ok());
        assert!(PkeyRange::parse("0x5-0x5").is_ok());
    }

    #[test]
    fn chooses_lowest_free_and_skips_everything_taken() {
        let r = PkeyRange::parse("0x10-0x14").unwrap();
        assert_eq!(r.choose(&set(&[])).unwrap().value(), 0x10);
        assert_eq!(r.choose(&set(&[0x10, 0x11, 0x13])).unwrap().value(), 0x12);
        // taken values outside the range do not count
        assert_eq!(r.choose(&set(&[0x1, 0x10, 0x7ffe])).unwrap().value(), 0x11);
        assert_eq!(r.used(&set(&[0x1, 0x10, 0x14, 0x20])), 2);
    }

    #[test]
    fn exhaustion_is_a_clear_refusal() {
        let r = PkeyRange::parse("0x7ffc-0x7ffe").unwrap();
        let e = r.choose(&set(&[0x7ffc, 0x7ffd, 0x7ffe])).unwrap_err();
        assert_eq!((e.in_range, e.unavailable), (3, 3));
        let msg = e.to_string();
        assert!(msg.contains("--pkey-range") && msg.contains("3 of 3"), "{msg}");
    }

    #[test]
    fn names_are_sanitised_bounded_and_unique_per_pkey() {
        let p = PKey::new(0x1001).unwrap();
        assert_eq!(claim_name(p), "pkey-0x1001");
        assert_eq!(partition_name("team-a", "ib.net", p), "fs_team_a_ib_net_1001");
        let long = "n".repeat(300);
        let a = partition_name(&long, &long, p);
        let b = partition_name(&long, &long, PKey::new(0x1002).unwrap());
        assert!(a.len() <= MAX_PARTITION_NAME && a != b, "{a} {b}");
        assert!(partition_name("é/x", "a b", p).chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_eq!(namespace_partition_name("team-a", p), "fs_team_a_1001");
        assert!(namespace_partition_name(&long, p).len() <= MAX_PARTITION_NAME);
    }
}
