//! The Helm chart (values vs templates, and vs the kustomize base), the dashboard, the examples.

use super::admission::{CONFIGURED, NETWORKS, REQUESTED, Verdict, admit, pod, update, with_annotation};
use super::security::{Call, calls, compare_grants, resource_names};
use super::*;

// ---------------------------------------------------------------------------------------------
// Helm chart: values and templates agree with each other and with the kustomize base

fn chart_templates() -> Vec<(String, String)> {
    let dir = root().join(CHART).join("templates");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Every `.Values.a.b` path the templates reference.
fn values_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(".Values.") {
        let rest = &text[i + ".Values.".len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len());
        out.insert(rest[..end].trim_end_matches('.').to_string());
    }
    out
}

fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaf_paths(child, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Template text with `{{ .Values.x }}` and `{{ .Values.x | quote }}` replaced by their values.
fn substitute(text: &str, values: &Value) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        let expr = rest[start + 2..end].trim();
        let (path, quote) = expr.strip_suffix("| quote").map_or((expr, false), |p| (p.trim(), true));
        let value = path.strip_prefix(".Values.").and_then(|p| lookup(values, p)).unwrap_or_else(|| panic!("{expr}"));
        let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
        out.push_str(&if quote { format!("{text:?}") } else { text });
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The `rules:` of the `kind` object in a template file, with simple value references resolved.
fn chart_rules(file: &str, kind: &str, values: &Value) -> Vec<PolicyRule> {
    let text = read(&format!("{CHART}/templates/{file}"));
    let doc = text
        .split("\n---")
        .find(|d| d.contains(&format!("\nkind: {kind}\n")))
        .unwrap_or_else(|| panic!("{file}: {kind}"));
    let rules = &doc[doc.find("\nrules:\n").unwrap_or_else(|| panic!("{file}: {kind} rules"))..];
    // The block: the lines after `rules:`, up to the next top-level key or template action.
    let block: Vec<&str> = rules.lines().skip(2).take_while(|l| l.starts_with(' ')).collect();
    serde_norway::from_str(&substitute(&block.join("\n"), values)).unwrap()
}

#[test]
fn helm_values_and_templates_reference_each_other_completely() {
    let values = yaml(&format!("{CHART}/values.yaml"));
    let templates = chart_templates();
    let refs: BTreeSet<String> = templates.iter().flat_map(|(_, t)| values_refs(t)).collect();
    let missing: Vec<&String> = refs.iter().filter(|r| lookup(&values, r).is_none()).collect();
    assert!(missing.is_empty(), "templates reference values that values.yaml lacks: {missing:?}");
    let mut leaves = Vec::new();
    leaf_paths(&values, "", &mut leaves);
    let unused: Vec<&String> =
        leaves.iter().filter(|leaf| !refs.iter().any(|r| *leaf == r || leaf.starts_with(&format!("{r}.")))).collect();
    assert!(unused.is_empty(), "values no template uses: {unused:?}");
    // Go template blocks are balanced in every file.
    for (file, text) in &templates {
        let (mut open, mut end) = (0, 0);
        for action in text.split("{{").skip(1) {
            let word = action.trim_start_matches('-').split_whitespace().next().unwrap_or_default();
            match word {
                "if" | "with" | "range" | "define" => open += 1,
                "end" => end += 1,
                _ => {}
            }
        }
        assert_eq!(open, end, "{file}: unbalanced {{{{ if/with/range/define }}}} and {{{{ end }}}}");
    }
    let policy = values["policy"]["rules"].as_str().unwrap();
    Policy::parse("values.yaml policy.rules", policy).unwrap();
}

#[test]
fn helm_chart_renders_the_settings_of_the_kustomize_base() {
    let values = yaml(&format!("{CHART}/values.yaml"));
    let config: BTreeMap<String, String> = serde_json::from_value(values["config"].clone()).unwrap();
    assert_eq!(config, base_config(), "values.yaml `config` and the base ConfigMap");

    // The same env var names in the chart's templates as in the base and its components.
    let mut kustomize: BTreeSet<String> = BTreeSet::new();
    kustomize.extend(env_names(container(pod_spec(&base_controller()), "controller")));
    kustomize.extend(env_names(container(ds_pod_spec(&base_agent()), "agent")));
    for dir in ["agent-program", "partitions", "tenant-policy", "ufm-client-cert", "fabrics"] {
        for file in yaml_files(&format!("deploy/kustomize/components/{dir}")) {
            if let Some(spec) = yaml_docs(&file).first().and_then(|d| d.pointer("/spec/template/spec")) {
                let spec: PodSpec = typed(&file, spec);
                kustomize.extend(spec.containers.iter().flat_map(env_names));
            }
        }
    }
    let mut chart = BTreeSet::new();
    for (_, text) in chart_templates() {
        for line in text.lines() {
            let name = line.trim().strip_prefix("- name: ").unwrap_or_default();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                chart.insert(name.to_string());
            }
        }
    }
    assert_eq!(chart, kustomize, "env var names: Helm templates vs kustomize base + components");

    let deploy = base_controller();
    let c = container(pod_spec(&deploy), "controller");
    let ds = base_agent();
    let a = container(ds_pod_spec(&ds), "agent");
    let v = |path: &str| lookup(&values, path).cloned().unwrap_or_else(|| panic!("values.yaml: {path}"));
    let pairs: Vec<(&str, Value)> = vec![
        ("controller.replicas", json(&deploy.spec.replicas)),
        ("controller.adminPort", json(&named_port(c, "admin"))),
        ("controller.leaseName", json(&env_value(c, "FABRIC_SYNC_LEASE_NAME"))),
        ("ufmSecret.mountPath", json(&env_value(c, "UFM_SECRET_DIR"))),
        ("controller.resources", json(&c.resources)),
        ("controller.tolerations", json(&pod_spec(&deploy).tolerations)),
        ("controller.terminationGracePeriodSeconds", json(&pod_spec(&deploy).termination_grace_period_seconds)),
        ("agent.adminPort", json(&named_port(a, "admin"))),
        ("agent.mode", json(&env_value(a, "FABRIC_SYNC_AGENT_MODE"))),
        ("agent.interval", json(&env_value(a, "FABRIC_SYNC_AGENT_INTERVAL"))),
        ("agent.sysfsRoot", json(&env_value(a, "FABRIC_SYNC_SYSFS_ROOT"))),
        ("agent.logFormat", json(&env_value(a, "FABRIC_SYNC_LOG_FORMAT"))),
        ("agent.resources", json(&a.resources)),
        ("agent.nodeSelector", json(&ds_pod_spec(&ds).node_selector)),
        ("agent.tolerations", json(&ds_pod_spec(&ds).tolerations)),
    ];
    for (path, expected) in pairs {
        assert_eq!(v(path), expected, "values.yaml {path} vs the kustomize base");
    }
    let pdb: PodDisruptionBudget =
        find(&format!("{BASE}/controller-pdb.yaml"), "PodDisruptionBudget", "fabric-sync-controller");
    assert_eq!(v("controller.pdb.minAvailable"), json(&pdb.spec.unwrap().min_available));
}

