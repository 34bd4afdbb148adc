//! The partition reconciler's view of the cluster: the watched NADs and PartitionClaims, and
//! the reconciler's own claim writes that the watch has not delivered yet, so that a pass right
//! after a write neither allocates a second pkey nor repeats a step. Plain data, no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::watcher;
use tokio::time::Instant;

use super::partition_claims::StoredClaim;
use crate::engine::{PartitionPhase, PartitionScope};
use crate::netdef::NetworkKey;

/// The watched objects.
#[derive(Default)]
pub(super) struct Store {
    pub(super) objects: BTreeMap<String, DynamicObject>,
    relist: Option<BTreeMap<String, DynamicObject>>,
    pub(super) synced: bool,
}

impl Store {
    pub(super) fn apply(&mut self, event: watcher::Event<DynamicObject>) {
        let key = |o: &DynamicObject| {
            format!("{}/{}", o.metadata.namespace.as_deref().unwrap_or(""), o.metadata.name.as_deref().unwrap_or(""))
        };
        match event {
            watcher::Event::Init => self.relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(o) => {
                self.relist.get_or_insert_with(BTreeMap::new).insert(key(&o), o);
            }
            watcher::Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.synced = true;
            }
            watcher::Event::Apply(o) => {
                self.objects.insert(key(&o), o);
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&key(&o));
            }
        }
    }
}

/// Work carried between passes: refusals already told to the engine (so they are said once),
/// and our own claim writes the watch has not delivered yet (`None`: deleted), so that a pass
/// right after a write neither allocates twice nor repeats a step.
#[derive(Default)]
pub(super) struct Memory {
    pub(super) refused: BTreeMap<NetworkKey, String>,
    written: BTreeMap<String, (Instant, Option<StoredClaim>)>,
}

/// How long an own write may wait for its watch event before the watch is believed again
/// (someone else changed the object meanwhile).
const WRITE_MEMORY: Duration = Duration::from_secs(30);

impl Memory {
    /// The claims as the watch has them, with our newer writes on top; a write the watch has
    /// caught up with is forgotten.
    pub(super) fn wrote(&mut self, name: &str, claim: Option<StoredClaim>) {
        self.written.insert(name.to_string(), (Instant::now(), claim));
    }

    pub(super) fn book(&mut self, watched: BTreeMap<String, StoredClaim>) -> BTreeMap<String, StoredClaim> {
        self.written.retain(|name, (at, w)| watched.get(name) != w.as_ref() && at.elapsed() < WRITE_MEMORY);
        let mut book = watched;
        for (name, (_, w)) in &self.written {
            match w {
                Some(c) => book.insert(name.clone(), c.clone()),
                None => book.remove(name),
            };
        }
        book
    }
}

pub(super) fn in_scope(scope: &PartitionScope, key: &NetworkKey) -> bool {
    match scope {
        PartitionScope::Network(k) => k == key,
        PartitionScope::Namespace(ns) => *key.namespace == **ns,
    }
}

/// The live claim that covers the network, as the engine resolves it.
pub(super) fn covering<'a>(book: &'a BTreeMap<String, StoredClaim>, key: &NetworkKey) -> Option<&'a StoredClaim> {
    let live = |c: &&StoredClaim| !c.claim.deleting && c.claim.phase != PartitionPhase::Deleting;
    let own = PartitionScope::Network(key.clone());
    let ns = PartitionScope::Namespace(key.namespace.to_string());
    book.values()
        .filter(live)
        .find(|c| c.claim.scope == own)
        .or_else(|| book.values().filter(live).find(|c| c.claim.scope == ns))
}

/// Whether a live claim with the same scope and a lower name exists (that one is used).
pub(super) fn duplicate(book: &BTreeMap<String, StoredClaim>, c: &StoredClaim) -> bool {
    book.values().any(|o| {
        o.claim.scope == c.claim.scope
            && o.claim.name < c.claim.name
            && !o.claim.deleting
            && o.claim.phase != PartitionPhase::Deleting
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PartitionClaim;
    use crate::ib::PKey;

    fn stored(pkey: u16, phase: PartitionPhase) -> StoredClaim {
        let p = PKey::new(pkey).unwrap();
        StoredClaim {
            claim: PartitionClaim {
                name: crate::alloc::claim_name(p),
                pkey: p,
                scope: PartitionScope::Network(NetworkKey::new("t", "ib")),
                phase,
                deleting: false,
            },
            partition_name: "fs_t_ib".into(),
            created_in_ufm: phase == PartitionPhase::Created,
        }
    }

    #[test]
    fn own_writes_count_until_the_watch_delivers_them() {
        let mut m = Memory::default();
        let created = stored(0x1000, PartitionPhase::Created);
        m.wrote("pkey-0x1000", Some(created.clone()));
        m.wrote("pkey-0x1001", None);
        let watched = BTreeMap::from([
            ("pkey-0x1000".to_string(), stored(0x1000, PartitionPhase::Allocated)),
            ("pkey-0x1001".to_string(), stored(0x1001, PartitionPhase::Created)),
        ]);
        let book = m.book(watched);
        assert_eq!(book.get("pkey-0x1000"), Some(&created), "our newer write wins over the stale watch");
        assert!(!book.contains_key("pkey-0x1001"), "our delete wins");
        // The watch catches up: the memory is forgotten, the watch is believed again.
        let caught_up = BTreeMap::from([("pkey-0x1000".to_string(), created.clone())]);
        assert_eq!(m.book(caught_up).len(), 1);
        assert!(m.written.is_empty());
        let later = BTreeMap::from([("pkey-0x1000".to_string(), stored(0x1000, PartitionPhase::Deleting))]);
        assert_eq!(m.book(later)["pkey-0x1000"].claim.phase, PartitionPhase::Deleting);
    }

    #[test]
    fn a_network_is_covered_by_its_own_claim_first() {
        let mut ns = stored(0x1001, PartitionPhase::Created);
        ns.claim.scope = PartitionScope::Namespace("t".into());
        ns.claim.name = "pkey-0x1001".into();
        let own = stored(0x1002, PartitionPhase::Created);
        let key = NetworkKey::new("t", "ib");
        let book = BTreeMap::from([("pkey-0x1001".to_string(), ns.clone()), ("pkey-0x1002".to_string(), own)]);
        assert_eq!(covering(&book, &key).map(|c| c.claim.pkey.value()), Some(0x1002));
        let only_ns = BTreeMap::from([("pkey-0x1001".to_string(), ns)]);
        assert_eq!(covering(&only_ns, &key).map(|c| c.claim.pkey.value()), Some(0x1001));
        assert!(covering(&only_ns, &NetworkKey::new("u", "ib")).is_none());
        assert!(in_scope(&PartitionScope::Namespace("t".into()), &key));
        let mut second = stored(0x1003, PartitionPhase::Allocated);
        second.claim.name = "pkey-0x1003".into();
        let mut two = BTreeMap::from([("pkey-0x1002".to_string(), stored(0x1002, PartitionPhase::Created))]);
        two.insert("pkey-0x1003".into(), second.clone());
        assert!(duplicate(&two, &second) && !duplicate(&two, &two["pkey-0x1002"]));
    }
}
