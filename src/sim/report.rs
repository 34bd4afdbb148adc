//! The simulator's report (the JSON object of TESTING.md) and the invariant checks behind it,
//! computed from the in-memory cluster and the mock UFM's own table: the two records of truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::scenario::{FOREIGN_INSIDE, FOREIGN_OUTSIDE, FOREIGN_PKEY, Scenario, World};
use crate::alloc::{DEFAULT_PKEY_CAPACITY, DEFAULT_RESERVED_SLOTS};
use crate::engine::{EngineStats, Reason};
use crate::ib::{Guid, PKey};
use crate::netdef::{CNI_ARG_PKEY, NetworkKey, parse_nad, parse_networks};
use crate::ufm::UfmRequestCounts;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Invariants {
    pub duplicate_guids: u64,
    pub stale_in_fabric: u64,
    pub missing_in_fabric: u64,
    pub configured_before_fabric: u64,
    pub nodes_over_pkey_limit: u64,
    pub foreign_guids_touched: u64,
    /// Live attachments neither configured nor refused with a reason.
    pub unresolved_attachments: u64,
    /// UFM memberships of a claimed GUID in a pkey its ledger owner's network does not name.
    pub guids_in_wrong_pkey: u64,
    /// Elements claiming `configured` with a GUID their pod's claim does not record.
    pub forged_markers: u64,
    /// UFM memberships of a GUID in a fabric other than its attachment's (`--fabrics`): a GUID
    /// outside that fabric's slice of the range, or claimed for another fabric.
    pub guids_in_wrong_fabric: u64,
}

impl Invariants {
    pub fn all_zero(&self) -> bool {
        *self == Invariants::default()
    }

    pub(super) fn converged(&self) -> bool {
        self.stale_in_fabric == 0
            && self.missing_in_fabric == 0
            && self.unresolved_attachments == 0
            && self.guids_in_wrong_pkey == 0
            && self.forged_markers == 0
            && self.guids_in_wrong_fabric == 0
    }
}

/// One fabric's figures (`--fabrics`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FabricFigures {
    pub name: String,
    pub nodes: u64,
    pub attachments: u64,
    pub configured: u64,
    /// Managed-range memberships its UFM holds at the end.
    pub ufm_members: u64,
    pub ufm_requests: UfmRequestCounts,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Refused {
    pub pkey_limit: u64,
    pub policy: u64,
    pub invalid: u64,
    /// Forged markers (hostile tenants).
    pub forged: u64,
    pub other: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub pods: u64,
    pub attachments: u64,
    pub configured: u64,
    pub refused: Refused,
    pub latency_ms: Latency,
    pub wall_ms: f64,
    pub ufm_requests: UfmRequestCounts,
    pub api_requests: super::cluster::ApiCounts,
    pub invariants: Invariants,
    pub converged: bool,
    pub restarts: usize,
    pub leader_changes: usize,
    pub breaker_trips: u64,
    pub peak_rss_mb: f64,
    /// Per fabric, in order (one `default` fabric unless `--fabrics`).
    pub fabrics: Vec<FabricFigures>,
}

