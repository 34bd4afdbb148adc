//! Bad input of every kind the foundation parses: each case must give its specific error
//! (checked by reason and by words of the message a person acts on) and none may panic.

use std::collections::BTreeMap;

use fabric_sync::config::{EngineArgs, EngineSettings, UfmArgs, UfmSettings};
use fabric_sync::ib::{Guid, PKey};
use fabric_sync::netdef::{parse_nad, parse_network_status, parse_networks, parse_smc};

/// (what is fed, the error it must give)
struct Case {
    name: &'static str,
    run: fn() -> Result<(), (String, String)>,
    reason: &'static str,
    says: &'static str,
}

fn guid(s: &str) -> Result<(), (String, String)> {
    s.parse::<Guid>().map(drop).map_err(|e| (e.reason().to_string(), e.to_string()))
}

fn pkey(s: &str) -> Result<(), (String, String)> {
    PKey::parse_tenant(s).map(drop).map_err(|e| (e.reason().to_string(), e.to_string()))
}

fn networks(s: &str) -> Result<(), (String, String)> {
    let nets = parse_networks(s).map_err(|e| (e.reason().to_string(), e.to_string()))?;
    for n in nets {
        n.requested_guid().map_err(|e| (e.reason().to_string(), e.to_string()))?;
    }
    Ok(())
}

fn nad(config: &str) -> Result<(), (String, String)> {
    nad_ann(&[], config)
}

fn nad_ann(ann: &[(&str, &str)], config: &str) -> Result<(), (String, String)> {
    let ann: BTreeMap<String, String> = ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match parse_nad("tenant-a", "ib-net", &ann, config) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(("NotOurs".into(), "not an ib-sriov network".into())),
        Err(e) => Err((e.reason().to_string(), e.to_string())),
    }
}

fn smc(spec: &str) -> Result<(), (String, String)> {
    smc_ann(&[], spec)
}

fn smc_ann(ann: &[(&str, &str)], spec: &str) -> Result<(), (String, String)> {
    let ann: BTreeMap<String, String> = ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let v: serde_json::Value = serde_json::from_str(spec).map_err(|e| ("TestJson".into(), e.to_string()))?;
    parse_smc("tenant-a", "ib-smc", &ann, &v).map(drop).map_err(|e| (e.reason().to_string(), e.to_string()))
}

fn status(s: &str) -> Result<(), (String, String)> {
    parse_network_status(s).map(drop).map_err(|e| (e.reason().to_string(), e.to_string()))
}

fn engine(f: fn(&mut EngineArgs)) -> Result<(), (String, String)> {
    let mut a = EngineArgs::default();
    f(&mut a);
    EngineSettings::from_args(&a).map(drop).map_err(|e| (e.reason().to_string(), e.to_string()))
}

fn ufm(f: fn(&mut UfmArgs)) -> Result<(), (String, String)> {
    let mut a = UfmArgs {
        address: Some("ufm.example".into()),
        username: Some("admin".into()),
        password: Some("pw".parse().unwrap_or_default()),
        ..UfmArgs::default()
    };
    f(&mut a);
    UfmSettings::from_args(&a).map(drop).map_err(|e| (e.reason().to_string(), e.to_string()))
}

