//! The managed pkey range in `fabric-sync audit` (automatic partitions, docs/partitions.md):
//! how many pkeys PartitionClaims hold, which partitions of the range UFM has without a claim
//! (never taken), how many are free, and which automatic networks wait. Pure: reads the state.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::alloc::PKEY_RANGE_SETTING;
use crate::engine::{Effective, FabricListing, PartitionPhase, Reason, State, covering_claim};

#[derive(Clone, Debug, Serialize)]
pub struct PkeyRangeRow {
    pub range: String,
    pub size: u32,
    pub claimed: usize,
    pub created: usize,
    /// pkeys of the range UFM has that no claim holds (someone else's: never taken).
    pub in_ufm_unclaimed: Vec<String>,
    pub free: u32,
    /// Automatic networks without a usable pkey, with why.
    pub waiting: Vec<(String, String)>,
}

/// `None` when automatic partitions are off (`--pkey-range` unset).
pub fn range_row(state: &State, listing: &FabricListing) -> Option<PkeyRangeRow> {
    let range = state.config().pkey_range?;
    let claims: Vec<_> = state.partition_claims().values().filter(|c| range.contains(c.pkey)).collect();
    let claimed: BTreeSet<u16> = claims.iter().map(|c| c.pkey.value()).collect();
    let unclaimed: BTreeSet<u16> =
        listing.keys().filter(|p| range.contains(**p)).map(|p| p.value()).filter(|p| !claimed.contains(p)).collect();
    let taken: BTreeSet<u16> = claimed.union(&unclaimed).copied().collect();
    let free = range.len() - range.used(&taken);
    let mut waiting: Vec<(String, String)> = state
        .networks()
        .iter()
        .filter_map(|(k, d)| match d.effective() {
            // The controller's exhaustion refusal is not stored: the audit tells it from the range.
            Effective::Waiting(r)
                if r.reason == Reason::PartitionPending
                    && free == 0
                    && covering_claim(state.partition_claims(), k).is_none() =>
            {
                Some((
                    k.to_string(),
                    format!("{}: no free pkey in {PKEY_RANGE_SETTING}={range}", Reason::PkeyRangeExhausted),
                ))
            }
            Effective::Waiting(r) | Effective::Refused(r) => {
                Some((k.to_string(), format!("{}: {}", r.reason, r.message)))
            }
            _ => None,
        })
        .collect();
    waiting.sort();
    Some(PkeyRangeRow {
        range: range.to_string(),
        size: range.len(),
        claimed: claims.len(),
        created: claims.iter().filter(|c| c.phase == PartitionPhase::Created).count(),
        in_ufm_unclaimed: unclaimed.iter().map(|p| format!("0x{p:04x}")).collect(),
        free,
        waiting,
    })
}
