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
    EventPublisher, FencedFabric, FencedWriter, KubeWriter, LeaderElector, LeaseSettings, NetworkUids, PartitionFabric,
    PartitionReconciler, PartitionSettings, RateLimit, WatchCache, WatchSettings, client_config, limited_client,
    spawn_watchers,
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
    partitions: Option<(PartitionSettings, Arc<dyn PartitionFabric>)>,
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
        Controller {
            client,
            fabrics,
            config,
            stats: Arc::new(EngineStats::default()),
            metrics,
            dry_run: false,
            partitions: None,
        }
    }

    /// Automatic partitions (`--pkey-range`): the leader allocates, creates and deletes them
    /// through `fabric` (docs/partitions.md); the engine resolves automatic networks' pkeys.
    pub fn with_partitions(mut self, settings: PartitionSettings, fabric: Arc<dyn PartitionFabric>) -> Controller {
        self.config.engine.pkey_range = Some(settings.range);
        self.config.watch.partition_claims = true;
        self.partitions = Some((settings, fabric));
        self
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
        let Controller { client, fabrics, config, stats, metrics, dry_run, partitions } = self;
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
        match partitions {
            Some((settings, partition_fabric)) if !dry_run => {
                let reconciler = PartitionReconciler::new(
                    client.clone(),
                    partition_fabric,
                    writer.clone(),
                    elector.fence(),
                    events_tx.clone(),
                    settings,
                    metrics.clone(),
                );
                tasks.spawn(reconciler.run(leader_rx.clone()));
            }
            Some(_) => tracing::info!("dry run: automatic partitions are resolved but none is allocated or created"),
            None => {}
        }
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
        if engine.pkey_range.is_some() && ufm.plugin == SmPlugin::Noop {
            return Err("FABRIC_SYNC_PKEY_RANGE (--pkey-range): automatic partitions are created in UFM; \
                        DAEMON_SM_PLUGIN=noop has none: unset the range or use DAEMON_SM_PLUGIN=ufm"
                .into());
        }
        if engine.pkey_range.is_some() && fabrics.fabrics.len() > 1 {
            return Err("FABRIC_SYNC_PKEY_RANGE (--pkey-range): automatic partitions are not built for several \
                        fabrics yet (a partition would have to exist in every fabric its network reaches): \
                        unset the range, or give its networks fixed pkeys"
                .into());
        }
        let controller = ControllerSettings::from_args(&self.controller, &hostname()).map_err(|e| e.to_string())?;
        let kube_api = KubeApiSettings::from_args(&self.kube_api).map_err(|e| e.to_string())?;
        Ok(Settings { ufm, fabrics, engine, engine_config, controller, kube_api })
    }
}

/// One `Fabric` port per fabric, each built from its own UFM settings (its secret directory).
/// One fabric port per fabric of the file (or the one `default` fabric), built the one way
/// (`ufm::client_from_settings`), and its UFM client (`None` for `noop`).
type FabricPorts = (Vec<Arc<dyn Fabric>>, Vec<Option<Arc<UfmClient>>>);

fn fabric_ports(fabrics: &FabricsSettings, metrics: &Arc<Metrics>) -> Result<FabricPorts, String> {
    let mut ports: Vec<Arc<dyn Fabric>> = Vec::with_capacity(fabrics.fabrics.len());
    let mut clients = Vec::with_capacity(fabrics.fabrics.len());
    for f in &fabrics.fabrics {
        let _fabric = tracing::info_span!("fabric", fabric = %f.name).entered();
        let client = match crate::ufm::client_from_settings(&f.ufm, metrics.ufm_observer(&f.name)) {
            Ok(c) => c,
            Err(e) if fabrics.file.is_some() => return Err(format!("fabric {:?}: {e}", f.name)),
            Err(e) => return Err(e.to_string()),
        };
        ports.push(match &client {
            Some(c) => c.clone(),
            None => Arc::new(NoopFabric),
        });
        clients.push(client);
    }
    Ok((ports, clients))
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
    let (fabrics, clients) = match fabric_ports(&s.fabrics, &metrics) {
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
    let policy = config.engine.policy.clone();
    let mut controller = Controller::with_fabrics(client, fabrics, config, metrics.clone()).dry_run(dry_run);
    // Automatic partitions: one fabric only (checked at start), created through its UFM client.
    if let (Some(range), Some(pf)) = (s.engine.pkey_range, clients.into_iter().next().flatten()) {
        let settings = PartitionSettings { range, policy, resync: s.engine.resync_interval };
        controller = controller.with_partitions(settings, pf as Arc<dyn PartitionFabric>);
    }
    let admin_state = AdminState { stats: controller.stats(), metrics };
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(listen = %s.controller.admin_listen, "admin server listening (/metrics, /healthz, /readyz)");
    let admin = tokio::spawn(crate::ops::serve(listener, crate::ops::router(admin_state), async move {
        // Either a send or the sender dropped ends it.
        admin_stopped.await.ok();
    }));
    controller.run(crate::ops::shutdown_signal()).await;
    admin_stop.send(()).ok();
    match admin.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin server failed");
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::SUCCESS,
    }
}
