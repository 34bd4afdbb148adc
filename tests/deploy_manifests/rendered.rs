//! Every overlay as users get it: rendered by `kubectl kustomize`, every document parsed into its
//! Kubernetes type (and written back unchanged, so no field is misspelled or misplaced), the
//! namespaces where they belong, the controller's RBAC exactly the calls the code makes, and the
//! admission policies' parameter traced to the controller Deployment's service account.

use super::admission::{CONFIGURED, NETWORKS, REQUESTED, Verdict, admit, claim, create, pod, update, with_annotation};
use super::security::{Call, calls, compare_grants};
use super::*;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::rbac::v1::Subject;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::process::Command;

/// The overlays users apply (README, docs/operators.md).
pub(super) const OVERLAYS: [&str; 3] = ["deploy/kustomize/overlays/default", MIGRATION, MOCK];
/// Objects without a namespace.
const CLUSTER_SCOPED: [&str; 6] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];
/// The oldest kustomize (the one built into kubectl) that renders these overlays.
const KUSTOMIZE_MAJOR: u32 = 5;

/// `kubectl kustomize <dir>`, as YAML documents. Fails loudly when kubectl is missing or too old:
/// these tests are the only check of what the overlays render.
pub(super) fn kubectl_kustomize(dir: &Path) -> Vec<Value> {
    static VERSION: OnceLock<()> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = Command::new("kubectl").args(["version", "--client"]).output().unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): the manifest tests render every overlay with `kubectl kustomize`; install kubectl (.ci/run does)")
        });
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.lines().find_map(|l| l.strip_prefix("Kustomize Version: v")).unwrap_or("0");
        let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        assert!(
            major >= KUSTOMIZE_MAJOR,
            "kubectl's built-in kustomize is {version:?} ({text:?}): the overlays need kustomize v{KUSTOMIZE_MAJOR} \
             or later (kubectl 1.27 or later)"
        );
    });
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: rendered YAML: {e}", dir.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Each shipped overlay, rendered once for all tests.
pub(super) fn rendered(overlay: &str) -> &'static [Value] {
    static RENDERED: OnceLock<BTreeMap<&'static str, Vec<Value>>> = OnceLock::new();
    let all = RENDERED.get_or_init(|| OVERLAYS.iter().map(|o| (*o, kubectl_kustomize(&root().join(o)))).collect());
    all.get(overlay).unwrap_or_else(|| panic!("{overlay} is not one of {OVERLAYS:?}"))
}

/// The one document of `kind` named `name` in a render, as its Kubernetes type.
pub(super) fn pick<T: DeserializeOwned>(what: &str, docs: &[Value], kind: &str, name: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| str_at(d, "/kind") == kind && str_at(d, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("{what}: renders no {kind} {name}"));
    typed(what, doc)
}

/// The first place where two JSON values differ, as a JSON pointer with both sides.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .find_map(|k| first_difference(&x[k.as_str()], y.get(k).unwrap_or(&Value::Null), &format!("{at}/{k}")))
            .or_else(|| y.keys().find(|k| !x.contains_key(*k)).map(|k| format!("{at}/{k}: only in the file"))),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}/{i}")))
        }
        // A float field (minimum) reads 0 as 0.0.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{at}: {a} as typed, {b} in the file")),
    }
}

/// Parses `doc` into `T` and writes it back: any field the type does not have (a typo, a field
/// at the wrong level) is dropped on the way and shows as a difference.
fn round_trip<T: DeserializeOwned + serde::Serialize>(what: &str, doc: &Value) {
    let back = json(&typed::<T>(what, doc));
    if let Some(diff) = first_difference(&back, doc, "") {
        panic!("{what}: {} {}: not what its type reads: {diff}", str_at(doc, "/kind"), str_at(doc, "/metadata/name"));
    }
}

