//! What the engine knows of pods: only the fields it needs (memory at 100k pods matters),
//! built from a pod's parts by the adapters with [`PodView::new`].

use std::fmt;
use std::sync::Arc;

use crate::ib::Guid;
use crate::netdef::{CNI_ARG_PKEY, NetworkKey, NetworkSelection, parse_networks};

/// A pod's UID; cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PodUid(Arc<str>);

impl PodUid {
    pub fn new(uid: &str) -> PodUid {
        PodUid(Arc::from(uid))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Namespace and name of an object.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn parse(phase: Option<&str>) -> PodPhase {
        match phase {
            Some("Pending") | None => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some(_) => PodPhase::Unknown,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// Which attachment of a pod, when one network appears more than once: the interface name
/// asked for, else the occurrence among the network's elements without one (as ib-kubernetes).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Slot {
    Interface(Box<str>),
    Occurrence(u16),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Interface(i) => write!(f, "@{i}"),
            Slot::Occurrence(0) => Ok(()),
            Slot::Occurrence(n) => write!(f, "#{n}"),
        }
    }
}

/// One attachment of one pod to one network.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AttachmentId {
    pub pod: PodUid,
    pub network: NetworkKey,
    pub slot: Slot,
}

impl AttachmentId {
    /// `ns/net`, `ns/net@iface` or `ns/net#2`: the key of the pod's status annotation.
    pub fn label(&self) -> String {
        format!("{}{}", self.network, self.slot)
    }
}

/// What a pod's networks annotation says about one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRequest {
    pub network: NetworkKey,
    pub slot: Slot,
    /// The GUID in the element (`infiniband-guid` or `cni-args.guid`): the user's request, or
    /// ours if `configured` is set. `Err` holds why it does not parse.
    pub guid: Option<Result<Guid, String>>,
    /// `cni-args["mellanox.infiniband.app"] == "configured"`.
    pub configured: bool,
    /// `cni-args.pkey` as written.
    pub pkey: Option<String>,
}

impl AttachmentRequest {
    /// The requests of a parsed networks annotation; namespaces default to the pod's.
    /// Linear in the number of elements: occurrences are counted per network as they come.
    pub fn from_selections(pod_namespace: &str, elements: &[NetworkSelection]) -> Vec<AttachmentRequest> {
        let mut out: Vec<AttachmentRequest> = Vec::with_capacity(elements.len());
        let mut occurrences: std::collections::HashMap<NetworkKey, u16> = std::collections::HashMap::new();
        for e in elements {
            let network = NetworkKey::new(e.namespace().unwrap_or(pod_namespace), e.name());
            let slot = match e.interface() {
                Some(i) => Slot::Interface(i.into()),
                None => {
                    let seen = occurrences.entry(network.clone()).or_insert(0);
                    let n = *seen;
                    *seen = seen.saturating_add(1);
                    Slot::Occurrence(n)
                }
            };
            out.push(AttachmentRequest {
                network,
                slot,
                guid: e.requested_guid().map_err(|err| err.to_string()).transpose(),
                configured: e.is_configured(),
                pkey: e.cni_arg(CNI_ARG_PKEY).map(str::to_string),
            });
        }
        out
    }
}

/// The parts of a pod the engine reads, borrowed from whatever holds the pod.
#[derive(Clone, Copy, Debug)]
pub struct PodMeta<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub node: Option<&'a str>,
    pub phase: PodPhase,
    pub deleting: bool,
    pub host_network: bool,
    /// Creation time (Unix seconds; 0 when unknown): who was first, when two pods claim a GUID.
    pub created: i64,
}

/// A pod as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub uid: PodUid,
    pub key: ObjectKey,
    pub node: Option<Arc<str>>,
    pub phase: PodPhase,
    pub deleting: bool,
    pub host_network: bool,
    pub created: i64,
    /// The attachments asked for; `Err` when the networks annotation does not parse.
    pub attachments: Result<Vec<AttachmentRequest>, String>,
    /// Attachments our status annotation refused for a forged marker: the refusal outlives a
    /// restart (it only ever refuses; it never grants anything).
    pub forged: Option<Box<[Box<str>]>>,
}

