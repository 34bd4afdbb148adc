//! Shared helpers for the kube adapter tests: the fake API server, a mock UFM over TLS, and
//! controllers (real `Controller`, real `kube::Client`, real UFM client) with short timings.
#![allow(dead_code)]

pub mod fake_api;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fabric_sync::config::{EngineArgs, EngineSettings, Secret, UfmArgs, UfmSettings};
use fabric_sync::controller::{Controller, ControllerConfig};
use fabric_sync::engine::{EngineStats, Timing};
use fabric_sync::kube::{LeaseSettings, WatchSettings};
use fabric_sync::ops::{AdminState, Metrics};
use fabric_sync::ufm::UfmClient;
use mock_ufm::MockUfm;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use fake_api::{ApiError, FakeApi, Fault, RequestRecord, Res};

pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
pub const STATUS: &str = "fabric-sync.io/status";
pub const LEASE_NS: &str = "kube-system";
pub const LEASE_NAME: &str = "fabric-sync-leader";
pub const UFM_PASSWORD: &str = "kube-test-pw";

/// A fake API server and a mock UFM, seeded with namespace `t` and node `n1`.
pub struct Env {
    pub api: FakeApi,
    pub ufm: MockUfm,
}

/// How a controller authenticates to UFM (each controller its own, so the UFM log tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UfmAuth {
    Basic,
    Token,
    /// Basic auth with a password UFM does not accept.
    WrongPassword,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_ufm(|_| {}).await
    }

    /// Like [`Env::new`], with the mock UFM's configuration changed by `change`.
    pub async fn with_ufm(change: impl FnOnce(&mut mock_ufm::Config)) -> Env {
        fabric_sync::install_crypto_provider();
        let api = FakeApi::start().await;
        let mut config = mock_ufm::Config { password: UFM_PASSWORD.into(), fault_seed: Some(1), ..Default::default() };
        change(&mut config);
        let ufm = MockUfm::start(config).await.expect("mock UFM starts");
        api.create(Res::Namespaces, json!({"metadata": {"name": "t", "labels": {"tenant": "t"}}}));
        api.create(Res::Namespaces, json!({"metadata": {"name": LEASE_NS}}));
        api.create(Res::Nodes, json!({"metadata": {"name": "n1"}}));
        Env { api, ufm }
    }

    /// Starts a controller named `name` (its User-Agent and Lease identity).
    pub async fn controller(&self, name: &str, auth: UfmAuth) -> Running {
        self.controller_with(name, auth, test_config(name)).await
    }

    pub async fn controller_with(&self, name: &str, auth: UfmAuth, config: ControllerConfig) -> Running {
        self.controller_with_client(name, auth, config, self.api.client(name)).await
    }

    /// Like [`Env::controller_with`], on a client built by the caller (e.g. rate limited).
    pub async fn controller_with_client(
        &self,
        name: &str,
        auth: UfmAuth,
        config: ControllerConfig,
        client: kube::Client,
    ) -> Running {
        let args = UfmArgs {
            sm_plugin: "ufm".into(),
            address: Some(self.ufm.addr().ip().to_string()),
            port: Some(self.ufm.addr().port().to_string()),
            username: (auth != UfmAuth::Token).then(|| "admin".to_string()),
            password: match auth {
                UfmAuth::Basic => Some(Secret::new(UFM_PASSWORD)),
                UfmAuth::WrongPassword => Some(Secret::new("not-the-password")),
                UfmAuth::Token => None,
            },
            token: (auth == UfmAuth::Token).then(|| Secret::new(self.ufm.issue_token())),
            certificate: self.ufm.ca_pem(),
            insecure_skip_verify: "false".into(),
            connect_timeout: "2s".into(),
            request_timeout: "5s".into(),
            max_attempts: "3".into(),
            max_guids_per_request: "2000".into(),
            ..UfmArgs::default()
        };
        let metrics = Metrics::new();
        let fabric = Arc::new(self.ufm_client_with(args, &metrics));
        let controller = Controller::new(client, fabric, config, metrics.clone());
        Running::start(name, controller, metrics).await
    }

    /// The UFM client a test controller uses (basic auth), reporting to `metrics`.
    pub fn ufm_client(&self, metrics: &Arc<Metrics>) -> UfmClient {
        let args = UfmArgs {
            sm_plugin: "ufm".into(),
            address: Some(self.ufm.addr().ip().to_string()),
            port: Some(self.ufm.addr().port().to_string()),
            username: Some("admin".to_string()),
            password: Some(Secret::new(UFM_PASSWORD)),
            certificate: self.ufm.ca_pem(),
            insecure_skip_verify: "false".into(),
            connect_timeout: "2s".into(),
            request_timeout: "5s".into(),
            max_attempts: "3".into(),
            max_guids_per_request: "2000".into(),
            ..UfmArgs::default()
        };
        self.ufm_client_with(args, metrics)
    }

    fn ufm_client_with(&self, args: UfmArgs, metrics: &Arc<Metrics>) -> UfmClient {
        let settings = UfmSettings::from_args(&args).expect("UFM settings");
        UfmClient::new(&settings)
            .expect("UFM client")
            .with_observer(metrics.clone())
            .with_retry_delays(Duration::from_millis(10), Duration::from_millis(50))
    }

    pub fn nad(&self, name: &str, pkey: &str, infiniband_guid_capability: bool) -> Value {
        let mut config = json!({"cniVersion": "0.3.1", "name": name, "type": "ib-sriov", "pkey": pkey});
        if infiniband_guid_capability {
            config["capabilities"] = json!({"infinibandGUID": true});
        }
        self.api.create(
            Res::Nads,
            json!({"metadata": {"name": name, "namespace": "t"}, "spec": {"config": config.to_string()}}),
        )
    }

    pub fn pod(&self, name: &str, networks: &str, extra: &[(&str, &str)]) -> Value {
        let mut annotations: BTreeMap<String, String> =
            extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        annotations.insert(NETWORKS.into(), networks.into());
        self.api.create(
            Res::Pods,
            json!({
                "metadata": {"name": name, "namespace": "t", "annotations": annotations},
                "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
                "status": {"phase": "Pending"}
            }),
        )
    }

    pub fn annotation(&self, pod: &str, key: &str) -> Option<String> {
        let p = self.api.get(Res::Pods, "t", pod)?;
        p.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str).map(str::to_string)
    }

    /// The pod's first networks element once it is configured.
    pub fn configured_element(&self, pod: &str) -> Option<Value> {
        let text = self.annotation(pod, NETWORKS)?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let e = v.get(0)?.clone();
        (e.pointer("/cni-args/mellanox.infiniband.app").and_then(Value::as_str) == Some("configured")).then_some(e)
    }

    /// Members (16-hex GUIDs) of `pkey` in the mock UFM.
    pub fn members(&self, pkey: u16) -> Vec<String> {
        self.ufm
            .snapshot()
            .get(&pkey)
            .map(|p| p.members.keys().map(|g| format!("{:016x}", g.value())).collect())
            .unwrap_or_default()
    }

    /// Every GuidClaim, in every namespace (being deleted ones included).
    pub fn claims(&self) -> Vec<Value> {
        self.api.list(Res::GuidClaims)
    }

    /// The GuidClaim in namespace `t` whose `spec.pod` is `pod`. When several are (the pod was
    /// recreated and the old claim is still held), the one for the pod's current UID, else
    /// one that is not being deleted, else the first.
    pub fn claim_for(&self, pod: &str) -> Option<Value> {
        let mine: Vec<Value> = self
            .claims()
            .into_iter()
            .filter(|c| {
                c.pointer("/metadata/namespace").and_then(Value::as_str) == Some("t")
                    && c.pointer("/spec/pod").and_then(Value::as_str) == Some(pod)
            })
            .collect();
        let uid = self.api.get(Res::Pods, "t", pod).and_then(|p| p.pointer("/metadata/uid").cloned());
        let for_uid = mine.iter().find(|c| uid.is_some() && c.pointer("/spec/podUid") == uid.as_ref());
        let live = mine.iter().find(|c| c.pointer("/metadata/deletionTimestamp").is_none());
        for_uid.or(live).or(mine.first()).cloned()
    }

    /// Deletes namespace `name` as `kubectl delete namespace` would: it turns `Terminating`,
    /// its content is deleted, and it goes once nothing is left in it. Deleting one that is
    /// already terminating is not an error here; one that does not exist is.
    pub fn delete_namespace(&self, name: &str) -> Value {
        match self.api.try_delete(Res::Namespaces, "", name) {
            Ok(ns) => ns,
            Err(e) if e.code == 409 => self.api.get(Res::Namespaces, "", name).expect("the namespace is terminating"),
            Err(e) => panic!("deleting namespace {name}: {}", e.message),
        }
    }

    pub async fn lease_holder(&self) -> Option<String> {
        let l = self.api.get(Res::Leases, LEASE_NS, LEASE_NAME)?;
        l.pointer("/spec/holderIdentity").and_then(Value::as_str).map(str::to_string)
    }
}

