//! The deployment artefacts users apply (deploy/, config/, Dockerfile), checked against the code
//! they deploy: every YAML document parses into its Kubernetes type; every env var, flag, port and
//! image agrees with the binary (asked through the hidden `fabric-sync config-schema`); RBAC grants
//! exactly the API calls the code makes; the Helm chart agrees with itself and with the kustomize
//! base; the trial overlay's TLS really verifies; the dashboard shows every metric and no other;
//! every overlay renders (`kubectl kustomize`) into valid objects; the admission policies' CEL and
//! the ledger CRD's rules hold on sample requests (a CEL interpreter). Nothing here needs a
//! cluster, Helm or Docker; it needs kubectl (for kustomize v5) and reads the files and asks the code.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{CommandFactory, Parser};
use fabric_sync::config::LogFormat;
use fabric_sync::engine::{EngineConfig, Policy};
use fabric_sync::ib::PKey;
use fabric_sync::netdef::{GuidVia, parse_nad, parse_networks, parse_smc};
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

// Submodules: image (ports, images, Dockerfile), security (RBAC, pod security, overlays), chart
// (Helm, dashboard, examples), rendered (every overlay through `kubectl kustomize`), admission
// (the admission policies' CEL, evaluated), crd (the ledger CRD). Shared helpers live here.
#[path = "deploy_manifests/admission.rs"]
mod admission;
#[path = "deploy_manifests/agent_admission.rs"]
mod agent_admission;
#[path = "deploy_manifests/chart.rs"]
mod chart;
#[path = "deploy_manifests/crd.rs"]
mod crd;
#[path = "deploy_manifests/image.rs"]
mod image;
#[path = "deploy_manifests/rendered.rs"]
mod rendered;
#[path = "deploy_manifests/security.rs"]
mod security;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const CONTROLLER: &str = "fabric-sync controller";
const AGENT: &str = "fabric-sync agent run";
const BASE: &str = "deploy/kustomize/base";
const MOCK: &str = "deploy/kustomize/overlays/mock-ufm";
const MIGRATION: &str = "deploy/kustomize/overlays/ib-kubernetes-migration";
const CHART: &str = "deploy/helm/fabric-sync";
/// The keys `UFM_SECRET_DIR` reads (`SECRET_KEYS` in src/config/ufm.rs, private there).
const SECRET_KEYS: [&str; 7] =
    ["UFM_USERNAME", "UFM_PASSWORD", "UFM_TOKEN", "UFM_ADDRESS", "UFM_HTTP_SCHEMA", "UFM_PORT", "UFM_CERTIFICATE"];
/// Environment read by the process but not through clap, and the file that reads it.
const PROCESS_ENV: &[(&str, &str, &str)] = &[("RUST_LOG", "src/ops/telemetry.rs", "EnvFilter::try_from_default_env")];
/// ConfigMap keys set to something other than the binary's default, on purpose.
const NOT_DEFAULTS: &[&str] = &["FABRIC_SYNC_LOG_FORMAT", "RUST_LOG"];

// ---------------------------------------------------------------------------------------------
// Reading files

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn typed<T: DeserializeOwned>(rel: &str, v: &Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{rel}: {} {}: {e}", str_at(v, "/kind"), str_at(v, "/metadata/name")))
}

fn check<T: DeserializeOwned>(rel: &str, v: &Value) {
    let _: T = typed(rel, v);
}

/// The one document of `kind` named `name` in a file, as its Kubernetes type.
fn find<T: DeserializeOwned>(rel: &str, kind: &str, name: &str) -> T {
    let docs = yaml_docs(rel);
    let doc = docs
        .iter()
        .find(|d| str_at(d, "/kind") == kind && str_at(d, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("{rel}: no {kind} {name}"));
    typed(rel, doc)
}

/// A strategic-merge patch's pod spec (patches lack the required selector, so not a Deployment).
fn patch_pod_spec(rel: &str) -> PodSpec {
    let doc = yaml(rel);
    typed(rel, doc.pointer("/spec/template/spec").unwrap_or_else(|| panic!("{rel}: no spec.template.spec")))
}

/// Every `.yaml` file below `dir`, relative to the repository root, sorted.
fn yaml_files(dir: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    let mut rels: Vec<String> =
        out.iter().map(|p| p.strip_prefix(root()).unwrap().to_string_lossy().into_owned()).collect();
    rels.sort();
    rels
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("a pod template")
}

fn ds_pod_spec(d: &DaemonSet) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("a pod template")
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

fn env_names(c: &Container) -> Vec<String> {
    c.env.iter().flatten().map(|e| e.name.clone()).collect()
}

fn named_port(c: &Container, name: &str) -> i32 {
    c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name)).map(|p| p.container_port).unwrap_or(-1)
}

