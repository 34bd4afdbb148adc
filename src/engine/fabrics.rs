//! Which fabric an attachment belongs to (issue 17, docs/fabrics.md): pure, from the NAD's
//! annotations, the fabrics' node selectors and resource names, and the pod's node labels.
//!
//! Order: the NAD's `fabric-sync.io/fabric` annotation, else the fabric listing the NAD's
//! `k8s.v1.cni.cncf.io/resourceName`, else the one fabric whose node selector matches the node.
//! Both NAD annotations are tenant-writable, so whichever way a fabric is chosen, the pod's node
//! must be on it (its labels match the fabric's node selector): a tenant cannot place a GUID into
//! a fabric its node is not cabled to.

use std::collections::BTreeMap;
use std::fmt;

use super::outcome::Reason;
/// The NAD annotation naming an attachment's fabric.
pub use crate::wire::keys::FABRIC_ANNOTATION;
/// The NAD annotation naming the device-plugin resource (Multus' key).
pub use crate::wire::keys::RESOURCE_ANNOTATION;

/// What the engine knows of one fabric for routing (built from the adapter's settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FabricRoute {
    pub name: String,
    /// `matchLabels`; empty = every node (the `default` fabric without a fabrics file).
    pub node_selector: BTreeMap<String, String>,
    pub resource_names: Vec<String>,
}

impl FabricRoute {
    /// Whether a node with these labels is on this fabric; `None` = node not seen yet.
    fn reaches(&self, labels: Option<&BTreeMap<String, String>>) -> Option<bool> {
        if self.node_selector.is_empty() {
            return Some(true);
        }
        let labels = labels?;
        Some(self.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// Why an attachment has no fabric. `Wait` is not a refusal: the node's labels are not known yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrouted {
    /// The node has not been seen yet; decide when it is.
    Wait,
    /// The NAD names a fabric that does not exist.
    Unknown { fabric: String },
    /// The chosen fabric does not reach the pod's node.
    NotOnNode { fabric: String, node: String },
    /// No fabric reaches the node (and the NAD names none).
    NoFabric { node: String },
    /// Several fabrics reach the node and the NAD does not say which.
    Ambiguous { node: String, fabrics: Vec<String> },
}

impl Unrouted {
    /// The reason written to the pod status annotation and Events.
    pub fn reason(&self) -> Reason {
        match self {
            Unrouted::Wait => Reason::FabricWaitingForNode,
            Unrouted::Unknown { .. } => Reason::FabricUnknown,
            Unrouted::NotOnNode { .. } => Reason::FabricNotOnNode,
            Unrouted::NoFabric { .. } => Reason::FabricNone,
            Unrouted::Ambiguous { .. } => Reason::FabricAmbiguous,
        }
    }
}

impl fmt::Display for Unrouted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unrouted::Wait => write!(f, "the pod's node is not known yet"),
            Unrouted::Unknown { fabric } => {
                write!(f, "the NAD's {FABRIC_ANNOTATION} names fabric {fabric:?}, which the fabrics file does not list")
            }
            Unrouted::NotOnNode { fabric, node } => write!(
                f,
                "fabric {fabric:?} does not reach node {node:?} (its labels do not match the fabric's nodeSelector)"
            ),
            Unrouted::NoFabric { node } => write!(
                f,
                "no fabric's nodeSelector matches node {node:?}: label the node, or name the fabric in the NAD's {FABRIC_ANNOTATION}"
            ),
            Unrouted::Ambiguous { node, fabrics } => write!(
                f,
                "fabrics {} all reach node {node:?}: name one in the NAD's {FABRIC_ANNOTATION} or {RESOURCE_ANNOTATION}",
                fabrics.join(", ")
            ),
        }
    }
}

/// The fabric of one attachment. `nad` = the NAD's annotations; `labels` = the node's labels
/// (`None` when the node has not been seen).
pub fn resolve<'a>(
    routes: &'a [FabricRoute],
    nad: &BTreeMap<String, String>,
    node: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<&'a str, Unrouted> {
    let chosen = match nad.get(FABRIC_ANNOTATION).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        Some(name) => {
            Some(routes.iter().find(|r| r.name == name).ok_or_else(|| Unrouted::Unknown { fabric: name.to_string() })?)
        }
        None => nad
            .get(RESOURCE_ANNOTATION)
            .map(|v| v.trim())
            .and_then(|res| routes.iter().find(|r| r.resource_names.iter().any(|n| n == res))),
    };
    if let Some(route) = chosen {
        return match route.reaches(labels) {
            None => Err(Unrouted::Wait),
            Some(true) => Ok(&route.name),
            Some(false) => Err(Unrouted::NotOnNode { fabric: route.name.clone(), node: node.to_string() }),
        };
    }
    let mut reaching = Vec::new();
    for r in routes {
        match r.reaches(labels) {
            None => return Err(Unrouted::Wait),
            Some(true) => reaching.push(r),
            Some(false) => {}
        }
    }
    match reaching.as_slice() {
        [one] => Ok(&one.name),
        [] => Err(Unrouted::NoFabric { node: node.to_string() }),
        many => {
            Err(Unrouted::Ambiguous { node: node.to_string(), fabrics: many.iter().map(|r| r.name.clone()).collect() })
        }
    }
}

#[cfg(test)]
#[path = "fabrics_tests.rs"]
mod tests;
