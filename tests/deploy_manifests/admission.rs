//! The admission policies' CEL, evaluated for real (the `cel` crate, a CEL interpreter) on the
//! requests the API server would hand them, read from the rendered overlay, not from copies.
//!
//! [`admit`] does what kube-apiserver does with a ValidatingAdmissionPolicy and its binding:
//! match the request against `matchConstraints`, evaluate the `matchConditions` (all true, or
//! the policy does not apply), the `variables`, then every validation (any false denies, with
//! `messageExpression` if it evaluates, else `message`); an evaluation error denies
//! (`failurePolicy: Fail`). Bindings as the API server builds them: `object` and `oldObject`
//! (null when there is none), `request` (an AdmissionRequest as JSON: empty fields such as
//! `subResource` are ABSENT, as the API server's unstructured conversion leaves them, so the
//! expressions must guard them with has()), `params` (the parameter object) and `variables`.
//! Differences, none of which the policies depend on: variables are evaluated eagerly, not
//! lazily; nothing is type-checked against the OpenAPI schemas (`kubectl apply --dry-run=server`
//! does that); the policies use standard CEL only (no Kubernetes library functions, no
//! optionals), which this interpreter has.

use super::rendered::{pick, rendered};
use super::*;
use cel::{Context, Env, Value as Cel};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const STATUS: &str = "fabric-sync.io/status";
const CONTROLLER: &str = "system:serviceaccount:fabric-sync:fabric-sync-controller";
const TENANT: &str = "system:serviceaccount:tenant-a:default";
const ALICE: &str = "alice@example.com";
const GC: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";
/// A clean element asking for a GUID (the user's request, which the controller validates).
pub(super) const REQUESTED: &str =
    r#"[{"name":"ib-a","namespace":"tenant-a","infiniband-guid":"02:00:00:00:00:00:00:2a"}]"#;
/// What the controller writes once UFM accepted the GUID.
pub(super) const CONFIGURED: &str = r#"[{"name":"ib-a","namespace":"tenant-a","infiniband-guid":"02:00:00:00:00:00:00:2a","cni-args":{"mellanox.infiniband.app":"configured","pkey":"0x1000"}}]"#;
/// The marker with one letter as a JSON escape: the same key to every JSON decoder.
const ESCAPED: &str =
    r#"[{"name":"ib-a","cni-args":{"mellanox.infiniband.\u0061pp":"configured","guid":"02:00:00:00:00:00:00:2a"}}]"#;

/// What the API server answers to one request under one policy and binding.
#[derive(Debug)]
pub(super) enum Verdict {
    /// The policy does not apply (matchConstraints or a matchCondition).
    NotMatched,
    Allowed,
    Denied(String),
}

pub(super) struct Request {
    operation: &'static str,
    user: String,
    resource: String,
    object: Value,
    old_object: Value,
    /// `userInfo.extra` (a bound service-account token's node name, for instance).
    extra: Value,
}

pub(super) fn create(resource: &str, user: &str, object: &Value) -> Request {
    Request {
        operation: "CREATE",
        user: user.into(),
        resource: resource.into(),
        object: object.clone(),
        old_object: Value::Null,
        extra: Value::Null,
    }
}

pub(super) fn update(resource: &str, user: &str, object: &Value, old: &Value) -> Request {
    Request {
        operation: "UPDATE",
        user: user.into(),
        resource: resource.into(),
        object: object.clone(),
        old_object: old.clone(),
        extra: Value::Null,
    }
}

pub(super) fn delete(resource: &str, user: &str, old: &Value) -> Request {
    Request {
        operation: "DELETE",
        user: user.into(),
        resource: resource.into(),
        object: Value::Null,
        old_object: old.clone(),
        extra: Value::Null,
    }
}

impl Request {
    /// The token's node name, as the API server puts it in `userInfo.extra` for a pod's bound
    /// service-account token (Kubernetes 1.32+).
    pub(super) fn on_node(mut self, node: &str) -> Request {
        self.extra = serde_json::json!({"authentication.kubernetes.io/node-name": [node]});
        self
    }

