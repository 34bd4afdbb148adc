//! `fabric-sync simulate`: the real engine and the real UFM client against an in-process
//! mock UFM over TLS and the in-memory cluster, driven through a burst, churn, faults and
//! controller restarts, then checked against every invariant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::cluster::SimCluster;
use super::fabrics::{SimFabric, fabric_name, fabric_specs, node_labels};
use super::recording::Accepted;
use super::report::{Report, check_invariants};
use crate::alloc::GuidRange;
use crate::engine::{Engine, EngineConfig, EngineStats, Fabric, State, Timing};
use crate::ib::PKey;

/// UFM fault profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FaultProfile {
    None,
    /// 20% of changes answer 5xx.
    Flaky,
    /// One UFM outage (`--outage-ms`) during churn.
    Outage,
    /// 5xx, timeouts, resets, a 401 storm, an outage, API conflicts and NAD pkey edits.
    Chaos,
}

/// The knobs of a run (printed back in the report).
#[derive(Clone, Debug, serde::Serialize, clap::Args)]
pub struct Scenario {
    /// Nodes the pods spread over.
    #[arg(long, default_value_t = 250)]
    pub nodes: usize,
    /// Pods in the initial burst (one IB attachment each).
    #[arg(long, default_value_t = 2000)]
    pub pods: usize,
    /// Distinct pkeys (one NAD each, spread over 4 tenant namespaces).
    #[arg(long, default_value_t = 16)]
    pub pkeys: usize,
    /// Latency UFM adds to every request.
    #[arg(long, default_value_t = 5)]
    pub ufm_latency_ms: u64,
    /// Latency of every write to the API server.
    #[arg(long, default_value_t = 1)]
    pub api_latency_ms: u64,
    /// Share of pods deleted (half deleted, half finished) and replaced during churn.
    #[arg(long, default_value_t = 0.0)]
    pub delete_share: f64,
    /// Controller restarts during churn.
    #[arg(long, default_value_t = 0)]
    pub restarts: usize,
    #[arg(long, value_enum, default_value_t = FaultProfile::None)]
    pub faults: FaultProfile,
    /// Length of the UFM outage of the outage and chaos profiles.
    #[arg(long, default_value_t = 10_000)]
    pub outage_ms: u64,
    /// Seed of every random choice (faults, churn order).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Batch window of the engine.
    #[arg(long, default_value_t = 20)]
    pub batch_window_ms: u64,
    /// Give up converging after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// InfiniBand fabrics, each with its own in-process mock UFM and a slice of the GUID
    /// range; nodes are split among them by the `fabric-sync.io/fabric` label (issue 17).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub fabrics: u16,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            nodes: 250,
            pods: 2000,
            pkeys: 16,
            ufm_latency_ms: 5,
            api_latency_ms: 1,
            delete_share: 0.0,
            restarts: 0,
            faults: FaultProfile::None,
            outage_ms: 10_000,
            seed: 1,
            batch_window_ms: 20,
            timeout_s: 120,
            fabrics: 1,
        }
    }
}

/// Where a run is, for progress output.
#[derive(Clone, Debug)]
pub enum Progress {
    Phase(&'static str),
    /// (done, total) of the current phase.
    Count(usize, usize),
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("mock UFM: {0}")]
    MockUfm(String),
    #[error("UFM client: {0}")]
    Client(String),
    #[error("scenario: {0}")]
    Scenario(String),
}

/// GUID outside the managed range seeded into a managed pkey: must never be touched.
pub const FOREIGN_OUTSIDE: u64 = 0x0300_0000_0000_0001;
/// GUID inside the range seeded into a pkey no network names: never touched, never handed out.
pub const FOREIGN_INSIDE: u64 = 0x02ff_ffff_ffff_fff0;
/// The pkey no network names.
pub const FOREIGN_PKEY: u16 = 0x7000;

pub fn pkey_of(i: usize) -> PKey {
    PKey::new(0x100 + (i % 0x7000) as u16).unwrap_or(PKey::DEFAULT)
}

pub fn network_of(i: usize) -> (String, String) {
    (format!("tenant-{}", i % 4), format!("ib-{i}"))
}

pub(super) struct Controller {
    handle: Option<JoinHandle<()>>,
    pub stats: Arc<EngineStats>,
    leader: watch::Sender<bool>,
    watch_id: u64,
}

