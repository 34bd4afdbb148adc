//! Tests of the watchers: API objects to cluster events, and relist diffs.

use super::*;
use serde_json::json;

fn pod(uid: &str, networks: Option<&str>) -> SlimPod {
    let mut meta = json!({"name": format!("p-{uid}"), "namespace": "t", "uid": uid});
    if let Some(n) = networks {
        meta["annotations"] = json!({"k8s.v1.cni.cncf.io/networks": n});
    }
    serde_json::from_value(json!({"metadata": meta, "spec": {"nodeName": "n1"}})).unwrap()
}

fn kinds(out: &[ClusterEvent]) -> Vec<String> {
    out.iter()
        .map(|e| match e {
            ClusterEvent::PodApplied(v) => format!("applied {}", v.uid),
            ClusterEvent::PodDeleted { uid } => format!("deleted {uid}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_relist_reports_pods_that_vanished_in_the_gap() {
    let mut t = PodTracker::default();
    let mut out = Vec::new();
    t.list_started();
    t.apply(pod("a", Some("ib")), &mut out);
    t.apply(pod("b", Some("ib")), &mut out);
    t.apply(pod("plain", None), &mut out);
    t.list_done(&mut out);
    assert_eq!(kinds(&out), ["applied a", "applied b"]);
    out.clear();
    // Relist: a is gone, c is new, b lost its networks annotation.
    t.list_started();
    t.apply(pod("b", None), &mut out);
    t.apply(pod("c", Some("ib")), &mut out);
    t.list_done(&mut out);
    assert_eq!(kinds(&out), ["applied b", "applied c", "deleted a"]);
    out.clear();
    // A deletion of an unknown or plain pod says nothing; of a known one, once.
    t.delete(pod("b", None), &mut out);
    t.delete(pod("c", Some("ib")), &mut out);
    t.delete(pod("c", Some("ib")), &mut out);
    assert_eq!(kinds(&out), ["deleted c"]);
}

#[test]
fn a_relist_reports_networks_that_vanished_and_forgets_their_uids() {
    let uids = Arc::new(NetworkUids::default());
    let mut t = NetworkTracker::new(NetworkKind::Nad, uids.clone());
    let nad = |name: &str| -> DynamicObject {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "t", "uid": format!("uid-{name}")}}))
            .unwrap()
    };
    let mut out = Vec::new();
    t.list_started();
    t.apply(nad("x"), &mut out);
    t.apply(nad("y"), &mut out);
    t.list_done(&mut out);
    assert_eq!(uids.get("NetworkAttachmentDefinition", &NetworkKey::new("t", "x")).as_deref(), Some("uid-x"));
    out.clear();
    t.list_started();
    t.apply(nad("y"), &mut out);
    t.list_done(&mut out);
    assert!(
        matches!(&out[1], ClusterEvent::NetworkDeleted { key, kind: NetworkKind::Nad } if key.name.as_ref() == "x")
    );
    assert_eq!(uids.get("NetworkAttachmentDefinition", &NetworkKey::new("t", "x")), None);
}

#[test]
fn backoff_doubles_to_its_cap_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
    let p: Vec<u128> = (0..4).map(|_| b.next_pause().as_millis()).collect();
    let floors = [100, 200, 350, 350];
    for (got, floor) in p.iter().zip(floors) {
        assert!((floor..floor + floor / 10 + 1).contains(got), "{p:?}");
    }
    b.reset();
    assert!(b.next_pause() < Duration::from_millis(111));
}