const CFG: &str = "InvalidConfiguration";

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // GUIDs
        Case { name: "guid empty", run: || guid(""), reason: "GuidEmpty", says: "empty" },
        Case { name: "guid short", run: || guid("02:00:00:00:00:01"), reason: "GuidWrongLength", says: "12 hex digits" },
        Case { name: "guid long", run: || guid("020000000000000001"), reason: "GuidWrongLength", says: "18 hex digits" },
        Case { name: "guid non-hex", run: || guid("02:00:00:00:00:00:00:zz"), reason: "GuidNonHex", says: "'z'" },
        Case { name: "guid zero", run: || guid("0000000000000000"), reason: "GuidZero", says: "reserved" },
        Case { name: "guid all ones", run: || guid("FF:FF:FF:FF:FF:FF:FF:FF"), reason: "GuidAllOnes", says: "reserved" },
        Case { name: "guid mixed separators", run: || guid("02:00-00:00:00:00:00:01"), reason: "GuidBadGrouping", says: "separators" },
        Case { name: "guid 20-byte IPoIB address", run: || guid("00:00:10:49:fe:80:00:00:00:00:00:00:02:00:00:00:00:00:00:01"), reason: "GuidWrongLength", says: "40 hex digits" },
        // pkeys
        Case { name: "pkey decimal", run: || pkey("1000"), reason: "PKeyNotHexPrefixed", says: "\"0x1000\"" },
        Case { name: "pkey zero", run: || pkey("0x0000"), reason: "PKeyZero", says: "0x0001..0x7ffe" },
        Case { name: "pkey default partition", run: || pkey("0x7fff"), reason: "PKeyDefaultPartition", says: "management" },
        Case { name: "pkey too large", run: || pkey("0x18000"), reason: "PKeyTooLarge", says: "16 bits" },
        Case { name: "pkey not hex", run: || pkey("0xgg"), reason: "PKeyNotHex", says: "hex digits" },
        Case { name: "pkey empty", run: || pkey(" "), reason: "PKeyEmpty", says: "empty" },
        Case { name: "pkey decimal with no hex reading", run: || pkey("20000"), reason: "PKeyNotHexPrefixed", says: "\"0x4e20\" if you meant decimal 20000" },
        Case { name: "pkey digits usable neither way", run: || pkey("99999"), reason: "PKeyNotHexPrefixed", says: "write 0x followed by 1 to 4 hex digits" },
        // networks annotation
        Case { name: "networks bad json", run: || networks("[{\"name\": }]"), reason: "InvalidNetworksAnnotation", says: "not valid JSON" },
        Case { name: "networks json object not list", run: || networks("{\"name\":\"a\"}"), reason: "InvalidNetworksAnnotation", says: "must be a list" },
        Case { name: "networks element without name", run: || networks("[{\"interface\":\"net1\"}]"), reason: "InvalidNetworksAnnotation", says: "has no \"name\"" },
        Case { name: "networks name not a string", run: || networks("[{\"name\":5}]"), reason: "InvalidNetworksAnnotation", says: "must be a string" },
        Case { name: "networks uppercase name", run: || networks("Tenant/IB"), reason: "InvalidNetworksAnnotation", says: "not a valid" },
        Case { name: "networks bad namespace", run: || networks("a_b/ib"), reason: "InvalidNetworksAnnotation", says: "namespace" },
        Case { name: "networks empty element", run: || networks("ib,,ib2"), reason: "InvalidNetworksAnnotation", says: "element 1" },
        Case { name: "networks cni-args not object", run: || networks("[{\"name\":\"a\",\"cni-args\":\"guid\"}]"), reason: "InvalidNetworksAnnotation", says: "cni-args" },
        Case { name: "networks interface too long", run: || networks("ib@averyveryverylongname"), reason: "InvalidNetworksAnnotation", says: "interface" },
        Case { name: "networks bad requested guid", run: || networks("[{\"name\":\"a\",\"infiniband-guid\":\"02:00\"}]"), reason: "InvalidGuid", says: "infiniband-guid" },
        // NAD configs
        Case { name: "nad numeric pkey", run: || nad(r#"{"type":"ib-sriov","pkey":4096}"#), reason: "InvalidNetwork", says: "spec.config.pkey is the number 4096, not a string: write it quoted with a 0x prefix: \"pkey\": \"0x4096\" if you meant hex, \"pkey\": \"0x1000\" if you meant decimal 4096" },
        Case { name: "nad pkey in a list", run: || nad(r#"{"type":"ib-sriov","pkey":["0x6"]}"#), reason: "InvalidNetwork", says: "a network has exactly one pkey; write it as a string, not a list: \"pkey\": \"0x6\"" },
        Case { name: "nad pkey an object", run: || nad(r#"{"type":"ib-sriov","pkey":{"value":"0x6"}}"#), reason: "InvalidNetwork", says: "is an object" },
        Case { name: "nad pkey a bool", run: || nad(r#"{"type":"ib-sriov","pkey":true}"#), reason: "InvalidNetwork", says: "is true, not a string: write the pkey as a quoted hex string" },
        Case { name: "nad two ib-sriov plugins", run: || nad(r#"{"plugins":[{"type":"ib-sriov","pkey":"0x5"},{"type":"ib-sriov","pkey":"0x6"}]}"#), reason: "InvalidNetwork", says: "spec.config.plugins has 2 ib-sriov entries (spec.config.plugins[0], spec.config.plugins[1])" },
        Case { name: "nad decimal string pkey", run: || nad(r#"{"type":"ib-sriov","pkey":"4096"}"#), reason: "InvalidPKey", says: "0x4096" },
        Case { name: "nad broken json", run: || nad(r#"{"type":"ib-sriov","pkey":"0x1""#), reason: "InvalidNetwork", says: "not valid JSON" },
        Case { name: "nad capability not bool", run: || nad(r#"{"type":"ib-sriov","capabilities":{"infinibandGUID":"yes"}}"#), reason: "InvalidNetwork", says: "capabilities.infinibandGUID" },
        Case { name: "nad ibKubernetesEnabled not bool", run: || nad(r#"{"type":"ib-sriov","ibKubernetesEnabled":"true"}"#), reason: "InvalidNetwork", says: "ibKubernetesEnabled" },
        Case { name: "nad plugin pkey 0x7fff", run: || nad(r#"{"plugins":[{"type":"ib-sriov","pkey":"0x7fff"}]}"#), reason: "InvalidPKey", says: "plugins[0].pkey" },
        Case { name: "nad auto pkey with a pkey", run: || nad_ann(&[("fabric-sync.io/pkey", "auto")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "conflicts with spec.config.pkey \"0x5\"" },
        Case { name: "nad membership annotation", run: || nad_ann(&[("fabric-sync.io/membership", "partial")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "fabric-sync.io/membership" },
        Case { name: "nad membership conflicts with pkey bit", run: || nad_ann(&[("fabric-sync.io/membership", "limited")], r#"{"type":"ib-sriov","pkey":"0x8005"}"#), reason: "InvalidNetwork", says: "0x8000" },
        Case { name: "nad service level 16", run: || nad_ann(&[("fabric-sync.io/service-level", "16")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "fabric-sync.io/service-level=\"16\": service level \"16\" is not one UFM accepts: use a whole number from 0 to 15" },
        Case { name: "nad service level text", run: || nad_ann(&[("fabric-sync.io/service-level", "high")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "0 to 15" },
        Case { name: "nad mtu 1500", run: || nad_ann(&[("fabric-sync.io/mtu-limit", "1500")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "fabric-sync.io/mtu-limit=\"1500\": MTU limit \"1500\" is not one UFM accepts: use 2 (2048-byte MTU) or 4 (4096-byte MTU)" },
        Case { name: "nad mtu 8", run: || nad_ann(&[("fabric-sync.io/mtu-limit", "8")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "use 2 (2048-byte MTU) or 4" },
        Case { name: "nad index0 yes", run: || nad_ann(&[("fabric-sync.io/index0", "yes")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "\"true\" or \"false\"" },
        Case { name: "nad rate limit negative", run: || nad_ann(&[("fabric-sync.io/rate-limit", "-5")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "not a rate UFM accepts" },
        Case { name: "nad rate limit UFM does not take", run: || nad_ann(&[("fabric-sync.io/rate-limit", "150")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "fabric-sync.io/rate-limit=\"150\": rate limit \"150\" is not a rate UFM accepts: use one of 2.5, 5, 10, 14, 20, 25, 30, 40, 56, 60, 80, 100, 112, 120, 168, 200, 300 (Gb/s)" },
        Case { name: "nad rate limit with a unit", run: || nad_ann(&[("fabric-sync.io/rate-limit", "200Gbps")], r#"{"type":"ib-sriov","pkey":"0x5"}"#), reason: "InvalidNetwork", says: "use one of 2.5, 5," },
        // SpiderMultusConfig
        Case { name: "smc unquoted pkey", run: || smc(r#"{"cniType":"ib-sriov","ibsriov":{"pkey":1000}}"#), reason: "InvalidNetwork", says: "spec.ibsriov.pkey" },
        Case { name: "smc pkey without 0x", run: || smc(r#"{"cniType":"ib-sriov","ibsriov":{"pkey":"1000"}}"#), reason: "InvalidPKey", says: "SpiderMultusConfig tenant-a/ib-smc" },
        Case { name: "smc pkey in a list", run: || smc(r#"{"cniType":"ib-sriov","ibsriov":{"pkey":["0x6"]}}"#), reason: "InvalidNetwork", says: "write it as a string, not a list: pkey: \"0x6\"" },
        Case { name: "smc rate limit", run: || smc_ann(&[("fabric-sync.io/rate-limit", "150")], r#"{"cniType":"ib-sriov","ibsriov":{"pkey":"0x6"}}"#), reason: "InvalidNetwork", says: "SpiderMultusConfig tenant-a/ib-smc: annotation fabric-sync.io/rate-limit=\"150\"" },
        Case { name: "smc ibsriov not object", run: || smc(r#"{"cniType":"ib-sriov","ibsriov":[]}"#), reason: "InvalidNetwork", says: "spec.ibsriov" },
        Case { name: "smc enableIbKubernetes string", run: || smc(r#"{"cniType":"ib-sriov","ibsriov":{"enableIbKubernetes":"yes"}}"#), reason: "InvalidNetwork", says: "enableIbKubernetes" },
        // network-status
        Case { name: "network-status not a list", run: || status("{\"name\":\"a\"}"), reason: "InvalidNetworkStatus", says: "JSON list" },
        Case { name: "network-status bad pci", run: || status(r#"[{"name":"a","device-info":{"pci":{"pci-address":"zz"}}}]"#), reason: "InvalidNetworkStatus", says: "pci-address" },
        // settings
        Case { name: "setting range start bad", run: || engine(|a| a.guid_range_start = "02:00".into()), reason: CFG, says: "GUID_POOL_RANGE_START" },
        Case { name: "setting range end zero", run: || engine(|a| a.guid_range_end = "00:00:00:00:00:00:00:00".into()), reason: CFG, says: "GUID_POOL_RANGE_END" },
        Case { name: "setting range inverted", run: || engine(|a| a.guid_range_start = "03:00:00:00:00:00:00:00".into()), reason: CFG, says: "GUID_POOL_RANGE_START ≤ GUID_POOL_RANGE_END" },
        Case { name: "setting periodic update zero", run: || engine(|a| a.periodic_update = "0".into()), reason: CFG, says: "DAEMON_PERIODIC_UPDATE" },
        Case { name: "setting periodic update text", run: || engine(|a| a.periodic_update = "often".into()), reason: CFG, says: "DAEMON_PERIODIC_UPDATE" },
        Case { name: "setting batch window unitless", run: || engine(|a| a.batch_window = "20".into()), reason: CFG, says: "FABRIC_SYNC_BATCH_WINDOW" },
        Case { name: "setting reserved slots eat capacity", run: || engine(|a| a.pkey_reserved_slots = 128), reason: CFG, says: "no room" },
        Case { name: "setting mass removal share", run: || engine(|a| a.mass_removal_share = "1.5".into()), reason: CFG, says: "FABRIC_SYNC_MASS_REMOVAL_SHARE" },
        Case { name: "setting pkey range inverted", run: || engine(|a| a.pkey_range = Some("0x2000-0x1000".into())), reason: CFG, says: "FABRIC_SYNC_PKEY_RANGE (--pkey-range): start 0x2000 is after end 0x1000" },
        Case { name: "setting pkey range bare numbers", run: || engine(|a| a.pkey_range = Some("1000-1fff".into())), reason: CFG, says: "FABRIC_SYNC_PKEY_RANGE (--pkey-range): start bound \"1000\"" },
        Case { name: "setting policy without file", run: || engine(|a| a.policy_mode = fabric_sync::config::PolicyMode::Enforce), reason: CFG, says: "FABRIC_SYNC_POLICY_FILE" },
        Case { name: "setting sm plugin", run: || ufm(|a| a.sm_plugin = "opensm".into()), reason: CFG, says: "DAEMON_SM_PLUGIN" },
        Case { name: "setting ufm address missing", run: || ufm(|a| a.address = None), reason: CFG, says: "UFM_ADDRESS" },
        Case { name: "setting ufm address with scheme", run: || ufm(|a| a.address = Some("https://ufm".into())), reason: CFG, says: "UFM_ADDRESS (--ufm-address): \"https://ufm\" must be a bare host name or IP address (it holds a scheme): set UFM_ADDRESS=ufm, UFM_HTTP_SCHEMA=https" },
        Case { name: "setting ufm address with port", run: || ufm(|a| a.address = Some("ufm.example:8443".into())), reason: CFG, says: "UFM_ADDRESS (--ufm-address): \"ufm.example:8443\" must be a bare host name or IP address (it holds a port): set UFM_ADDRESS=ufm.example, UFM_PORT=8443" },
        Case { name: "setting ufm address ipv6 with port", run: || ufm(|a| a.address = Some("[fd00::1]:8443".into())), reason: CFG, says: "set UFM_ADDRESS=[fd00::1], UFM_PORT=8443" },
        Case { name: "setting ufm address trailing slash", run: || ufm(|a| a.address = Some("ufm.example/".into())), reason: CFG, says: "(it ends in a slash): set UFM_ADDRESS=ufm.example" },
        Case { name: "setting ufm address url", run: || ufm(|a| a.address = Some("https://ufm.example:8443/ufmRest".into())), reason: CFG, says: "set UFM_ADDRESS=ufm.example, UFM_HTTP_SCHEMA=https, UFM_PORT=8443" },
        Case { name: "setting ufm address with password", run: || ufm(|a| a.address = Some("https://admin:pw-in-url@ufm".into())), reason: CFG, says: "\"https://<redacted>@ufm\"" },
        Case { name: "setting ufm address not an address", run: || ufm(|a| a.address = Some("ufm:example:x".into())), reason: CFG, says: "neither a host name nor an IP address" },
        Case { name: "setting ufm schema", run: || ufm(|a| a.scheme = Some("ftp".into())), reason: CFG, says: "UFM_HTTP_SCHEMA" },
        Case { name: "setting ufm port", run: || ufm(|a| a.port = Some("70000".into())), reason: CFG, says: "UFM_PORT" },
        Case { name: "setting ufm password missing", run: || ufm(|a| a.password = None), reason: CFG, says: "UFM_PASSWORD" },
        Case { name: "setting ufm no credentials", run: || ufm(|a| { a.password = None; a.username = None; }), reason: CFG, says: "no UFM credentials" },
        Case { name: "setting ufm certificate base64", run: || ufm(|a| a.certificate = Some("LS0tLS1CRUdJTi==".into())), reason: CFG, says: "UFM_CERTIFICATE" },
        Case { name: "setting ufm certificate broken pem", run: || ufm(|a| a.certificate = Some("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into())), reason: CFG, says: "does not parse" },
        Case { name: "setting ufm ca file missing", run: || ufm(|a| a.ca_file = Some("/nonexistent/ca.pem".into())), reason: CFG, says: "UFM_CA_FILE" },
        Case { name: "setting ufm insecure typo", run: || ufm(|a| a.insecure_skip_verify = "ture".into()), reason: CFG, says: "UFM_INSECURE_SKIP_VERIFY" },
        Case { name: "setting ufm client cert without key", run: || ufm(|a| a.client_cert = Some("/c.pem".into())), reason: CFG, says: "UFM_CLIENT_KEY_FILE" },
        Case { name: "setting ufm timeout zero", run: || ufm(|a| a.request_timeout = "0s".into()), reason: CFG, says: "UFM_REQUEST_TIMEOUT" },
        Case { name: "setting ufm max guids", run: || ufm(|a| a.max_guids_per_request = "0".into()), reason: CFG, says: "UFM_MAX_GUIDS_PER_REQUEST" },
    ]
}

#[test]
fn every_bad_input_gives_its_specific_error() {
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        let outcome = std::panic::catch_unwind(case.run);
        match outcome {
            Err(_) => failures.push(format!("{}: panicked", case.name)),
            Ok(Ok(())) => failures.push(format!("{}: was accepted", case.name)),
            Ok(Err((reason, message))) => {
                if message.contains("pw-in-url") {
                    failures.push(format!("{}: message shows a password: {message}", case.name));
                } else if reason != case.reason {
                    failures.push(format!("{}: reason {reason}, want {} ({message})", case.name, case.reason));
                } else if !message.contains(case.says) {
                    failures.push(format!("{}: message {message:?} does not say {:?}", case.name, case.says));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Prints the catalogue README shows: `cargo test --test bad_input -- --ignored --nocapture`.
#[test]
#[ignore = "prints README's bad-input catalogue"]
fn print_catalogue() {
    println!("| input | reason | what the user sees |\n|---|---|---|");
    for case in cases() {
        if let Err((reason, message)) = (case.run)() {
            println!("| {} | `{reason}` | {} |", case.name, message.replace('|', "\\|"));
        }
    }
}