impl Controller {
    pub(super) async fn start(
        cluster: &Arc<SimCluster>,
        fabrics: Vec<Arc<dyn Fabric>>,
        cfg: EngineConfig,
        timing: Timing,
        leader: bool,
    ) -> Controller {
        let (tx, rx) = mpsc::channel(8192);
        let (leader_tx, leader_rx) = watch::channel(leader);
        let stats = Arc::new(EngineStats::default());
        let engine = Engine::with_fabrics(State::new(cfg), fabrics, cluster.clone(), timing, stats.clone());
        let handle = tokio::spawn(engine.run(rx, leader_rx));
        let watch_id = cluster.connect(tx).await;
        Controller { handle: Some(handle), stats, leader: leader_tx, watch_id }
    }

    /// Kills the controller without warning, as a crash or a lost node would.
    pub(super) async fn kill(&mut self, cluster: &SimCluster) {
        cluster.disconnect(self.watch_id).await;
        if let Some(h) = self.handle.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Gives or takes leadership (what the Lease loop does).
    pub(super) fn set_leader(&self, leader: bool) {
        let _ = self.leader.send(leader);
    }
}

/// Everything a run holds.
pub(super) struct World {
    /// One per fabric (one `default` fabric unless `--fabrics`).
    pub fabrics: Vec<SimFabric>,
    pub cluster: Arc<SimCluster>,
    pub cfg: EngineConfig,
    pub timing: Timing,
    /// The managed pkey holding the seeded GUID from outside the range.
    pub foreign_managed: PKey,
}

impl World {
    pub(super) async fn new(s: &Scenario, mut cfg: EngineConfig, conflict_rate: f64) -> Result<World, SimError> {
        crate::install_crypto_provider();
        let n = usize::from(s.fabrics.max(1));
        cfg.fabrics = fabric_specs(n, cfg.guid_range);
        let accepted = Arc::new(Accepted::default());
        let mut fabrics = Vec::with_capacity(n);
        for (i, spec) in cfg.fabric_specs().into_iter().enumerate() {
            let seed = s.seed.wrapping_add(i as u64);
            fabrics.push(SimFabric::start(s, fabric_name(i, n), spec.guid_range, accepted.clone(), seed).await?);
        }
        let cluster = Arc::new(SimCluster::new(Duration::from_millis(s.api_latency_ms), accepted, conflict_rate));
        let timing = Timing {
            batch_window: Duration::from_millis(s.batch_window_ms.max(1)),
            periodic_update: Duration::from_secs(1),
            resync_interval: Duration::from_secs(2),
            max_parallel_pkeys: 8,
            patch_concurrency: 64,
            retry_max: Duration::from_secs(2),
        };
        Ok(World { fabrics, cluster, cfg, timing, foreign_managed: PKey::DEFAULT })
    }

    /// The first (or only) fabric's mock UFM.
    pub(super) fn ufm(&self) -> &mock_ufm::MockUfm {
        &self.fabrics[0].ufm
    }

    /// Node `n`, labelled onto fabric `n % fabrics`.
    pub(super) async fn add_node(&self, n: usize, pkey_capacity: Option<u16>) {
        let labels = node_labels(n, self.fabrics.len());
        self.cluster.set_node_labeled(&format!("node-{n}"), labels, pkey_capacity).await;
    }

    /// Starts a token rotation on every UFM (see [`SimFabric::begin_rotation`]).
    pub(super) fn begin_rotation(&self) -> Vec<String> {
        self.fabrics.iter().map(SimFabric::begin_rotation).collect()
    }

    pub(super) fn finish_rotation(&self, tokens: &[String]) -> Result<(), SimError> {
        for (f, t) in self.fabrics.iter().zip(tokens) {
            f.finish_rotation(t)?;
        }
        Ok(())
    }

    /// A new controller, leading.
    pub(super) async fn controller(&self) -> Controller {
        self.controller_as(true).await
    }

    /// A new controller, leading or a warm follower.
    pub(super) async fn controller_as(&self, leader: bool) -> Controller {
        let ports: Vec<Arc<dyn Fabric>> = self.fabrics.iter().map(|f| f.fabric.clone() as Arc<dyn Fabric>).collect();
        Controller::start(&self.cluster, ports, self.cfg.clone(), self.timing.clone(), leader).await
    }