    /// (group, version, resource, subresource) of `pods`, `pods/status`, `guidclaims`, ….
    fn gvr(&self) -> (&'static str, &'static str, String, Option<String>) {
        let (res, sub) = self.resource.split_once('/').map_or((self.resource.as_str(), None), |(r, s)| (r, Some(s)));
        let (group, version) = match res {
            "guidclaims" | "nodefabricstatuses" => ("fabric-sync.io", "v1alpha1"),
            "events" => ("events.k8s.io", "v1"),
            _ => ("", "v1"),
        };
        (group, version, res.to_string(), sub.map(str::to_string))
    }

    /// `request` as the API server builds it: an AdmissionRequest, empty fields left out.
    fn as_admission_request(&self) -> Value {
        let (group, version, resource, sub) = self.gvr();
        let meta = if self.object.is_null() { &self.old_object["metadata"] } else { &self.object["metadata"] };
        let kind = if self.object.is_null() { &self.old_object["kind"] } else { &self.object["kind"] };
        let mut r = serde_json::json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "operation": self.operation,
            "userInfo": {"username": self.user, "groups": ["system:authenticated"]},
            "dryRun": false,
        });
        if !self.extra.is_null() {
            r["userInfo"]["extra"] = self.extra.clone();
        }
        for (key, value) in [("subResource", sub.clone()), ("requestSubResource", sub)].into_iter().chain([
            ("name", meta["name"].as_str().map(String::from)),
            ("namespace", meta["namespace"].as_str().map(String::from)),
        ]) {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                r[key] = Value::String(v);
            }
        }
        r
    }
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

fn eval(ctx: &Context, expr: &str) -> Result<Cel, String> {
    let program = env().compile(expr).map_err(|e| format!("does not parse: {e}: {expr}"))?;
    program.execute(ctx).map_err(|e| format!("evaluation error: {e}: {expr}"))
}

fn eval_bool(ctx: &Context, expr: &str) -> Result<bool, String> {
    match eval(ctx, expr)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!("{expr}: {other:?} is not a bool")),
    }
}

/// The verdict of `policy`, bound with parameter `params`, on `req` (see the module's comment).
pub(super) fn admit(policy: &ValidatingAdmissionPolicy, params: &Value, req: &Request) -> Verdict {
    let spec = policy.spec.as_ref().expect("spec");
    let (group, version, resource, sub) = req.gvr();
    let full = sub.as_ref().map_or(resource.clone(), |s| format!("{resource}/{s}"));
    let rules = spec.match_constraints.as_ref().and_then(|m| m.resource_rules.clone()).unwrap_or_default();
    let has = |list: &Option<Vec<String>>, x: &str| list.iter().flatten().any(|v| v == x || v == "*");
    let matched = rules.iter().any(|r| {
        has(&r.api_groups, group)
            && has(&r.api_versions, version)
            && has(&r.operations, req.operation)
            && r.resources.iter().flatten().any(|res| {
                *res == full || (sub.is_none() && res == "*") || (sub.is_some() && *res == format!("{resource}/*"))
            })
    });
    if !matched {
        return Verdict::NotMatched;
    }
    let mut ctx = Context::with_env(env());
    ctx.add_variable("object", &req.object).expect("object");
    ctx.add_variable("oldObject", &req.old_object).expect("oldObject");
    ctx.add_variable("request", req.as_admission_request()).expect("request");
    ctx.add_variable("params", params).expect("params");
    for condition in spec.match_conditions.iter().flatten() {
        match eval_bool(&ctx, &condition.expression) {
            Ok(true) => {}
            Ok(false) => return Verdict::NotMatched,
            Err(e) => return Verdict::Denied(format!("matchCondition {}: {e}", condition.name)),
        }
    }
    let mut variables: HashMap<String, Cel> = HashMap::new();
    for variable in spec.variables.iter().flatten() {
        // A failing variable is left out: a validation that reads it fails (and denies).
        if let Ok(v) = eval(&ctx, &variable.expression) {
            variables.insert(variable.name.clone(), v);
            ctx.add_variable_from_value("variables", Cel::from(variables.clone()));
        }
    }
    ctx.add_variable_from_value("variables", Cel::from(variables));
    for v in spec.validations.iter().flatten() {
        match eval_bool(&ctx, &v.expression) {
            Ok(true) => {}
            Ok(false) => {
                let computed = v.message_expression.as_deref().map(|m| eval(&ctx, m));
                let message = match computed {
                    Some(Ok(Cel::String(s))) => s.to_string(),
                    Some(other) => panic!("messageExpression of {:?} gives {other:?}", v.expression),
                    None => v.message.clone().unwrap_or_else(|| format!("failed expression: {}", v.expression)),
                };
                return Verdict::Denied(message);
            }
            Err(e) => return Verdict::Denied(e),
        }
    }
    Verdict::Allowed
}

