//! Writers that check the leader [`Fence`] right before every request: the engine's
//! `ClusterWriter` and `Fabric` ports wrapped so that no write leaves a replica whose last Lease
//! renewal is older than the renew deadline (invariant 6, also for a process that was frozen
//! with work queued). Listing UFM is a read and is not fenced.

use std::sync::Arc;

use async_trait::async_trait;

use super::lease::Fence;
use crate::engine::{
    Claim, ClaimOutcome, ClusterWriter, ErrorClass, EventRecord, Fabric, FabricError, FabricListing, FabricReason,
    PatchOutcome, PodPatch, WriteError,
};
use crate::ib::{Guid, PKey, PartitionSpec};

pub struct FencedWriter {
    inner: Arc<dyn ClusterWriter>,
    fence: Fence,
}

impl FencedWriter {
    pub fn new(inner: Arc<dyn ClusterWriter>, fence: Fence) -> FencedWriter {
        FencedWriter { inner, fence }
    }

    fn check(&self) -> Result<(), WriteError> {
        self.fence.check().map_err(WriteError::transient)
    }
}

#[async_trait]
impl ClusterWriter for FencedWriter {
    async fn write_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        self.check()?;
        self.inner.write_claim(claim).await
    }

    async fn release_claim(&self, claim: &Claim) -> Result<ClaimOutcome, WriteError> {
        self.check()?;
        self.inner.release_claim(claim).await
    }

    async fn patch_pod(&self, patch: &PodPatch) -> Result<PatchOutcome, WriteError> {
        self.check()?;
        self.inner.patch_pod(patch).await
    }

    async fn emit_event(&self, event: &EventRecord) -> Result<(), WriteError> {
        self.check()?;
        self.inner.emit_event(event).await
    }
}

pub struct FencedFabric {
    inner: Arc<dyn Fabric>,
    fence: Fence,
}

impl FencedFabric {
    pub fn new(inner: Arc<dyn Fabric>, fence: Fence) -> FencedFabric {
        FencedFabric { inner, fence }
    }

    fn check(&self) -> Result<(), FabricError> {
        self.fence.check().map_err(|message| FabricError::new(ErrorClass::Transient, FabricReason::NotLeader, message))
    }
}

#[async_trait]
impl Fabric for FencedFabric {
    async fn add_guids(&self, spec: &PartitionSpec, guids: &[Guid]) -> Result<(), FabricError> {
        self.check()?;
        self.inner.add_guids(spec, guids).await
    }

    async fn remove_guids(&self, pkey: PKey, guids: &[Guid]) -> Result<(), FabricError> {
        self.check()?;
        self.inner.remove_guids(pkey, guids).await
    }

    async fn list(&self) -> Result<FabricListing, FabricError> {
        self.inner.list().await
    }

    async fn check(&self) -> Result<String, FabricError> {
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::engine::{ObjectKey, PodUid};

    /// Counts the writes that get through.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl ClusterWriter for Counting {
        async fn write_claim(&self, _: &Claim) -> Result<ClaimOutcome, WriteError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(ClaimOutcome::Written)
        }
        async fn release_claim(&self, _: &Claim) -> Result<ClaimOutcome, WriteError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(ClaimOutcome::Released)
        }
        async fn patch_pod(&self, _: &PodPatch) -> Result<PatchOutcome, WriteError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(PatchOutcome::Patched)
        }
        async fn emit_event(&self, _: &EventRecord) -> Result<(), WriteError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn patch() -> PodPatch {
        PodPatch {
            uid: PodUid::new("u"),
            pod: ObjectKey { namespace: "t".into(), name: "p".into() },
            writes: Vec::new(),
            status: Default::default(),
        }
    }

    #[tokio::test]
    async fn writes_pass_only_while_the_last_renewal_is_younger_than_the_deadline() {
        let inner = Arc::new(Counting::default());
        let fence = Fence::default();
        let writer = FencedWriter::new(inner.clone(), fence.clone());
        // Never renewed: nothing is written.
        let refused = writer.patch_pod(&patch()).await.expect_err("no lease, no write");
        assert!(refused.is_transient() && refused.message.contains("does not hold"), "{refused}");
        // Renewed: writes pass.
        fence.set(Some(Instant::now() + Duration::from_secs(10)));
        writer.patch_pod(&patch()).await.expect("inside the term");
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        // The term ran out while the process was frozen: the write is refused before it is sent,
        // whatever the engine still believes.
        fence.set(Some(Instant::now() - Duration::from_millis(1)));
        let refused = writer.patch_pod(&patch()).await.expect_err("term over");
        assert!(refused.message.contains("renew deadline"), "{refused}");
        assert_eq!(inner.0.load(Ordering::SeqCst), 1, "nothing reached the API server");
    }
}
