//! Tests of the UFM settings: validation naming the setting, the secret directory and its re-reading.

use super::*;

fn args() -> UfmArgs {
    UfmArgs {
        address: Some("ufm.example".into()),
        username: Some("admin".into()),
        password: Some(Secret::new("s3cret-pw")),
        ..UfmArgs::default()
    }
}

#[test]
fn default_args_are_what_clap_gives() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        ufm: UfmArgs,
    }
    let parsed = Cli::try_parse_from(["x"]).unwrap().ufm;
    assert_eq!(format!("{parsed:?}"), format!("{:?}", UfmArgs::default()));
}

#[test]
fn defaults_follow_ib_kubernetes() {
    let s = UfmSettings::from_args(&args()).unwrap();
    assert_eq!(s.base_url(), "https://ufm.example:443");
    let mut a = args();
    a.scheme = Some("HTTP".into());
    a.port = Some("0".into());
    assert_eq!(UfmSettings::from_args(&a).unwrap().base_url(), "http://ufm.example:80");
    a.address = Some("fd00::1".into());
    assert_eq!(UfmSettings::from_args(&a).unwrap().base_url(), "http://[fd00::1]:80");
}

#[test]
fn an_address_with_port_scheme_or_path_is_refused_naming_where_each_part_goes() {
    let refused = |addr: &str| {
        let a = UfmArgs { address: Some(addr.into()), ..args() };
        let e = UfmSettings::from_args(&a).expect_err(addr);
        assert!(e.to_string().starts_with("UFM_ADDRESS (--ufm-address): "), "{e}");
        e.to_string()
    };
    let m = refused("ufm.example:8443");
    assert!(m.contains("(it holds a port): set UFM_ADDRESS=ufm.example, UFM_PORT=8443"), "{m}");
    let m = refused("https://ufm.example");
    assert!(m.contains("(it holds a scheme): set UFM_ADDRESS=ufm.example, UFM_HTTP_SCHEMA=https"), "{m}");
    let m = refused("[fd00::1]:8443");
    assert!(m.contains("set UFM_ADDRESS=[fd00::1], UFM_PORT=8443"), "{m}");
    let m = refused("ufm.example/");
    assert!(m.contains("(it ends in a slash): set UFM_ADDRESS=ufm.example"), "{m}");
    let m = refused("HTTPS://10.0.0.5:443/ufmRest/");
    assert!(
        m.contains("it holds a scheme, it holds a port, it holds a path; fabric-sync adds /ufmRest itself): set UFM_ADDRESS=10.0.0.5, UFM_HTTP_SCHEMA=https, UFM_PORT=443"),
        "{m}"
    );
    let m = refused("https://admin:hunter2@ufm.example");
    assert!(!m.contains("hunter2") && m.contains("<redacted>@ufm.example"), "{m}");
    assert!(m.contains("UFM_USERNAME") && m.contains("UFM_PASSWORD"), "{m}");
    assert!(refused("ufm.example:").contains("put a port in UFM_PORT"));
    assert!(refused("[fd00::zz]").contains("not a valid IPv6 address"));
    assert!(refused("ufm example").contains("' '"));
    assert!(refused("-ufm").contains("not a valid host name"));
}

#[test]
fn bare_hosts_and_ipv6_addresses_are_accepted() {
    for (addr, url) in [
        ("ufm.example", "https://ufm.example:443"),
        ("10.0.0.5", "https://10.0.0.5:443"),
        ("fd00::1", "https://[fd00::1]:443"),
        ("[fd00::1]", "https://[fd00::1]:443"),
        ("::1", "https://[::1]:443"),
        ("fd00::1:8443", "https://[fd00::1:8443]:443"),
        ("ufm_host-1.lab", "https://ufm_host-1.lab:443"),
    ] {
        let a = UfmArgs { address: Some(addr.into()), ..args() };
        assert_eq!(UfmSettings::from_args(&a).map(|s| s.base_url()).map_err(|e| e.to_string()), Ok(url.into()));
    }
}

#[test]
fn debug_print_shows_no_secret() {
    let mut a = args();
    a.token = Some(Secret::new("tok-abc123"));
    let s = UfmSettings::from_args(&a).unwrap();
    let shown = format!("{s:?} {:?} {a:?}", s.credentials.current().unwrap());
    assert!(!shown.contains("s3cret-pw") && !shown.contains("tok-abc123"), "{shown}");
}

#[test]
fn secret_dir_wins_and_is_reread_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("UFM_USERNAME"), "admin\n").unwrap();
    std::fs::write(dir.path().join("UFM_PASSWORD"), "first\n").unwrap();
    let mut a = args();
    a.secret_dir = Some(dir.path().to_path_buf());
    let s = UfmSettings::from_args(&a).unwrap();
    let pw = |s: &UfmSettings| match s.credentials.current().unwrap().auth {
        UfmAuth::Basic { password, .. } => password.expose().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(pw(&s), "first");
    // Rotation: new file content with a new modification time.
    std::fs::remove_file(dir.path().join("UFM_PASSWORD")).unwrap();
    std::fs::write(dir.path().join("UFM_PASSWORD"), "second").unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("UFM_PASSWORD"))
        .and_then(|f| f.set_modified(later))
        .unwrap();
    assert_eq!(pw(&s), "second");
}

#[test]
fn token_wins_over_basic_and_noop_needs_nothing() {
    let mut a = args();
    a.token = Some(Secret::new("t"));
    assert!(matches!(UfmSettings::from_args(&a).unwrap().credentials.current().unwrap().auth, UfmAuth::Token(_)));
    let noop = UfmArgs { sm_plugin: "noop".into(), ..args() };
    let noop = UfmArgs { address: None, username: None, password: None, ..noop };
    assert_eq!(UfmSettings::from_args(&noop).unwrap().plugin, SmPlugin::Noop);
}