#[test]
fn helm_migration_reads_an_optional_second_config_map() {
    // With configMap.create=false and configMap.name=ib-kubernetes-config, fabric-sync's own
    // settings come from configMap.optionalName (e.g. fabric-sync-config), which may be absent.
    let values = yaml(&format!("{CHART}/values.yaml"));
    assert_eq!(values["configMap"]["optionalName"].as_str(), Some(""), "off by default");
    let t = read(&format!("{CHART}/templates/controller-deployment.yaml"));
    let env_from = t.split("envFrom:").nth(1).expect("envFrom").split("volumeMounts:").next().unwrap_or_default();
    let first = env_from.find("fabric-sync.configMapName").expect("the main ConfigMap");
    let optional = env_from.find("{{- with .Values.configMap.optionalName }}").expect("the optional ConfigMap");
    let secret = env_from.find("secretRef:").expect("the UFM Secret");
    assert!(first < optional && optional < secret, "order: main ConfigMap, optional one (wins), Secret:{env_from}");
    let block = &env_from[optional..secret];
    assert!(block.contains("optional: true") && block.contains("configMapRef:"), "{block}");
}

#[test]
fn helm_rbac_grants_exactly_the_calls_the_code_makes() {
    let values = yaml(&format!("{CHART}/values.yaml"));
    let cluster = chart_rules("controller-rbac.yaml", "ClusterRole", &values);
    let role = chart_rules("controller-rbac.yaml", "Role", &values);
    let granted: BTreeSet<Call> = calls(&cluster).union(&calls(&role)).cloned().collect();
    compare_grants("Helm controller RBAC", &granted, fabric_sync::kube::API_CALLS).unwrap();
    let lease = values["controller"]["leaseName"].as_str().unwrap().to_string();
    assert_eq!(resource_names(&role), BTreeSet::from([lease]));
    let agent = chart_rules("agent-rbac.yaml", "ClusterRole", &values);
    compare_grants("Helm agent RBAC", &calls(&agent), fabric_sync::agent::AGENT_API_CALLS).unwrap();
}