/// The GuidClaim resource, for `Api<DynamicObject>` (`Api::namespaced_with(client, ns, &guidclaims())`).
pub fn guidclaims() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("fabric-sync.io", "v1alpha1", "GuidClaim"),
        "guidclaims",
    )
}

/// `02:00:…` → `0200…`, as UFM lists it.
pub fn ufm_guid(colon: &str) -> String {
    colon.replace(':', "")
}

/// Short timings: a 2 s Lease renewed within 1 s, fast watch back-off, a quick engine.
pub fn test_config(identity: &str) -> ControllerConfig {
    let engine = EngineSettings::from_args(&EngineArgs::default()).expect("default engine settings");
    ControllerConfig {
        lease: LeaseSettings {
            duration: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
            ..LeaseSettings::new(LEASE_NS, LEASE_NAME, identity)
        },
        watch: WatchSettings {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            absent_retry: Duration::from_millis(300),
            partition_claims: false,
        },
        engine: engine.engine_config().expect("engine config"),
        timing: Timing {
            batch_window: Duration::from_millis(20),
            periodic_update: Duration::from_millis(500),
            resync_interval: Duration::from_secs(1),
            max_parallel_pkeys: 4,
            patch_concurrency: 8,
            retry_max: Duration::from_secs(2),
        },
    }
}