fn json<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).expect("serializable")
}

fn port_of(addr: &str) -> i32 {
    addr.parse::<SocketAddr>().map(|a| i32::from(a.port())).unwrap_or_else(|e| panic!("{addr:?}: {e}"))
}

fn base_controller() -> Deployment {
    find(&format!("{BASE}/controller-deployment.yaml"), "Deployment", "fabric-sync-controller")
}

fn base_agent() -> DaemonSet {
    find(&format!("{BASE}/agent-daemonset.yaml"), "DaemonSet", "fabric-sync-agent")
}

fn base_config() -> BTreeMap<String, String> {
    let cm: ConfigMap = find(&format!("{BASE}/configmap.yaml"), "ConfigMap", "fabric-sync-config");
    cm.data.expect("data")
}

/// `KEY=value` pairs of a secretGenerator (literals, and files read from `dir`).
fn generated(dir: &str, name: &str) -> BTreeMap<String, String> {
    let k = yaml(&format!("{dir}/kustomization.yaml"));
    let generator = k["secretGenerator"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("{dir}: no secretGenerator {name}"));
    let mut out = BTreeMap::new();
    for lit in generator["literals"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let (k, v) = lit.split_once('=').expect("KEY=value");
        out.insert(k.to_string(), v.to_string());
    }
    for file in generator["files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let (k, path) = file.split_once('=').unwrap_or((file, file));
        out.insert(k.to_string(), read(&format!("{dir}/{path}")));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The binary's own description of its flags

#[derive(Deserialize)]
struct Flag {
    long: Option<String>,
    env: Option<String>,
    default: Option<String>,
}

fn schema() -> &'static BTreeMap<String, Vec<Flag>> {
    static SCHEMA: OnceLock<BTreeMap<String, Vec<Flag>>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fabric-sync"))
            .arg("config-schema")
            .output()
            .expect("run fabric-sync config-schema");
        assert!(out.status.success(), "config-schema failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("config-schema prints JSON")
    })
}

fn flags(command: &str) -> &'static [Flag] {
    schema().get(command).unwrap_or_else(|| panic!("the binary has no command {command:?}: {:?}", schema().keys()))
}

fn flag_by_env(command: &str, env: &str) -> Option<&'static Flag> {
    flags(command).iter().find(|f| f.env.as_deref() == Some(env))
}

fn default_of(command: &str, env: &str) -> String {
    flag_by_env(command, env).and_then(|f| f.default.clone()).unwrap_or_else(|| panic!("{env} has no default"))
}

/// Env var names (with where they come from) that the binary does not read.
fn unknown_env<'a>(command: &str, names: impl IntoIterator<Item = (&'a str, String)>) -> Vec<String> {
    names
        .into_iter()
        .filter(|(_, n)| flag_by_env(command, n).is_none() && !PROCESS_ENV.iter().any(|p| p.0 == n))
        .map(|(at, n)| format!("{at}: {n}"))
        .collect()
}

/// `command` + `args` of a container: the subcommand path must exist and every `--flag` in it.
fn check_invocation(c: &Container) -> Result<String, String> {
    let command = c.command.clone().unwrap_or_default();
    let binary = command.first().and_then(|b| b.rsplit('/').next()).unwrap_or_default().to_string();
    let args = c.args.clone().unwrap_or_default();
    let words: Vec<&str> = args.iter().map(String::as_str).take_while(|a| !a.starts_with('-')).collect();
    let path = std::iter::once(binary.as_str()).chain(words.iter().copied()).collect::<Vec<_>>().join(" ");
    let known = flags(&path);
    for a in args.iter().skip(words.len()).filter(|a| a.starts_with("--")) {
        let long = a.trim_start_matches("--").split('=').next().unwrap_or_default();
        if !known.iter().any(|f| f.long.as_deref() == Some(long)) {
            return Err(format!("{path}: no flag --{long}"));
        }
    }
    Ok(path)
}

