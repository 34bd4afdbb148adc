//! Fuzzing by property tests: every parser of outside input gets arbitrary text and
//! arbitrary (structured) JSON, must never panic, and what it accepts must be valid and
//! round-trip. Cases per property: `FUZZ_CASES` (default 1,000; README shows a long run).

use std::collections::BTreeMap;

use fabric_sync::engine::{AttachmentRequest, Policy};
use fabric_sync::ib::{Guid, PKey};
use fabric_sync::netdef::{encode_networks, parse_nad, parse_network_status, parse_networks, parse_smc};
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

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

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
