//! The ownership ledger as the agent reads it: the GuidClaims of this node's pods, indexed by
//! GUID and by attachment. The ledger (written only by the controller), not the pod annotation
//! (tenant-writable), says which GUID a VF must carry and which pkey it joins.
//!
//! Claims carry the label [`NODE_LABEL`] (one list per pass); a local pod whose claim was written
//! before that label existed is fetched by name (its UID) instead.

use std::collections::BTreeMap;

use crate::engine::Claim;
use crate::ib::{Guid, PKey};

/// GuidClaim label naming the claim's node (set by the controller).
pub use crate::wire::keys::NODE_LABEL;

/// One attachment's record in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// `namespace/name` of the pod.
    pub pod: String,
    pub pod_uid: String,
    /// `ns/net`, `ns/net@iface`, `ns/net#2`: the attachment's label.
    pub label: String,
    pub guid: Guid,
    /// The pkey the GUID is a member of; `None`: no partition.
    pub pkey: Option<PKey>,
    /// The claim is being deleted (its pod is gone): the GUID is explained, nothing to verify.
    pub leaving: bool,
}

/// The ledger entries of this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLedger {
    by_guid: BTreeMap<Guid, LedgerEntry>,
    by_attachment: BTreeMap<(String, String), Guid>,
}

impl NodeLedger {
    pub fn from_claims<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> NodeLedger {
        let mut l = NodeLedger::default();
        for c in claims {
            for a in &c.attachments {
                let e = LedgerEntry {
                    pod: format!("{}/{}", c.pod.namespace, c.pod.name),
                    pod_uid: c.pod_uid.to_string(),
                    label: format!("{}{}", a.network, a.slot),
                    guid: a.guid,
                    pkey: a.pkey,
                    leaving: c.deleting,
                };
                if !e.leaving {
                    l.by_attachment.insert((e.pod_uid.clone(), e.label.clone()), e.guid);
                }
                // A GUID in two claims cannot happen (the controller's invariant); the live
                // one wins if it does.
                if l.by_guid.get(&a.guid).is_none_or(|old| old.leaving) {
                    l.by_guid.insert(a.guid, e);
                }
            }
        }
        l
    }

    /// Who the ledger gives `g` to.
    pub fn owner(&self, g: Guid) -> Option<&LedgerEntry> {
        self.by_guid.get(&g)
    }

    /// The live entry of one attachment of one pod.
    pub fn assigned(&self, pod_uid: &str, label: &str) -> Option<&LedgerEntry> {
        let g = self.by_attachment.get(&(pod_uid.to_string(), label.to_string()))?;
        self.by_guid.get(g)
    }

    /// Whether any live claim of this pod is known.
    pub fn has_pod(&self, pod_uid: &str) -> bool {
        self.by_attachment.keys().any(|(uid, _)| uid == pod_uid)
    }

    pub fn len(&self) -> usize {
        self.by_guid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_guid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ClaimedAttachment, ObjectKey, PodUid, Slot};
    use crate::netdef::NetworkKey;
    use std::sync::Arc;

    fn claim(uid: &str, guid: u64, deleting: bool) -> Claim {
        Claim {
            pod_uid: PodUid::new(uid),
            pod: ObjectKey { namespace: "t".into(), name: format!("p-{uid}") },
            node: Arc::from("n1"),
            migrated: false,
            deleting,
            attachments: vec![ClaimedAttachment {
                network: NetworkKey::new("t", "ib"),
                slot: Slot::Interface("net1".into()),
                guid: Guid::new(guid).unwrap(),
                pkey: PKey::new(0x1000),
                former_pkeys: vec![],
                fabric: None,
            }],
        }
    }

    #[test]
    fn entries_are_found_by_guid_and_by_attachment_and_leaving_claims_only_explain() {
        let l = NodeLedger::from_claims(&[
            claim("a", 0x0200_0000_0000_0001, false),
            claim("b", 0x0200_0000_0000_0002, true),
        ]);
        let a = l.assigned("a", "t/ib@net1").unwrap();
        assert_eq!((a.pod.as_str(), a.guid.value(), a.pkey), ("t/p-a", 0x0200_0000_0000_0001, PKey::new(0x1000)));
        assert!(l.assigned("b", "t/ib@net1").is_none(), "a deleted pod has nothing to verify");
        assert!(l.owner(Guid::new(0x0200_0000_0000_0002).unwrap()).unwrap().leaving);
        assert!(l.has_pod("a") && !l.has_pod("b"));
    }
}
