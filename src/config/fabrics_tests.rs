//! Tests of the fabrics file: the sample parses, each mistake is refused naming its field.

use super::*;

fn secret_dir(user: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("UFM_USERNAME"), user).expect("write");
    std::fs::write(dir.path().join("UFM_PASSWORD"), "pw\n").expect("write");
    dir
}

fn two_fabrics(a: &Path, b: &Path, storage_pool: (&str, &str)) -> String {
    format!(
        r#"
fabrics:
  - name: compute
    ufm: {{address: ufm-a.example.com, port: 8443, secretDir: {}}}
    nodeSelector: {{matchLabels: {{fabric-sync.io/fabric: compute}}}}
    guidPool: {{start: "02:00:00:00:00:00:00:00", end: "02:00:00:00:7f:ff:ff:ff"}}
    resourceNames: [nvidia.com/ib_compute]
  - name: storage
    ufm: {{address: ufm-b.example.com, secretDir: {}}}
    nodeSelector: {{matchLabels: {{fabric-sync.io/fabric: storage}}}}
    guidPool: {{start: "{}", end: "{}"}}
"#,
        a.display(),
        b.display(),
        storage_pool.0,
        storage_pool.1
    )
}

const STORAGE: (&str, &str) = ("02:00:00:00:80:00:00:00", "02:00:00:00:ff:ff:ff:ff");

