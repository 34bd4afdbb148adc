//! VFs carrying a GUID of the managed range that the ledger does not give to what sits on them:
//! a GUID the ledger gives to another attachment (a pod impersonating another in its partition),
//! or one no ledger entry of this node explains. Pure: data in, findings out.

use std::collections::BTreeMap;

use super::claims::{LedgerEntry, NodeLedger};
use super::verify::{Assigned, VfIndex};
use crate::alloc::GuidRange;
use crate::ib::Guid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ForeignKind {
    /// The ledger gives the GUID to another attachment (on another VF, or not on this VF).
    OfAnotherPod,
    /// No ledger entry of this node explains the GUID.
    Unexplained,
}

impl ForeignKind {
    /// Event reason and the `kind` label of `fabric_sync_agent_foreign_vf_guids_total`.
    pub fn reason(self) -> &'static str {
        match self {
            ForeignKind::OfAnotherPod => "VfGuidOfAnotherPod",
            ForeignKind::Unexplained => "VfGuidUnexplained",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ForeignKind::OfAnotherPod => "of_another_pod",
            ForeignKind::Unexplained => "unexplained",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignVf {
    pub pci: String,
    pub hca: String,
    pub vf: u32,
    pub guid: Guid,
    pub kind: ForeignKind,
    /// Index into the checked attachments of the one sitting on this VF, if any.
    pub holder: Option<usize>,
    /// Whom the ledger gives the GUID to.
    pub owner: Option<LedgerEntry>,
}

impl ForeignVf {
    pub fn describe(&self, assigned: &[Assigned]) -> String {
        let on = match self.holder.and_then(|h| assigned.get(h)) {
            Some(a) => match &a.ledger {
                Ok(e) => format!("attachment {} of pod {} (assigned {})", a.label, e.pod, e.guid),
                Err(_) => format!("attachment {}", a.label),
            },
            None => "no configured attachment".to_string(),
        };
        let whose = match (&self.owner, self.kind) {
            (Some(o), _) => format!("which the ledger gives to attachment {} of pod {}", o.label, o.pod),
            (None, _) => "which no GuidClaim of this node explains".to_string(),
        };
        format!("VF {} ({} vf {}) of {on} carries {}, {whose}", self.pci, self.hca, self.vf, self.guid)
    }
}

/// Findings over every InfiniBand VF. `located` maps a checked attachment's index to its VF.
pub fn foreign_vfs(
    vfs: &VfIndex,
    assigned: &[Assigned],
    located: &BTreeMap<usize, String>,
    ledger: &NodeLedger,
    range: &GuidRange,
) -> Vec<ForeignVf> {
    let mut out = Vec::new();
    for slot in vfs.by_pci.values().filter(|s| s.infiniband) {
        let Some(g) = slot.current().and_then(|g| Guid::new(g.0)).filter(|g| range.contains(*g)) else { continue };
        let holder = located.iter().find(|(_, pci)| **pci == slot.pci).map(|(i, _)| *i);
        let owner = ledger.owner(g).cloned();
        let kind = match holder {
            Some(h) => {
                let expected = assigned.get(h).and_then(|a| a.ledger.as_ref().ok()).map(|e| e.guid);
                if expected == Some(g) {
                    continue;
                }
                if owner.is_some() { ForeignKind::OfAnotherPod } else { ForeignKind::Unexplained }
            }
            None => match &owner {
                // Its owner sits on another VF: this one is a copy.
                Some(o) => {
                    let elsewhere = assigned
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| a.pod_uid == o.pod_uid && a.label == o.label)
                        .any(|(i, _)| located.get(&i).is_some_and(|p| *p != slot.pci));
                    if !elsewhere {
                        continue;
                    }
                    ForeignKind::OfAnotherPod
                }
                None => ForeignKind::Unexplained,
            },
        };
        out.push(ForeignVf { pci: slot.pci.clone(), hca: slot.hca.clone(), vf: slot.vf, guid: g, kind, holder, owner });
    }
    out
}
