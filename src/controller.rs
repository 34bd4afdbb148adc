//! `fabric-sync controller`: the engine wired to the Kubernetes adapter (watchers, writer,
//! Lease), the UFM client and the admin server. Every replica watches (warm standby); only the
//! Lease holder writes. SIGTERM stops writing, releases the Lease and exits 0.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{
    ConfigError, ControllerArgs, ControllerSettings, EngineArgs, EngineSettings, FabricsSettings, KubeApiArgs,
    KubeApiSettings, SmPlugin, UfmArgs, UfmSettings,
};
use crate::engine::{ClusterWriter, Engine, EngineConfig, EngineStats, Fabric, State, Timing};
use crate::kube::{
    EventPublisher, FencedFabric, FencedWriter, KubeWriter, LeaderElector, LeaseSettings, NetworkUids, RateLimit,
    WatchCache, WatchSettings, client_config, limited_client, spawn_watchers,
};
use crate::ops::{AdminState, Metrics};
use crate::ufm::{NoopFabric, UfmClient};

/// Events queued between the watchers and the engine (a burst waits here, not in memory twice).
const EVENT_BUFFER: usize = 4096;
/// How long shutdown waits for the engine to drop leadership, and for the Lease release.
const STEP_DOWN_WAIT: Duration = Duration::from_secs(5);

/// Everything the controller needs besides its client and fabric.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub lease: LeaseSettings,
    pub watch: WatchSettings,
    pub engine: EngineConfig,
    pub timing: Timing,
}

/// One controller replica.
pub struct Controller {
    client: Client,
    /// One port per fabric, in the order of `config.engine`'s fabrics.
    fabrics: Vec<Arc<dyn Fabric>>,
    config: ControllerConfig,
    stats: Arc<EngineStats>,
    metrics: Arc<Metrics>,
    dry_run: bool,
}

impl Controller {
    /// A controller of one fabric (`config.engine` names at most one).
    pub fn new(client: Client, fabric: Arc<dyn Fabric>, config: ControllerConfig, metrics: Arc<Metrics>) -> Controller {
        Controller::with_fabrics(client, vec![fabric], config, metrics)
    }

    /// A controller of several fabrics: `fabrics[i]` drives the i-th fabric of `config.engine`.
    pub fn with_fabrics(
        client: Client,
        fabrics: Vec<Arc<dyn Fabric>>,
        config: ControllerConfig,
        metrics: Arc<Metrics>,
    ) -> Controller {
        Controller { client, fabrics, config, stats: Arc::new(EngineStats::default()), metrics, dry_run: false }
    }

    /// `--dry-run`: no write of any kind (UFM, ledger, pods, Events, Lease); the engine plans
    /// as a leader that never took the Lease and each change is logged and counted instead.
    pub fn dry_run(mut self, on: bool) -> Controller {
        self.dry_run = on;
        self
    }

    /// The engine's counters and flags (leader, synced, fabric reached), for the admin server.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves, then steps down: writes stop, the Lease is released,
    /// the watchers and the engine end. Dropping this future instead stops everything at once
    /// without releasing the Lease (as a crash would).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Controller { client, fabrics, config, stats, metrics, dry_run } = self;
        let identity = config.lease.identity.clone();
        tracing::info!(identity = %identity, lease = %format!("{}/{}", config.lease.namespace, config.lease.name),
            "controller starting");
        // Dropping the set aborts every task in it: nothing outlives `run`.
        let mut tasks = JoinSet::new();
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let (leader_tx, leader_rx) = watch::channel(false);
        let uids = Arc::new(NetworkUids::default());
        let cache = Arc::new(WatchCache::default());
        let publisher = EventPublisher::new(client.clone(), &identity, uids.clone());
        let mut elector = LeaderElector::new(client.clone(), config.lease);
        // Every write (UFM, ledger, pods, Events) passes the Lease fence first.
        let (writer, fabrics): (Arc<dyn ClusterWriter>, Vec<Arc<dyn Fabric>>) = if dry_run {
            let mut ports = Vec::with_capacity(fabrics.len());
            let mut writer = None;
            for fabric in fabrics {
                let (w, f) = crate::kube::dry_run_ports(client.clone(), fabric, metrics.clone());
                writer.get_or_insert(w);
                ports.push(f);
            }
            let writer = writer
                .unwrap_or_else(|| crate::kube::dry_run_ports(client.clone(), Arc::new(NoopFabric), metrics.clone()).0);
            (writer, ports)
        } else {
            let writer = KubeWriter::new(client.clone(), publisher, metrics.clone()).with_cache(cache.clone());
            (
                Arc::new(FencedWriter::new(Arc::new(writer), elector.fence())),
                fabrics
                    .into_iter()
                    .map(|f| Arc::new(FencedFabric::new(f, elector.fence())) as Arc<dyn Fabric>)
                    .collect(),
            )
        };
        // The node agents' reports become Events on pods (the leader's writer is fenced too).
        tasks.spawn(crate::kube::node_status::run_mirror(client.clone(), writer.clone(), leader_rx.clone()));
        let engine = Engine::with_fabrics(State::new(config.engine), fabrics, writer, config.timing, stats.clone());
        tasks.spawn(engine.run(events_rx, leader_rx));
        spawn_watchers(&mut tasks, &client, events_tx, metrics, config.watch, uids, cache);