/// A template rendered for the release `fabric-sync` in namespace `ns`, the way Helm would for
/// what it uses (no helm binary here): the name helpers, the release namespace and simple value
/// references. Label blocks are left out (labels: null).
fn render_template(file: &str, ns: &str, values: &Value) -> Vec<Value> {
    let text = read(&format!("{CHART}/templates/{file}"));
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.contains(r#"include "fabric-sync.labels""#)) {
        let line = line
            .replace(r#"{{ include "fabric-sync.fullname" . }}"#, "fabric-sync")
            .replace(r#"{{ include "fabric-sync.controllerName" . }}"#, "fabric-sync-controller")
            .replace("{{ .Release.Namespace }}", ns);
        out.push_str(&line);
        out.push('\n');
    }
    let out = substitute(&out, values);
    serde_norway::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file} rendered: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn helm_chart_ships_the_ledger_crd_and_the_admission_policies_of_the_base() {
    // Helm installs crds/ as they are: the base's CRD, byte for byte.
    let crd = read(&format!("{CHART}/crds/guidclaims.fabric-sync.io.yaml"));
    assert_eq!(crd, read(&format!("{BASE}/guidclaim-crd.yaml")), "crds/ and the base's CRD");
    let crd = read(&format!("{CHART}/crds/partitionclaims.fabric-sync.io.yaml"));
    assert_eq!(crd, read(&format!("{BASE}/partitionclaim-crd.yaml")), "crds/ and the base's PartitionClaim CRD");
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["kubeVersion"], ">=1.30.0-0", "admissionregistration.k8s.io/v1 policies need Kubernetes 1.30");

    // The same policies and bindings as the base (release `fabric-sync` gives the base's names).
    let values = yaml(&format!("{CHART}/values.yaml"));
    let docs = render_template("admission-policies.yaml", "ib-system", &values);
    let base = yaml_docs(&format!("{BASE}/admission-policies.yaml"));
    assert_eq!(docs.len(), base.len(), "as many documents as the base");
    for b in &base {
        let (kind, name) = (str_at(b, "/kind"), str_at(b, "/metadata/name"));
        let d = docs
            .iter()
            .find(|d| str_at(d, "/kind") == kind && str_at(d, "/metadata/name") == name)
            .unwrap_or_else(|| panic!("the chart has no {kind} {name}"));
        if kind == "ValidatingAdmissionPolicy" {
            let (c, k): (ValidatingAdmissionPolicy, ValidatingAdmissionPolicy) = (typed(CHART, d), typed(BASE, b));
            assert_eq!(c.spec, k.spec, "{kind} {name}: chart and base");
        } else {
            let (c, k): (ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBinding) =
                (typed(CHART, d), typed(BASE, b));
            assert_eq!(c.spec, k.spec, "{kind} {name}: chart and base");
        }
    }

    // The parameter, the chart's controller ClusterRoleBinding, names the Deployment's account
    // in the release namespace; the API server's evaluation agrees.
    let rbac = render_template("controller-rbac.yaml", "ib-system", &values);
    let crb: ClusterRoleBinding = super::rendered::pick(CHART, &rbac, "ClusterRoleBinding", "fabric-sync-controller");
    let subject = &crb.subjects.clone().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", "fabric-sync-controller", Some("ib-system"))
    );
    let _: ServiceAccount = super::rendered::pick(CHART, &rbac, "ServiceAccount", "fabric-sync-controller");
    let deployment = read(&format!("{CHART}/templates/controller-deployment.yaml"));
    assert!(deployment.contains(r#"serviceAccountName: {{ include "fabric-sync.controllerName" . }}"#));
    for d in docs.iter().filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding") {
        assert_eq!(str_at(d, "/spec/paramRef/name"), "fabric-sync-controller");
    }
    let policy: ValidatingAdmissionPolicy =
        super::rendered::pick(CHART, &docs, "ValidatingAdmissionPolicy", "fabric-sync-pod-markers");
    let old = pod("tenant-a", "trainer-0", Some(REQUESTED), &[]);
    let marked = with_annotation(&old, NETWORKS, Some(CONFIGURED));
    let as_user = |user: &str| admit(&policy, &json(&crb), &update("pods", user, &marked, &old));
    assert!(!matches!(as_user("system:serviceaccount:ib-system:fabric-sync-controller"), Verdict::Denied(_)));
    assert!(matches!(as_user("system:serviceaccount:fabric-sync:fabric-sync-controller"), Verdict::Denied(_)));
}

// ---------------------------------------------------------------------------------------------
// Dashboard and examples

#[test]
fn grafana_dashboard_shows_every_metric_and_only_metrics_that_exist() {
    // Labelled gauges export nothing until set: give the agent's one sample each.
    let metrics = fabric_sync::agent::AgentMetrics::new().unwrap();
    metrics.pkey_used.with_label_values(&["mlx5_0", "1"]).set(1);
    metrics.pkey_capacity.with_label_values(&["mlx5_0", "1"]).set(128);
    let agent = metrics.render();
    for literal in read("src/agent/metrics.rs").split('"').filter(|s| s.starts_with("fabric_sync_agent_")) {
        let name = literal.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap();
        assert!(agent.contains(&format!("# HELP {name} ")), "{name} is not rendered: give it a sample above");
    }
    let mut known: BTreeSet<String> = fabric_sync::ops::METRICS.iter().map(|m| m.0.to_string()).collect();
    known.extend(agent.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split_whitespace().next().map(String::from)));
    let mut histograms: BTreeSet<&str> =
        fabric_sync::ops::METRICS.iter().filter(|m| m.1 == "histogram").map(|m| m.0).collect();
    histograms.extend(agent.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram")));
    let dash: Value = serde_json::from_str(&read("deploy/grafana/fabric-sync.json")).expect("dashboard JSON");
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_i64().unwrap()), "duplicate panel id");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("namespace=~\"$namespace\""), "{expr}: filter by the namespace variable");
            for (i, _) in expr.match_indices("fabric_sync_") {
                let rest = &expr[i..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let name = &rest[..end];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| histograms.contains(b)))
                    .unwrap_or(name);
                used.insert(base.to_string());
            }
        }
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    let unshown: Vec<_> = known.difference(&used).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics nothing exports: {unknown:?}");
    assert!(unshown.is_empty(), "metrics the dashboard does not show: {unshown:?}");
    assert!(used.iter().any(|m| m.starts_with("fabric_sync_agent_")), "agent metrics present: {used:?}");
}

