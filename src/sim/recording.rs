//! A `Fabric` wrapper that remembers what UFM accepted (so the simulator can check that no pod
//! was written configured before its GUID was accepted) and flags requests that touch GUIDs
//! outside the managed range.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::alloc::GuidRange;
use crate::engine::{Fabric, FabricError, FabricListing};
use crate::ib::{Guid, PKey, PartitionSpec};

/// (pkey, GUID) pairs UFM has accepted and not since removed.
#[derive(Debug, Default)]
pub struct Accepted {
    pairs: Mutex<HashMap<PKey, HashSet<Guid>>>,
}

impl Accepted {
    pub fn contains(&self, p: PKey, g: Guid) -> bool {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner()).get(&p).is_some_and(|s| s.contains(&g))
    }

    fn add(&self, p: PKey, guids: &[Guid]) {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner()).entry(p).or_default().extend(guids.iter().copied());
    }

    fn remove(&self, p: PKey, guids: &[Guid]) {
        if let Some(s) = self.pairs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&p) {
            for g in guids {
                s.remove(g);
            }
        }
    }
}

pub struct RecordingFabric {
    inner: Arc<dyn Fabric>,
    range: GuidRange,
    pub accepted: Arc<Accepted>,
    foreign: AtomicU64,
}

impl RecordingFabric {
    pub fn new(inner: Arc<dyn Fabric>, range: GuidRange, accepted: Arc<Accepted>) -> RecordingFabric {
        RecordingFabric { inner, range, accepted, foreign: AtomicU64::new(0) }
    }

    /// Requests that named a GUID outside the managed range.
    pub fn foreign_requests(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }

    fn check(&self, guids: &[Guid]) {
        if guids.iter().any(|g| !self.range.contains(*g)) {
            self.foreign.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl Fabric for RecordingFabric {
    async fn add_guids(&self, spec: &PartitionSpec, guids: &[Guid]) -> Result<(), FabricError> {
        self.check(guids);
        let r = self.inner.add_guids(spec, guids).await;
        if r.is_ok() {
            self.accepted.add(spec.pkey, guids);
        }
        r
    }

    async fn remove_guids(&self, pkey: PKey, guids: &[Guid]) -> Result<(), FabricError> {
        self.check(guids);
        // Removal may take effect even when the answer is lost: forget acceptance up front.
        self.accepted.remove(pkey, guids);
        self.inner.remove_guids(pkey, guids).await
    }

    async fn list(&self) -> Result<FabricListing, FabricError> {
        let listing = self.inner.list().await?;
        // What UFM lists it has accepted, also when the answer to the add was lost (a
        // controller killed while its add was in flight).
        for (p, members) in &listing {
            let guids: Vec<Guid> = members.iter().map(|m| m.guid).collect();
            self.accepted.add(*p, &guids);
        }
        Ok(listing)
    }

    async fn check(&self) -> Result<String, FabricError> {
        self.inner.check().await
    }
}
