//! Fuzzing by property tests: every parser of outside input gets arbitrary text and
//! arbitrary (structured) JSON, must never panic, and what it accepts must be valid and
//! round-trip. Cases per property: `FUZZ_CASES` (default 1,000; README shows a long run).

use std::collections::BTreeMap;

use fabric_sync::engine::{AttachmentRequest, Policy, Slot};
use fabric_sync::ib::{Guid, PKey};
use fabric_sync::netdef::{
    NetworkKey, NetworkSelection, encode_networks, parse_nad, parse_network_status, parse_networks, parse_smc,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// Arbitrary JSON, biased toward the keys and values the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("name".to_string()),
        Just("namespace".to_string()),
        Just("interface".to_string()),
        Just("infiniband-guid".to_string()),
        Just("cni-args".to_string()),
        Just("type".to_string()),
        Just("pkey".to_string()),
        Just("plugins".to_string()),
        Just("capabilities".to_string()),
        Just("infinibandGUID".to_string()),
        Just("ibKubernetesEnabled".to_string()),
        Just("cniType".to_string()),
        Just("ibsriov".to_string()),
        Just("guid".to_string()),
        Just("device-info".to_string()),
        Just("pci".to_string()),
        Just("pci-address".to_string()),
        "[a-z-]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        Just(json!("ib-sriov")),
        Just(json!("0x1000")),
        Just(json!("0x7fff")),
        Just(json!("02:00:00:00:00:00:00:01")),
        Just(json!("0000:3b:00.2")),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The slot rule, written the obvious (quadratic) way: an element with an interface name is
/// that interface's slot; one without is the count of earlier interface-less elements of the
/// same network.
fn reference_slots(pod_namespace: &str, elements: &[NetworkSelection]) -> Vec<(NetworkKey, Slot)> {
    let mut out: Vec<(NetworkKey, Slot)> = Vec::new();
    for e in elements {
        let network = NetworkKey::new(e.namespace().unwrap_or(pod_namespace), e.name());
        let slot = match e.interface() {
            Some(i) => Slot::Interface(i.into()),
            None => {
                let n = out.iter().filter(|(k, s)| *k == network && matches!(s, Slot::Occurrence(_))).count();
                Slot::Occurrence(u16::try_from(n).unwrap_or(u16::MAX))
            }
        };
        out.push((network, slot));
    }
    out
}

/// One element of a networks annotation in text form, from a small vocabulary so that the
/// same network (named with and without the pod's namespace) comes back often.
fn element_text() -> impl Strategy<Value = String> {
    let ns = prop_oneof![Just(None), Just(Some("ns")), Just(Some("other"))];
    let name = prop_oneof![Just("a"), Just("b"), Just("c")];
    let iface = prop_oneof![3 => Just(None), 1 => Just(Some("net1")), 1 => Just(Some("net2"))];
    (ns, name, iface).prop_map(|(ns, name, iface)| {
        let mut s = ns.map(|n| format!("{n}/")).unwrap_or_default();
        s.push_str(name);
        if let Some(i) = iface {
            s.push('@');
            s.push_str(i);
        }
        s
    })
}

#[test]
fn slots_of_a_huge_annotation_are_counted_in_linear_time() {
    // 60,000 elements of one network: counting by rescanning (the old way) takes minutes in a
    // debug build; counting per network takes well under a second.
    let text = vec!["ib"; 60_000].join(",");
    let els = parse_networks(&text).expect("a valid annotation");
    let started = std::time::Instant::now();
    let reqs = AttachmentRequest::from_selections("ns", &els);
    let took = started.elapsed();
    assert_eq!(reqs.len(), 60_000);
    assert!(reqs.iter().enumerate().all(|(i, r)| r.slot == Slot::Occurrence(i as u16)));
    assert!(took < std::time::Duration::from_secs(5), "from_selections took {took:?} for 60,000 elements");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn from_selections_gives_the_slots_of_the_reference_rule(
        texts in prop::collection::vec(element_text(), 0..40),
        as_json in any::<bool>(),
    ) {
        let annotation = if as_json {
            let els: Vec<Value> = texts
                .iter()
                .map(|t| {
                    let (rest, iface) = t.split_once('@').map_or((t.as_str(), None), |(r, i)| (r, Some(i)));
                    let (ns, name) = rest.split_once('/').map_or((None, rest), |(n, m)| (Some(n), m));
                    let mut o = serde_json::Map::new();
                    o.insert("name".into(), json!(name));
                    if let Some(n) = ns { o.insert("namespace".into(), json!(n)); }
                    if let Some(i) = iface { o.insert("interface".into(), json!(i)); }
                    Value::Object(o)
                })
                .collect();
            Value::Array(els).to_string()
        } else {
            texts.join(",")
        };
        let els = match parse_networks(&annotation) {
            Ok(els) => els,
            Err(e) if texts.is_empty() => { let _ = e; return Ok(()); }
            Err(e) => return Err(TestCaseError::fail(format!("{annotation}: {e}"))),
        };
        prop_assert_eq!(els.len(), texts.len());
        let got: Vec<(NetworkKey, Slot)> =
            AttachmentRequest::from_selections("ns", &els).into_iter().map(|r| (r.network, r.slot)).collect();
        prop_assert_eq!(got, reference_slots("ns", &els));
    }

    #[test]
    fn guid_and_pkey_parsers_never_panic_and_accept_only_valid_values(s in ".{0,40}") {
        if let Ok(g) = s.parse::<Guid>() {
            prop_assert!(g.value() != 0 && g.value() != u64::MAX);
            prop_assert_eq!(g.to_string().parse::<Guid>(), Ok(g));
        }
        if let Ok((p, _)) = PKey::parse_tenant(&s) {
            prop_assert!((1..=0x7ffe).contains(&p.value()));
        }
    }

    #[test]
    fn networks_annotation_text_never_panics_and_round_trips(s in ".{0,80}") {
        if let Ok(els) = parse_networks(&s) {
            let again = parse_networks(&encode_networks(&els));
            prop_assert_eq!(again.as_ref().ok(), Some(&els));
            let _ = AttachmentRequest::from_selections("ns", &els);
        }
    }

    #[test]
    fn networks_annotation_json_never_panics_and_round_trips(v in json_value()) {
        let text = serde_json::to_string(&v).unwrap_or_default();
        if let Ok(els) = parse_networks(&text) {
            let again = parse_networks(&encode_networks(&els));
            prop_assert_eq!(again.as_ref().ok(), Some(&els));
            for e in &els {
                let _ = e.requested_guid();
            }
        }
    }

    #[test]
    fn nad_parsing_never_panics_and_accepts_only_tenant_pkeys(v in json_value(), raw in ".{0,60}") {
        let ann = BTreeMap::new();
        for text in [serde_json::to_string(&v).unwrap_or_default(), raw] {
            if let Ok(Some(n)) = parse_nad("ns", "n", &ann, &text) {
                if let Some(p) = n.pkey() {
                    prop_assert!((1..=0x7ffe).contains(&p.value()));
                }
            }
        }
    }

    #[test]
    fn smc_parsing_never_panics(v in json_value(), pkey in prop_oneof![json_value(), ".{0,10}".prop_map(Value::String)]) {
        let ann = BTreeMap::new();
        let _ = parse_smc("ns", "n", &ann, &v);
        let spec = json!({"cniType": "ib-sriov", "ibsriov": {"pkey": pkey}});
        if let Ok(Some(n)) = parse_smc("ns", "n", &ann, &spec) {
            if let Some(p) = n.pkey() {
                prop_assert!((1..=0x7ffe).contains(&p.value()));
            }
        }
    }

    #[test]
    fn network_status_and_policy_parsing_never_panic(v in json_value(), raw in ".{0,120}") {
        let _ = parse_network_status(&serde_json::to_string(&v).unwrap_or_default());
        let _ = parse_network_status(&raw);
        let _ = Policy::parse("fuzz", &raw);
        let yaml = serde_json::to_string(&json!({"rules": [v]})).unwrap_or_default();
        let _ = Policy::parse("fuzz", &yaml);
    }
}
