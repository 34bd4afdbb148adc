//! RBAC against the API calls the code makes, pod security and placement, and the overlays.

use super::*;

pub(super) type Call = (String, String, String);

pub(super) fn calls(rules: &[PolicyRule]) -> BTreeSet<Call> {
    let mut out = BTreeSet::new();
    for r in rules {
        let groups = r.api_groups.clone().unwrap_or_default();
        let resources = r.resources.clone().unwrap_or_default();
        for x in groups.iter().chain(&resources).chain(&r.verbs) {
            assert!(!x.contains('*'), "wildcard in RBAC rule {r:?}");
        }
        for g in &groups {
            for res in &resources {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// Both ways: a call the code makes that is not granted, and a grant the code never uses.
pub(super) fn compare_grants(what: &str, granted: &BTreeSet<Call>, used: &[(&str, &str, &str)]) -> Result<(), String> {
    let used: BTreeSet<Call> = used.iter().map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())).collect();
    let missing: Vec<_> = used.difference(granted).collect();
    let extra: Vec<_> = granted.difference(&used).collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: missing (the code makes these calls): {missing:?}; extra (never used): {extra:?}"))
    }
}

/// `resourceNames` of every rule that has them.
pub(super) fn resource_names(rules: &[PolicyRule]) -> BTreeSet<String> {
    rules.iter().flat_map(|r| r.resource_names.clone().unwrap_or_default()).collect()
}

// ---------------------------------------------------------------------------------------------
// RBAC: exactly what the code calls

#[test]
fn controller_rbac_grants_exactly_the_calls_the_controller_makes() {
    let rbac = format!("{BASE}/controller-rbac.yaml");
    let cluster: ClusterRole = find(&rbac, "ClusterRole", "fabric-sync-controller");
    let role: Role = find(&rbac, "Role", "fabric-sync-leader-election");
    let cluster_rules = cluster.rules.unwrap_or_default();
    let role_rules = role.rules.unwrap_or_default();
    assert!(
        calls(&cluster_rules).iter().all(|(g, _, _)| g != "coordination.k8s.io"),
        "the Lease is granted in the controller's namespace only (Role), not cluster-wide"
    );
    let granted: BTreeSet<Call> = calls(&cluster_rules).union(&calls(&role_rules)).cloned().collect();
    compare_grants("base controller RBAC", &granted, fabric_sync::kube::API_CALLS).unwrap();

    let deploy = base_controller();
    let spec = pod_spec(&deploy);
    let lease = env_value(container(spec, "controller"), "FABRIC_SYNC_LEASE_NAME").unwrap();
    assert_eq!(resource_names(&role_rules), BTreeSet::from([lease]), "the Role names the Deployment's Lease");
    let sa = spec.service_account_name.clone().unwrap();
    let crb: ClusterRoleBinding = find(&rbac, "ClusterRoleBinding", "fabric-sync-controller");
    let rb: RoleBinding = find(&rbac, "RoleBinding", "fabric-sync-leader-election");
    assert_eq!((crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()), ("ClusterRole", "fabric-sync-controller"));
    assert_eq!((rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()), ("Role", "fabric-sync-leader-election"));
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("ServiceAccount", sa.as_str()));
    }

    // The migration overlay's Role (it replaces the base's rules) and its Lease.
    let patched: Role = find(&format!("{MIGRATION}/lease-ib-kubernetes.yaml"), "Role", "fabric-sync-leader-election");
    let patched_rules = patched.rules.unwrap_or_default();
    let granted: BTreeSet<Call> = calls(&cluster_rules).union(&calls(&patched_rules)).cloned().collect();
    compare_grants("migration overlay controller RBAC", &granted, fabric_sync::kube::API_CALLS).unwrap();
    let migration = patch_pod_spec(&format!("{MIGRATION}/deployment-ib-kubernetes.yaml"));
    let lease = env_value(container(&migration, "controller"), "FABRIC_SYNC_LEASE_NAME").unwrap();
    assert_eq!(resource_names(&patched_rules), BTreeSet::from([lease]));
}