        if dry_run {
            tracing::info!("dry run: no Lease is taken and nothing is written; planning as the leader");
            leader_tx.send_replace(true);
            shutdown.await;
        } else {
            tokio::select! {
                () = elector.run(&leader_tx) => {}
                () = shutdown => {}
            }
        }
        tracing::info!(identity = %identity, "shutting down");
        let was_leader = leader_tx.send_replace(false);
        if was_leader {
            // The engine aborts its in-flight writes when it sees leadership go.
            let acknowledged = wait_until(STEP_DOWN_WAIT, || !stats.is_leader()).await;
            if !acknowledged {
                tracing::warn!("the engine did not acknowledge stepping down in time");
            }
        }
        let release = if dry_run { None } else { Some(tokio::time::timeout(STEP_DOWN_WAIT, elector.release()).await) };
        match release {
            None | Some(Ok(Ok(true))) | Some(Ok(Ok(false))) => {}
            Some(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader lease; it will expire"),
            Some(Err(_)) => tracing::warn!("releasing the leader lease timed out; it will expire"),
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::info!(identity = %identity, "controller stopped");
    }
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The flags and environment of `fabric-sync controller`.
#[derive(clap::Args, Debug)]
pub struct ControllerCmd {
    #[command(flatten)]
    pub ufm: UfmArgs,
    /// YAML file of several InfiniBand fabrics, each with its own UFM, node selector and GUID pool
    /// (docs/fabrics.md); replaces the single-UFM settings and GUID_POOL_RANGE_*.
    #[arg(long = "fabrics-file", env = "FABRIC_SYNC_FABRICS_FILE")]
    pub fabrics_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// Plan without writing anything (no UFM change, no pod, ledger, Event or Lease write): each
    /// change is logged at info and counted in fabric_sync_dry_run_changes_total.
    #[arg(long, env = "FABRIC_SYNC_DRY_RUN")]
    pub dry_run: bool,
    #[command(flatten)]
    pub kube_api: KubeApiArgs,
}

/// Validated settings of `fabric-sync controller`.
pub struct Settings {
    /// The UFM of the fabric this controller drives (the `default` one without a fabrics file).
    pub ufm: UfmSettings,
    /// Every fabric, from the fabrics file or the single-UFM settings (one `default` fabric).
    pub fabrics: FabricsSettings,
    pub engine: EngineSettings,
    pub engine_config: EngineConfig,
    pub controller: ControllerSettings,
    pub kube_api: KubeApiSettings,
}

impl ControllerCmd {
    /// Validates every setting as the controller does at start (the policy file is read too);
    /// the error names the setting.
    pub fn load(&self) -> Result<Settings, String> {
        let mut engine = EngineSettings::from_args(&self.engine).map_err(|e| e.to_string())?;
        let fabrics = match &self.fabrics_file {
            Some(path) => FabricsSettings::from_file(path, &self.ufm).map_err(|e| e.to_string())?,
            None => FabricsSettings::single(
                UfmSettings::from_args(&self.ufm).map_err(|e| e.to_string())?,
                engine.guid_range,
            ),
        };
        let first = fabrics.fabrics.first().ok_or("FABRIC_SYNC_FABRICS_FILE (--fabrics-file): lists no fabric")?;
        let ufm = first.ufm.clone();
        // The fabrics' own pools replace GUID_POOL_RANGE_* (the same value without a fabrics file).
        engine.guid_range = first.guid_range;
        let mut engine_config = engine.engine_config().map_err(|e| e.to_string())?;
        engine_config.fabrics = fabrics.engine_specs();
        let controller = ControllerSettings::from_args(&self.controller, &hostname()).map_err(|e| e.to_string())?;
        let kube_api = KubeApiSettings::from_args(&self.kube_api).map_err(|e| e.to_string())?;
        Ok(Settings { ufm, fabrics, engine, engine_config, controller, kube_api })
    }
}

/// One `Fabric` port per fabric, each built from its own UFM settings (its secret directory).
fn fabric_ports(fabrics: &FabricsSettings, metrics: &Arc<Metrics>) -> Result<Vec<Arc<dyn Fabric>>, String> {
    let mut ports: Vec<Arc<dyn Fabric>> = Vec::with_capacity(fabrics.fabrics.len());
    for f in &fabrics.fabrics {
        let port: Arc<dyn Fabric> = match f.ufm.plugin {
            SmPlugin::Noop => {
                for w in &f.ufm.warnings {
                    tracing::warn!(fabric = %f.name, "{w}");
                }
                Arc::new(NoopFabric)
            }
            // UfmClient::new logs the settings' warnings itself.
            SmPlugin::Ufm => match UfmClient::new(&f.ufm) {
                Ok(c) => Arc::new(c.with_observer(metrics.ufm_observer(&f.name))),
                Err(e) if fabrics.file.is_some() => return Err(format!("fabric {:?}: {e}", f.name)),
                Err(e) => return Err(e.to_string()),
            },
        };
        ports.push(port);
    }
    Ok(ports)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fabric-sync".to_string())
}

/// The `fabric-sync controller` command. Exit 2 for a configuration problem (the message names
/// the setting), 1 for a runtime failure, 0 after a clean shutdown (SIGTERM or Ctrl-C).
pub fn main(cmd: ControllerCmd) -> ExitCode {
    let settings = match cmd.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fabric-sync controller: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fabric-sync controller: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run_main(settings, cmd.dry_run))
}

async fn run_main(s: Settings, dry_run: bool) -> ExitCode {
    let metrics = Metrics::new();
    let identity = s.controller.identity.clone();
    let limit = RateLimit { qps: s.kube_api.qps, burst: s.kube_api.burst };
    let client = match client_config(s.controller.kubeconfig.as_deref(), &identity).await.and_then(|c| {
        limited_client(c, limit, Some(metrics.clone()))
            .map_err(|e| ConfigError { setting: "KUBECONFIG (--kubeconfig)".into(), detail: e.to_string() })
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fabric-sync controller: {e}");
            return ExitCode::from(2);
        }
    };
    let fabrics = match fabric_ports(&s.fabrics, &metrics) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fabric-sync controller: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(s.controller.admin_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "fabric-sync controller: cannot listen on {} (FABRIC_SYNC_ADMIN_LISTEN): {e}",
                s.controller.admin_listen
            );
            return ExitCode::from(1);
        }
    };
    let lease = LeaseSettings {
        duration: s.controller.lease_duration,
        renew_deadline: s.controller.lease_renew_deadline,
        retry_period: s.controller.lease_retry_period,
        ..LeaseSettings::new(&s.controller.namespace, &s.controller.lease_name, &identity)
    };
    let config =
        ControllerConfig { lease, watch: WatchSettings::default(), engine: s.engine_config, timing: s.engine.timing() };
    let controller = Controller::with_fabrics(client, fabrics, config, metrics.clone()).dry_run(dry_run);
    let admin_state = AdminState { stats: controller.stats(), metrics };
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(listen = %s.controller.admin_listen, "admin server listening (/metrics, /healthz, /readyz)");
    let admin = tokio::spawn(crate::ops::serve(listener, admin_state, async move {
        let _ = admin_stopped.await;
    }));
    controller.run(shutdown_signal()).await;
    let _ = admin_stop.send(());
    match admin.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin server failed");
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::SUCCESS,
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the controller");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
