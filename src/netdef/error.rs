//! The one error type of `netdef`: every variant names the object and field at fault.

use crate::ib::{GuidError, PKeyError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NetdefError {
    #[error("networks annotation: {0}")]
    Networks(String),
    #[error("{network}: config is not valid JSON ({detail}); fix spec.config")]
    ConfigJson { network: String, detail: String },
    #[error("{network}: {field} {detail}")]
    Field { network: String, field: String, detail: String },
    #[error("{network}: {field}: {source}")]
    PKey { network: String, field: String, source: PKeyError },
    #[error("{network}: annotation {annotation}={value:?}: {detail}")]
    Annotation { network: String, annotation: String, value: String, detail: String },
    #[error("{element}: {field}: {source}")]
    Guid { element: String, field: String, source: GuidError },
    #[error("network-status annotation: {0}")]
    NetworkStatus(String),
}

impl NetdefError {
    /// Stable reason for Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            NetdefError::Networks(_) => "InvalidNetworksAnnotation",
            NetdefError::ConfigJson { .. } | NetdefError::Field { .. } | NetdefError::Annotation { .. } => {
                "InvalidNetwork"
            }
            NetdefError::PKey { .. } => "InvalidPKey",
            NetdefError::Guid { .. } => "InvalidGuid",
            NetdefError::NetworkStatus(_) => "InvalidNetworkStatus",
        }
    }
}
