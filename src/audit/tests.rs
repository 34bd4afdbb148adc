//! The audit on hand-made snapshots: the engine's plan decides, the report only tells.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::engine::{Claim, ClaimedAttachment, FabricMember, ObjectKey, PodMeta, PodPhase, PodUid, PodView, Slot};
use crate::ib::{Guid, Membership};
use crate::netdef::parse_nad;

fn g(v: u64) -> Guid {
    Guid::new(0x0200_0000_0000_0000 + v).unwrap()
}

fn pk(s: &str) -> PKey {
    s.parse().unwrap()
}

/// One NAD `t/ib` on 0x10 and pod `p` on n1, configured with GUID 1 when `configured`.
fn cluster(configured: bool, claimed: bool) -> Vec<ClusterEvent> {
    let nad = parse_nad("t", "ib", &BTreeMap::new(), r#"{"type":"ib-sriov","pkey":"0x10"}"#);
    let annotation = if configured {
        format!(
            r#"[{{"name":"ib","cni-args":{{"guid":"{}","mellanox.infiniband.app":"configured","pkey":"0x10"}}}}]"#,
            g(1)
        )
    } else {
        "ib".to_string()
    };
    let meta = PodMeta {
        uid: "u1",
        namespace: "t",
        name: "p",
        node: Some("n1"),
        phase: PodPhase::Running,
        deleting: false,
        host_network: false,
        created: 0,
    };
    let mut out = vec![
        ClusterEvent::NetworkApplied {
            key: NetworkKey::new("t", "ib"),
            kind: crate::engine::NetworkKind::Nad,
            network: nad,
        },
        ClusterEvent::NodeApplied {
            name: "n1".into(),
            labels: Default::default(),
            pkey_capacity: None,
            hca_capacities: Default::default(),
        },
        ClusterEvent::PodApplied(PodView::new(meta, Some(&annotation))),
    ];
    if claimed {
        out.push(ClusterEvent::ClaimApplied(Claim {
            pod_uid: PodUid::new("u1"),
            pod: ObjectKey { namespace: "t".into(), name: "p".into() },
            node: Arc::from("n1"),
            migrated: false,
            deleting: false,
            attachments: vec![ClaimedAttachment {
                network: NetworkKey::new("t", "ib"),
                slot: Slot::Occurrence(0),
                guid: g(1),
                pkey: Some(pk("0x10")),
                former_pkeys: Vec::new(),
                fabric: None,
            }],
        }));
    }
    out.push(ClusterEvent::CachesSynced);
    out
}

fn listing(guids: &[Guid]) -> FabricListing {
    let members = guids.iter().map(|&guid| FabricMember { guid, membership: Membership::Full, index0: true }).collect();
    FabricListing::from([(pk("0x10"), members)])
}

fn run(events: Vec<ClusterEvent>, l: &FabricListing) -> Report {
    analyze(EngineConfig::default(), events, std::slice::from_ref(l), &TlsFacts::default(), Options::default())
}

#[test]
fn a_configured_claimed_pod_in_ufm_is_clean_and_owned() {
    let r = run(cluster(true, true), &listing(&[g(1)]));
    assert!(r.clean, "{r:#?}");
    assert_eq!(r.counts.claims, 1);
    assert_eq!((r.pkeys[0].expected, r.pkeys[0].in_ufm, r.pkeys[0].stale), (1, 1, 0));
    assert_eq!(r.owners.len(), 1);
    assert_eq!((r.owners[0].pod.as_str(), r.owners[0].state.as_str()), ("t/p", "configured"));
}

#[test]
fn a_stale_guid_is_removed_by_the_plan_and_reported() {
    let r = run(cluster(true, true), &listing(&[g(1), g(9)]));
    assert!(!r.clean);
    assert_eq!(r.plan.removes, vec![("0x10".to_string(), g(9).to_string(), RemovalCause::Stale)]);
    assert!(r.plan.adds.is_empty() && r.plan.ledger_writes.is_empty());
    assert!(r.hazards.iter().any(|h| h.kind == "UnexplainedGuids"));
}

#[test]
fn an_empty_ledger_adopts_the_marker_and_writes_the_claim_first() {
    let r = run(cluster(true, false), &listing(&[g(1)]));
    assert_eq!(r.migration.as_ref().map(|m| m.adopted), Some(1));
    assert_eq!(r.plan.ledger_writes, vec!["t/p".to_string()]);
    assert!(r.plan.adds.is_empty() && r.plan.removes.is_empty(), "{:?}", r.plan);
    assert!(!r.clean, "the ledger write is a change");
}

#[test]
fn a_running_pod_never_configured_is_refused_not_planned() {
    let r = run(cluster(false, false), &listing(&[]));
    assert!(r.plan.adds.is_empty());
    assert_eq!(r.not_configured.get("StartedUnconfigured").map(Vec::len), Some(1), "{:?}", r.not_configured);
    assert!(!r.clean);
}

#[test]
fn with_two_fabrics_rows_are_per_fabric_and_a_guid_both_ufms_list_is_reported() {
    use crate::alloc::GuidRange;
    use crate::engine::{FabricRoute, FabricSpec};
    let route = |name: &str, selector: &[(&str, &str)]| FabricRoute {
        name: name.into(),
        node_selector: selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        resource_names: Vec::new(),
    };
    let cfg = EngineConfig {
        fabrics: vec![
            FabricSpec {
                route: route("compute", &[]),
                guid_range: GuidRange::new(g(0), g(99)).unwrap(),
                hcas: Vec::new(),
            },
            FabricSpec {
                route: route("storage", &[("x", "y")]),
                guid_range: GuidRange::new(g(100), g(199)).unwrap(),
                hcas: Vec::new(),
            },
        ],
        ..EngineConfig::default()
    };
    // Compute holds the pod's GUID; storage lists the same GUID (copied there) and one of its own
    // pool that nothing explains.
    let listings = [listing(&[g(1)]), listing(&[g(1), g(150)])];
    let r = analyze(cfg, cluster(true, true), &listings, &TlsFacts::default(), Options::default());
    let twice: Vec<&Hazard> = r.hazards.iter().filter(|h| h.kind == "GuidInTwoFabrics").collect();
    assert_eq!(twice.len(), 1, "{:?}", r.hazards);
    assert!(twice[0].object.contains(&g(1).to_string()) && twice[0].message.contains("compute, storage"));
    let row = |f: &str| r.pkeys.iter().find(|p| p.fabric == f && p.pkey == "0x10").unwrap_or_else(|| panic!("{f}"));
    assert_eq!((row("compute").expected, row("compute").in_ufm, row("compute").stale), (1, 1, 0));
    // Storage's own stray GUID is drift repaired there; the copied compute GUID is outside its pool
    // and never touched by the plan (only reported).
    assert_eq!((row("storage").expected, row("storage").in_ufm, row("storage").stale), (0, 1, 1));
    assert_eq!(r.plan.removes, vec![("0x10".to_string(), g(150).to_string(), RemovalCause::Stale)]);
    assert!(!r.clean);
}