#[test]
fn agent_rbac_grants_exactly_the_calls_the_agent_makes() {
    let rbac = format!("{BASE}/agent-rbac.yaml");
    let role: ClusterRole = find(&rbac, "ClusterRole", "fabric-sync-agent");
    compare_grants("agent RBAC", &calls(&role.rules.unwrap_or_default()), fabric_sync::agent::AGENT_API_CALLS).unwrap();
    let crb: ClusterRoleBinding = find(&rbac, "ClusterRoleBinding", "fabric-sync-agent");
    let sa = ds_pod_spec(&base_agent()).service_account_name.clone().unwrap();
    assert_eq!(crb.role_ref.name, "fabric-sync-agent");
    assert_eq!(crb.subjects.unwrap()[0].name, sa);
    assert_ne!(sa, pod_spec(&base_controller()).service_account_name.clone().unwrap(), "separate identities");
}

#[test]
fn the_comparison_fails_on_a_missing_verb_and_on_an_extra_one() {
    let used = [("", "pods", "list"), ("", "pods", "patch")];
    let rule = |verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    assert!(compare_grants("t", &calls(&[rule(&["list", "patch"])]), &used).is_ok());
    assert!(compare_grants("t", &calls(&[rule(&["list"])]), &used).unwrap_err().contains("missing"));
    assert!(compare_grants("t", &calls(&[rule(&["list", "patch", "delete"])]), &used).unwrap_err().contains("delete"));
}

// ---------------------------------------------------------------------------------------------
// Pod security, probes, placement

#[test]
fn controller_runs_two_non_root_read_only_replicas_with_probes_on_the_admin_port() {
    let deploy = base_controller();
    let spec = &deploy.spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.strategy.as_ref().and_then(|s| s.type_.as_deref()), Some("RollingUpdate"));
    let pod = pod_spec(&deploy);
    assert_eq!(pod.enable_service_links, Some(false), "service links would inject UFM_PORT=tcp://…");
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    let tolerated: BTreeSet<&str> = pod.tolerations.iter().flatten().filter_map(|t| t.key.as_deref()).collect();
    assert!(tolerated.contains("node-role.kubernetes.io/control-plane"), "control-plane taint tolerated");
    let c = container(pod, "controller");
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!((caps.drop.clone(), caps.add.clone()), (Some(vec!["ALL".to_string()]), None));
    let res = c.resources.as_ref().unwrap();
    for k in ["cpu", "memory"] {
        assert!(res.requests.as_ref().unwrap().contains_key(k) && res.limits.as_ref().unwrap().contains_key(k), "{k}");
    }
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("an HTTP probe");
        assert_eq!((get.path.as_deref(), &get.port), (Some(path), &IntOrString::String("admin".into())));
    }
    // Downward API: the leader identity and the Lease namespace.
    let field = |name: &str| {
        c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value_from.as_ref()?.field_ref.clone())
    };
    assert_eq!(field("K8S_NODE").unwrap().field_path, "spec.nodeName");
    assert_eq!(field("POD_UID").unwrap().field_path, "metadata.uid");
    assert_eq!(field("POD_NAMESPACE").unwrap().field_path, "metadata.namespace");
    // The UFM Secret as env and as the directory UFM_SECRET_DIR names, readable by the uid.
    let from = c.env_from.clone().unwrap_or_default();
    assert!(from.iter().any(|f| f.secret_ref.as_ref().is_some_and(|s| s.name == "fabric-sync-ufm")));
    assert!(from.iter().any(|f| f.config_map_ref.as_ref().is_some_and(|s| s.name == "fabric-sync-config")));
    let dir = env_value(c, "UFM_SECRET_DIR").unwrap();
    let mount = c.volume_mounts.iter().flatten().find(|m| m.mount_path == dir).expect("UFM_SECRET_DIR is mounted");
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!((secret.secret_name.as_deref(), secret.default_mode), (Some("fabric-sync-ufm"), Some(0o440)));
    assert_eq!(psc.fs_group, psc.run_as_group, "group-readable Secret files for the container's group");
}

