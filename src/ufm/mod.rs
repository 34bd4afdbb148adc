//! The UFM adapter: a REST client for NVIDIA UFM's pkey API (reqwest + rustls; basic, token or
//! client-certificate auth; retries with reasons) implementing the engine's `Fabric` port, a
//! `NoopFabric` for `DAEMON_SM_PLUGIN=noop`, and the `fabric-sync ufm …` operator commands.
//!
//! Wire contract (UFM REST guide, see the design notes' UFM reference §A): pkeys travel as
//! `0x<lowercase hex>`, GUIDs as 16 lowercase hex digits; `/ufmRest` takes Basic auth or a
//! client certificate, `/ufmRestV3` takes `Authorization: Basic <token>`.

pub mod cli;
mod client;
mod error;
mod metrics;
mod transport;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;

pub use client::{MAX_GUIDS_IN_PATH, UfmClient};
pub use error::{Op, UfmError};
pub use metrics::{NoopObserver, UfmCounters, UfmObserver, UfmRequestCounts};
pub use wire::{QosConf, UfmPartition, to_fabric_listing};

use crate::config::{SmPlugin, UfmSettings};
use crate::engine::{Fabric, FabricError, FabricListing};
use crate::ib::{Guid, PKey, PartitionSpec};

#[async_trait]
impl Fabric for UfmClient {
    async fn add_guids(&self, spec: &PartitionSpec, guids: &[Guid]) -> Result<(), FabricError> {
        UfmClient::add_guids(self, spec, guids).await.map_err(FabricError::from)
    }

    async fn remove_guids(&self, pkey: PKey, guids: &[Guid]) -> Result<(), FabricError> {
        UfmClient::remove_guids(self, pkey, guids).await.map_err(FabricError::from)
    }

    async fn list(&self) -> Result<FabricListing, FabricError> {
        let partitions = self.list_pkeys().await?;
        Ok(to_fabric_listing(&partitions))
    }

    async fn check(&self) -> Result<String, FabricError> {
        Ok(self.version().await?)
    }
}

/// The `noop` subnet-manager plugin: accepts every change, lists nothing, touches no fabric.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopFabric;

#[async_trait]
impl Fabric for NoopFabric {
    async fn add_guids(&self, _spec: &PartitionSpec, _guids: &[Guid]) -> Result<(), FabricError> {
        Ok(())
    }

    async fn remove_guids(&self, _pkey: PKey, _guids: &[Guid]) -> Result<(), FabricError> {
        Ok(())
    }

    async fn list(&self) -> Result<FabricListing, FabricError> {
        Ok(FabricListing::new())
    }

    async fn check(&self) -> Result<String, FabricError> {
        Ok("noop".to_string())
    }
}

/// The UFM client `DAEMON_SM_PLUGIN` asks for, reporting to `observer`; `None` for `noop`.
/// The settings' warnings are logged either way (the client logs its own).
pub fn client_from_settings(
    settings: &UfmSettings,
    observer: Arc<dyn UfmObserver>,
) -> Result<Option<Arc<UfmClient>>, UfmError> {
    match settings.plugin {
        SmPlugin::Noop => {
            for w in &settings.warnings {
                tracing::warn!("{w}");
            }
            Ok(None)
        }
        SmPlugin::Ufm => Ok(Some(Arc::new(UfmClient::new(settings)?.with_observer(observer)))),
    }
}

/// The fabric `DAEMON_SM_PLUGIN` asks for: a [`UfmClient`] reporting to `observer`, or the
/// [`NoopFabric`].
pub fn from_settings(settings: &UfmSettings, observer: Arc<dyn UfmObserver>) -> Result<Arc<dyn Fabric>, UfmError> {
    Ok(match client_from_settings(settings, observer)? {
        Some(client) => client,
        None => Arc::new(NoopFabric),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UfmArgs;

    fn args(plugin: &str) -> UfmArgs {
        UfmArgs {
            sm_plugin: plugin.into(),
            address: Some("127.0.0.1".into()),
            username: Some("admin".into()),
            password: Some(crate::config::Secret::new("pw")),
            connect_timeout: "1s".into(),
            request_timeout: "1s".into(),
            max_attempts: "1".into(),
            max_guids_per_request: "10".into(),
            ..UfmArgs::default()
        }
    }

    #[tokio::test]
    async fn noop_accepts_everything_and_lists_nothing() {
        let s = UfmSettings::from_args(&args("noop")).unwrap();
        let f = from_settings(&s, Arc::new(NoopObserver)).unwrap();
        let pkey = PKey::new(5).unwrap();
        f.add_guids(&PartitionSpec::new(pkey), &[Guid::MIN]).await.unwrap();
        f.remove_guids(pkey, &[Guid::MIN]).await.unwrap();
        assert!(f.list().await.unwrap().is_empty());
        assert_eq!(f.check().await.unwrap(), "noop");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transient_connect_failure() {
        crate::install_crypto_provider();
        let mut a = args("ufm");
        a.port = Some("1".into());
        let f = from_settings(&UfmSettings::from_args(&a).unwrap(), Arc::new(NoopObserver)).unwrap();
        let e = f.check().await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        assert_eq!(e.reason, crate::engine::FabricReason::UfmUnreachable);
        assert!(e.message.contains("nothing listens on 127.0.0.1:1 (connection refused)"), "{}", e.message);
    }
}