// ---------------------------------------------------------------------------------------------
// Sample objects

/// A pod with the networks annotation (if any) and other annotations.
pub(super) fn pod(ns: &str, name: &str, networks: Option<&str>, annotations: &[(&str, &str)]) -> Value {
    let mut a: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    if let Some(n) = networks {
        a.insert(NETWORKS, n);
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": "6f1c2a9e-4b8d-4c1e-9a51-0f3d2e7b8c10",
                     "labels": {"app": "trainer"}, "annotations": a},
        "spec": {"containers": [{"name": "main", "image": "registry.example/trainer:1"}]},
    })
}

/// `obj` with annotation `key` set to `value`, or removed.
pub(super) fn with_annotation(obj: &Value, key: &str, value: Option<&str>) -> Value {
    let mut out = obj.clone();
    let annotations = out["metadata"]["annotations"].as_object_mut().expect("annotations");
    match value {
        Some(v) => annotations.insert(key.into(), v.into()),
        None => annotations.remove(key),
    };
    out
}

/// A GuidClaim as docs/ledger.md shows it.
pub(super) fn claim(ns: &str, pod_uid: &str) -> Value {
    serde_json::json!({
        "apiVersion": "fabric-sync.io/v1alpha1", "kind": "GuidClaim",
        "metadata": {"name": pod_uid, "namespace": ns,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "trainer-0", "uid": pod_uid}],
                     "finalizers": ["fabric-sync.io/fabric-cleanup"],
                     "labels": {"app.kubernetes.io/managed-by": "fabric-sync"}},
        "spec": {"pod": "trainer-0", "podUid": pod_uid, "node": "gpu-node-17", "migrated": false,
                 "attachments": [{"network": "tenant-a/ib-a", "interface": "net1", "occurrence": 0,
                                  "guid": "02:00:00:00:00:00:00:2a", "pkey": "0x1000"}]},
    })
}

/// The default overlay's policy named `name`, and its parameter (the rendered ClusterRoleBinding).
pub(super) fn policy(name: &str) -> (ValidatingAdmissionPolicy, Value) {
    let docs = rendered(OVERLAYS_DEFAULT);
    let policy: ValidatingAdmissionPolicy = pick(OVERLAYS_DEFAULT, docs, "ValidatingAdmissionPolicy", name);
    let binding =
        docs.iter().find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding" && d["spec"]["policyName"] == name);
    let param = str_at(binding.expect("a binding"), "/spec/paramRef/name").to_string();
    let params = docs.iter().find(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == param.as_str());
    (policy, params.expect("the parameter").clone())
}

const OVERLAYS_DEFAULT: &str = "deploy/kustomize/overlays/default";

#[track_caller]
pub(super) fn denied(v: Verdict, mentions: &[&str]) {
    let Verdict::Denied(message) = v else { panic!("allowed: {v:?}") };
    assert!(!message.contains("error"), "denied by an error, not by the rule: {message}");
    for m in mentions {
        assert!(message.contains(m), "the message does not name {m:?}: {message}");
    }
}

#[track_caller]
pub(super) fn allowed(v: Verdict) {
    assert!(!matches!(v, Verdict::Denied(_)), "denied: {v:?}");
}

// ---------------------------------------------------------------------------------------------
// fabric-sync-pod-markers