#[test]
fn example_configuration_means_what_its_comments_say() {
    let nad = |file: &str| {
        let doc = yaml_docs(file).into_iter().find(|d| d["kind"] == "NetworkAttachmentDefinition").unwrap();
        let annotations: BTreeMap<String, String> =
            serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap();
        parse_nad("tenant-a", str_at(&doc, "/metadata/name"), &annotations, str_at(&doc, "/spec/config"))
            .unwrap()
            .unwrap()
    };
    let pkey = |s: &str| PKey::parse_tenant(s).unwrap().0;
    let cni = nad("config/nad-cni-args.yaml");
    assert_eq!((cni.pkey(), cni.guid_via, cni.ib_kubernetes_enabled), (Some(pkey("0x1000")), GuidVia::CniArgs, true));
    let guid = nad("config/nad-infiniband-guid.yaml");
    assert_eq!((guid.pkey(), guid.guid_via), (Some(pkey("0x0100")), GuidVia::RuntimeConfig));
    assert_eq!(guid.partition.unwrap().membership, fabric_sync::ib::Membership::Limited);
    // The pod asking for a GUID asks for one inside the default pool range.
    let pod: Pod = find("config/nad-infiniband-guid.yaml", "Pod", "ib-storage-client");
    let networks = &pod.metadata.annotations.unwrap()["k8s.v1.cni.cncf.io/networks"];
    let requested = parse_networks(networks).unwrap()[0].requested_guid().unwrap().expect("a requested GUID");
    let config = base_config();
    let range = |k: &str| config[k].parse::<fabric_sync::ib::Guid>().unwrap();
    assert!(range("GUID_POOL_RANGE_START") <= requested && requested <= range("GUID_POOL_RANGE_END"));

    let smc_doc = yaml("config/spidermultusconfig.yaml");
    assert!(smc_doc["spec"]["ibsriov"]["pkey"].is_string(), "pkey quoted");
    let smc = parse_smc("tenant-a", "gpu-ib", &BTreeMap::new(), &smc_doc["spec"]).unwrap().unwrap();
    assert_eq!((smc.pkey(), smc.ib_kubernetes_enabled), (Some(pkey("0x1000")), true));

    let policy = Policy::parse("config/tenant-policy.yaml", &read("config/tenant-policy.yaml")).unwrap();
    let none = BTreeMap::new();
    let tenant_b = BTreeMap::from([("tenant".to_string(), "b".to_string())]);
    assert!(policy.check("tenant-a-dev", &none, pkey("0x1180")).is_ok());
    assert!(policy.check("tenant-a", &none, pkey("0x2000")).is_err());
    assert!(policy.check("anything", &tenant_b, pkey("0x2000")).is_ok());
    assert!(policy.check("unknown", &none, pkey("0x1000")).is_err(), "default: deny");

    // The tenant-policy component mounts its file where FABRIC_SYNC_POLICY_FILE points.
    let dir = "deploy/kustomize/components/tenant-policy";
    let spec = patch_pod_spec(&format!("{dir}/deployment-policy.yaml"));
    let c = container(&spec, "controller");
    let file = env_value(c, "FABRIC_SYNC_POLICY_FILE").unwrap();
    let mount = c.volume_mounts.iter().flatten().find(|m| file.starts_with(&format!("{}/", m.mount_path))).unwrap();
    assert_eq!(&file[mount.mount_path.len() + 1..], "policy.yaml", "the generator's file key");
    let mut env = base_config();
    env.insert("FABRIC_SYNC_POLICY_FILE".into(), root().join(dir).join("policy.yaml").display().to_string());
    env.insert("FABRIC_SYNC_POLICY_MODE".into(), env_value(c, "FABRIC_SYNC_POLICY_MODE").unwrap());
    env.insert("UFM_ADDRESS".into(), "ufm.example.com".into());
    env.insert("UFM_TOKEN".into(), "token".into());
    let engine = validate_controller_env(&env).unwrap();
    assert!(engine.policy.is_some(), "the component's policy is loaded");
}