#[test]
fn agent_verify_mode_reads_only_and_program_mode_adds_only_uid_0_net_admin_and_writable_sys() {
    let ds = base_agent();
    let pod = ds_pod_spec(&ds);
    assert_eq!(pod.host_network, Some(true), "rtnetlink sees the host's PFs only from the host network");
    assert!(pod.host_pid.is_none() && pod.host_ipc.is_none());
    assert!(!pod.node_selector.clone().unwrap_or_default().is_empty(), "InfiniBand nodes only");
    assert_eq!(pod.security_context.as_ref().and_then(|s| s.run_as_non_root), Some(true));
    let c = container(pod, "agent");
    assert_eq!(env_value(c, "FABRIC_SYNC_AGENT_MODE").as_deref(), Some("verify"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.privileged, sc.read_only_root_filesystem), (Some(false), Some(true)));
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);
    let root = env_value(c, "FABRIC_SYNC_SYSFS_ROOT").unwrap();
    let mount =
        c.volume_mounts.iter().flatten().find(|m| m.mount_path == root).expect("FABRIC_SYNC_SYSFS_ROOT mounted");
    assert_eq!(mount.read_only, Some(true));
    let host = pod.volumes.iter().flatten().find(|v| v.name == mount.name).and_then(|v| v.host_path.clone());
    assert_eq!(host.map(|h| h.path), Some("/sys".to_string()));
    assert_eq!(pod.volumes.iter().flatten().count(), 1, "no other host access");

    let program = patch_pod_spec("deploy/kustomize/components/agent-program/daemonset-program.yaml");
    let p = container(&program, "agent");
    assert_eq!(env_value(p, "FABRIC_SYNC_AGENT_MODE").as_deref(), Some("program"));
    let caps = p.security_context.as_ref().and_then(|s| s.capabilities.clone()).unwrap();
    assert_eq!((caps.add, caps.drop), (Some(vec!["NET_ADMIN".to_string()]), Some(vec!["ALL".to_string()])));
    assert_eq!(p.security_context.as_ref().and_then(|s| s.privileged), None, "never privileged");
    assert_eq!(program.security_context.as_ref().and_then(|s| s.run_as_user), Some(0));
    let mounts: Vec<_> = p.volume_mounts.iter().flatten().map(|m| (m.mount_path.as_str(), m.read_only)).collect();
    assert_eq!(mounts, [(root.as_str(), Some(false))]);
    assert!(program.volumes.is_none() && program.host_pid.is_none(), "nothing else added");
}