impl Report {
    pub(super) fn build(
        s: &Scenario,
        world: &World,
        stats: &EngineStats,
        wall: Duration,
        converged: bool,
        restarts: usize,
        leader_changes: usize,
    ) -> Report {
        let invariants = check_invariants(world);
        let pods = world.cluster.pods();
        let node_fabric = node_fabrics(world);
        let mut figures: Vec<FabricFigures> = world
            .fabrics
            .iter()
            .map(|f| FabricFigures {
                name: f.name.clone(),
                nodes: node_fabric.values().filter(|n| world.fabrics[**n].name == f.name).count() as u64,
                ufm_members: f
                    .ufm
                    .snapshot()
                    .values()
                    .flat_map(|p| p.members.keys())
                    .filter(|g| Guid::new(g.value()).is_some_and(|g| world.cfg.guid_range.contains(g)))
                    .count() as u64,
                ufm_requests: f.counters.snapshot(),
                ..FabricFigures::default()
            })
            .collect();
        let (mut attachments, mut configured) = (0u64, 0u64);
        let mut refused = Refused::default();
        for p in pods.iter().filter(|p| !p.phase.is_finished()) {
            let Ok(els) = parse_networks(&p.networks) else { continue };
            attachments += els.len() as u64;
            let done = els.iter().filter(|e| e.is_configured()).count() as u64;
            configured += done;
            if let Some(f) = p.node.as_ref().and_then(|n| node_fabric.get(n)).and_then(|i| figures.get_mut(*i)) {
                f.attachments += els.len() as u64;
                f.configured += done;
            }
            let status: BTreeMap<String, String> =
                p.status.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
            for v in status.values().filter(|v| v.starts_with("refused:")) {
                let slot = if v.contains(Reason::PKeyLimitExceeded.as_str()) {
                    &mut refused.pkey_limit
                } else if v.contains(Reason::PKeyNotAllowed.as_str()) {
                    &mut refused.policy
                } else if v.contains(Reason::InvalidNetwork.as_str()) || v.contains(Reason::InvalidAnnotation.as_str())
                {
                    &mut refused.invalid
                } else if v.contains(Reason::ForgedAnnotation.as_str()) {
                    &mut refused.forged
                } else {
                    &mut refused.other
                };
                *slot += 1;
            }
        }
        let mut lat = super::cluster::latencies_ms(&pods);
        lat.sort_by(f64::total_cmp);
        let q = |f: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 - 1.0) * f).round() as usize;
            (lat[i.min(lat.len() - 1)] * 10.0).round() / 10.0
        };
        Report {
            scenario: s.clone(),
            pods: pods.iter().filter(|p| !p.phase.is_finished()).count() as u64,
            attachments,
            configured,
            refused,
            latency_ms: Latency { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: q(1.0) },
            wall_ms: (wall.as_secs_f64() * 1000.0).round(),
            ufm_requests: figures.iter().fold(UfmRequestCounts::default(), |mut sum, f| {
                sum.add += f.ufm_requests.add;
                sum.remove += f.ufm_requests.remove;
                sum.list += f.ufm_requests.list;
                sum.other += f.ufm_requests.other;
                sum.failed += f.ufm_requests.failed;
                sum
            }),
            api_requests: world.cluster.counts(),
            invariants,
            converged,
            restarts,
            leader_changes,
            breaker_trips: stats.fabric_total(|f| &f.breaker_trips),
            peak_rss_mb: peak_rss_mb(),
            fabrics: std::mem::take(&mut figures),
        }
    }
}

/// Node → the index of the fabric its label puts it on (every node on fabric 0 when there is one).
fn node_fabrics(world: &World) -> HashMap<String, usize> {
    let label = super::fabrics::SIM_FABRIC_LABEL;
    world
        .cluster
        .node_labels()
        .into_iter()
        .map(|(node, labels)| {
            let i = world.fabrics.iter().position(|f| labels.get(label) == Some(&f.name)).unwrap_or(0);
            (node, i)
        })
        .collect()
}