/// A running controller with its admin server.
pub struct Running {
    pub name: String,
    pub stats: Arc<EngineStats>,
    pub metrics: Arc<Metrics>,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
}

impl Running {
    pub async fn start(name: &str, controller: Controller, metrics: Arc<Metrics>) -> Running {
        let stats = controller.stats();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin = listener.local_addr().expect("admin address");
        let state = AdminState { stats: stats.clone(), metrics: metrics.clone() };
        let admin_task = tokio::spawn(async move {
            fabric_sync::ops::serve(listener, fabric_sync::ops::router(state), std::future::pending())
                .await
                .expect("the admin server serves");
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));
        Running { name: name.to_string(), stats, metrics, admin, stop: Some(stop), task: Some(task), admin_task }
    }

    pub fn is_leader(&self) -> bool {
        self.stats.is_leader()
    }

    /// Graceful shutdown (as on SIGTERM): returns once `run` has returned.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t).await.expect("controller stops").expect("no panic");
        }
        self.admin_task.abort();
    }

    /// Kills the controller without any goodbye, as a crash would (the Lease is not released).
    pub async fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.admin_task.abort();
    }

    /// `GET path` on the admin server: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.admin)).await.expect("admin server answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.admin_task.abort();
    }
}

/// Waits for `cond` (polled every 25 ms) for up to 20 s; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Like [`eventually`] for conditions that need to await.
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of an unlabelled or exactly-labelled sample in Prometheus text, e.g.
/// `sample(text, "fabric_sync_leader")` or `sample(text, "fabric_sync_watch_errors_total{resource=\"pods\"}")`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

/// Sum of every sample of `metric` whose labels contain all of `labels` (`k="v"` strings).
pub fn sum_samples(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric && labels.iter().all(|x| rest.contains(x))).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The (API group, resource, verb) of a logged request, as RBAC names it.
pub fn api_call(r: &RequestRecord) -> Option<(String, String, String)> {
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let (resource, named) = match rest {
        [plural] => (*plural, false),
        ["namespaces", _ns, plural] => (*plural, false),
        ["namespaces", _ns, plural, _name] => (*plural, true),
        [plural, _name] => (*plural, true),
        _ => return None,
    };
    let verb = match (r.method.as_str(), named) {
        ("GET", false) if r.is_watch() => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group.to_string(), resource.to_string(), verb.to_string()))
}

/// Asserts that every request `client` made is one of `fabric_sync::kube::API_CALLS`.
pub fn assert_calls_are_declared(api: &FakeApi, client: &str) {
    for r in api.requests_by(client) {
        let call = api_call(&r).unwrap_or_else(|| panic!("unexpected request {} {}", r.method, r.path));
        let declared = fabric_sync::kube::API_CALLS
            .iter()
            .any(|(g, res, v)| (*g, *res, *v) == (call.0.as_str(), call.1.as_str(), call.2.as_str()));
        assert!(declared, "{client} made {call:?} ({} {}), which API_CALLS does not declare", r.method, r.path);
    }
}

/// Events (`events.k8s.io/v1`) about an object of `kind` named `name`.
pub fn events_about(api: &FakeApi, kind: &str, name: &str) -> Vec<Value> {
    api.list(Res::Events)
        .into_iter()
        .filter(|e| {
            e.pointer("/regarding/kind").and_then(Value::as_str) == Some(kind)
                && e.pointer("/regarding/name").and_then(Value::as_str) == Some(name)
        })
        .collect()
}

/// A kubeconfig file in `dir` pointing at `url` (the fake API server), for the binary.
pub fn kubeconfig_file(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\ncurrent-context: c\n"
    );
    std::fs::write(&path, text).expect("kubeconfig written");
    path
}

/// The released `fabric-sync` binary with the controller's settings for `env`: a kubeconfig for
/// the fake API server and the mock UFM's address, credentials and CA (files written to `dir`).
pub fn fabric_sync_binary(env: &Env, dir: &std::path::Path) -> std::process::Command {
    let kubeconfig = kubeconfig_file(dir, &env.api.url());
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, env.ufm.ca_pem().expect("the mock has a CA")).expect("CA file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fabric-sync"));
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("UFM_ADDRESS", env.ufm.addr().ip().to_string())
        .env("UFM_PORT", env.ufm.addr().port().to_string())
        .env("UFM_USERNAME", "admin")
        .env("UFM_PASSWORD", UFM_PASSWORD)
        .env("UFM_CA_FILE", &ca);
    cmd
}
