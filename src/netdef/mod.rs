//! Reading the cluster's network definitions: the Multus networks annotation, NAD configs,
//! SpiderMultusConfigs and the network-status annotation, turned into typed values.

mod error;
mod nad;
mod network_status;
mod networks;
mod smc;

pub use error::NetdefError;
pub use nad::{
    ANNOTATION_INDEX0, ANNOTATION_IP_OVER_IB, ANNOTATION_MEMBERSHIP, ANNOTATION_MTU_LIMIT, ANNOTATION_PKEY,
    ANNOTATION_RATE_LIMIT, ANNOTATION_SERVICE_LEVEL, AUTO_PKEY, AutoPkey, FABRIC_ANNOTATION, GuidVia, IbNetwork,
    NetworkSource, RESOURCE_ANNOTATION, fabric_hints, parse_nad,
};
pub use network_status::{NETWORK_STATUS_ANNOTATION, NetworkStatus, is_pci_address, parse_network_status};
pub use networks::{
    CNI_ARG_CONFIGURED, CNI_ARG_GUID, CNI_ARG_PKEY, CONFIGURED_VALUE, INFINIBAND_GUID, NETWORKS_ANNOTATION,
    NetworkSelection, encode_networks, parse_networks,
};
pub use smc::{SMC_API_VERSION, SMC_KIND, parse_smc};

use std::fmt;
use std::sync::Arc;

/// A NetworkAttachmentDefinition's identity: namespace and name. Cheap to clone (shared
/// strings): the engine keeps one per attachment in several indexes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NetworkKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl NetworkKey {
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> NetworkKey {
        NetworkKey { namespace: Arc::from(namespace.as_ref()), name: Arc::from(name.as_ref()) }
    }
}

impl fmt::Display for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// True for an RFC 1123 label: what Kubernetes accepts as a namespace or NAD name part.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// True for an RFC 1123 subdomain (NAD names may contain dots).
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}
