//! What the engine believes UFM holds for GUIDs of the managed range: membership per GUID,
//! marked certain (UFM said so) or uncertain (a request was sent whose effect is unknown).
//! A periodic list replaces beliefs, except those changed locally after the list began.

use std::collections::HashMap;

use super::fabric::FabricListing;
use crate::alloc::GuidRange;
use crate::ib::{Guid, Membership, PKey, PartitionSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub pkey: PKey,
    pub membership: Membership,
    pub index0: bool,
    /// UFM confirmed it (list or accepted add); false while a request's effect is unknown.
    pub certain: bool,
    /// We put it there, so we may take it out even if no network names the pkey any more.
    pub ours: bool,
}

impl Member {
    /// The member is in the partition exactly as `spec` wants, and UFM said so.
    pub fn satisfies(&self, spec: &PartitionSpec) -> bool {
        self.certain && self.pkey == spec.pkey && self.membership == spec.membership && self.index0 == spec.index0
    }
}

#[derive(Debug, Default)]
pub struct Knowledge {
    members: HashMap<Guid, Vec<Member>>,
    per_pkey: HashMap<PKey, usize>,
    /// Generation of each GUID's last local change; a list started before it does not overwrite it.
    touched: HashMap<Guid, u64>,
    generation: u64,
}

impl Knowledge {
    pub fn members(&self, g: Guid) -> &[Member] {
        self.members.get(&g).map_or(&[], Vec::as_slice)
    }

    pub fn is_listed(&self, g: Guid) -> bool {
        self.members.get(&g).is_some_and(|m| !m.is_empty())
    }

    /// Members of a pkey (managed range) the engine knows of.
    pub fn pkey_members(&self, p: PKey) -> usize {
        self.per_pkey.get(&p).copied().unwrap_or(0)
    }

    pub fn guids(&self) -> impl Iterator<Item = Guid> + '_ {
        self.members.keys().copied()
    }

    fn touch(&mut self, g: Guid) {
        self.generation += 1;
        self.touched.insert(g, self.generation);
    }

    fn set(&mut self, g: Guid, m: Member) {
        let list = self.members.entry(g).or_default();
        match list.iter_mut().find(|x| x.pkey == m.pkey) {
            Some(x) => *x = Member { ours: x.ours || m.ours, ..m },
            None => {
                list.push(m);
                *self.per_pkey.entry(m.pkey).or_insert(0) += 1;
            }
        }
    }

    fn unset(&mut self, g: Guid, p: PKey) {
        if let Some(list) = self.members.get_mut(&g) {
            if let Some(i) = list.iter().position(|x| x.pkey == p) {
                list.swap_remove(i);
                if let Some(n) = self.per_pkey.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_pkey.remove(&p);
                    }
                }
            }
            if list.is_empty() {
                self.members.remove(&g);
            }
        }
    }

    /// An add is on its way: the GUID may be in the partition from now on.
    pub fn add_sent(&mut self, g: Guid, spec: &PartitionSpec) {
        let keep_certain = self.members(g).iter().any(|m| m.satisfies(spec));
        self.set(
            g,
            Member {
                pkey: spec.pkey,
                membership: spec.membership,
                index0: spec.index0,
                certain: keep_certain,
                ours: true,
            },
        );
        self.touch(g);
    }

    pub fn add_accepted(&mut self, g: Guid, spec: &PartitionSpec) {
        self.set(
            g,
            Member { pkey: spec.pkey, membership: spec.membership, index0: spec.index0, certain: true, ours: true },
        );
        self.touch(g);
    }

    /// A removal was accepted: the GUID is no longer a member of `p`.
    pub fn remove_accepted(&mut self, g: Guid, p: PKey) {
        self.unset(g, p);
        self.touch(g);
    }

    /// A removal failed: whatever we knew of the membership is unsure now.
    pub fn remove_failed(&mut self, g: Guid, p: PKey) {
        if let Some(m) = self.members.get_mut(&g).and_then(|l| l.iter_mut().find(|x| x.pkey == p)) {
            m.certain = false;
        }
        self.touch(g);
    }

    /// Marks the start of a list request; pass the value to [`Knowledge::merge_list`].
    pub fn list_started(&self) -> u64 {
        self.generation
    }

    /// Replaces beliefs with the listing (GUIDs in `range` only), leaving GUIDs changed locally
    /// since `started` alone. Returns every GUID whose membership changed.
    pub fn merge_list(&mut self, listing: &FabricListing, range: GuidRange, started: u64) -> Vec<Guid> {
        let mut listed: HashMap<Guid, Vec<Member>> = HashMap::new();
        for (&pkey, members) in listing {
            for m in members.iter().filter(|m| range.contains(m.guid)) {
                listed.entry(m.guid).or_default().push(Member {
                    pkey,
                    membership: m.membership,
                    index0: m.index0,
                    certain: true,
                    ours: false,
                });
            }
        }
        let fresh = |touched: &HashMap<Guid, u64>, g: &Guid| touched.get(g).is_none_or(|&t| t <= started);
        let mut changed = Vec::new();
        let known: Vec<Guid> = self.members.keys().copied().collect();
        for g in known {
            if !listed.contains_key(&g) && fresh(&self.touched, &g) {
                let pkeys: Vec<PKey> = self.members(g).iter().map(|m| m.pkey).collect();
                for p in pkeys {
                    self.unset(g, p);
                }
                changed.push(g);
            }
        }
        for (g, new) in listed {
            if !fresh(&self.touched, &g) {
                continue;
            }
            let old: Vec<Member> = self.members(g).to_vec();
            for m in &old {
                if !new.iter().any(|n| n.pkey == m.pkey) {
                    self.unset(g, m.pkey);
                }
            }
            for n in &new {
                let ours = old.iter().any(|m| m.pkey == n.pkey && m.ours);
                self.set(g, Member { ours, ..*n });
            }
            if old.len() != new.len() || old.iter().zip(&new).any(|(a, b)| !a.satisfies_member(b)) {
                changed.push(g);
            }
        }
        self.touched.retain(|_, &mut t| t > started);
        changed
    }
}

