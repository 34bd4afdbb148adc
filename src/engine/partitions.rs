//! Automatic partitions as the engine sees them: the partition ledger (`PartitionClaim`s, one
//! per managed pkey) and how an `auto` network's pkey is resolved from it. A network annotated
//! `fabric-sync.io/pkey: auto` uses the pkey of the claim that covers it (its own, or its
//! namespace's) once the claim says the partition exists in UFM; until then its attachments
//! wait. The adapter (src/kube/partitions.rs) allocates, creates and deletes; this decides.

use std::collections::HashMap;

use super::outcome::{Reason, Refusal};
use super::state::{NetworkDefs, State};
use crate::alloc::{PKEY_RANGE_SETTING, PkeyRange};
use crate::ib::PKey;
use crate::netdef::{IbNetwork, NetworkKey};

/// What a `PartitionClaim` covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartitionScope {
    /// One network (`namespace/name`).
    Network(NetworkKey),
    /// Every automatic network of a namespace (a tenant-policy rule with `autoPkey: namespace`).
    Namespace(String),
}

/// Where a managed partition stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionPhase {
    /// The pkey is taken (the claim exists); UFM may not have the partition yet.
    Allocated,
    /// UFM has the partition: networks in scope use the pkey.
    Created,
    /// Nothing in scope any more: members go, then the partition, then the claim.
    Deleting,
}

impl PartitionPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionPhase::Allocated => "Allocated",
            PartitionPhase::Created => "Created",
            PartitionPhase::Deleting => "Deleting",
        }
    }

    pub fn parse(s: &str) -> Option<PartitionPhase> {
        match s {
            "Allocated" => Some(PartitionPhase::Allocated),
            "Created" => Some(PartitionPhase::Created),
            "Deleting" => Some(PartitionPhase::Deleting),
            _ => None,
        }
    }
}

/// One `PartitionClaim` as the engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionClaim {
    /// The object's name (`pkey-0x1001`).
    pub name: String,
    pub pkey: PKey,
    pub scope: PartitionScope,
    pub phase: PartitionPhase,
    /// The object carries a deletionTimestamp.
    pub deleting: bool,
}

/// How an automatic network (or a fixed one inside the managed range) resolves.
#[derive(Clone, Debug, PartialEq)]
pub enum AutoResolution {
    /// The claim's partition exists: the network with its pkey filled in.
    Ready(IbNetwork),
    /// Not yet (no claim, or UFM has not created it): attachments wait without membership.
    Waiting(Refusal),
    /// Cannot be served until something changes (feature off, range exhausted, a fixed pkey
    /// inside the managed range).
    Refused(Refusal),
}

/// The pkey of the claim that covers `key`: its own claim first, then its namespace's.
pub fn covering_claim<'a>(claims: &'a HashMap<String, PartitionClaim>, key: &NetworkKey) -> Option<&'a PartitionClaim> {
    let own = PartitionScope::Network(key.clone());
    let ns = PartitionScope::Namespace(key.namespace.to_string());
    // Lowest name first, so that the choice never depends on the map's order.
    let pick = |scope: &PartitionScope| {
        claims
            .values()
            .filter(|c| !c.deleting && c.phase != PartitionPhase::Deleting && &c.scope == scope)
            .min_by(|a, b| a.name.cmp(&b.name))
    };
    pick(&own).or_else(|| pick(&ns))
}

/// Resolves one network definition; `None` when it is neither automatic nor in the range.
pub fn resolve(
    network: &IbNetwork,
    range: Option<PkeyRange>,
    claims: &HashMap<String, PartitionClaim>,
    refusals: &HashMap<NetworkKey, String>,
) -> Option<AutoResolution> {
    let key = &network.key;
    let Some(auto) = &network.auto else {
        let p = network.pkey()?;
        let range = range.filter(|r| r.contains(p))?;
        return Some(AutoResolution::Refused(Refusal::new(
            Reason::PkeyReserved,
            format!(
                "pkey {p} is inside the managed range {PKEY_RANGE_SETTING}={range}, which fabric-sync allocates from; \
                 choose a pkey outside it, or annotate the network fabric-sync.io/pkey: \"auto\" with no pkey"
            ),
        )));
    };
    if range.is_none() {
        return Some(AutoResolution::Refused(Refusal::new(
            Reason::AutoPkeyUnavailable,
            format!(
                "{key} asks for an automatic pkey (fabric-sync.io/pkey: auto) but automatic partitions are off; \
                 set {PKEY_RANGE_SETTING}, or give the network a fixed pkey"
            ),
        )));
    }
    if auto.deleting {
        return Some(AutoResolution::Waiting(Refusal::new(
            Reason::NetworkNotFound,
            format!("NetworkAttachmentDefinition {key} is being deleted"),
        )));
    }
    match covering_claim(claims, key) {
        Some(c) if c.phase == PartitionPhase::Created => {
            Some(AutoResolution::Ready(network.with_assigned_pkey(c.pkey)))
        }
        Some(c) => Some(AutoResolution::Waiting(Refusal::new(
            Reason::PartitionPending,
            format!("pkey {} is allocated for {key}; waiting for UFM to create the partition", c.pkey),
        ))),
        None => match refusals.get(key) {
            Some(msg) => Some(AutoResolution::Refused(Refusal::new(Reason::PkeyRangeExhausted, msg.clone()))),
            None => Some(AutoResolution::Waiting(Refusal::new(
                Reason::PartitionPending,
                format!("waiting for fabric-sync to allocate a pkey for {key}"),
            ))),
        },
    }
}

impl State {
    /// Recomputes how the networks `affected` selects resolve, after a claim, a refusal or the
    /// network itself changed; the named pkeys and the attachments follow.
    pub(super) fn refresh_auto(&mut self, affected: impl Fn(&NetworkKey) -> bool) {
        let keys: Vec<NetworkKey> = self.networks.keys().filter(|k| affected(k)).cloned().collect();
        for key in keys {
            self.refresh_network(&key);
        }
    }

    pub(super) fn refresh_network(&mut self, key: &NetworkKey) {
        let Some(defs) = self.networks.get(key) else { return };
        let before = defs.named_pkey();
        let resolved = defs
            .raw_ours()
            .and_then(|n| resolve(n, self.cfg.pkey_range, &self.partition_claims, &self.partition_refusals));
        if defs.auto == resolved {
            return;
        }
        if let Some(d) = self.networks.get_mut(key) {
            d.auto = resolved;
        }
        let after = self.networks.get(key).and_then(NetworkDefs::named_pkey);
        self.network_changed(key, before, after);
    }

    pub(super) fn partition_claim_applied(&mut self, claim: PartitionClaim) {
        let scope = claim.scope.clone();
        self.partition_claims.insert(claim.name.clone(), claim);
        self.refresh_auto(|k| in_scope(&scope, k));
    }

    pub(super) fn partition_claim_deleted(&mut self, name: &str) {
        if let Some(c) = self.partition_claims.remove(name) {
            self.refresh_auto(|k| in_scope(&c.scope, k));
        }
    }

    pub(super) fn partition_refused(&mut self, network: NetworkKey, message: Option<String>) {
        let changed = match message {
            Some(m) => self.partition_refusals.insert(network.clone(), m.clone()) != Some(m),
            None => self.partition_refusals.remove(&network).is_some(),
        };
        if changed {
            self.refresh_network(&network);
        }
    }
}

fn in_scope(scope: &PartitionScope, key: &NetworkKey) -> bool {
    match scope {
        PartitionScope::Network(k) => k == key,
        PartitionScope::Namespace(ns) => *key.namespace == **ns,
    }
}