#[test]
fn every_overlay_renders_documents_of_their_kubernetes_types_in_the_right_namespace() {
    for overlay in OVERLAYS {
        let docs = rendered(overlay);
        let namespace = yaml(&format!("{overlay}/kustomization.yaml"))["namespace"].as_str().unwrap().to_string();
        let mut kinds = BTreeSet::new();
        for doc in docs {
            let kind = str_at(doc, "/kind");
            match kind {
                "Namespace" => round_trip::<Namespace>(overlay, doc),
                "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(overlay, doc),
                "ServiceAccount" => round_trip::<ServiceAccount>(overlay, doc),
                "ClusterRole" => round_trip::<ClusterRole>(overlay, doc),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(overlay, doc),
                "Role" => round_trip::<Role>(overlay, doc),
                "RoleBinding" => round_trip::<RoleBinding>(overlay, doc),
                "ConfigMap" => round_trip::<ConfigMap>(overlay, doc),
                "Secret" => {
                    // kustomize wraps base64 at 70 columns; Go's base64 decoder skips the newlines.
                    let mut unwrapped = doc.clone();
                    for v in unwrapped["data"].as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
                        *v = v.as_str().unwrap_or_default().replace('\n', "").into();
                    }
                    round_trip::<Secret>(overlay, &unwrapped)
                }
                "Service" => round_trip::<Service>(overlay, doc),
                "Deployment" => round_trip::<Deployment>(overlay, doc),
                "DaemonSet" => round_trip::<DaemonSet>(overlay, doc),
                "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(overlay, doc),
                "ValidatingAdmissionPolicy" => round_trip::<ValidatingAdmissionPolicy>(overlay, doc),
                "ValidatingAdmissionPolicyBinding" => round_trip::<ValidatingAdmissionPolicyBinding>(overlay, doc),
                other => panic!("{overlay}: renders a {other}, which this test does not check: add it"),
            }
            let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = str_at(doc, "/metadata/name");
            if CLUSTER_SCOPED.contains(&kind) {
                assert_eq!(ns, None, "{overlay}: {kind} {name} is cluster-scoped");
            } else {
                assert_eq!(ns, Some(namespace.as_str()), "{overlay}: {kind} {name}");
            }
            kinds.insert(kind);
        }
        for k in ["CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] {
            assert!(kinds.contains(k), "{overlay}: renders no {k} (the base ships them to every overlay)");
        }
        let crd: CustomResourceDefinition =
            pick(overlay, docs, "CustomResourceDefinition", "guidclaims.fabric-sync.io");
        let base: CustomResourceDefinition = typed(BASE, &yaml(&format!("{BASE}/guidclaim-crd.yaml")));
        assert_eq!(crd, base, "{overlay}: the ledger CRD as the base has it");
    }
}

