//! `fabric-sync audit`: a read-only comparison of the cluster (pods, networks, nodes, the
//! ownership ledger) with UFM. The engine's own `State` is built from a one-shot snapshot and
//! the engine's own plan is run to its end (converge.rs), so "what would change" is the plan
//! the controller would execute. Pure: the snapshot and the UFM listing come from cli.rs.

pub mod cli;
mod converge;
mod partitions;
mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

pub use converge::{Changes, RemovalCause, converge};
pub use render::render_text;

use crate::engine::{ClusterEvent, Desired, EngineConfig, FabricId, FabricListing, Standing, State};
use crate::ib::{Guid, PKey, PKeyError};
use crate::netdef::{IbNetwork, NetdefError, NetworkKey};

/// What the audit knows of the UFM connection, for the migration preflight.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsFacts {
    pub https: bool,
    pub ca_configured: bool,
    pub insecure_skip_verify: bool,
}

/// Everything the audit found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub counts: Counts,
    /// Clean, or what makes it not clean (also the exit code: 0 clean, 1 otherwise).
    pub clean: bool,
    pub pkeys: Vec<PkeyRow>,
    /// Attachments refused or waiting, by reason.
    pub not_configured: BTreeMap<String, Vec<AttachmentIssue>>,
    /// Elements whose `configured` marker the ledger does not back, or that lost a GUID
    /// another element also claimed (migration).
    pub markers: Vec<AttachmentIssue>,
    /// Nodes by pkeys their pods ask for, the fullest first.
    pub nodes: Vec<NodeRow>,
    pub pool: PoolRow,
    pub plan: PlanSummary,
    pub hazards: Vec<Hazard>,
    /// Set when the ledger is empty and the controller would adopt ib-kubernetes' annotations.
    pub migration: Option<MigrationRow>,
    /// GUID → owner (always computed; shown with `--owners`).
    pub owners: Vec<OwnerRow>,
    /// The managed pkey range's use (`--pkey-range` set).
    pub pkey_range: Option<partitions::PkeyRangeRow>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub pods: usize,
    pub attachments: usize,
    pub networks: usize,
    pub nodes: usize,
    pub claims: usize,
    pub ufm_partitions: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct PkeyRow {
    /// The fabric whose UFM holds the partition (`default` without a fabrics file).
    pub fabric: String,
    pub pkey: String,
    pub networks: Vec<String>,
    pub expected: usize,
    pub in_ufm: usize,
    pub stale: usize,
    pub missing: usize,
    pub foreign_in_range: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttachmentIssue {
    pub pod: String,
    pub attachment: String,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeRow {
    pub node: String,
    /// Distinct pkeys the node's pods ask for.
    pub pkeys_wanted: usize,
    /// Distinct pkeys the plan grants (budget used).
    pub pkeys_granted: usize,
    /// Capacity minus the reserved slots.
    pub limit: usize,
    pub capacity: u16,
    pub over: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolRow {
    pub range: String,
    pub capacity: u64,
    pub in_use: u64,
    pub quarantined: u64,
    /// In-range GUIDs UFM lists.
    pub in_ufm: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PlanSummary {
    pub settled: bool,
    /// (pkey, GUID) memberships the controller would add.
    pub adds: Vec<(String, String)>,
    /// (pkey, GUID, cause) memberships it would remove.
    pub removes: Vec<(String, String, RemovalCause)>,
    pub ledger_writes: Vec<String>,
    pub ledger_releases: Vec<String>,
    /// Pods whose networks annotation would be rewritten, with the number of elements.
    pub pod_rewrites: Vec<(String, usize)>,
    pub status_updates: usize,
    /// Events by reason.
    pub events: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Hazard {
    /// Stable kind, e.g. `BarePKey`, `SharedPKey`, `UnexplainedGuids`, `PKeyBudget`.
    pub kind: String,
    pub object: String,
    pub message: String,
    pub fix: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct MigrationRow {
    pub adopted: usize,
    pub left_alone: usize,
    pub conflicts: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct OwnerRow {
    pub guid: String,
    pub pod: String,
    pub network: String,
    pub pkey: Option<String>,
    pub node: String,
    /// `configured`, `pending` (the plan configures it) or `removing` (owner gone).
    pub state: String,
}

/// Options that change what counts as a hazard.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Migration preflight: TLS settings ib-kubernetes accepted and fabric-sync does not.
    pub migration: bool,
}

/// Builds the engine's state from `events` (a snapshot ending in `CachesSynced`) and the UFM
/// `listings` (one per fabric of `cfg`, in order), runs the plan to its end and reports, per
/// fabric and pkey.
pub fn analyze(
    cfg: EngineConfig,
    events: Vec<ClusterEvent>,
    listings: &[FabricListing],
    tls: &TlsFacts,
    opts: Options,
) -> Report {
    let mut state = State::new(cfg);
    let mut node_names: BTreeSet<String> = BTreeSet::new();
    let mut claims = 0;
    for ev in events {
        match &ev {
            ClusterEvent::NodeApplied { name, .. } => {
                node_names.insert(name.clone());
            }
            ClusterEvent::ClaimApplied(_) => claims += 1,
            _ => {}
        }
        state.apply(ev);
    }
    let hazards_before = network_hazards(&state);
    // Automatic partitions run on one fabric only (the controller refuses a range with several).
    let pkey_range = listings.first().and_then(|l| partitions::range_row(&state, l));
    let changes = converge(&mut state, listings);
    let mut hazards = hazards_before;
    hazards.extend(cross_fabric_hazards(&state, listings));

    let counts = Counts {
        pods: state.pods().len(),
        attachments: state.pods().values().map(|p| p.attachments.as_ref().map_or(0, Vec::len)).sum(),
        networks: state.networks().len(),
        nodes: node_names.len(),
        claims,
        ufm_partitions: listings.iter().map(|l| l.len()).sum(),
    };

    // Per (fabric, pkey): expected (final plan), in UFM (now), stale (removed), missing
    // (added), foreign. A GUID belongs to one fabric (pools do not overlap).
    let mut expected: BTreeMap<(FabricId, PKey), BTreeSet<Guid>> = BTreeMap::new();
    let mut left_alone: BTreeSet<Guid> = BTreeSet::new();
    for (g, a) in state.ledger() {
        if a.owner.is_none() {
            continue;
        }
        match a.desired {
            Desired::Member(spec) => {
                expected.entry((a.fabric, spec.pkey)).or_default().insert(*g);
            }
            Desired::LeaveAlone => {
                left_alone.insert(*g);
            }
            _ => {}
        }
    }
    let mut in_ufm: BTreeMap<(FabricId, PKey), BTreeSet<Guid>> = BTreeMap::new();
    for (f, listing) in state.fabric_ids().zip(listings) {
        let range = state.fabric(f).range;
        for (p, members) in listing {
            let set: BTreeSet<Guid> = members.iter().map(|m| m.guid).filter(|g| range.contains(*g)).collect();
            if !set.is_empty() {
                in_ufm.insert((f, *p), set);
            }
        }
    }
    let mut named: BTreeMap<PKey, Vec<String>> = BTreeMap::new();
    for (key, net) in readable_networks(&state) {
        if let Some(p) = net.pkey() {
            named.entry(p).or_default().push(key.to_string());
        }
    }
    // A pkey a network names is shown for the first fabric (one row) unless UFM or the plan
    // puts it on others; rows are per (fabric, pkey).
    let first = FabricId::default();
    let mut pkeys: BTreeSet<(FabricId, PKey)> = named.keys().map(|p| (first, *p)).collect();
    pkeys.extend(in_ufm.keys().copied());
    pkeys.extend(expected.keys().copied());
    pkeys.extend(changes.adds.iter().map(|(p, g)| (state.fabric_of(*g), *p)));
    pkeys.extend(changes.removes.keys().map(|(p, g)| (state.fabric_of(*g), *p)));
    if state.fabrics().len() > 1 {
        // A named pkey nothing puts on the first fabric is not a row of its own there.
        pkeys.retain(|(f, p)| {
            *f != first
                || in_ufm.contains_key(&(*f, *p))
                || expected.contains_key(&(*f, *p))
                || !pkeys_elsewhere(&in_ufm, &expected, *p)
        });
    }
    let empty = BTreeSet::new();
    let mut rows = Vec::new();
    for (f, p) in pkeys {
        let on = state.on_fabric(f);
        let here = |g: &Guid| state.fabric_of(*g) == f;
        let e = expected.get(&(f, p)).unwrap_or(&empty);
        let u = in_ufm.get(&(f, p)).unwrap_or(&empty);
        let stale = changes.removes.keys().filter(|(q, g)| *q == p && here(g)).count();
        let missing = changes.adds.iter().filter(|(q, g)| *q == p && here(g)).count();
        let foreign: Vec<Guid> = u
            .iter()
            .filter(|g| !e.contains(g) && !left_alone.contains(g) && !changes.removes.contains_key(&(p, **g)))
            .filter(|g| !state.ledger().contains_key(g))
            .copied()
            .collect();
        let unexplained_removed =
            changes.removes.iter().filter(|((q, g), c)| *q == p && here(g) && **c == RemovalCause::Stale).count();
        if unexplained_removed > 0 {
            hazards.push(Hazard {
                kind: "UnexplainedGuids".into(),
                object: format!("pkey {p}{on}"),
                message: format!(
                    "{unexplained_removed} GUID(s) of the managed range are in UFM in pkey {p}{on} and no pod or claim explains them: the controller removes them at its first listing"
                ),
                fix: "if another system assigns GUIDs in this range, narrow GUID_POOL_RANGE_START/END so that the ranges do not overlap before starting; otherwise nothing to do".into(),
            });
        }
        if !foreign.is_empty() {
            hazards.push(Hazard {
                kind: "UnexplainedGuids".into(),
                object: format!("pkey {p}{on}"),
                message: format!(
                    "{} GUID(s) of the managed range are in UFM in pkey {p}{on}, which no network names: never touched, and never handed out while UFM lists them",
                    foreign.len()
                ),
                fix: "remove them with `fabric-sync ufm remove` if nothing uses them, or narrow GUID_POOL_RANGE_START/END".into(),
            });
        }
        rows.push(PkeyRow {
            fabric: state.fabric(f).name.to_string(),
            pkey: p.to_string(),
            networks: named.get(&p).cloned().unwrap_or_default(),
            expected: e.len(),
            in_ufm: u.len(),
            stale,
            missing,
            foreign_in_range: foreign.len(),
        });
    }
    for (p, (stale, members)) in &changes.breaker {
        hazards.push(Hazard {
            kind: "MassRemovalRefused".into(),
            object: format!("pkey {p}"),
            message: format!(
                "{stale} of {members} members of pkey {p} are stale, more than FABRIC_SYNC_MASS_REMOVAL_SHARE at once: the breaker refuses their removal"
            ),
            fix: "check GUID_POOL_RANGE_* and the cluster; raise FABRIC_SYNC_MASS_REMOVAL_SHARE once you are sure".into(),
        });
    }

    // Attachments refused or waiting, and markers.
    let mut not_configured: BTreeMap<String, Vec<AttachmentIssue>> = BTreeMap::new();
    let mut markers = Vec::new();
    let mut standing: Vec<_> = state.standing().iter().collect();
    standing.sort_by(|a, b| a.0.cmp(b.0));
    for (id, s) in standing {
        let r = s.refusal();
        let issue = AttachmentIssue {
            pod: pod_name(&state, &id.pod),
            attachment: id.label(),
            reason: r.reason.to_string(),
            message: r.message.clone(),
        };
        if state.forged().contains(id) {
            markers.push(issue.clone());
        }
        if matches!(s, Standing::Refused(_) | Standing::Waiting(_)) {
            not_configured.entry(issue.reason.clone()).or_default().push(issue);
        }
    }

    // Nodes: distinct pkeys asked for against the budget.
    let mut wanted: HashMap<String, BTreeSet<PKey>> = HashMap::new();
    for pod in state.pods().values() {
        let (Some(node), Ok(list)) = (&pod.node, &pod.attachments) else { continue };
        node_names.insert(node.to_string());
        if pod.phase.is_finished() || pod.host_network {
            continue;
        }
        for r in list {
            let Some(net) = state.networks().get(&r.network).and_then(|d| readable(d.nad.as_ref().or(d.smc.as_ref())))
            else {
                continue;
            };
            if let Some(p) = net.pkey() {
                wanted.entry(node.to_string()).or_default().insert(p);
            }
        }
    }
    let mut nodes: Vec<NodeRow> = node_names
        .iter()
        .map(|n| {
            let w = wanted.get(n).map_or(0, BTreeSet::len);
            let limit = state.fabrics()[0].budget.limit(n);
            NodeRow {
                node: n.clone(),
                pkeys_wanted: w,
                // Each fabric has its own pkey table on the node: the fullest counts.
                pkeys_granted: state.fabrics().iter().map(|f| f.budget.used(n)).max().unwrap_or(0),
                limit,
                capacity: state.fabrics()[0].budget.capacity(n),
                over: w > limit,
            }
        })
        .collect();
    nodes.sort_by(|a, b| b.pkeys_wanted.cmp(&a.pkeys_wanted).then(a.node.cmp(&b.node)));
    for n in nodes.iter().filter(|n| n.over) {
        hazards.push(Hazard {
            kind: "PKeyBudget".into(),
            object: format!("Node {}", n.node),
            message: format!(
                "its pods ask for {} distinct pkeys; its pkey table holds {} (capacity {} minus reserved slots): the rest are refused PKeyLimitExceeded",
                n.pkeys_wanted, n.limit, n.capacity
            ),
            fix: "spread these pods over more nodes, or let networks share pkeys".into(),
        });
    }

    if opts.migration && tls.https && tls.insecure_skip_verify {
        hazards.push(Hazard {
            kind: "TlsNotVerified".into(),
            object: "UFM connection".into(),
            message: "UFM_INSECURE_SKIP_VERIFY=true: UFM's certificate is not checked".into(),
            fix: "put UFM's CA in the UFM Secret as UFM_CERTIFICATE and drop UFM_INSECURE_SKIP_VERIFY".into(),
        });
    } else if opts.migration && tls.https && !tls.ca_configured {
        hazards.push(Hazard {
            kind: "UfmCaMissing".into(),
            object: "UFM connection".into(),
            message: "no UFM_CERTIFICATE: fabric-sync verifies UFM against the system trust store (ib-kubernetes skipped verification when the certificate was empty)".into(),
            fix: "put UFM's CA in the UFM Secret as UFM_CERTIFICATE (docs/operators.md, The UFM Secret) unless a public CA signed UFM's certificate".into(),
        });
    }

    let g = state.gauges();
    let pool = PoolRow {
        range: state
            .fabrics()
            .iter()
            .map(|f| format!("{}..{}", f.range.start(), f.range.end()))
            .collect::<Vec<_>>()
            .join(", "),
        capacity: g.pool_capacity(),
        in_use: g.pool_in_use(),
        quarantined: g.pool_quarantined(),
        in_ufm: in_ufm.values().flatten().collect::<BTreeSet<_>>().len(),
    };

    let mut owners: Vec<OwnerRow> = state
        .ledger()
        .iter()
        .filter_map(|(g, a)| {
            let id = a.owner.as_ref().or(a.claimed.as_ref())?;
            let state_label = match (&a.owner, a.written) {
                (None, _) => "removing",
                (Some(o), Some(_))
                    if !changes.adds.iter().any(|(_, x)| x == g) && !changes.pod_writes.contains_key(&o.pod) =>
                {
                    "configured"
                }
                _ => "pending",
            };
            let pkey = match a.desired {
                Desired::Member(spec) => Some(spec.pkey.to_string()),
                _ => state.recorded_pkeys(*g).first().map(PKey::to_string),
            };
            Some(OwnerRow {
                guid: g.to_string(),
                pod: pod_name(&state, &id.pod),
                network: id.label(),
                pkey,
                node: a.node.to_string(),
                state: state_label.into(),
            })
        })
        .collect();
    owners.sort_by(|a, b| a.guid.cmp(&b.guid));

    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for e in &changes.events {
        *events.entry(e.reason.to_string()).or_insert(0) += 1;
    }
    let plan = PlanSummary {
        settled: changes.settled,
        adds: changes.adds.iter().map(|(p, g)| (p.to_string(), g.to_string())).collect(),
        removes: changes.removes.iter().map(|((p, g), c)| (p.to_string(), g.to_string(), *c)).collect(),
        ledger_writes: changes.claim_writes.values().map(ToString::to_string).collect(),
        ledger_releases: changes.claim_releases.values().map(ToString::to_string).collect(),
        pod_rewrites: changes.pod_writes.values().map(|(k, n)| (k.to_string(), *n)).collect(),
        status_updates: changes.status_writes.len(),
        events,
    };
    let migration = state.migration().map(|m| MigrationRow {
        adopted: m.adopted,
        left_alone: m.left_alone,
        conflicts: m.conflicts,
    });
    let clean = changes.is_empty() && hazards.is_empty() && markers.is_empty() && not_configured.is_empty();
    Report {
        counts,
        clean,
        pkeys: rows,
        not_configured,
        markers,
        nodes,
        pool,
        plan,
        hazards,
        migration,
        owners,
        pkey_range,
    }
}

/// `namespace/name` of a pod (or of the pod its claim names), else its UID.
/// Whether `p` has members or expected members on a fabric other than the first.
fn pkeys_elsewhere(
    in_ufm: &BTreeMap<(FabricId, PKey), BTreeSet<Guid>>,
    expected: &BTreeMap<(FabricId, PKey), BTreeSet<Guid>>,
    p: PKey,
) -> bool {
    in_ufm.keys().chain(expected.keys()).any(|(f, q)| *q == p && *f != FabricId::default())
}

/// A GUID that two fabrics' UFMs list (issue 17): one of them holds a GUID it should not (a
/// copied pool, a second controller, a hand edit). Reported, never repaired automatically.
fn cross_fabric_hazards(state: &State, listings: &[FabricListing]) -> Vec<Hazard> {
    let mut seen: BTreeMap<Guid, BTreeSet<String>> = BTreeMap::new();
    for (f, listing) in state.fabric_ids().zip(listings) {
        for m in listing.values().flatten() {
            seen.entry(m.guid).or_default().insert(state.fabric(f).name.to_string());
        }
    }
    seen.into_iter()
        .filter(|(_, fabrics)| fabrics.len() > 1)
        .map(|(g, fabrics)| {
            let names: Vec<String> = fabrics.into_iter().collect();
            let owner = state
                .fabrics()
                .iter()
                .find(|f| f.range.contains(g))
                .map_or_else(|| "none of the fabrics' pools holds it".to_string(), |f| format!("its pool's: {}", f.name));
            Hazard {
                kind: "GuidInTwoFabrics".into(),
                object: format!("GUID {g}"),
                message: format!(
                    "GUID {g} is listed by the UFMs of fabrics {}: a GUID may be in one fabric only ({owner})",
                    names.join(", ")
                ),
                fix: "remove it from the other fabric's UFM (`fabric-sync ufm remove <pkey> <guid> --fabrics-file <file> --fabric <name>`) after checking who put it there; make sure no two fabrics' guidPools overlap and no other controller manages them".into(),
            }
        })
        .collect()
}

fn pod_name(state: &State, uid: &crate::engine::PodUid) -> String {
    state
        .pods()
        .get(uid)
        .map(|p| p.key.to_string())
        .or_else(|| state.claims().get(uid).map(|c| c.pod.to_string()))
        .unwrap_or_else(|| uid.to_string())
}

fn readable(def: Option<&Result<Option<IbNetwork>, NetdefError>>) -> Option<&IbNetwork> {
    match def {
        Some(Ok(Some(n))) => Some(n),
        _ => None,
    }
}

/// Networks the engine reads (the NAD wins over the SMC it was rendered from).
fn readable_networks(state: &State) -> Vec<(&NetworkKey, &IbNetwork)> {
    let mut out: Vec<_> = state
        .networks()
        .iter()
        .filter_map(|(k, d)| readable(d.nad.as_ref().or(d.smc.as_ref())).map(|n| (k, n)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The migration preflight on network definitions: invalid ones (bare pkeys named), pkeys named
/// by more than one network, and pods configured (by ib-kubernetes) on networks that do not read.
fn network_hazards(state: &State) -> Vec<Hazard> {
    let mut out = Vec::new();
    let mut keys: Vec<&NetworkKey> = state.networks().keys().collect();
    keys.sort();
    for key in keys {
        let defs = &state.networks()[key];
        for (kind, def) in [("NetworkAttachmentDefinition", &defs.nad), ("SpiderMultusConfig", &defs.smc)] {
            let Some(Err(e)) = def else { continue };
            let bare = matches!(e, NetdefError::PKey { source: PKeyError::MissingHexPrefix { .. }, .. });
            out.push(Hazard {
                kind: if bare { "BarePKey" } else { "InvalidNetwork" }.into(),
                object: format!("{kind} {key}"),
                message: e.to_string(),
                fix: if bare {
                    "write the pkey as a quoted hex string with 0x (the message gives both readings); ib-kubernetes read bare numbers as hex".into()
                } else {
                    "fix the definition; until then its pods are refused InvalidNetwork and their UFM memberships are left alone".into()
                },
            });
        }
    }
    let mut named: BTreeMap<PKey, Vec<String>> = BTreeMap::new();
    for (key, net) in readable_networks(state) {
        if let Some(p) = net.pkey() {
            named.entry(p).or_default().push(key.to_string());
        }
    }
    for (p, nets) in named.iter().filter(|(_, n)| n.len() > 1) {
        out.push(Hazard {
            kind: "SharedPKey".into(),
            object: format!("pkey {p}"),
            message: format!(
                "{} networks name pkey {p}: {}; their pods share one partition",
                nets.len(),
                nets.join(", ")
            ),
            fix: "give each tenant's network its own pkey unless sharing the partition is intended".into(),
        });
    }
    let mut pods: Vec<_> = state.pods().values().collect();
    pods.sort_by(|a, b| a.key.cmp(&b.key));
    for pod in pods {
        let Ok(list) = &pod.attachments else { continue };
        for r in list.iter().filter(|r| r.configured) {
            let invalid = state
                .networks()
                .get(&r.network)
                .is_some_and(|d| matches!(d.nad.as_ref().or(d.smc.as_ref()), Some(Err(_))));
            if invalid {
                out.push(Hazard {
                    kind: "ConfiguredOnInvalidNetwork".into(),
                    object: format!("Pod {}", pod.key),
                    message: format!(
                        "{} is marked configured on {}, which fabric-sync cannot read: its UFM memberships are left alone, neither checked nor repaired",
                        pod.attachment_id(r).label(),
                        r.network
                    ),
                    fix: format!("fix network {} (see its InvalidNetwork hazard)", r.network),
                });
            }
        }
    }
    out
}
