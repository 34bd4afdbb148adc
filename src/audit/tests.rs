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
        ClusterEvent::NodeApplied { name: "n1".into(), labels: Default::default(), pkey_capacity: None },
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
    analyze(EngineConfig::default(), events, l, &TlsFacts::default(), Options::default())
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