    /// Seeds memberships fabric-sync must leave alone (straight into the mocks' tables): the
    /// GUID outside the range into every UFM, the one inside into the UFM whose slice holds it.
    pub(super) fn seed_foreign(&mut self, managed: PKey) -> Result<(), SimError> {
        self.foreign_managed = managed;
        use mock_ufm::{Guid as MGuid, Member, Membership as MMembership, Mutation, PKey as MPKey};
        let err = |e: mock_ufm::state::StateError| SimError::MockUfm(e.to_string());
        let member = Member { membership: MMembership::Full, index0: false };
        let inside = crate::ib::Guid::new(FOREIGN_INSIDE);
        let seeds = self.fabrics.iter().flat_map(|f| {
            let mut s = vec![(&f.ufm, managed.value(), FOREIGN_OUTSIDE)];
            if inside.is_some_and(|g| f.range.contains(g)) {
                s.push((&f.ufm, FOREIGN_PKEY, FOREIGN_INSIDE));
            }
            s
        });
        for (ufm, pkey, guid) in seeds {
            ufm.apply(Mutation::AddGuids {
                pkey: MPKey::new(pkey).map_err(err)?,
                members: vec![(MGuid::new(guid).map_err(err)?, member)],
                ip_over_ib: None,
                name: None,
            })
            .map_err(err)?;
        }
        Ok(())
    }

