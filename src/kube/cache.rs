//! The watch cache: what the watchers last saw of each pod with networks and of each GuidClaim
//! (its `resourceVersion`, and for pods the two annotations the writer rewrites), so that writes
//! are computed from it and sent with its `resourceVersion` as precondition, without a GET.
//! A stale entry costs a 409 and one fresh read; a missing one costs one read.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;
use kube::core::ObjectMeta;

use crate::engine::{PodUid, STATUS_ANNOTATION};
use crate::netdef::NETWORKS_ANNOTATION;

/// What a pod write is computed from: the pod's version and our two annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodBase {
    pub uid: Option<String>,
    pub resource_version: String,
    pub networks: Option<String>,
    pub status: Option<String>,
    pub created: Option<Timestamp>,
}

impl PodBase {
    pub fn from_meta(meta: &ObjectMeta) -> PodBase {
        let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        PodBase {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            networks: annotation(NETWORKS_ANNOTATION),
            status: annotation(STATUS_ANNOTATION),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// Shared between the watchers (which fill it) and the writer (which reads it, and refreshes
/// entries from its own successful writes).
#[derive(Default)]
pub struct WatchCache {
    pods: Mutex<HashMap<PodUid, PodBase>>,
    /// GuidClaim name (the pod's UID) → resourceVersion.
    claims: Mutex<HashMap<PodUid, String>>,
}

/// `new` is not older than `old` (numeric versions compared as numbers; anything else counts
/// as newer: the version is only a precondition, a wrong guess costs a 409).
fn not_older(new: &str, old: &str) -> bool {
    match (new.parse::<u64>(), old.parse::<u64>()) {
        (Ok(n), Ok(o)) => n >= o,
        _ => true,
    }
}

impl WatchCache {
    pub fn pod(&self, uid: &PodUid) -> Option<PodBase> {
        lock(&self.pods).get(uid).cloned()
    }

    /// The watcher saw this pod (with networks).
    pub fn pod_seen(&self, meta: &ObjectMeta) {
        let Some(uid) = meta.uid.as_deref() else { return };
        let base = PodBase::from_meta(meta);
        let mut pods = lock(&self.pods);
        match pods.get_mut(&PodUid::new(uid)) {
            Some(old) if !not_older(&base.resource_version, &old.resource_version) => {}
            Some(old) => *old = base,
            None => {
                pods.insert(PodUid::new(uid), base);
            }
        }
    }

    /// Our write succeeded (or we read the pod): remember the result, unless the pod was
    /// forgotten meanwhile.
    pub fn pod_written(&self, base: PodBase) {
        let Some(uid) = base.uid.as_deref() else { return };
        let mut pods = lock(&self.pods);
        if let Some(old) = pods.get_mut(&PodUid::new(uid)) {
            if not_older(&base.resource_version, &old.resource_version) {
                *old = base;
            }
        }
    }

    pub fn pod_gone(&self, uid: &PodUid) {
        lock(&self.pods).remove(uid);
    }

    pub fn pods(&self) -> usize {
        lock(&self.pods).len()
    }

    pub fn claim(&self, name: &PodUid) -> Option<String> {
        lock(&self.claims).get(name).cloned()
    }

    pub fn claim_seen(&self, meta: &ObjectMeta) {
        let (Some(name), Some(rv)) = (meta.name.as_deref(), meta.resource_version.as_deref()) else { return };
        let mut claims = lock(&self.claims);
        match claims.get_mut(&PodUid::new(name)) {
            Some(old) if !not_older(rv, old) => {}
            Some(old) => *old = rv.to_string(),
            None => {
                claims.insert(PodUid::new(name), rv.to_string());
            }
        }
    }

    pub fn claim_written(&self, meta: &ObjectMeta) {
        let (Some(name), Some(rv)) = (meta.name.as_deref(), meta.resource_version.as_deref()) else { return };
        if let Some(old) = lock(&self.claims).get_mut(&PodUid::new(name)) {
            if not_older(rv, old) {
                *old = rv.to_string();
            }
        }
    }

    pub fn claim_gone(&self, name: &PodUid) {
        lock(&self.claims).remove(name);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, rv: &str, networks: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            name: Some(uid.into()),
            resource_version: Some(rv.into()),
            annotations: Some([(NETWORKS_ANNOTATION.to_string(), networks.to_string())].into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one_and_writes_do_not_resurrect() {
        let c = WatchCache::default();
        let uid = PodUid::new("u");
        c.pod_seen(&meta("u", "10", "a"));
        c.pod_written(PodBase::from_meta(&meta("u", "12", "b")));
        // The watch delivers the event before ours late: ignored.
        c.pod_seen(&meta("u", "11", "stale"));
        assert_eq!(c.pod(&uid).map(|p| (p.resource_version, p.networks)), Some(("12".into(), Some("b".into()))));
        c.pod_gone(&uid);
        c.pod_written(PodBase::from_meta(&meta("u", "13", "c")));
        assert_eq!(c.pod(&uid), None, "a write response does not bring back a deleted pod");

        c.claim_seen(&meta("u", "5", ""));
        c.claim_written(&meta("u", "7", ""));
        c.claim_seen(&meta("u", "6", ""));
        assert_eq!(c.claim(&uid).as_deref(), Some("7"));
        c.claim_gone(&uid);
        c.claim_written(&meta("u", "8", ""));
        assert_eq!(c.claim(&uid), None);
    }
}
