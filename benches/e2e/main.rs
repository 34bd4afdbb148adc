//! The whole controller over real HTTP: the released `fabric-sync controller` binary as a child
//! process (so its CPU and peak RSS are its own), against the fake API server of tests/support
//! and an in-process mock UFM over TLS, with API and UFM latency knobs. Prints one JSON object.
//!
//! ```text
//! cargo bench --bench e2e -- --pods 2000 --nodes 250 --pkeys 8 --api-latency-ms 2 --ufm-latency-ms 5
//! cargo bench --bench e2e -- --pods 2000 --scenario churn --churn-rounds 5 --churn-fraction 0.1
//! ```
//! Knobs: `--pods`, `--nodes`, `--pkeys`, `--api-latency-ms`, `--ufm-latency-ms`, `--qps`,
//! `--burst` (the controller's `--kube-api-qps`/`--kube-api-burst`; default: no limit),
//! `--patch-concurrency`, `--scenario burst|churn`, `--churn-rounds`, `--churn-fraction`,
//! `--timeout-s`, `--binary` (default: the `fabric-sync` this bench was built with).

#[path = "../../tests/support/mod.rs"]
mod support;

mod measure;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{FakeApi, Res};

use measure::{Proc, Tally, percentile};

#[derive(Clone, Debug)]
struct Args {
    pods: usize,
    nodes: usize,
    pkeys: usize,
    api_latency_ms: u64,
    ufm_latency_ms: u64,
    qps: String,
    burst: String,
    patch_concurrency: String,
    scenario: String,
    churn_rounds: usize,
    churn_fraction: f64,
    timeout_s: u64,
    binary: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        pods: 2000,
        nodes: 250,
        pkeys: 8,
        api_latency_ms: 2,
        ufm_latency_ms: 5,
        qps: "0".into(),
        burst: "100".into(),
        patch_concurrency: "16".into(),
        scenario: "burst".into(),
        churn_rounds: 5,
        churn_fraction: 0.1,
        timeout_s: 1800,
        binary: env!("CARGO_BIN_EXE_fabric-sync").to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a whole number"));
        match flag.as_str() {
            "--pods" => a.pods = num(&value)? as usize,
            "--nodes" => a.nodes = (num(&value)? as usize).max(1),
            "--pkeys" => a.pkeys = (num(&value)? as usize).clamp(1, 1000),
            "--api-latency-ms" => a.api_latency_ms = num(&value)?,
            "--ufm-latency-ms" => a.ufm_latency_ms = num(&value)?,
            "--qps" => a.qps = value,
            "--burst" => a.burst = value,
            "--patch-concurrency" => a.patch_concurrency = value,
            "--scenario" if value == "burst" || value == "churn" => a.scenario = value,
            "--churn-rounds" => a.churn_rounds = num(&value)? as usize,
            "--churn-fraction" => {
                a.churn_fraction = value.parse().map_err(|_| format!("--churn-fraction: {value:?} is not a number"))?
            }
            "--timeout-s" => a.timeout_s = num(&value)?,
            "--binary" => a.binary = value,
            _ => return Err(format!("unknown flag {flag} (or bad value {value:?})")),
        }
    }
    Ok(a)
}

const UA_PREFIX: &str = "fabric-sync/";
const CONFIGURED: &str = r#"mellanox.infiniband.app\":\"configured"#;

struct World {
    api: FakeApi,
    ufm: mock_ufm::MockUfm,
    args: Args,
    /// Pod name → when the bench created it.
    created: HashMap<String, Instant>,
    /// Pod name → creation-to-configured.
    configured: HashMap<String, Duration>,
    /// How far the request log has been read.
    cursor: usize,
    next_pod: usize,
}