impl PodView {
    /// Builds the view from a pod's parts and its raw networks annotation (if any).
    pub fn new(meta: PodMeta<'_>, networks_annotation: Option<&str>) -> PodView {
        let attachments = match networks_annotation {
            None => Ok(Vec::new()),
            Some(text) => parse_networks(text)
                .map(|els| AttachmentRequest::from_selections(meta.namespace, &els))
                .map_err(|e| e.to_string()),
        };
        PodView {
            uid: PodUid::new(meta.uid),
            key: ObjectKey { namespace: meta.namespace.to_string(), name: meta.name.to_string() },
            node: meta.node.filter(|n| !n.is_empty()).map(Arc::from),
            phase: meta.phase,
            deleting: meta.deleting,
            host_network: meta.host_network,
            created: meta.created,
            attachments,
            forged: None,
        }
    }

    /// Reads back, from our `fabric-sync.io/status` annotation, which attachments were refused
    /// for a forged marker.
    pub fn with_status(mut self, status: Option<&str>) -> PodView {
        let Some(text) = status.filter(|t| t.contains(super::outcome::Reason::ForgedAnnotation.as_str())) else {
            return self;
        };
        let prefix = format!("refused: {}", super::outcome::Reason::ForgedAnnotation);
        let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text).unwrap_or_default();
        let labels: Vec<Box<str>> =
            map.into_iter().filter(|(_, v)| v.starts_with(&prefix)).map(|(k, _)| k.into_boxed_str()).collect();
        self.forged = (!labels.is_empty()).then(|| labels.into_boxed_slice());
        self
    }

    /// Whether our status annotation refused this attachment for a forged marker.
    pub fn was_refused_forged(&self, id: &AttachmentId) -> bool {
        let label = id.label();
        self.forged.as_ref().is_some_and(|l| l.iter().any(|x| **x == *label))
    }

    /// Whether the engine has any reason to remember this pod.
    pub fn has_networks(&self) -> bool {
        !matches!(&self.attachments, Ok(a) if a.is_empty())
    }

    pub fn attachment_id(&self, r: &AttachmentRequest) -> AttachmentId {
        AttachmentId { pod: self.uid.clone(), network: r.network.clone(), slot: r.slot.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(namespace: &'static str, node: Option<&'static str>, phase: PodPhase) -> PodMeta<'static> {
        PodMeta { uid: "u1", namespace, name: "p", node, phase, deleting: false, host_network: false, created: 0 }
    }

    #[test]
    fn same_network_twice_gets_two_slots_and_namespace_defaults_to_the_pods() {
        let v = PodView::new(meta("team", Some("n1"), PodPhase::Pending), Some("ib, ib, other/ib@net3"));
        let a = v.attachments.unwrap();
        assert_eq!(a[0].network, NetworkKey::new("team", "ib"));
        assert_eq!((a[0].slot.clone(), a[1].slot.clone()), (Slot::Occurrence(0), Slot::Occurrence(1)));
        assert_eq!(a[2].network, NetworkKey::new("other", "ib"));
        assert_eq!(a[2].slot, Slot::Interface("net3".into()));
    }

    #[test]
    fn configured_guid_and_pkey_are_read_back() {
        let ann = r#"[{"name":"ib","cni-args":{"guid":"02:00:00:00:00:00:00:05","mellanox.infiniband.app":"configured","pkey":"0x10"}}]"#;
        let v = PodView::new(meta("t", None, PodPhase::Running), Some(ann));
        let a = &v.attachments.unwrap()[0];
        assert!(a.configured);
        assert_eq!(a.guid, Some(Ok("02:00:00:00:00:00:00:05".parse().unwrap())));
        assert_eq!(a.pkey.as_deref(), Some("0x10"));
    }

    #[test]
    fn bad_annotation_is_kept_as_an_error() {
        let v = PodView::new(meta("t", None, PodPhase::Pending), Some("[{"));
        assert!(v.attachments.is_err());
        assert!(v.has_networks());
    }
}
