//! Tests of the wire forms: UFM's JSON for partitions, members and GUID lists, read and written.

use super::*;
use serde_json::{Value, json};

fn pk(v: u16) -> PKey {
    PKey::new(v).unwrap()
}

#[test]
fn add_body_defaults_to_full_membership_without_index0() {
    let m = parse_guids_body(br#"{"pkey":"0x0005","guids":["0002C903000E0B72","0x0002c903000e0b73"]}"#, false).unwrap();
    let Mutation::AddGuids { pkey, members, ip_over_ib, name } = m else {
        panic!("not an add: {m:?}");
    };
    assert_eq!(pkey, pk(5));
    assert_eq!(ip_over_ib, None);
    assert_eq!(name, None);
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|(_, m)| *m == Member { membership: Membership::Full, index0: false }));
}

#[test]
fn per_guid_memberships_must_match_guids() {
    let ok = parse_guids_body(
        br#"{"pkey":"0x5","guids":["0000000000000001","0000000000000002"],
             "memberships":["limited","full"],"index0":true}"#,
        true,
    )
    .unwrap();
    let Mutation::SetGuids { members, .. } = ok else {
        panic!("not a set");
    };
    assert_eq!(members[0].1.membership, Membership::Limited);
    assert_eq!(members[1].1.membership, Membership::Full);
    assert!(members[0].1.index0);

    let short = parse_guids_body(
        br#"{"pkey":"0x5","guids":["0000000000000001","0000000000000002"],"memberships":["full"]}"#,
        true,
    );
    assert!(matches!(short, Err(WireError::MembershipsLength { got: 1, want: 2 })));
    let both = parse_guids_body(
        br#"{"pkey":"0x5","guids":["0000000000000001"],"membership":"full","memberships":["full"]}"#,
        false,
    );
    assert!(matches!(both, Err(WireError::MembershipConflict)));
}

#[test]
fn bad_bodies_name_what_is_wrong() {
    for (body, needle) in [
        (&b"{not json"[..], "invalid JSON"),
        (br#"{"guids":["0000000000000001"]}"#, "pkey"),
        (br#"{"pkey":"0x5"}"#, "guids"),
        (br#"{"pkey":"0x5","guids":["00:00:00:00:00:00:00:01"]}"#, "00:00:00:00:00:00:00:01"),
        (br#"{"pkey":"0x5","guids":[],"guid":"x"}"#, "guid"),
        (br#"{"pkey":"0x8000","guids":["0000000000000001"]}"#, "0x8000"),
        (br#"{"pkey":"0x5","guids":["0000000000000001"],"membership":"both"}"#, "both"),
        (br#"{"pkey":5,"guids":["0000000000000001"]}"#, "invalid type"),
    ] {
        let err = parse_guids_body(body, false).unwrap_err();
        assert!(err.to_string().contains(needle), "{}: {err}", String::from_utf8_lossy(body));
    }
}

#[test]
fn create_and_qos_bodies_are_range_checked_as_bytes() {
    let m = parse_create(br#"{"pkey":"0x12","mtu_limit":4,"service_level":3,"rate_limit":100}"#).unwrap();
    assert_eq!(
        m,
        Mutation::CreateEmpty {
            pkey: pk(0x12),
            ip_over_ib: true,
            qos: Qos { mtu_limit: 4, rate_limit: 100.0, service_level: 3 },
            name: None,
        }
    );
    assert!(parse_create(br#"{"pkey":"0x12","mtu_limit":300}"#).is_err());
    assert!(parse_qos(br#"{"pkey":"0x12","service_level":-1}"#).is_err());
    assert!(parse_qos(br#"{"pkey":"0x12","mtu":4}"#).is_err());
}

#[test]
fn guid_lists_in_paths_are_comma_separated() {
    let m = parse_guid_list("0x5", "0000000000000001,0000000000000002").unwrap();
    assert!(matches!(m, Mutation::RemoveGuids { ref guids, .. } if guids.len() == 2));
    assert!(parse_guid_list("0x5", "0000000000000001,").is_err());
    assert!(parse_guid_list("zz", "0000000000000001").is_err());
}

#[test]
fn flags_accept_true_false_and_ignore_other_parameters() {
    assert_eq!(parse_flags(None).unwrap(), ReadFlags::default());
    let f = parse_flags(Some("guids_data=True&max_ports=5&qos_conf=false")).unwrap();
    assert!(f.guids_data && !f.qos_conf);
    assert!(parse_flags(Some("guids_data=yes")).is_err());
}

#[test]
fn list_renders_like_ufm_with_sorted_keys_and_management_fields() {
    let mut t = Partitions::new();
    t.apply(&parse_guids_body(br#"{"pkey":"0x2FB","guids":["946DAE03005975C8"],"index0":true}"#, false).unwrap())
        .unwrap();
    let guids: Value =
        serde_json::from_slice(&render_list(&t, ReadFlags { guids_data: true, qos_conf: false })).unwrap();
    assert_eq!(
        guids,
        json!({
            "0x2fb": {"guids": [{"guid": "946dae03005975c8", "index0": true, "membership": "full"}],
                      "ip_over_ib": true, "partition": "api_pkey_0x2fb"},
            "0x7fff": {"guids": [], "index0": false, "ip_over_ib": true,
                       "membership": "limited", "partition": "management"}
        })
    );
    let text = String::from_utf8(render_one(
        pk(0x2fb),
        t.get(pk(0x2fb)).unwrap(),
        ReadFlags { guids_data: false, qos_conf: true },
    ))
    .unwrap();
    assert_eq!(
        text,
        r#"{"ip_over_ib":true,"partition":"api_pkey_0x2fb","qos_conf":{"mtu_limit":2,"rate_limit":2.5,"service_level":0}}"#
    );
    let names: Value = serde_json::from_slice(&render_names(&t)).unwrap();
    assert_eq!(names, json!(["0x2fb", "0x7fff"]));
}