/// The controller's identity in a render and everything that must agree with it: the
/// ServiceAccount, its RBAC (exactly `API_CALLS`), and both admission policies, whose parameter
/// must be the ClusterRoleBinding that names exactly that account. Returns (namespace, account).
fn check_controller_identity(what: &str, docs: &[Value]) -> (String, String) {
    let deploy: Deployment = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| typed::<Deployment>(what, d))
        .find(|d| pod_spec(d).containers.iter().any(|c| c.name == "controller"))
        .unwrap_or_else(|| panic!("{what}: no controller Deployment"));
    let ns = deploy.metadata.namespace.clone().unwrap_or_else(|| panic!("{what}: the Deployment has no namespace"));
    let sa = pod_spec(&deploy).service_account_name.clone().expect("serviceAccountName");
    let account: ServiceAccount = pick(what, docs, "ServiceAccount", &sa);
    assert_eq!(account.metadata.namespace.as_deref(), Some(ns.as_str()), "{what}: ServiceAccount {sa}");
    let subject =
        Subject { kind: "ServiceAccount".into(), name: sa.clone(), namespace: Some(ns.clone()), ..Default::default() };

    // RBAC: the ClusterRole and Role bound to this account grant exactly what the code calls.
    let mut granted: BTreeSet<Call> = BTreeSet::new();
    for d in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding") {
        let (role_ref, subjects) = if d["kind"] == "RoleBinding" {
            let rb: RoleBinding = typed(what, d);
            (rb.role_ref, rb.subjects.unwrap_or_default())
        } else {
            let crb: ClusterRoleBinding = typed(what, d);
            (crb.role_ref, crb.subjects.unwrap_or_default())
        };
        if subjects.contains(&subject) {
            let rules = if role_ref.kind == "Role" {
                pick::<Role>(what, docs, "Role", &role_ref.name).rules
            } else {
                pick::<ClusterRole>(what, docs, "ClusterRole", &role_ref.name).rules
            };
            granted.extend(calls(&rules.unwrap_or_default()));
        }
    }
    compare_grants(&format!("{what}: RBAC of {ns}/{sa}"), &granted, fabric_sync::kube::API_CALLS).unwrap();

    // Both policies, each bound once, with the controller's ClusterRoleBinding as parameter.
    let mut policies = BTreeSet::new();
    // The agent's policy has the agent's binding as parameter: checked in agent_admission.rs.
    let agent_policy = |d: &&Value| str_at(d, "/spec/policyName").ends_with("fabric-sync-agent-node-scope");
    for d in docs.iter().filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding" && !agent_policy(d)) {
        let binding: ValidatingAdmissionPolicyBinding = typed(what, d);
        let name = binding.metadata.name.clone().unwrap_or_default();
        let spec = binding.spec;
        assert_eq!(spec.validation_actions, ["Deny"], "{what}: {name}");
        assert!(spec.match_resources.is_none(), "{what}: {name} covers every namespace");
        let policy: ValidatingAdmissionPolicy = pick(what, docs, "ValidatingAdmissionPolicy", &spec.policy_name);
        let pspec = policy.spec.clone().expect("spec");
        let kind = pspec.param_kind.clone().expect("paramKind");
        assert_eq!(
            (kind.api_version.as_deref(), kind.kind.as_deref()),
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")),
            "{what}: {}",
            spec.policy_name
        );
        assert_eq!(pspec.failure_policy.as_deref(), Some("Fail"), "{what}: {}", spec.policy_name);
        let param = spec.param_ref.expect("paramRef");
        assert_eq!(param.namespace, None, "{what}: {name}: a ClusterRoleBinding has no namespace");
        assert!(param.selector.is_none(), "{what}: {name}: one parameter, by name");
        assert_eq!(param.parameter_not_found_action.as_deref(), Some("Deny"), "{what}: {name}");
        let param_name = param.name.expect("paramRef.name");
        let crb: ClusterRoleBinding = pick(what, docs, "ClusterRoleBinding", &param_name);
        assert_eq!(
            crb.subjects.clone().unwrap_or_default(),
            std::slice::from_ref(&subject),
            "{what}: {param_name} names the controller"
        );
        let params = json(&crb);

        // The API server's view: the controller passes, its namesake in another namespace does not.
        let controller = format!("system:serviceaccount:{ns}:{sa}");
        let impostor = format!("system:serviceaccount:{}:{sa}", if ns == "tenant-a" { "tenant-b" } else { "tenant-a" });
        let (ok, refused) = if spec.policy_name.ends_with("fabric-sync-pod-markers") {
            let old = pod("tenant-a", "trainer-0", Some(REQUESTED), &[]);
            let marked = with_annotation(&old, NETWORKS, Some(CONFIGURED));
            (update("pods", &controller, &marked, &old), update("pods", &impostor, &marked, &old))
        } else {
            let c = claim("tenant-a", "6f1c2a9e-4b8d-4c1e-9a51-0f3d2e7b8c10");
            (create("guidclaims", &controller, &c), create("guidclaims", &impostor, &c))
        };
        let policy_name = &spec.policy_name;
        assert!(
            !matches!(admit(&policy, &params, &ok), Verdict::Denied(_)),
            "{what}: {controller} is refused by {policy_name}"
        );
        assert!(
            matches!(admit(&policy, &params, &refused), Verdict::Denied(_)),
            "{what}: {impostor} passes {policy_name}"
        );
        assert!(policies.insert(spec.policy_name.clone()), "{what}: {} bound twice", spec.policy_name);
    }
    let prefix = sa.strip_suffix("fabric-sync-controller").unwrap_or_else(|| panic!("{what}: {sa}"));
    let expected: BTreeSet<String> =
        ["fabric-sync-ledger-writers", "fabric-sync-pod-markers"].iter().map(|p| format!("{prefix}{p}")).collect();
    assert_eq!(policies, expected, "{what}: both policies bound");
    (ns, sa)
}

