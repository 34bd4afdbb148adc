//! Automatic partitions as the engine sees them: the partition ledger (`PartitionClaim`s, one
//! per managed pkey) and how an `auto` network's pkey is resolved from it. A network annotated
//! `fabric-sync.io/pkey: auto` uses the pkey of the claim that covers it (its own, or its
//! namespace's) once the claim says the partition exists in UFM; until then its attachments
//! wait. The adapter (src/kube/partitions.rs) allocates, creates and deletes; this decides.

use std::collections::HashMap;

use super::model::ObjectKey;
use super::outcome::{Reason, Refusal};
use super::ports::{EventObject, EventRecord, EventType, NetworkKind, ObjectKind};
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
        self.report_auto(key);
    }

    /// One Warning Event on the network object per refusal that is the network's fault (feature
    /// off, a fixed pkey in the range); exhaustion is reported by the adapter, which decides it.
    pub(super) fn report_auto(&mut self, key: &NetworkKey) {
        let Some(defs) = self.networks.get(key) else {
            self.auto_reported.remove(key);
            return;
        };
        let kind = if defs.nad.is_some() { NetworkKind::Nad } else { NetworkKind::SpiderMultusConfig };
        let refusal = match &defs.auto {
            Some(AutoResolution::Refused(r)) if r.reason != Reason::PkeyRangeExhausted => r.clone(),
            _ => {
                self.auto_reported.remove(key);
                return;
            }
        };
        if self.auto_reported.get(key) == Some(&refusal.message) {
            return;
        }
        self.auto_reported.insert(key.clone(), refusal.message.clone());
        self.events.push(EventRecord {
            object: EventObject {
                kind: ObjectKind::of_network(kind),
                key: ObjectKey { namespace: key.namespace.to_string(), name: key.name.to_string() },
                uid: None,
            },
            event_type: EventType::Warning,
            reason: refusal.reason,
            message: refusal.message,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netdef::parse_nad;
    use std::collections::BTreeMap;

    fn auto(ns: &str, name: &str) -> IbNetwork {
        let ann = BTreeMap::from([("fabric-sync.io/pkey".to_string(), "auto".to_string())]);
        parse_nad(ns, name, &ann, r#"{"type":"ib-sriov","pkey":""}"#).unwrap().unwrap()
    }

    fn claim(name: &str, pkey: u16, scope: PartitionScope, phase: PartitionPhase) -> (String, PartitionClaim) {
        let c = PartitionClaim { name: name.into(), pkey: PKey::new(pkey).unwrap(), scope, phase, deleting: false };
        (name.to_string(), c)
    }

    fn range() -> Option<PkeyRange> {
        Some(PkeyRange::parse("0x1000-0x10ff").unwrap())
    }

    #[test]
    fn an_auto_network_waits_until_its_claim_is_created_then_uses_its_pkey() {
        let n = auto("t", "ib");
        let own = PartitionScope::Network(n.key.clone());
        let none = HashMap::new();
        let r = resolve(&n, range(), &none, &HashMap::new());
        assert!(matches!(r, Some(AutoResolution::Waiting(ref w)) if w.reason == Reason::PartitionPending), "{r:?}");
        let allocated: HashMap<_, _> = [claim("pkey-0x1000", 0x1000, own.clone(), PartitionPhase::Allocated)].into();
        let r = resolve(&n, range(), &allocated, &HashMap::new());
        assert!(matches!(r, Some(AutoResolution::Waiting(_))), "{r:?}");
        let created: HashMap<_, _> = [claim("pkey-0x1000", 0x1000, own, PartitionPhase::Created)].into();
        match resolve(&n, range(), &created, &HashMap::new()) {
            Some(AutoResolution::Ready(net)) => assert_eq!(net.pkey().map(PKey::value), Some(0x1000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_network_uses_its_own_claim_before_its_namespaces_and_ignores_deleting_ones() {
        let n = auto("t", "ib");
        let claims: HashMap<_, _> = [
            claim("pkey-0x1001", 0x1001, PartitionScope::Namespace("t".into()), PartitionPhase::Created),
            claim("pkey-0x1002", 0x1002, PartitionScope::Network(n.key.clone()), PartitionPhase::Created),
            claim("pkey-0x1003", 0x1003, PartitionScope::Namespace("u".into()), PartitionPhase::Created),
        ]
        .into();
        assert_eq!(covering_claim(&claims, &n.key).map(|c| c.pkey.value()), Some(0x1002));
        let mut ns_only = claims.clone();
        ns_only.remove("pkey-0x1002");
        assert_eq!(covering_claim(&ns_only, &n.key).map(|c| c.pkey.value()), Some(0x1001));
        if let Some(c) = ns_only.get_mut("pkey-0x1001") {
            c.phase = PartitionPhase::Deleting;
        }
        assert!(covering_claim(&ns_only, &n.key).is_none(), "another namespace's claim never covers it");
    }

    #[test]
    fn refusals_name_the_setting_and_the_cause() {
        let n = auto("t", "ib");
        let r = resolve(&n, None, &HashMap::new(), &HashMap::new());
        assert!(
            matches!(&r, Some(AutoResolution::Refused(x)) if x.reason == Reason::AutoPkeyUnavailable && x.message.contains("FABRIC_SYNC_PKEY_RANGE")),
            "{r:?}"
        );
        let refused = HashMap::from([(n.key.clone(), "no free pkey".to_string())]);
        let r = resolve(&n, range(), &HashMap::new(), &refused);
        assert!(matches!(&r, Some(AutoResolution::Refused(x)) if x.reason == Reason::PkeyRangeExhausted), "{r:?}");
        let fixed = parse_nad("t", "f", &BTreeMap::new(), r#"{"type":"ib-sriov","pkey":"0x1005"}"#).unwrap().unwrap();
        let r = resolve(&fixed, range(), &HashMap::new(), &HashMap::new());
        assert!(
            matches!(&r, Some(AutoResolution::Refused(x)) if x.reason == Reason::PkeyReserved && x.message.contains("0x1000-0x10ff")),
            "{r:?}"
        );
        let outside = parse_nad("t", "o", &BTreeMap::new(), r#"{"type":"ib-sriov","pkey":"0x2000"}"#).unwrap().unwrap();
        assert!(resolve(&outside, range(), &HashMap::new(), &HashMap::new()).is_none());
    }

    #[test]
    fn auto_with_a_cni_pkey_or_another_value_is_an_invalid_network() {
        let ann = BTreeMap::from([("fabric-sync.io/pkey".to_string(), "auto".to_string())]);
        let e = parse_nad("t", "ib", &ann, r#"{"type":"ib-sriov","pkey":"0x10"}"#).unwrap_err().to_string();
        assert!(e.contains("fabric-sync.io/pkey") && e.contains("spec.config.pkey"), "{e}");
        let other = BTreeMap::from([("fabric-sync.io/pkey".to_string(), "0x10".to_string())]);
        let e = parse_nad("t", "ib", &other, r#"{"type":"ib-sriov"}"#).unwrap_err().to_string();
        assert!(e.contains("the only value is \"auto\""), "{e}");
    }

    #[test]
    fn a_deleting_auto_network_is_gone_for_its_pods() {
        let mut n = auto("t", "ib");
        if let Some(a) = &mut n.auto {
            a.deleting = true;
        }
        let claims: HashMap<_, _> =
            [claim("pkey-0x1000", 0x1000, PartitionScope::Network(n.key.clone()), PartitionPhase::Created)].into();
        let r = resolve(&n, range(), &claims, &HashMap::new());
        assert!(matches!(&r, Some(AutoResolution::Waiting(x)) if x.reason == Reason::NetworkNotFound), "{r:?}");
    }
}