#[test]
fn services_monitors_and_the_budget_select_the_pods_they_serve() {
    let labels = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default()
    };
    let deploy = base_controller();
    let controller_labels = labels(&deploy.spec.template);
    let ds = base_agent();
    let agent_labels = labels(&ds.spec.template);
    let selects = |sel: &BTreeMap<String, String>, pod: &BTreeMap<String, String>| {
        !sel.is_empty() && sel.iter().all(|(k, v)| pod.get(k) == Some(v))
    };
    let mut services = Vec::new();
    for (file, name, pod_labels, c) in [
        (
            "controller-service.yaml",
            "fabric-sync-controller-metrics",
            &controller_labels,
            container(pod_spec(&deploy), "controller"),
        ),
        ("agent-service.yaml", "fabric-sync-agent-metrics", &agent_labels, container(ds_pod_spec(&ds), "agent")),
    ] {
        let svc: Service = find(&format!("{BASE}/{file}"), "Service", name);
        let spec = svc.spec.clone().unwrap();
        assert!(selects(&spec.selector.clone().unwrap(), pod_labels), "{name} selects its pods");
        assert_eq!(spec.publish_not_ready_addresses, Some(true), "{name}: an unready leader's metrics matter");
        for p in spec.ports.unwrap() {
            let IntOrString::String(target) = p.target_port.clone().unwrap() else {
                panic!("{name}: named targetPort")
            };
            assert!(named_port(c, &target) > 0, "{name}: no container port {target}");
        }
        services.push(svc);
    }
    let pdb: PodDisruptionBudget =
        find(&format!("{BASE}/controller-pdb.yaml"), "PodDisruptionBudget", "fabric-sync-controller");
    let pdb = pdb.spec.unwrap();
    assert!(selects(&pdb.selector.unwrap().match_labels.unwrap(), &controller_labels));
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert!(deploy.spec.replicas.unwrap() > 1, "a budget of 1 needs more than one replica");
    for doc in yaml_docs("deploy/kustomize/components/servicemonitor/servicemonitor.yaml") {
        let sel: BTreeMap<String, String> =
            serde_json::from_value(doc["spec"]["selector"]["matchLabels"].clone()).unwrap();
        let svc = services
            .iter()
            .find(|s| selects(&sel, s.metadata.labels.as_ref().unwrap()))
            .unwrap_or_else(|| panic!("ServiceMonitor {} selects no Service", str_at(&doc, "/metadata/name")));
        let port = str_at(&doc, "/spec/endpoints/0/port");
        assert!(svc.spec.as_ref().unwrap().ports.iter().flatten().any(|p| p.name.as_deref() == Some(port)));
        assert_eq!(str_at(&doc, "/spec/endpoints/0/path"), "/metrics");
    }
}

// ---------------------------------------------------------------------------------------------
// Overlays

#[tokio::test]
async fn mock_ufm_overlay_serves_tls_that_the_controller_verifies_under_ufm_address() {
    fabric_sync::install_crypto_provider();
    let secret = generated(MOCK, "fabric-sync-ufm");
    let tls = generated(MOCK, "mock-ufm-tls");
    let mock: Deployment = find(&format!("{MOCK}/mock-ufm.yaml"), "Deployment", "mock-ufm");
    let pod = pod_spec(&mock);
    let c = container(pod, "mock-ufm");
    assert_eq!(c.command.clone().unwrap_or_default(), ["/usr/local/bin/mock-ufm"]);
    // The mock's files come from the mounted Secret mock-ufm-tls: map each path to the committed file.
    let mount = c.volume_mounts.iter().flatten().find(|m| m.name == "tls").expect("tls mount");
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "tls").unwrap();
    assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("mock-ufm-tls"));
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec!["mock-ufm".to_string()];
    let mut args = c.args.clone().unwrap().into_iter();
    while let Some(a) = args.next() {
        argv.push(a.clone());
        let Some(value) = (a.starts_with("--")).then(|| args.next()).flatten() else { continue };
        let value = if a == "--listen" {
            "127.0.0.1:0".to_string()
        } else if let Some(key) = value.strip_prefix(&format!("{}/", mount.mount_path)) {
            let local = dir.path().join(key);
            std::fs::write(&local, tls.get(key).unwrap_or_else(|| panic!("mock-ufm-tls has no {key}"))).unwrap();
            local.display().to_string()
        } else {
            value
        };
        argv.push(value);
    }
    // Its user and password come from the controller's Secret (secretKeyRef), as in the pod.
    let cli = mock_ufm::Cli::command();
    for e in c.env.iter().flatten() {
        let r = e.value_from.as_ref().and_then(|v| v.secret_key_ref.clone()).expect("from the Secret");
        assert_eq!(r.name, "fabric-sync-ufm");
        let arg = cli.get_arguments().find(|a| a.get_env().is_some_and(|v| v == e.name.as_str()));
        let long = arg.and_then(|a| a.get_long()).unwrap_or_else(|| panic!("mock-ufm does not read {}", e.name));
        argv.push(format!("--{long}={}", secret[&r.key]));
    }
    let config =
        mock_ufm::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}")).into_config().unwrap();
    let ufm = mock_ufm::MockUfm::start(config).await.unwrap();
    let port: u16 = ufm.url().rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let ca = reqwest::Certificate::from_pem_bundle(secret["UFM_CERTIFICATE"].as_bytes()).unwrap();
    let secret = &secret;
    let get = |host: &str| {
        let client = reqwest::Client::builder().tls_certs_only(ca.clone()).resolve(host, local).build().unwrap();
        let url = format!("https://{host}:{port}/ufmRest/app/ufm_version");
        async move { client.get(url).basic_auth(&secret["UFM_USERNAME"], Some(&secret["UFM_PASSWORD"])).send().await }
    };
    let answer = get(&secret["UFM_ADDRESS"]).await.expect("the controller trusts the mock under UFM_ADDRESS");
    assert_eq!(answer.status(), 200);
    // Verification is real: the same CA refuses a name the certificate does not carry.
    assert!(get("ufm.example.com").await.is_err(), "TLS accepted a name outside the certificate");
    ufm.shutdown().await;
}

