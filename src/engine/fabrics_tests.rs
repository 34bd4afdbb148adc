//! Tests of attachment → fabric routing, including a tenant pointing its NAD at a fabric its
//! node is not on.

use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn routes() -> Vec<FabricRoute> {
    let route = |name: &str, label: &str, res: &[&str]| FabricRoute {
        name: name.into(),
        node_selector: map(&[("fabric-sync.io/fabric", label)]),
        resource_names: res.iter().map(|s| s.to_string()).collect(),
    };
    vec![route("compute", "compute", &["nvidia.com/ib_compute"]), route("storage", "storage", &[])]
}

fn on(label: &str) -> BTreeMap<String, String> {
    map(&[("fabric-sync.io/fabric", label), ("kubernetes.io/hostname", "n1")])
}

#[test]
fn the_nodes_fabric_is_chosen_when_the_nad_says_nothing() {
    let r = routes();
    assert_eq!(resolve(&r, &map(&[]), "n1", Some(&on("storage"))), Ok("storage"));
    assert_eq!(resolve(&r, &map(&[]), "n1", Some(&on("compute"))), Ok("compute"));
}

#[test]
fn the_nad_annotation_wins_over_the_resource_name_within_the_nodes_reach() {
    let mut r = routes();
    // A node on both fabrics (compute and storage HCAs).
    r[1].node_selector = map(&[("storage", "yes")]);
    let both = map(&[("fabric-sync.io/fabric", "compute"), ("storage", "yes")]);
    let nad = map(&[(FABRIC_ANNOTATION, "storage"), (RESOURCE_ANNOTATION, "nvidia.com/ib_compute")]);
    assert_eq!(resolve(&r, &nad, "n1", Some(&both)), Ok("storage"));
    let nad = map(&[(RESOURCE_ANNOTATION, "nvidia.com/ib_compute")]);
    assert_eq!(resolve(&r, &nad, "n1", Some(&both)), Ok("compute"));
    let e = resolve(&r, &map(&[]), "n1", Some(&both)).unwrap_err();
    assert_eq!(e.reason().as_str(), "FabricAmbiguous");
    assert!(e.to_string().contains("compute, storage"), "{e}");
}

#[test]
fn a_tenant_cannot_point_its_nad_at_a_fabric_its_node_is_not_on() {
    let r = routes();
    let nad = map(&[(FABRIC_ANNOTATION, "compute")]);
    let e = resolve(&r, &nad, "n1", Some(&on("storage"))).unwrap_err();
    assert_eq!(e, Unrouted::NotOnNode { fabric: "compute".into(), node: "n1".into() });
    assert_eq!(e.reason().as_str(), "FabricNotOnNode");
    // The same through the resource name.
    let nad = map(&[(RESOURCE_ANNOTATION, "nvidia.com/ib_compute")]);
    assert_eq!(resolve(&r, &nad, "n1", Some(&on("storage"))).unwrap_err().reason().as_str(), "FabricNotOnNode");
}

#[test]
fn unknown_fabrics_unlabelled_nodes_and_unseen_nodes() {
    let r = routes();
    let nad = map(&[(FABRIC_ANNOTATION, "gpu")]);
    assert_eq!(resolve(&r, &nad, "n1", Some(&on("compute"))).unwrap_err().reason().as_str(), "FabricUnknown");
    assert_eq!(resolve(&r, &map(&[]), "n1", Some(&map(&[]))).unwrap_err().reason().as_str(), "FabricNone");
    assert_eq!(resolve(&r, &map(&[]), "n1", None), Err(Unrouted::Wait));
    // An unknown resource name falls through to the node's fabric.
    let nad = map(&[(RESOURCE_ANNOTATION, "nvidia.com/other")]);
    assert_eq!(resolve(&r, &nad, "n1", Some(&on("storage"))), Ok("storage"));
}

#[test]
fn the_default_fabric_reaches_every_node_seen_or_not() {
    let r = vec![FabricRoute { name: "default".into(), node_selector: BTreeMap::new(), resource_names: vec![] }];
    assert_eq!(resolve(&r, &map(&[]), "n1", None), Ok("default"));
    assert_eq!(resolve(&r, &map(&[]), "n1", Some(&on("storage"))), Ok("default"));
    let nad = map(&[(FABRIC_ANNOTATION, "default")]);
    assert_eq!(resolve(&r, &nad, "n1", None), Ok("default"));
}