    /// Waits until every live pod is configured or refused and UFM matches the cluster.
    pub(super) async fn converge(&self, timeout: Duration, progress: &mut dyn FnMut(Progress)) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_full = Instant::now() - Duration::from_secs(10);
        loop {
            let (total, configured, refused) = self.cluster.progress();
            progress(Progress::Count((configured + refused).min(total), total));
            if configured + refused >= total && last_full.elapsed() >= Duration::from_millis(500) {
                last_full = Instant::now();
                let inv = check_invariants(self);
                if inv.converged() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            // A look at 100,000 pods holds the cluster's lock: look less often at that size.
            tokio::time::sleep(Duration::from_millis(if total > 20_000 { 250 } else { 50 })).await;
        }
    }
}

/// A seeded choice of `k` distinct indices out of `n`.
fn pick(rng: &mut rand::rngs::StdRng, n: usize, k: usize) -> Vec<usize> {
    use rand::seq::index::sample;
    if n == 0 {
        return Vec::new();
    }
    sample(rng, n, k.min(n)).into_vec()
}

/// Runs a scenario and reports. The report's invariant counts decide the exit code.
pub async fn run(s: &Scenario, progress: &mut dyn FnMut(Progress)) -> Result<Report, SimError> {
    use rand::SeedableRng;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let cfg = EngineConfig { guid_range: GuidRange::DEFAULT, ..EngineConfig::default() };
    let conflict_rate = if s.faults == FaultProfile::Chaos { 0.05 } else { 0.0 };
    let mut world = World::new(s, cfg, conflict_rate).await?;
    progress(Progress::Phase("setup"));
    world.seed_foreign(pkey_of(0))?;
    for t in 0..4 {
        world.cluster.set_namespace(&format!("tenant-{t}"), BTreeMap::new()).await;
    }
    for n in 0..s.nodes {
        world.add_node(n, None).await;
    }
    for i in 0..s.pkeys.max(1) {
        let (ns, name) = network_of(i);
        let config =
            format!(r#"{{"cniVersion":"0.3.1","type":"ib-sriov","pkey":"{}","ibKubernetesEnabled":true}}"#, pkey_of(i));
        world.cluster.apply_nad(&ns, &name, BTreeMap::new(), &config).await;
    }
    let mut controller = world.controller().await;
    // Chaos keeps a warm follower, as a two-replica Deployment does.
    let mut follower = if s.faults == FaultProfile::Chaos { Some(world.controller_as(false).await) } else { None };
    let mut leader_changes = 0usize;
    progress(Progress::Phase("burst"));
    for start in (0..s.pods).step_by(8192) {
        let burst: Vec<_> = (start..(start + 8192).min(s.pods)).map(|i| pod_spec(s, i)).collect();
        world.cluster.create_pods(&burst).await;
    }
    let mut next_pod = s.pods;
    let mut converged = world.converge(Duration::from_secs(s.timeout_s), progress).await;
    let mut restarts_done = 0;
    let churn = s.delete_share > 0.0 || s.restarts > 0 || s.faults != FaultProfile::None;
    if churn {
        progress(Progress::Phase("churn"));
        install_faults(&world, s);
        let rounds = 4usize;
        let per_round = ((s.pods as f64 * s.delete_share) / rounds as f64).ceil() as usize;
        for round in 0..rounds {
            let live: Vec<String> = world.cluster.pods().into_iter().map(|p| p.uid).collect();
            for (k, i) in pick(&mut rng, live.len(), per_round).into_iter().enumerate() {
                if k % 2 == 0 {
                    world.cluster.delete_pod(&live[i]).await;
                } else {
                    world.cluster.finish_pod(&live[i]).await;
                }
            }
            for _ in 0..per_round {
                create_pod(&world, s, next_pod).await;
                next_pod += 1;
            }
            if s.faults == FaultProfile::Chaos {
                hostile_tenants(&world, &mut rng, round).await;
            }
            if s.faults == FaultProfile::Chaos && round == 3 {
                // Deletions while no controller runs: the leader and its follower die, a whole
                // job goes, then new replicas start from the ledger alone.
                controller.kill(&world.cluster).await;
                if let Some(mut f) = follower.take() {
                    f.kill(&world.cluster).await;
                }
                let live: Vec<String> = world.cluster.pods().into_iter().map(|p| p.uid).collect();
                for i in pick(&mut rng, live.len(), (per_round * 2).max(40).min(live.len())) {
                    world.cluster.delete_pod(&live[i]).await;
                }
                controller = world.controller().await;
                follower = Some(world.controller_as(false).await);
                restarts_done += 1;
            }
            if s.faults == FaultProfile::Chaos && round == 0 {
                // Watch connections drop; pods come and go unseen; the watches relist (410 Gone).
                world.cluster.drop_watches().await;
                let live: Vec<String> = world.cluster.pods().into_iter().map(|p| p.uid).collect();
                for i in pick(&mut rng, live.len(), per_round.max(1)) {
                    world.cluster.delete_pod(&live[i]).await;
                }
                for _ in 0..per_round.max(1) {
                    create_pod(&world, s, next_pod).await;
                    next_pod += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                world.cluster.resume_watches().await;
            }
            if s.faults == FaultProfile::Chaos && round == 2 {
                // A leader change: the old leader stops writing before the new one starts.
                if let Some(f) = follower.take() {
                    controller.set_leader(false);
                    f.set_leader(true);
                    follower = Some(std::mem::replace(&mut controller, f));
                    leader_changes += 1;
                }
            }
            if s.faults == FaultProfile::Chaos && round == 1 && s.pkeys > 1 {
                // A tenant moves a network to another pkey while pods use it.
                let (ns, name) = network_of(1);
                let moved = PKey::new(0x6000).unwrap_or(PKey::DEFAULT);
                let config = format!(r#"{{"type":"ib-sriov","pkey":"{moved}","ibKubernetesEnabled":true}}"#);
                world.cluster.apply_nad(&ns, &name, BTreeMap::new(), &config).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if restarts_done < s.restarts {
                let every = rounds.div_ceil(s.restarts.max(1));
                if round % every.max(1) == 0 || rounds - round <= s.restarts - restarts_done {
                    controller = restart(&world, controller, &mut follower).await;
                    restarts_done += 1;
                }
            }
        }
        while restarts_done < s.restarts {
            controller = restart(&world, controller, &mut follower).await;
            restarts_done += 1;
        }
        if matches!(s.faults, FaultProfile::Outage | FaultProfile::Chaos) {
            // Let the outage run its course before judging convergence.
            let end = Duration::from_millis(s.outage_ms);
            tokio::time::sleep(end.min(Duration::from_secs(s.timeout_s))).await;
        }
        if s.faults == FaultProfile::Chaos {
            // Credential rotation with a gap: the pods created now meet 401s until the Secret
            // catches up, then must be configured without a restart.
            let fresh = world.begin_rotation();
            for _ in 0..per_round.max(1) {
                create_pod(&world, s, next_pod).await;
                next_pod += 1;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            world.finish_rotation(&fresh)?;
        }
        for f in &world.fabrics {
            f.ufm.clear_faults();
            f.ufm.update_settings(|st| st.apply_delay_ms = 0);
            f.ufm.apply_pending();
            if s.ufm_latency_ms > 0 {
                f.ufm.add_fault(mock_ufm::FaultRule::latency(Duration::from_millis(s.ufm_latency_ms)));
            }
        }
        progress(Progress::Phase("converge"));
        converged = world.converge(Duration::from_secs(s.timeout_s), progress).await;
    }
    let stats = controller.stats.clone();
    let report = Report::build(s, &world, &stats, started.elapsed(), converged, restarts_done, leader_changes);
    controller.kill(&world.cluster).await;
    if let Some(mut f) = follower {
        f.kill(&world.cluster).await;
    }
    for f in world.fabrics {
        f.ufm.shutdown().await;
    }
    Ok(report)
}

/// Kills the leader. A warm follower takes over (and a new follower starts), or a new
/// controller starts in its place.
async fn restart(world: &World, mut leader: Controller, follower: &mut Option<Controller>) -> Controller {
    leader.kill(&world.cluster).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    match follower.take() {
        Some(f) => {
            f.set_leader(true);
            *follower = Some(world.controller_as(false).await);
            f
        }
        None => world.controller().await,
    }
}

/// Pod `i` of a scenario: (uid, namespace, name, node, networks), spread over nodes and networks.
fn pod_spec(s: &Scenario, i: usize) -> (String, String, String, String, String) {
    let (ns, network) = network_of(i % s.pkeys.max(1));
    (format!("uid-{i:07}"), ns, format!("job-{i}"), format!("node-{}", i % s.nodes.max(1)), network)
}

/// Tenants who do not play fair: new pods that claim another tenant's live GUID as configured,
/// and a configured pod that points its element at another pod's GUID.
async fn hostile_tenants(world: &World, rng: &mut rand::rngs::StdRng, round: usize) {
    let pods = world.cluster.pods();
    let configured: Vec<(String, String, String)> = pods
        .iter()
        .filter(|p| !p.uid.starts_with("forger-"))
        .filter_map(|p| {
            let els = crate::netdef::parse_networks(&p.networks).ok()?;
            let e = els.first()?;
            let g = e.cni_arg(crate::netdef::CNI_ARG_GUID)?.to_string();
            e.is_configured().then(|| (p.uid.clone(), p.namespace.clone(), g))
        })
        .collect();
    if configured.len() < 2 {
        return;
    }
    for k in 0..3 {
        let victim = &configured[pick(rng, configured.len(), 1)[0]];
        // Another tenant's namespace and network.
        let t = (victim.1.trim_start_matches("tenant-").parse::<usize>().unwrap_or(0) + 1) % 4;
        let (ns, net) = network_of(t);
        let forged = format!(
            r#"[{{"name":"{net}","cni-args":{{"guid":"{}","mellanox.infiniband.app":"configured"}}}}]"#,
            victim.2
        );
        let uid = format!("forger-{round}-{k}");
        world.cluster.create_pod_with(&uid, &ns, &uid, "node-0", &forged).await;
    }
    let picked = pick(rng, configured.len(), 2);
    if let [a, b] = picked[..] {
        let (editor, theirs) = (&configured[a], &configured[b].2);
        if let Some(p) = pods.iter().find(|p| p.uid == editor.0) {
            let edited = p.networks.replace(&editor.2, theirs);
            world.cluster.edit_pod_networks(&editor.0, &edited).await;
        }
    }
}

async fn create_pod(world: &World, s: &Scenario, i: usize) {
    let (uid, ns, name, node, network) = pod_spec(s, i);
    world.cluster.create_pod(&uid, &ns, &name, &node, &network).await;
}

fn install_faults(world: &World, s: &Scenario) {
    use mock_ufm::FaultRule;
    let writes = "/resources/pkeys";
    for (i, f) in world.fabrics.iter().enumerate() {
        let ufm = &f.ufm;
        match s.faults {
            FaultProfile::None => {}
            FaultProfile::Flaky => {
                ufm.add_fault(FaultRule::error_rate(0.2, &[500, 502, 503]).path(writes));
            }
            FaultProfile::Outage => {
                ufm.add_fault(FaultRule::outage(Duration::from_millis(s.outage_ms)));
            }
            FaultProfile::Chaos => {
                // UFM applies through OpenSM: changes show up in listings only later.
                ufm.update_settings(|st| st.apply_delay_ms = 100);
                ufm.add_fault(FaultRule::error_rate(0.2, &[500, 502, 503]).path(writes));
                ufm.add_fault(FaultRule::hang().with_probability(0.02).path(writes));
                ufm.add_fault(FaultRule::reset().with_probability(0.02).path(writes));
                ufm.add_fault(FaultRule::unauthorized_next(3));
                // With several fabrics, every other one is in outage while the rest go on.
                if i % 2 == 0 {
                    ufm.add_fault(FaultRule::outage(Duration::from_millis(s.outage_ms)));
                }
            }
        }
    }
}