/// Compares the cluster's annotations with the mock UFMs' tables.
pub(super) fn check_invariants(world: &World) -> Invariants {
    let range = world.cfg.guid_range;
    // Networks now: key → pkey; every pkey any network names.
    let mut network_pkey: HashMap<NetworkKey, Option<PKey>> = HashMap::new();
    for (key, ann, config) in world.cluster.nads() {
        if let Ok(Some(n)) = parse_nad(&key.namespace, &key.name, &ann, &config) {
            network_pkey.insert(key, n.pkey());
        }
    }
    let managed: HashSet<PKey> = network_pkey.values().flatten().copied().collect();
    let mut inv =
        Invariants { configured_before_fabric: world.cluster.configured_before_fabric(), ..Default::default() };
    let node_fabric = node_fabrics(world);
    // Desired memberships from live, configured attachments: (fabric, pkey, GUID).
    let mut desired: HashSet<(usize, PKey, Guid)> = HashSet::new();
    let mut seen: HashSet<Guid> = HashSet::new();
    let mut node_pkeys: HashMap<String, BTreeSet<PKey>> = HashMap::new();
    world.cluster.with_pods(|pods| {
        for p in pods.filter(|p| !p.phase.is_finished()) {
            let refused_all = p.refused;
            let Ok(els) = parse_networks(&p.networks) else {
                if !refused_all {
                    inv.unresolved_attachments += 1;
                }
                continue;
            };
            for e in &els {
                let key = NetworkKey::new(e.namespace().unwrap_or(&p.namespace), e.name());
                let Some(pkey) = network_pkey.get(&key) else {
                    if !refused_all {
                        inv.unresolved_attachments += 1;
                    }
                    continue;
                };
                if !e.is_configured() {
                    if !refused_all {
                        inv.unresolved_attachments += 1;
                    }
                    continue;
                }
                let Ok(Some(g)) = e.requested_guid() else {
                    inv.unresolved_attachments += 1;
                    continue;
                };
                if !seen.insert(g) {
                    inv.duplicate_guids += 1;
                }
                let written = e.cni_arg(CNI_ARG_PKEY).and_then(|s| s.parse::<PKey>().ok());
                if let Some(pk) = pkey {
                    if written != Some(*pk) {
                        // Configured for an old pkey: the move is not finished.
                        inv.unresolved_attachments += 1;
                    }
                    let f = p.node.as_ref().and_then(|n| node_fabric.get(n)).copied().unwrap_or(0);
                    desired.insert((f, *pk, g));
                    if let Some(n) = &p.node {
                        node_pkeys.entry(n.clone()).or_default().insert(*pk);
                    }
                }
            }
        }
    });
    let limit = usize::from(DEFAULT_PKEY_CAPACITY - DEFAULT_RESERVED_SLOTS);
    let caps = world.cluster.nodes();
    for (node, set) in &node_pkeys {
        let cap = caps.get(node).copied().flatten().unwrap_or(DEFAULT_PKEY_CAPACITY);
        let node_limit = usize::from(cap.saturating_sub(DEFAULT_RESERVED_SLOTS)).min(limit.max(1) * 2);
        if set.len() > node_limit {
            inv.nodes_over_pkey_limit += 1;
        }
    }
    // The ledger: every claimed GUID, the network and the fabric it is claimed for.
    let mut claimed: HashMap<Guid, (NetworkKey, String)> = HashMap::new();
    let mut claims_by_pod: HashMap<String, HashSet<Guid>> = HashMap::new();
    for c in world.cluster.claims() {
        for a in &c.attachments {
            let fabric = a.fabric.clone().unwrap_or_else(|| crate::engine::DEFAULT_FABRIC.to_string());
            claimed.insert(a.guid, (a.network.clone(), fabric));
            claims_by_pod.entry(c.pod_uid.to_string()).or_default().insert(a.guid);
        }
    }
    // What each UFM holds in the managed range, on pkeys a network names.
    let mut actual: HashSet<(usize, PKey, Guid)> = HashSet::new();
    let mut foreign_outside_ok = true;
    let mut foreign_inside_ok = false;
    for (i, fabric) in world.fabrics.iter().enumerate() {
        let table = fabric.ufm.snapshot();
        let mut outside_here = false;
        for (raw_pkey, part) in &table {
            let Some(pkey) = PKey::new(*raw_pkey) else { continue };
            for raw in part.members.keys() {
                let v = raw.value();
                if v == FOREIGN_OUTSIDE && pkey == world.foreign_managed {
                    outside_here = true;
                }
                if v == FOREIGN_INSIDE && *raw_pkey == FOREIGN_PKEY {
                    foreign_inside_ok = true;
                }
                let Some(g) = Guid::new(v) else { continue };
                if range.contains(g) && managed.contains(&pkey) {
                    actual.insert((i, pkey, g));
                }
                if let Some((net, claimed_fabric)) = claimed.get(&g) {
                    if network_pkey.get(net).copied().flatten() != Some(pkey) {
                        inv.guids_in_wrong_pkey += 1;
                    }
                    if *claimed_fabric != fabric.name {
                        inv.guids_in_wrong_fabric += 1;
                    }
                } else if range.contains(g) && !fabric.range.contains(g) {
                    inv.guids_in_wrong_fabric += 1;
                }
            }
        }
        foreign_outside_ok &= outside_here;
    }
    world.cluster.with_pods(|pods| {
        for p in pods.filter(|p| !p.phase.is_finished()) {
            let Ok(els) = parse_networks(&p.networks) else { continue };
            for e in els.iter().filter(|e| e.is_configured()) {
                let backed = matches!(e.requested_guid(), Ok(Some(g)) if claims_by_pod.get(&p.uid).is_some_and(|s| s.contains(&g)));
                if !backed {
                    inv.forged_markers += 1;
                }
            }
        }
    });
    inv.stale_in_fabric = actual.difference(&desired).count() as u64;
    inv.missing_in_fabric = desired.difference(&actual).count() as u64;
    inv.foreign_guids_touched = world.fabrics.iter().map(|f| f.fabric.foreign_requests()).sum::<u64>()
        + u64::from(!foreign_outside_ok)
        + u64::from(!foreign_inside_ok)
        + u64::from(seen.contains(&Guid::new(FOREIGN_INSIDE).unwrap_or(Guid::MAX)));
    inv
}

/// Peak resident memory of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0.0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}