#[test]
fn pod_markers_only_the_controller_marks_a_pod_or_changes_its_networks_after_creation() {
    let (p, params) = policy("fabric-sync-pod-markers");
    let admit = |r: Request| admit(&p, &params, &r);
    let clean = pod("tenant-a", "trainer-0", Some(REQUESTED), &[]);
    let forged = pod("tenant-a", "trainer-0", Some(CONFIGURED), &[]);

    // CREATE: a forged marker, plain or \u-escaped, never reaches ib-sriov-cni.
    denied(admit(create("pods", TENANT, &forged)), &[NETWORKS, "mellanox.infiniband.app", "Remove"]);
    denied(admit(create("pods", ALICE, &forged)), &[NETWORKS]);
    let decoded: Value = serde_json::from_str(ESCAPED).unwrap();
    assert!(decoded[0]["cni-args"].get("mellanox.infiniband.app").is_some(), "the escape spells the marker");
    denied(admit(create("pods", TENANT, &pod("tenant-a", "p", Some(ESCAPED), &[]))), &[NETWORKS, r"\u"]);
    let escaped_value = r#"[{"name":"ib-a","cni-args":{"note":"caf\u00e9"}}]"#;
    denied(admit(create("pods", TENANT, &pod("tenant-a", "p", Some(escaped_value), &[]))), &[r"\u"]);
    denied(admit(create("pods", TENANT, &pod("tenant-a", "p", Some(REQUESTED), &[(STATUS, "{}")]))), &[STATUS]);
    // A clean pod asking for a GUID (either way) is created; so is the short form.
    allowed(admit(create("pods", TENANT, &clean)));
    let cni_args = r#"[{"name":"ib-a","interface":"net1","cni-args":{"guid":"02:00:00:00:00:00:00:2b"}}]"#;
    allowed(admit(create("pods", TENANT, &pod("tenant-a", "p", Some(cni_args), &[]))));
    allowed(admit(create("pods", TENANT, &pod("tenant-a", "p", Some("ib-a,tenant-b/ib-b@net2"), &[]))));
    // A pod without secondary networks is not looked at.
    let plain = pod("tenant-a", "web", None, &[("note", "mellanox.infiniband.app")]);
    assert!(matches!(admit(create("pods", TENANT, &plain)), Verdict::NotMatched));
    // The workload controllers create pods from templates: they are tenants here.
    denied(admit(create("pods", "system:serviceaccount:kube-system:replicaset-controller", &forged)), &[NETWORKS]);

    // UPDATE: the networks annotation and the status are the controller's after creation.
    let changed = with_annotation(&clean, NETWORKS, Some(r#"[{"name":"ib-b","namespace":"tenant-a"}]"#));
    denied(admit(update("pods", TENANT, &changed, &clean)), &[NETWORKS, "tenant-a/trainer-0", "was changed"]);
    denied(admit(update("pods", TENANT, &with_annotation(&clean, NETWORKS, None), &clean)), &["was removed"]);
    let bare = pod("tenant-a", "trainer-0", None, &[]);
    denied(admit(update("pods", TENANT, &clean, &bare)), &[NETWORKS, "was added"]);
    denied(admit(update("pods", TENANT, &with_annotation(&clean, NETWORKS, Some(CONFIGURED)), &clean)), &[NETWORKS]);
    let reported = with_annotation(&clean, STATUS, Some(r#"{"ib-a":"configured"}"#));
    denied(admit(update("pods", TENANT, &with_annotation(&reported, STATUS, Some("{}")), &reported)), &[STATUS]);
    denied(
        admit(update("pods", TENANT, &with_annotation(&reported, STATUS, None), &reported)),
        &[STATUS, "was removed"],
    );
    // Labels, other annotations, and Multus' network-status through pods/status pass.
    let mut relabelled = clean.clone();
    relabelled["metadata"]["labels"]["team"] = "b".into();
    allowed(admit(update("pods", TENANT, &relabelled, &clean)));
    let noted = with_annotation(&clean, "example.com/note", Some("x"));
    allowed(admit(update("pods", ALICE, &noted, &clean)));
    let status = with_annotation(&clean, "k8s.v1.cni.cncf.io/network-status", Some("[]"));
    allowed(admit(update("pods/status", "system:serviceaccount:kube-system:multus", &status, &clean)));
    denied(admit(update("pods/status", "system:node:gpu-node-17", &changed, &clean)), &[NETWORKS]);

    // The controller writes the marker, the GUID and the status; its namesake elsewhere cannot.
    let configured = with_annotation(&with_annotation(&clean, NETWORKS, Some(CONFIGURED)), STATUS, Some("{}"));
    allowed(admit(update("pods", CONTROLLER, &configured, &clean)));
    allowed(admit(create("pods", CONTROLLER, &forged)));
    denied(
        admit(update("pods", "system:serviceaccount:tenant-a:fabric-sync-controller", &configured, &clean)),
        &[NETWORKS],
    );
    denied(admit(update("pods", "system:serviceaccount:fabric-sync:default", &configured, &clean)), &[NETWORKS]);

    // A Binding's annotations land on the pod: one carrying the networks annotation is refused.
    let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "trainer-0", "namespace": "tenant-a", "annotations": {NETWORKS: REQUESTED}},
        "target": {"kind": "Node", "name": "gpu-node-17"}});
    denied(admit(create("pods/binding", "system:kube-scheduler", &binding)), &["Binding", NETWORKS]);
    let mut plain_binding = binding.clone();
    plain_binding["metadata"]["annotations"] = serde_json::json!({});
    assert!(matches!(admit(create("pods/binding", "system:kube-scheduler", &plain_binding)), Verdict::NotMatched));
}

// ---------------------------------------------------------------------------------------------
// fabric-sync-ledger-writers

#[test]
fn ledger_writers_only_the_controller_writes_claims_and_kubernetes_may_delete_them() {
    let (p, params) = policy("fabric-sync-ledger-writers");
    let admit = |r: Request| admit(&p, &params, &r);
    let c = claim("tenant-a", "6f1c2a9e-4b8d-4c1e-9a51-0f3d2e7b8c10");
    let mut moved = c.clone();
    moved["spec"]["attachments"][0]["pkey"] = "0x2000".into();
    moved["spec"]["attachments"][0]["formerPkeys"] = serde_json::json!(["0x1000"]);

    for user in [TENANT, ALICE, "system:serviceaccount:tenant-a:fabric-sync-controller"] {
        denied(admit(create("guidclaims", user, &c)), &["GuidClaim tenant-a/6f1c2a9e", user, "CREATE"]);
        denied(admit(update("guidclaims", user, &moved, &c)), &["GuidClaim", user, "UPDATE"]);
        denied(admit(delete("guidclaims", user, &c)), &[user, "DELETE", "delete the pod"]);
    }
    allowed(admit(create("guidclaims", CONTROLLER, &c)));
    allowed(admit(update("guidclaims", CONTROLLER, &moved, &c)));
    allowed(admit(delete("guidclaims", CONTROLLER, &c)));
    let mut released = c.clone();
    released["metadata"]["finalizers"] = serde_json::json!([]);
    allowed(admit(update("guidclaims", CONTROLLER, &released, &c)));

    // Kubernetes deletes claims with their pods and namespaces.
    for user in [GC, NAMESPACE_CONTROLLER, "system:kube-controller-manager"] {
        allowed(admit(delete("guidclaims", user, &c)));
        denied(admit(create("guidclaims", user, &c)), &[user]);
    }
    // The garbage collector orphaning a claim (`--cascade=orphan` on its pod) only drops the
    // ownerReference; anything more is refused, also to it.
    let mut orphaned = c.clone();
    orphaned["metadata"].as_object_mut().unwrap().remove("ownerReferences");
    allowed(admit(update("guidclaims", GC, &orphaned, &c)));
    denied(admit(update("guidclaims", GC, &moved, &c)), &[GC, "UPDATE"]);
    denied(admit(update("guidclaims", GC, &released, &c)), &[GC, "UPDATE"]);
    denied(admit(update("guidclaims", TENANT, &orphaned, &c)), &[TENANT]);
}
