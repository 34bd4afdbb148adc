//! Ports against the binaries' defaults; images, commands and the Dockerfile.

use super::*;

#[test]
fn ports_agree_with_the_binary_defaults() {
    let controller_default = port_of(&default_of(CONTROLLER, "FABRIC_SYNC_ADMIN_LISTEN"));
    let agent_default: i32 = default_of(AGENT, "FABRIC_SYNC_AGENT_ADMIN_PORT").parse().unwrap();
    assert_eq!((controller_default, agent_default), (8080, 9810));

    let deploy = base_controller();
    let c = container(pod_spec(&deploy), "controller");
    assert_eq!(named_port(c, "admin"), controller_default);
    assert_eq!(port_of(&env_value(c, "FABRIC_SYNC_ADMIN_LISTEN").unwrap()), controller_default);
    let svc: Service = find(&format!("{BASE}/controller-service.yaml"), "Service", "fabric-sync-controller-metrics");
    let p = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!((p.port, p.target_port.clone()), (controller_default, Some(IntOrString::String("admin".into()))));

    let ds = base_agent();
    let a = container(ds_pod_spec(&ds), "agent");
    assert_eq!(named_port(a, "admin"), agent_default);
    assert_eq!(env_value(a, "FABRIC_SYNC_AGENT_ADMIN_PORT").unwrap().parse::<i32>().unwrap(), agent_default);
    // On the pod's IP (the node's address with hostNetwork), not on every address of the host.
    assert_eq!(env_value(a, "FABRIC_SYNC_AGENT_ADMIN_LISTEN"), None);
    let pod_ip = a.env.iter().flatten().find(|e| e.name == "POD_IP").and_then(|e| e.value_from.clone());
    assert_eq!(pod_ip.and_then(|v| v.field_ref).map(|f| f.field_path).as_deref(), Some("status.podIP"));
    let svc: Service = find(&format!("{BASE}/agent-service.yaml"), "Service", "fabric-sync-agent-metrics");
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, agent_default);

    let mock_cli = mock_ufm::Cli::command();
    let listen = mock_cli.get_arguments().find(|a| a.get_long() == Some("listen")).expect("mock-ufm --listen");
    let mock_default = port_of(&listen.get_default_values()[0].to_string_lossy());
    assert_eq!(mock_default, 8443);
    let mock: Deployment = find(&format!("{MOCK}/mock-ufm.yaml"), "Deployment", "mock-ufm");
    let m = container(pod_spec(&mock), "mock-ufm");
    let args = m.args.clone().unwrap();
    let at = args.iter().position(|a| a == "--listen").expect("--listen");
    assert_eq!(port_of(&args[at + 1]), mock_default);
    assert_eq!(named_port(m, "https"), mock_default);
    let svc: Service = find(&format!("{MOCK}/mock-ufm.yaml"), "Service", "mock-ufm");
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, mock_default);
    assert_eq!(generated(MOCK, "fabric-sync-ufm")["UFM_PORT"], mock_default.to_string());
}

/// The binaries the Dockerfile's runtime stage puts in the image, by path.
fn image_binaries() -> BTreeSet<String> {
    let dockerfile = read("Dockerfile");
    let copy = dockerfile.lines().find(|l| l.starts_with("COPY --from=build")).expect("COPY --from=build");
    let parts: Vec<&str> = copy.split_whitespace().skip(2).collect();
    let (dest, sources) = parts.split_last().unwrap();
    sources.iter().map(|s| format!("{}/{}", dest.trim_end_matches('/'), s.rsplit('/').next().unwrap())).collect()
}