fn parse_err(text: &str) -> String {
    match parse(text, &UfmArgs::default()) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn two_fabrics_parse_with_their_own_ufm_pool_and_selector() {
    let (a, b) = (secret_dir("alice"), secret_dir("bob"));
    let s = parse(&two_fabrics(a.path(), b.path(), STORAGE), &UfmArgs::default()).expect("valid");
    assert_eq!(s.fabrics.len(), 2);
    let compute = s.get("compute").expect("compute");
    assert_eq!(compute.ufm.base_url(), "https://ufm-a.example.com:8443");
    assert_eq!(compute.resource_names, vec!["nvidia.com/ib_compute".to_string()]);
    assert_eq!(compute.node_selector.get("fabric-sync.io/fabric").map(String::as_str), Some("compute"));
    let storage = s.get("storage").expect("storage");
    assert_eq!(storage.ufm.base_url(), "https://ufm-b.example.com:443");
    assert_eq!(storage.guid_range.start().to_string().to_ascii_lowercase(), "02:00:00:00:80:00:00:00");
    // Each fabric reads its own secret directory.
    let user = |f: &FabricSettings| match f.ufm.credentials.current().expect("creds").auth {
        crate::config::UfmAuth::Basic { username, .. } => username,
        other => panic!("{other:?}"),
    };
    assert_eq!(user(compute), "alice");
    assert_eq!(user(storage), "bob");
    assert_eq!(s.pick(Some("storage")).map(|f| f.name.as_str()), Ok("storage"));
    assert!(s.pick(None).unwrap_err().contains("--fabric is required"));
    assert!(s.pick(Some("nope")).unwrap_err().contains("compute, storage"));
}

#[test]
fn the_sample_in_config_is_valid_apart_from_its_secret_dirs() {
    let text = include_str!("../../config/fabrics.yaml");
    let e = parse_err(text);
    // Only the mounted secret directories are missing on a build machine.
    assert!(e.contains("fabrics[0].ufm.secretDir"), "{e}");
}

#[test]
fn overlapping_pools_are_refused_naming_both_fabrics() {
    let (a, b) = (secret_dir("a"), secret_dir("b"));
    let e = parse_err(&two_fabrics(a.path(), b.path(), ("02:00:00:00:7f:00:00:00", "02:00:00:00:ff:ff:ff:ff")));
    assert!(e.contains("fabrics[1].guidPool") && e.contains("fabrics[0].guidPool"), "{e}");
}

#[test]
fn a_bad_pool_end_is_named() {
    let (a, b) = (secret_dir("a"), secret_dir("b"));
    let e = parse_err(&two_fabrics(a.path(), b.path(), ("02:00:00:00:80:00:00:00", "zz")));
    assert!(e.starts_with("FABRIC_SYNC_FABRICS_FILE (--fabrics-file): fabrics[1].guidPool.end:"), "{e}");
    let e = parse_err(&two_fabrics(a.path(), b.path(), ("02:00:00:00:ff:00:00:00", "02:00:00:00:80:00:00:00")));
    assert!(e.contains("fabrics[1].guidPool.end"), "{e}");
}

#[test]
fn names_must_be_unique_dns_labels() {
    let (a, b) = (secret_dir("a"), secret_dir("b"));
    let text = two_fabrics(a.path(), b.path(), STORAGE);
    let e = parse_err(&text.replace("name: storage", "name: compute"));
    assert!(e.contains("fabrics[1].name") && e.contains("unique"), "{e}");
    let e = parse_err(&text.replace("name: storage", "name: Storage_1"));
    assert!(e.contains("fabrics[1].name") && e.contains("DNS label"), "{e}");
}

#[test]
fn a_missing_secret_dir_or_key_is_named() {
    let a = secret_dir("a");
    let text = two_fabrics(a.path(), Path::new("/nonexistent/ufm-storage"), STORAGE);
    let e = parse_err(&text);
    assert!(e.contains("fabrics[1].ufm.secretDir"), "{e}");
    let empty = tempfile::tempdir().expect("tempdir");
    let e = parse_err(&two_fabrics(a.path(), empty.path(), STORAGE));
    assert!(e.contains("fabrics[1].ufm"), "{e}");
    assert!(!e.contains("pw"), "no secret in errors: {e}");
}

#[test]
fn a_bad_address_is_named() {
    let (a, b) = (secret_dir("a"), secret_dir("b"));
    let text = two_fabrics(a.path(), b.path(), STORAGE).replace("ufm-b.example.com", "https://ufm-b:443/x");
    let e = parse_err(&text);
    assert!(e.contains("fabrics[1].ufm.address"), "{e}");
}

#[test]
fn unknown_fields_empty_lists_and_shared_resource_names_are_refused() {
    let (a, b) = (secret_dir("a"), secret_dir("b"));
    let text = two_fabrics(a.path(), b.path(), STORAGE);
    let e = parse_err(&text.replace("guidPool: {start: \"02:00:00:00:80", "guidpool: {start: \"02:00:00:00:80"));
    assert!(e.contains("fabrics[1]") && e.contains("guidpool"), "{e}");
    assert!(parse_err("fabrics: []").contains("lists no fabric"));
    let shared = text.replace(
        "guidPool: {start: \"02:00:00:00:80:00:00:00\"",
        "resourceNames: [nvidia.com/ib_compute]\n    guidPool: {start: \"02:00:00:00:80:00:00:00\"",
    );
    let e = parse_err(&shared);
    assert!(e.contains("fabrics[1].resourceNames[0]"), "{e}");
}

#[test]
fn hcas_name_each_fabrics_devices_once() {
    let (a, b) = (secret_dir("a"), secret_dir("b"));
    let text = two_fabrics(a.path(), b.path(), STORAGE);
    let with = |compute: &str, storage: &str| {
        text.replace(
            "    resourceNames: [nvidia.com/ib_compute]\n",
            &format!("    resourceNames: [nvidia.com/ib_compute]\n    hcas: {compute}\n"),
        )
        .replace(
            "    guidPool: {start: \"02:00:00:00:80",
            &format!("    hcas: {storage}\n    guidPool: {{start: \"02:00:00:00:80"),
        )
    };
    let s = parse(&with("[mlx5_0, mlx5_1]", "[mlx5_4]"), &UfmArgs::default()).expect("valid");
    assert_eq!(s.get("compute").map(|f| f.hcas.clone()), Some(vec!["mlx5_0".to_string(), "mlx5_1".to_string()]));
    let specs = s.engine_specs();
    assert_eq!(specs[1].hcas, vec!["mlx5_4".to_string()], "the engine gets them");
    let e = parse_err(&with("[mlx5_0]", "[mlx5_0]"));
    assert!(e.contains("fabrics[1].hcas[0]") && e.contains("fabrics[0]"), "{e}");
    let e = parse_err(&with("[\"mlx5 0\"]", "[]"));
    assert!(e.contains("fabrics[0].hcas[0]") && e.contains("/sys/class/infiniband"), "{e}");
    assert!(parse(&text, &UfmArgs::default()).expect("valid").fabrics.iter().all(|f| f.hcas.is_empty()));
}

#[test]
fn single_ufm_settings_conflict_with_a_fabrics_file() {
    let base = UfmArgs { address: Some("ufm.example.com".into()), ..UfmArgs::default() };
    let e = FabricsSettings::from_file(Path::new("/nonexistent"), &base).unwrap_err().to_string();
    assert!(e.contains("UFM_ADDRESS (--ufm-address)") && e.contains("cannot be combined"), "{e}");
    let e = FabricsSettings::from_file(Path::new("/nonexistent/f.yaml"), &UfmArgs::default()).unwrap_err();
    assert!(e.to_string().contains("cannot read /nonexistent/f.yaml"), "{e}");
}

#[test]
fn without_a_file_the_single_ufm_settings_are_one_default_fabric() {
    let args = UfmArgs { sm_plugin: "noop".into(), ..UfmArgs::default() };
    let ufm = UfmSettings::from_args(&args).expect("noop");
    let s = FabricsSettings::single(ufm, GuidRange::DEFAULT);
    assert_eq!(s.fabrics.len(), 1);
    assert_eq!(s.fabrics[0].name, DEFAULT_FABRIC);
    assert!(s.fabrics[0].node_selector.is_empty());
    assert_eq!(s.pick(None).map(|f| f.name.as_str()), Ok("default"));
}