#[test]
fn migration_overlay_reads_ib_kubernetes_objects_without_overwriting_them() {
    let k = yaml(&format!("{MIGRATION}/kustomization.yaml"));
    assert_eq!(k["namespace"].as_str(), Some("kube-system"), "where ib-kubernetes and its objects live");
    assert!(k.get("configMapGenerator").is_none() && k.get("secretGenerator").is_none());
    for file in yaml_files(MIGRATION).into_iter().filter(|f| !f.ends_with("kustomization.yaml")) {
        for doc in yaml_docs(&file) {
            let kind = str_at(&doc, "/kind");
            if kind == "ConfigMap" || kind == "Secret" {
                assert_eq!(doc["$patch"].as_str(), Some("delete"), "{file}: would overwrite the user's {kind}");
                assert_eq!(str_at(&doc, "/metadata/name"), "fabric-sync-config", "{file}");
            }
        }
    }
    let spec = patch_pod_spec(&format!("{MIGRATION}/deployment-ib-kubernetes.yaml"));
    let c = container(&spec, "controller");
    let from = c.env_from.clone().unwrap();
    assert_eq!(from[0].config_map_ref.as_ref().map(|r| r.name.as_str()), Some("ib-kubernetes-config"));
    assert_eq!(from.last().unwrap().secret_ref.as_ref().map(|r| r.name.as_str()), Some("ib-kubernetes-ufm-secret"));
    let volume = spec.volumes.iter().flatten().find(|v| v.secret.is_some()).unwrap();
    let base = base_controller();
    let base_volume = pod_spec(&base).volumes.iter().flatten().find(|v| v.secret.is_some()).unwrap().name.clone();
    assert_eq!(volume.name, base_volume, "the patch replaces the base's Secret volume (merged by name)");
    assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("ib-kubernetes-ufm-secret"));
    // ib-kubernetes' own ConfigMap and Secret (reference/ib-kubernetes.md §2) pass as they are.
    let ib = BTreeMap::from([
        ("DAEMON_SM_PLUGIN", "ufm"),
        ("DAEMON_PERIODIC_UPDATE", "5"),
        ("DAEMON_SM_PLUGIN_PATH", "/plugins"),
        ("GUID_POOL_RANGE_START", "02:00:00:00:00:00:00:00"),
        ("GUID_POOL_RANGE_END", "02:FF:FF:FF:FF:FF:FF:FF"),
        ("UFM_USERNAME", "admin"),
        ("UFM_PASSWORD", "123456"),
        ("UFM_ADDRESS", "ufm.example.com"),
        ("UFM_HTTP_SCHEMA", "https"),
        ("UFM_PORT", "443"),
        ("UFM_CERTIFICATE", ""),
        ("POD_NAMESPACE", "kube-system"),
    ]);
    let env: BTreeMap<String, String> = ib.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    validate_controller_env(&env).unwrap_or_else(|e| panic!("ib-kubernetes' settings: {e}"));
}