/// The controller's flags as the binary reads them.
#[derive(Parser)]
struct ControllerFlags {
    #[command(flatten)]
    cmd: fabric_sync::controller::ControllerCmd,
}

/// The two log settings every command reads, checked by their own parsers (RUST_LOG is not a
/// clap flag).
fn check_log_setting(key: &str, value: &str) -> Result<(), String> {
    match key {
        "FABRIC_SYNC_LOG_FORMAT" => {
            <LogFormat as clap::ValueEnum>::from_str(value, false).map(drop).map_err(|e| format!("{key}: {e}"))
        }
        _ => tracing_subscriber::EnvFilter::try_new(value).map(drop).map_err(|e| format!("{key}: {e}")),
    }
}

/// Validates an environment the way `fabric-sync controller` does at start (the policy file is
/// read too). Log settings are checked by their own parsers.
fn validate_controller_env(env: &BTreeMap<String, String>) -> Result<EngineConfig, String> {
    let mut argv = vec!["controller".to_string()];
    for (k, v) in env {
        match k.as_str() {
            "FABRIC_SYNC_LOG_FORMAT" | "RUST_LOG" => check_log_setting(k, v)?,
            _ => {
                let flag = flag_by_env(CONTROLLER, k).ok_or_else(|| format!("{k}: not a controller setting"))?;
                argv.push(format!("--{}={v}", flag.long.as_deref().unwrap_or_default()));
            }
        }
    }
    let flags = ControllerFlags::try_parse_from(&argv).map_err(|e| e.to_string())?;
    flags.cmd.load().map(|s| s.engine_config)
}

/// The agent's flags as the binary would read them from this environment.
#[derive(Parser)]
struct AgentFlags {
    #[command(flatten)]
    agent: fabric_sync::agent::cli::AgentArgs,
}

/// Validates an agent environment as `fabric-sync agent run` does at start; the sysfs root is
/// replaced by a directory that exists here (the host's /sys is mounted there in the pod).
fn validate_agent_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    let sysfs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut argv = vec!["run".to_string()];
    for (k, v) in env {
        match k.as_str() {
            "FABRIC_SYNC_LOG_FORMAT" | "RUST_LOG" => check_log_setting(k, v)?,
            _ => {
                let flag = flag_by_env(AGENT, k).ok_or_else(|| format!("{k}: not an agent setting"))?;
                let long = flag.long.as_deref().unwrap_or_default();
                let command = AgentFlags::command();
                let arg = command.get_arguments().find(|a| a.get_long() == Some(long)).ok_or(format!("--{long}"))?;
                if !arg.get_action().takes_values() {
                    // A switch: its env var is true or false, on the command line it is there or not.
                    let on: bool = v.parse().map_err(|_| format!("{k}: {v:?} is not true or false"))?;
                    argv.extend(on.then(|| format!("--{long}")));
                    continue;
                }
                let v = if k == "FABRIC_SYNC_SYSFS_ROOT" { sysfs.path().display().to_string() } else { v.clone() };
                argv.push(format!("--{long}={v}"));
            }
        }
    }
    let flags = AgentFlags::try_parse_from(&argv).map_err(|e| e.to_string())?;
    fabric_sync::agent::cli::AgentSettings::from_args(&flags.agent).map(drop).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Every document parses