#[test]
fn images_are_this_version_and_commands_are_binaries_of_the_image() {
    let image = format!("fabric-sync:{VERSION}");
    let binaries = image_binaries();
    assert_eq!(
        binaries,
        ["/usr/local/bin/fabric-sync", "/usr/local/bin/mock-ufm"].iter().map(|s| s.to_string()).collect()
    );
    let mut seen = 0;
    for file in yaml_files("deploy/kustomize") {
        for doc in yaml_docs(&file) {
            let Some(spec) = doc.pointer("/spec/template/spec").filter(|_| doc.pointer("/spec/selector").is_some())
            else {
                continue;
            };
            let spec: PodSpec = typed(&file, spec);
            for c in &spec.containers {
                seen += 1;
                assert_eq!(c.image.as_deref(), Some(image.as_str()), "{file}: {}", c.name);
                let command = c.command.clone().unwrap_or_default();
                assert!(command.len() == 1 && binaries.contains(&command[0]), "{file}: {}: {command:?}", c.name);
            }
        }
    }
    assert_eq!(seen, 3, "controller, agent, mock-ufm");
    let k = yaml(&format!("{BASE}/kustomization.yaml"));
    assert_eq!(
        (k["images"][0]["name"].as_str(), k["images"][0]["newTag"].as_str()),
        (Some("fabric-sync"), Some(VERSION))
    );
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["appVersion"].as_str(), Some(VERSION));
    let values = yaml(&format!("{CHART}/values.yaml"));
    assert_eq!(
        (values["image"]["repository"].as_str(), values["image"]["tag"].as_str()),
        (Some("fabric-sync"), Some(""))
    );
}

#[test]
fn dockerfile_builds_with_the_readme_command_and_runs_non_root_without_a_shell() {
    let dockerfile = read("Dockerfile");
    let joined = dockerfile.replace("\\\n", " ");
    let build = joined
        .lines()
        .filter(|l| l.starts_with("RUN"))
        .find_map(|l| l.find("cargo build").map(|i| l[i..].split("&&").next().unwrap().trim().to_string()))
        .expect("a RUN with cargo build");
    assert_eq!(build, "cargo build --release --locked --bins");
    assert!(read("README.md").contains(&format!("`{build}`")), "README no longer gives the image's build command");
    // The toolchain image is at least the workspace's rust-version.
    let from: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    let rust = from[0].split_whitespace().nth(1).unwrap();
    let tag: Vec<u32> =
        rust.trim_start_matches("rust:").split('-').next().unwrap().split('.').map(|n| n.parse().unwrap()).collect();
    let cargo: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let msrv: Vec<u32> = cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap()
        .split('.')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(tag >= msrv, "build image {rust} is older than rust-version {msrv:?}");
    // Runtime stage: no shell in the image, none needed to start, a numeric non-root user that
    // is the uid the manifests run as.
    let runtime = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    assert!(runtime.lines().nth(1).unwrap().contains("distroless"), "runtime image with no shell");
    assert!(!runtime.contains("\nSHELL") && !runtime.contains("\nRUN"), "the runtime stage runs nothing");
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("USER in the runtime stage");
    let uid: i64 = user.split(':').next().unwrap().parse().expect("a numeric USER (runAsNonRoot checks it)");
    assert_ne!(uid, 0);
    let entrypoint: Vec<String> =
        serde_json::from_str(runtime.lines().find_map(|l| l.strip_prefix("ENTRYPOINT ")).unwrap()).expect("exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/fabric-sync"]);
    let cmd: Vec<String> = serde_json::from_str(runtime.lines().find_map(|l| l.strip_prefix("CMD ")).unwrap()).unwrap();
    assert!(schema().contains_key(&format!("fabric-sync {}", cmd.join(" "))), "CMD {cmd:?}");
    let controller = base_controller();
    let mock: Deployment = find(&format!("{MOCK}/mock-ufm.yaml"), "Deployment", "mock-ufm");
    for (what, spec) in [("controller", pod_spec(&controller)), ("mock-ufm", pod_spec(&mock))] {
        assert_eq!(spec.security_context.as_ref().and_then(|s| s.run_as_user), Some(uid), "{what}");
    }
    assert_eq!(ds_pod_spec(&base_agent()).security_context.as_ref().and_then(|s| s.run_as_user), Some(uid));
}