impl Member {
    fn satisfies_member(&self, other: &Member) -> bool {
        self.certain && self.pkey == other.pkey && self.membership == other.membership && self.index0 == other.index0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fabric::FabricMember;

    fn g(v: u64) -> Guid {
        Guid::new(0x0200_0000_0000_0000 + v).unwrap()
    }

    fn spec(p: u16) -> PartitionSpec {
        PartitionSpec::new(PKey::new(p).unwrap())
    }

    fn listing(entries: &[(u16, u64)]) -> FabricListing {
        let mut l = FabricListing::new();
        for &(p, v) in entries {
            l.entry(PKey::new(p).unwrap()).or_default().push(FabricMember {
                guid: g(v),
                membership: Membership::Full,
                index0: true,
            });
        }
        l
    }

    #[test]
    fn sent_add_is_uncertain_until_accepted() {
        let mut k = Knowledge::default();
        k.add_sent(g(1), &spec(5));
        assert!(!k.members(g(1))[0].satisfies(&spec(5)));
        k.add_accepted(g(1), &spec(5));
        assert!(k.members(g(1))[0].satisfies(&spec(5)));
        assert_eq!(k.pkey_members(spec(5).pkey), 1);
        k.remove_accepted(g(1), spec(5).pkey);
        assert!(!k.is_listed(g(1)));
        assert_eq!(k.pkey_members(spec(5).pkey), 0);
    }

    #[test]
    fn list_replaces_beliefs_but_not_newer_local_changes() {
        let mut k = Knowledge::default();
        k.add_accepted(g(1), &spec(5));
        let started = k.list_started();
        k.add_accepted(g(2), &spec(5)); // after the list began
        let changed = k.merge_list(&listing(&[(6, 3)]), GuidRange::DEFAULT, started);
        assert!(!k.is_listed(g(1)), "g1 is gone from UFM");
        assert!(k.is_listed(g(2)), "g2 changed after the list started");
        assert!(k.members(g(3))[0].certain);
        assert!(changed.contains(&g(1)) && changed.contains(&g(3)));
    }

    #[test]
    fn list_ignores_guids_outside_the_range_and_keeps_ownership() {
        let mut k = Knowledge::default();
        k.add_accepted(g(1), &spec(5));
        let range = GuidRange::new(g(0), g(10)).unwrap();
        let mut l = listing(&[(5, 1)]);
        l.entry(PKey::new(5).unwrap()).or_default().push(FabricMember {
            guid: Guid::new(0x0300_0000_0000_0001).unwrap(),
            membership: Membership::Full,
            index0: false,
        });
        let started = k.list_started();
        k.merge_list(&l, range, started);
        assert!(k.members(g(1))[0].ours);
        assert_eq!(k.pkey_members(PKey::new(5).unwrap()), 1);
    }
}