impl World {
    fn create_pod(&mut self) -> String {
        let i = self.next_pod;
        self.next_pod += 1;
        let name = format!("p{i}");
        let network = format!("ib-{}", i % self.args.pkeys);
        let node = format!("n{}", i % self.args.nodes);
        self.api.create(
            Res::Pods,
            json!({"metadata": {"name": name, "namespace": "t",
                                "annotations": {support::NETWORKS: format!(r#"[{{"name":"{network}"}}]"#)}},
                   "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
                   "status": {"phase": "Pending"}}),
        );
        self.created.insert(name.clone(), Instant::now());
        name
    }

    /// Reads the new part of the API log: pods whose patch wrote them configured.
    fn scan(&mut self) {
        let new = self.api.requests_since(self.cursor);
        self.cursor += new.len();
        for r in new {
            if r.res != Some(Res::Pods) || r.verb != Some("patch") || r.status != 200 {
                continue;
            }
            if !r.body.as_deref().is_some_and(|b| b.contains(CONFIGURED)) {
                continue;
            }
            let name = r.path.rsplit('/').next().unwrap_or_default().to_string();
            if let Some(created) = self.created.get(&name) {
                self.configured.entry(name).or_insert_with(|| r.done.saturating_duration_since(*created));
            }
        }
    }

    /// Waits until every pod in `names` is configured (and `also` holds); false on timeout.
    async fn wait_configured(&mut self, names: &[String], deadline: Instant, also: impl Fn(&World) -> bool) -> bool {
        loop {
            self.scan();
            if names.iter().all(|n| self.configured.contains_key(n)) && also(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_controller(w: &World, dir: &std::path::Path, admin: u16) -> std::io::Result<Child> {
    let kubeconfig = support::kubeconfig_file(dir, &w.api.url());
    let a = &w.args;
    Command::new(&a.binary)
        .arg("controller")
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("UFM_ADDRESS", w.ufm.addr().ip().to_string())
        .env("UFM_PORT", w.ufm.addr().port().to_string())
        .env("UFM_USERNAME", "admin")
        .env("UFM_PASSWORD", support::UFM_PASSWORD)
        .env("UFM_CERTIFICATE", w.ufm.ca_pem().unwrap_or_default())
        .env("POD_NAMESPACE", support::LEASE_NS)
        .env("K8S_NODE", "bench")
        .env("POD_UID", "bench-1")
        .env("FABRIC_SYNC_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("FABRIC_SYNC_KUBE_API_QPS", &a.qps)
        .env("FABRIC_SYNC_KUBE_API_BURST", &a.burst)
        .env("FABRIC_SYNC_PATCH_CONCURRENCY", &a.patch_concurrency)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log"))?)
        .spawn()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(18080, |a| a.port())
}

async fn ready(admin: u16) -> bool {
    match reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await {
        Ok(r) => r.status().as_u16() == 200,
        Err(_) => false,
    }
}

/// What one phase cost, from the logs of both servers and the controller's /proc entry.
fn phase_report(w: &World, from: usize, ufm_from: u64, pods: &[String], cpu_s: f64, wall: Duration) -> Value {
    let mut tally = Tally::default();
    for r in w.api.requests_since(from).iter().filter(|r| r.client.starts_with(UA_PREFIX)) {
        tally.api(r);
    }
    for r in w.ufm.requests_since(ufm_from) {
        tally.ufm(&r);
    }
    let mut lat: Vec<f64> = pods.iter().filter_map(|n| w.configured.get(n)).map(|d| d.as_secs_f64() * 1e3).collect();
    lat.sort_by(f64::total_cmp);
    let configured = lat.len();
    let per_pod = |n: u64| if configured == 0 { 0.0 } else { n as f64 / configured as f64 };
    let by_verb: BTreeMap<String, f64> = tally.api.iter().map(|(k, v)| (k.clone(), round(per_pod(*v), 3))).collect();
    json!({
        "pods": pods.len(),
        "configured": configured,
        "wall_s": round(wall.as_secs_f64(), 2),
        "latency_ms": {"p50": round(percentile(&lat, 0.5), 1), "p99": round(percentile(&lat, 0.99), 1),
                        "max": round(percentile(&lat, 1.0), 1)},
        "api_requests": tally.api,
        "api_requests_per_configured_pod": {
            "by_verb": by_verb,
            "pod_and_ledger_writes": round(per_pod(tally.writes()), 3),
            "pod_and_ledger_reads": round(per_pod(tally.reads()), 3),
        },
        "ufm_requests": tally.ufm,
        "ufm_adds_per_pkey_max": tally.ufm_adds_per_pkey.values().max().copied().unwrap_or(0),
        "controller_cpu_s": round(cpu_s, 2),
        "controller_cpu_s_per_1000_pods": round(if configured == 0 { 0.0 } else { cpu_s * 1000.0 / configured as f64 }, 3),
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

async fn run(args: Args) -> Result<Value, String> {
    fabric_sync::install_crypto_provider();
    let api = FakeApi::start().await;
    api.set_history_limit(200_000);
    let mut faults = Vec::new();
    if args.ufm_latency_ms > 0 {
        faults.push(mock_ufm::FaultRule::latency(Duration::from_millis(args.ufm_latency_ms)));
    }
    let ufm = mock_ufm::MockUfm::start(mock_ufm::Config {
        password: support::UFM_PASSWORD.into(),
        fault_seed: Some(1),
        log_capacity: 2_000_000,
        faults,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("mock UFM: {e}"))?;
    api.create(Res::Namespaces, json!({"metadata": {"name": "t"}}));
    api.create(Res::Namespaces, json!({"metadata": {"name": support::LEASE_NS}}));
    for n in 0..args.nodes {
        api.create(Res::Nodes, json!({"metadata": {"name": format!("n{n}")}}));
    }
    for k in 0..args.pkeys {
        let config = json!({"cniVersion": "0.3.1", "name": format!("ib-{k}"), "type": "ib-sriov",
                            "pkey": format!("0x{:x}", 0x100 + k)});
        api.create(
            Res::Nads,
            json!({"metadata": {"name": format!("ib-{k}"), "namespace": "t"},
                                     "spec": {"config": config.to_string()}}),
        );
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut w = World {
        api,
        ufm,
        args: args.clone(),
        created: HashMap::new(),
        configured: HashMap::new(),
        cursor: 0,
        next_pod: 0,
    };
    let admin = free_port();
    let mut child = spawn_controller(&w, dir.path(), admin).map_err(|e| format!("starting {}: {e}", args.binary))?;
    let proc = Proc::new(child.id());
    let result = drive(&mut w, admin, &proc).await;
    let peak = proc.peak_rss_mb();
    let _ = child.kill();
    let _ = child.wait();
    let mut out = result.map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
        format!("{e}\ncontroller log (tail):\n{}", log.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
    })?;
    out["controller_peak_rss_mb"] = json!(round(peak, 1));
    Ok(out)
}

async fn drive(w: &mut World, admin: u16, proc: &Proc) -> Result<Value, String> {
    let a = w.args.clone();
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    let start = Instant::now();
    while !ready(admin).await {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the controller did not become ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.api.set_latency(Duration::from_millis(a.api_latency_ms));
    let knobs = json!({"scenario": a.scenario, "pods": a.pods, "nodes": a.nodes, "pkeys": a.pkeys,
                       "api_latency_ms": a.api_latency_ms, "ufm_latency_ms": a.ufm_latency_ms,
                       "kube_api_qps": a.qps, "kube_api_burst": a.burst, "patch_concurrency": a.patch_concurrency});
    // The burst: every pod at once.
    let (from, ufm_from, cpu0, t0) = (w.api.log_len(), last_ufm_seq(&w.ufm), proc.cpu_seconds(), Instant::now());
    let pods: Vec<String> = (0..a.pods).map(|_| w.create_pod()).collect();
    let converged = w.wait_configured(&pods, deadline, |_| true).await;
    let mut burst = phase_report(w, from, ufm_from, &pods, proc.cpu_seconds() - cpu0, t0.elapsed());
    burst["converged"] = json!(converged);
    let mut out = json!({"knobs": knobs, "burst": burst});
    if a.scenario == "churn" && converged {
        let (from, ufm_from, cpu0, t0) = (w.api.log_len(), last_ufm_seq(&w.ufm), proc.cpu_seconds(), Instant::now());
        let per_round = ((a.pods as f64 * a.churn_fraction).round() as usize).clamp(1, a.pods);
        let mut live: std::collections::VecDeque<String> = pods.into();
        let mut new_pods = Vec::new();
        let mut ok = true;
        for _ in 0..a.churn_rounds {
            let mut round = Vec::new();
            for _ in 0..per_round {
                if let Some(old) = live.pop_front() {
                    w.api.delete(Res::Pods, "t", &old);
                }
                let n = w.create_pod();
                live.push_back(n.clone());
                round.push(n);
            }
            let expected = live.len();
            ok &= w.wait_configured(&round, deadline, |w| w.api.list(Res::GuidClaims).len() == expected).await;
            new_pods.extend(round);
            if !ok {
                break;
            }
        }
        let mut churn = phase_report(w, from, ufm_from, &new_pods, proc.cpu_seconds() - cpu0, t0.elapsed());
        churn["converged"] = json!(ok);
        churn["deleted"] = json!(new_pods.len());
        out["churn"] = churn;
    }
    Ok(out)
}

fn last_ufm_seq(ufm: &mock_ufm::MockUfm) -> u64 {
    ufm.requests().last().map_or(0, |r| r.seq)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("e2e bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("e2e bench: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("e2e bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