#[test]
fn every_yaml_document_under_deploy_and_config_parses_into_its_kubernetes_type() {
    let listed = |key: &str| -> BTreeSet<String> {
        yaml_files("deploy/kustomize")
            .iter()
            .filter(|f| f.ends_with("/kustomization.yaml"))
            .flat_map(|k| {
                let dir = k.trim_end_matches("/kustomization.yaml").to_string();
                let doc = yaml(k);
                let paths: Vec<String> = doc[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str().or_else(|| p["path"].as_str()))
                    .map(|p| format!("{dir}/{p}"))
                    .collect();
                paths
            })
            .collect()
    };
    let patches = listed("patches");
    let configurations = listed("configurations");
    let mut kinds = BTreeSet::new();
    for file in yaml_files("deploy/kustomize").into_iter().chain(yaml_files("config")) {
        if file.ends_with("/kustomization.yaml") {
            let k = yaml(&file);
            assert!(str_at(&k, "/apiVersion").starts_with("kustomize.config.k8s.io/"), "{file}");
            assert!(["Kustomization", "Component"].contains(&str_at(&k, "/kind")), "{file}");
            continue;
        }
        if configurations.contains(&file) {
            // kustomize transformer configuration: name references of kinds it does not know.
            let config = yaml(&file);
            let refs = config["nameReference"].as_array().unwrap_or_else(|| panic!("{file}: nameReference"));
            for r in refs {
                assert!(!str_at(r, "/kind").is_empty(), "{file}: {r}");
                let specs = r["fieldSpecs"].as_array().unwrap_or_else(|| panic!("{file}: fieldSpecs"));
                assert!(specs.iter().all(|f| !str_at(f, "/kind").is_empty() && !str_at(f, "/path").is_empty()));
            }
            continue;
        }
        if file.ends_with("/fabrics.yaml") {
            // The fabrics file (docs/fabrics.md; validated in full by src/config/fabrics_tests.rs).
            let f = yaml(&file);
            let fabrics = f["fabrics"].as_array().unwrap_or_else(|| panic!("{file}: fabrics"));
            assert!(!fabrics.is_empty() && fabrics.iter().all(|x| !str_at(x, "/name").is_empty()), "{file}");
            continue;
        }
        if ["policy.yaml", "tenant-policy.yaml"].iter().any(|n| file.ends_with(&format!("/{n}"))) {
            Policy::parse(&file, &read(&file)).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        for doc in yaml_docs(&file) {
            let kind = str_at(&doc, "/kind").to_string();
            assert!(!str_at(&doc, "/apiVersion").is_empty() && !str_at(&doc, "/metadata/name").is_empty(), "{file}");
            let is_patch = patches.contains(&file);
            match kind.as_str() {
                "Deployment" | "DaemonSet" if is_patch => check::<PodSpec>(&file, &doc["spec"]["template"]["spec"]),
                "Deployment" => check::<Deployment>(&file, &doc),
                "DaemonSet" => check::<DaemonSet>(&file, &doc),
                "Service" => check::<Service>(&file, &doc),
                "ServiceAccount" => check::<ServiceAccount>(&file, &doc),
                "ClusterRole" => check::<ClusterRole>(&file, &doc),
                "ClusterRoleBinding" => check::<ClusterRoleBinding>(&file, &doc),
                "Role" => check::<Role>(&file, &doc),
                "RoleBinding" => check::<RoleBinding>(&file, &doc),
                "PodDisruptionBudget" => check::<PodDisruptionBudget>(&file, &doc),
                "ConfigMap" => check::<ConfigMap>(&file, &doc),
                "Secret" => check::<Secret>(&file, &doc),
                "Namespace" => check::<Namespace>(&file, &doc),
                "Pod" => check::<Pod>(&file, &doc),
                "CustomResourceDefinition" => check::<CustomResourceDefinition>(&file, &doc),
                "ValidatingAdmissionPolicy" => check::<ValidatingAdmissionPolicy>(&file, &doc),
                "ValidatingAdmissionPolicyBinding" => check::<ValidatingAdmissionPolicyBinding>(&file, &doc),
                "ServiceMonitor" => {
                    assert_eq!(str_at(&doc, "/apiVersion"), "monitoring.coreos.com/v1", "{file}");
                    assert!(doc.pointer("/spec/selector/matchLabels").is_some_and(Value::is_object), "{file}");
                    assert!(doc.pointer("/spec/endpoints/0/port").is_some(), "{file}");
                }
                "NetworkAttachmentDefinition" => {
                    let ns = str_at(&doc, "/metadata/namespace");
                    let annotations: BTreeMap<String, String> =
                        serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap_or_default();
                    let net = parse_nad(ns, str_at(&doc, "/metadata/name"), &annotations, str_at(&doc, "/spec/config"))
                        .unwrap_or_else(|e| panic!("{file}: {e}"));
                    assert!(net.is_some(), "{file}: not an ib-sriov network");
                }
                "SpiderMultusConfig" => {
                    let annotations: BTreeMap<String, String> =
                        serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap_or_default();
                    let ns = str_at(&doc, "/metadata/namespace");
                    let net = parse_smc(ns, str_at(&doc, "/metadata/name"), &annotations, &doc["spec"])
                        .unwrap_or_else(|e| panic!("{file}: {e}"));
                    assert!(net.is_some(), "{file}: not an ib-sriov SpiderMultusConfig");
                }
                other => panic!("{file}: kind {other:?} has no check here: add one"),
            }
            kinds.insert(kind);
        }
    }
    for k in ["Deployment", "DaemonSet", "ClusterRole", "Role", "Service", "PodDisruptionBudget", "ConfigMap"] {
        assert!(kinds.contains(k), "no {k} found under deploy/: is the walk broken? {kinds:?}");
    }
}

#[test]
fn kustomizations_name_files_that_exist_and_only_overlays_set_a_namespace() {
    for file in yaml_files("deploy/kustomize").into_iter().filter(|f| f.ends_with("/kustomization.yaml")) {
        let dir = file.trim_end_matches("/kustomization.yaml");
        let k = yaml(&file);
        let list = |key: &str| -> Vec<String> {
            k[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
        };
        let mut referenced: Vec<String> =
            list("resources").into_iter().chain(list("components")).chain(list("configurations")).collect();
        referenced
            .extend(k["patches"].as_array().into_iter().flatten().filter_map(|p| p["path"].as_str().map(String::from)));
        for generator in ["configMapGenerator", "secretGenerator"] {
            for g in k[generator].as_array().into_iter().flatten() {
                for f in g["files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    referenced.push(f.split_once('=').map_or(f, |(_, p)| p).to_string());
                }
            }
        }
        for r in referenced {
            let p = root().join(dir).join(&r);
            assert!(p.is_file() || p.join("kustomization.yaml").is_file(), "{file}: {r} does not exist");
        }
        let namespace = k["namespace"].as_str();
        if dir.contains("/overlays/") {
            assert!(namespace.is_some_and(|n| !n.is_empty()), "{file}: an overlay sets the namespace");
        } else {
            assert_eq!(namespace, None, "{file}: the base and components are namespace-agnostic");
        }
    }
    for file in yaml_files(BASE).into_iter().filter(|f| !f.ends_with("kustomization.yaml")) {
        for doc in yaml_docs(&file) {
            assert!(doc.pointer("/metadata/namespace").is_none(), "{file}: {} has a namespace", str_at(&doc, "/kind"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The binary reads every setting the manifests give it

#[test]
fn controller_env_and_arguments_exist_in_the_binary() {
    let mut names: Vec<(&str, String)> = Vec::new();
    let deploy = base_controller();
    let c = container(pod_spec(&deploy), "controller");
    assert_eq!(check_invocation(c), Ok(CONTROLLER.to_string()));
    names.extend(env_names(c).into_iter().map(|n| ("base Deployment env", n)));
    names.extend(base_config().into_keys().map(|n| ("base ConfigMap", n)));
    for rel in [
        "deploy/kustomize/components/partitions/deployment-partitions.yaml",
        "deploy/kustomize/components/tenant-policy/deployment-policy.yaml",
        "deploy/kustomize/components/ufm-client-cert/deployment-client-cert.yaml",
        "deploy/kustomize/overlays/ib-kubernetes-migration/deployment-ib-kubernetes.yaml",
    ] {
        names.extend(env_names(container(&patch_pod_spec(rel), "controller")).into_iter().map(|n| (rel, n)));
    }
    names.extend(generated(MOCK, "fabric-sync-ufm").into_keys().map(|n| ("mock-ufm overlay Secret", n)));
    let example: Secret = find("config/ufm-secret.yaml", "Secret", "fabric-sync-ufm");
    let example_keys: BTreeSet<String> = example.string_data.unwrap_or_default().into_keys().collect();
    assert_eq!(example_keys, SECRET_KEYS.iter().map(|k| k.to_string()).collect(), "config/ufm-secret.yaml");
    names.extend(example_keys.into_iter().map(|n| ("config/ufm-secret.yaml", n)));
    let unknown = unknown_env(CONTROLLER, names);
    assert!(unknown.is_empty(), "env vars `fabric-sync controller` does not read: {unknown:?}");
    for (name, file, marker) in PROCESS_ENV {
        assert!(read(file).contains(marker), "{name}: {file} no longer reads it ({marker})");
    }
}

#[test]
fn agent_env_and_arguments_exist_in_the_binary() {
    let ds = base_agent();
    let c = container(ds_pod_spec(&ds), "agent");
    assert_eq!(check_invocation(c), Ok(AGENT.to_string()));
    let program_spec = patch_pod_spec("deploy/kustomize/components/agent-program/daemonset-program.yaml");
    let program = container(&program_spec, "agent");
    let mut names: Vec<(&str, String)> = env_names(c).into_iter().map(|n| ("base DaemonSet", n)).collect();
    names.extend(env_names(program).into_iter().map(|n| ("agent-program component", n)));
    // config/agent.env documents every agent setting (commented-out lines count).
    let mut documented = BTreeSet::new();
    for line in read("config/agent.env").lines() {
        let Some((key, _)) = line.trim_start_matches('#').split_once('=') else { continue };
        if key.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_') {
            documented.insert(key.to_string());
            if !line.starts_with('#') {
                names.push(("config/agent.env", key.to_string()));
            }
        }
    }
    let unknown = unknown_env(AGENT, names);
    assert!(unknown.is_empty(), "env vars `fabric-sync agent run` does not read: {unknown:?}");
    // The values pass the agent's start-up validation: the DaemonSet's (downward API filled in),
    // with the program component's on top, and config/agent.env's.
    // Downward API values are filled in; ConfigMap keys come from the base ConfigMap.
    let config = base_config();
    let from = |e: &k8s_openapi::api::core::v1::EnvVar| -> String {
        let key = e.value_from.as_ref().and_then(|v| v.config_map_key_ref.as_ref()).map(|k| k.key.clone());
        match (&e.value, key) {
            (Some(v), _) => v.clone(),
            (None, Some(k)) => config.get(&k).cloned().unwrap_or_else(|| panic!("the ConfigMap has no {k}")),
            (None, None) if e.name == "POD_IP" => "10.0.0.5".into(),
            (None, None) => "node-1".into(),
        }
    };
    let mut env: BTreeMap<String, String> = c.env.iter().flatten().map(|e| (e.name.clone(), from(e))).collect();
    validate_agent_env(&env).unwrap_or_else(|e| panic!("the DaemonSet's agent settings: {e}"));
    env.extend(program.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())));
    validate_agent_env(&env).unwrap_or_else(|e| panic!("program mode's agent settings: {e}"));
    let file: BTreeMap<String, String> = read("config/agent.env")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    validate_agent_env(&file).unwrap_or_else(|e| panic!("config/agent.env: {e}"));
    env.insert("FABRIC_SYNC_AGENT_INTERVAL".into(), "60".into());
    assert!(validate_agent_env(&env).unwrap_err().contains("FABRIC_SYNC_AGENT_INTERVAL"), "a bad value fails");
    let undocumented: Vec<&str> =
        flags(AGENT).iter().filter_map(|f| f.env.as_deref()).filter(|e| !documented.contains(*e)).collect();
    assert!(undocumented.is_empty(), "config/agent.env does not mention {undocumented:?}");
}

#[test]
fn configmap_holds_valid_settings_at_the_binary_defaults() {
    let config = base_config();
    let mut wrong = Vec::new();
    for (k, v) in &config {
        if NOT_DEFAULTS.contains(&k.as_str()) {
            continue;
        }
        let default = default_of(CONTROLLER, k);
        if *v != default {
            wrong.push(format!("{k}: {v:?}, the binary's default is {default:?}"));
        }
    }
    assert!(wrong.is_empty(), "the base ConfigMap documents the defaults: {wrong:?}");
    // The trial's whole environment (ConfigMap, the Deployment's own env, and the UFM Secret as
    // the mounted directory it is in the pod) passes the controller's start-up validation.
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in generated(MOCK, "fabric-sync-ufm") {
        std::fs::write(dir.path().join(k), v).unwrap();
    }
    let deploy = base_controller();
    let c = container(pod_spec(&deploy), "controller");
    let mut env = config.clone();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, e.name.as_str()) {
            (_, "UFM_SECRET_DIR") => dir.path().display().to_string(),
            (Some(v), _) => v.clone(),
            (None, _) => "from-the-downward-api".to_string(),
        };
        env.insert(e.name.clone(), value);
    }
    validate_controller_env(&env).unwrap_or_else(|e| panic!("the trial's controller settings: {e}"));
    // A typo the binary would refuse is caught here, not in a cluster.
    env.insert("FABRIC_SYNC_BATCH_WINDOW".into(), "20".into());
    assert!(validate_controller_env(&env).unwrap_err().contains("FABRIC_SYNC_BATCH_WINDOW"));
}