#[test]
fn in_every_overlay_the_policies_trust_exactly_the_controller_deployments_service_account() {
    let mut seen = Vec::new();
    for overlay in OVERLAYS {
        seen.push(check_controller_identity(overlay, rendered(overlay)));
    }
    let expected = [
        ("fabric-sync", "fabric-sync-controller"),
        ("kube-system", "fabric-sync-controller"),
        ("fabric-sync", "fabric-sync-controller"),
    ];
    assert_eq!(seen, expected.map(|(n, s)| (n.to_string(), s.to_string())));

    // A kustomization of one's own on top (another namespace, a name prefix): the parameter and
    // the policy names follow (base/kustomizeconfig.yaml), nothing needs patching.
    let dir = tempfile::tempdir().unwrap();
    let up = std::fs::canonicalize(dir.path()).unwrap().components().count() - 1;
    let target = std::fs::canonicalize(root().join(MIGRATION)).unwrap();
    let relative = format!("{}{}", "../".repeat(up), target.to_string_lossy().trim_start_matches('/'));
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!("namespace: team-x\nnamePrefix: blue-\nresources:\n  - {relative}\n"),
    )
    .unwrap();
    let docs = kubectl_kustomize(dir.path());
    let identity = check_controller_identity("namePrefix blue- over the migration overlay", &docs);
    assert_eq!(identity, ("team-x".to_string(), "blue-fabric-sync-controller".to_string()));
}

#[test]
fn the_fabrics_component_mounts_the_fabrics_file_and_one_secret_per_fabric_and_drops_the_single_ufm() {
    // The base with the component, as an overlay that lists it renders it.
    let dir = tempfile::tempdir().unwrap();
    let up = std::fs::canonicalize(dir.path()).unwrap().components().count() - 1;
    let rel = |p: &str| {
        let target = std::fs::canonicalize(root().join(p)).unwrap();
        format!("{}{}", "../".repeat(up), target.to_string_lossy().trim_start_matches('/'))
    };
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "namespace: fabric-sync\nresources:\n  - {}\ncomponents:\n  - {}\n",
            rel("deploy/kustomize/base"),
            rel("deploy/kustomize/components/fabrics")
        ),
    )
    .unwrap();
    let docs = kubectl_kustomize(dir.path());
    let d: Deployment = pick("base + fabrics", &docs, "Deployment", "fabric-sync-controller");
    let spec = pod_spec(&d);
    let c = container(spec, "controller");
    let file = env_value(c, "FABRIC_SYNC_FABRICS_FILE").expect("FABRIC_SYNC_FABRICS_FILE is set");
    // The single-UFM settings conflict with a fabrics file: none of them reaches the controller.
    assert_eq!(env_value(c, "UFM_SECRET_DIR"), None);
    let env_from = c.env_from.clone().unwrap_or_default();
    assert!(env_from.iter().all(|e| e.secret_ref.is_none()), "no Secret as env: {env_from:?}");
    let volumes = spec.volumes.clone().unwrap_or_default();
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mounted = |path: &str| {
        let m = mounts.iter().find(|m| path.starts_with(&m.mount_path))?;
        volumes.iter().find(|v| v.name == m.name).cloned()
    };
    // The file is mounted from the generated ConfigMap (its hashed name).
    let cm_volume = mounted(&file).expect("the fabrics file is mounted");
    let cm_name = cm_volume.config_map.expect("from a ConfigMap").name;
    assert!(cm_name.starts_with("fabric-sync-fabrics-"), "{cm_name}");
    let cm = docs
        .iter()
        .find(|x| str_at(x, "/kind") == "ConfigMap" && str_at(x, "/metadata/name") == cm_name)
        .expect("the generated ConfigMap");
    let name = file.rsplit('/').next().unwrap();
    let text = cm["data"][name].as_str().expect("the fabrics file in the ConfigMap");
    let parsed: Value = serde_norway::from_str(text).unwrap();
    let fabrics = parsed["fabrics"].as_array().expect("fabrics:");
    assert!(fabrics.len() >= 2);
    // Every fabric's secretDir is a Secret of its own, mounted read-only.
    let mut secrets = BTreeSet::new();
    for f in fabrics {
        let secret_dir = f["ufm"]["secretDir"].as_str().expect("secretDir");
        let v = mounted(secret_dir).unwrap_or_else(|| panic!("{secret_dir} is mounted"));
        let secret = v.secret.and_then(|s| s.secret_name).unwrap_or_else(|| panic!("{secret_dir}: from a Secret"));
        assert!(secrets.insert(secret), "one Secret per fabric");
    }
    assert!(mounts.iter().all(|m| m.read_only == Some(true)), "{mounts:?}");
    assert!(!volumes.iter().any(|v| v.name == "ufm-secret"), "the single UFM Secret is not mounted");
}
