//! The simulator's fabrics (`--fabrics N`, issue 17): one in-process mock UFM over TLS per
//! fabric, each with its own UFM client, credentials in its own Secret directory and its own
//! slice of the GUID range; nodes are split among the fabrics by a label.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::recording::{Accepted, RecordingFabric};
use super::scenario::{Scenario, SimError};
use crate::alloc::GuidRange;
use crate::config::{UfmArgs, UfmSettings};
use crate::engine::{DEFAULT_FABRIC, FABRIC_ANNOTATION, Fabric, FabricRoute, FabricSpec};
use crate::ib::Guid;
use crate::ufm::{UfmClient, UfmCounters};

/// The node label that puts a node on a fabric (`--fabrics` > 1).
pub const SIM_FABRIC_LABEL: &str = FABRIC_ANNOTATION;

/// One fabric of a run: its UFM, the client's port and counters, its GUID range.
pub(super) struct SimFabric {
    pub name: String,
    pub range: GuidRange,
    pub ufm: mock_ufm::MockUfm,
    pub fabric: Arc<RecordingFabric>,
    pub counters: Arc<UfmCounters>,
    /// The mounted UFM Secret the client reads its token from.
    secret_dir: SecretDir,
    token: std::sync::Mutex<String>,
}

/// The name of fabric `i` of `n`: `default` when there is one (behaviour as without a file).
pub(super) fn fabric_name(i: usize, n: usize) -> String {
    if n <= 1 { DEFAULT_FABRIC.to_string() } else { format!("fabric-{i}") }
}

/// The engine's fabrics for `n`: `range` split in `n` equal slices, nodes by label.
pub(super) fn fabric_specs(n: usize, range: GuidRange) -> Vec<FabricSpec> {
    if n <= 1 {
        return Vec::new();
    }
    let (start, end) = (range.start().value(), range.end().value());
    let step = (end - start) / n as u64;
    (0..n)
        .filter_map(|i| {
            let from = start + step * i as u64;
            let to = if i + 1 == n { end } else { from + step - 1 };
            let guid_range = GuidRange::new(Guid::new(from)?, Guid::new(to)?).ok()?;
            let name = fabric_name(i, n);
            let node_selector = [(SIM_FABRIC_LABEL.to_string(), name.clone())].into_iter().collect();
            Some(FabricSpec {
                route: FabricRoute { name, node_selector, resource_names: Vec::new() },
                guid_range,
                hcas: Vec::new(),
            })
        })
        .collect()
}

/// The labels of node `n` of a run with `fabrics` fabrics.
pub(super) fn node_labels(n: usize, fabrics: usize) -> BTreeMap<String, String> {
    if fabrics <= 1 {
        return BTreeMap::new();
    }
    [(SIM_FABRIC_LABEL.to_string(), fabric_name(n % fabrics, fabrics))].into_iter().collect()
}

impl SimFabric {
    pub(super) async fn start(
        s: &Scenario,
        name: String,
        range: GuidRange,
        accepted: Arc<Accepted>,
        seed: u64,
    ) -> Result<SimFabric, SimError> {
        let mut faults = Vec::new();
        if s.ufm_latency_ms > 0 {
            faults.push(mock_ufm::FaultRule::latency(Duration::from_millis(s.ufm_latency_ms)));
        }
        let ufm = mock_ufm::MockUfm::start(mock_ufm::Config {
            password: format!("sim-{:x}", rand::random::<u64>()),
            faults,
            fault_seed: Some(seed),
            log_capacity: 64,
            ..Default::default()
        })
        .await
        .map_err(|e| SimError::MockUfm(e.to_string()))?;
        // Credentials come the way a cluster mounts them: a Secret directory the client re-reads.
        let token = ufm.issue_token();
        let secret_dir = SecretDir::new().map_err(|e| SimError::Scenario(format!("secret directory: {e}")))?;
        secret_dir.write("UFM_TOKEN", &token).map_err(|e| SimError::Scenario(format!("secret directory: {e}")))?;
        let args = UfmArgs {
            sm_plugin: "ufm".into(),
            address: Some("127.0.0.1".into()),
            port: Some(ufm.addr().port().to_string()),
            scheme: Some("https".into()),
            certificate: ufm.ca_pem(),
            secret_dir: Some(secret_dir.path.clone()),
            connect_timeout: "2s".into(),
            request_timeout: "1500ms".into(),
            max_attempts: "3".into(),
            ..UfmArgs::default()
        };
        let settings = UfmSettings::from_args(&args).map_err(|e| SimError::Client(e.to_string()))?;
        let client = UfmClient::new(&settings)
            .map_err(|e| SimError::Client(e.to_string()))?
            .with_retry_delays(Duration::from_millis(20), Duration::from_millis(200));
        let counters = client.counters();
        let client: Arc<dyn Fabric> = Arc::new(client);
        let fabric = Arc::new(RecordingFabric::new(client, range, accepted));
        Ok(SimFabric { name, range, ufm, fabric, counters, secret_dir, token: std::sync::Mutex::new(token) })
    }

    /// Starts a token rotation as an operator might, badly: a new token is issued and the old
    /// one revoked at once, while the mounted Secret still holds the old one.
    pub(super) fn begin_rotation(&self) -> String {
        let fresh = self.ufm.issue_token();
        let old = std::mem::replace(&mut *self.token.lock().unwrap_or_else(|p| p.into_inner()), fresh.clone());
        self.ufm.revoke_token(&old);
        fresh
    }

    pub(super) fn finish_rotation(&self, token: &str) -> Result<(), SimError> {
        self.secret_dir.write("UFM_TOKEN", token).map_err(|e| SimError::Scenario(format!("secret directory: {e}")))
    }
}

/// A private temporary directory holding UFM Secret files; removed when dropped.
struct SecretDir {
    path: std::path::PathBuf,
}

impl SecretDir {
    fn new() -> std::io::Result<SecretDir> {
        let path =
            std::env::temp_dir().join(format!("fabric-sync-sim-{}-{:x}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(SecretDir { path })
    }

    /// Replaces a file atomically, as the kubelet swaps a Secret volume.
    fn write(&self, key: &str, value: &str) -> std::io::Result<()> {
        let tmp = self.path.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, value)?;
        std::fs::rename(&tmp, self.path.join(key))
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
