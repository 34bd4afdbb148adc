//! Tests of the partition state: adds, removals, pending changes and last_updated.

use super::*;

fn pk(v: u16) -> PKey {
    PKey::new(v).unwrap()
}

fn g(v: u64) -> Guid {
    Guid::new(v).unwrap()
}

fn full(guids: &[u64]) -> Vec<(Guid, Member)> {
    guids.iter().map(|v| (g(*v), Member::default())).collect()
}

fn add(pkey: u16, guids: &[u64]) -> Mutation {
    Mutation::AddGuids { pkey: pk(pkey), members: full(guids), ip_over_ib: None, name: None }
}

fn remove(pkey: u16, guids: &[u64]) -> Mutation {
    Mutation::RemoveGuids { pkey: pk(pkey), guids: guids.iter().map(|v| g(*v)).collect() }
}

#[test]
fn pkey_parses_padded_unpadded_and_upper_case_prefix() {
    assert_eq!(PKey::parse("0x5").unwrap().value(), 5);
    assert_eq!(PKey::parse("0x0005").unwrap().value(), 5);
    assert_eq!(PKey::parse("0X0005").unwrap().value(), 5);
    assert_eq!(PKey::parse("0x7FFF").unwrap(), PKey::MANAGEMENT);
    assert_eq!(PKey::parse("0x0005").unwrap().to_string(), "0x5");
    assert_eq!(PKey::parse("0x2FB").unwrap().to_string(), "0x2fb");
}

#[test]
fn pkey_rejects_zero_out_of_range_and_garbage() {
    for bad in ["0x0", "0x8000", "0xffff", "5", "0x", "0x00005", "0xg1", "", " 0x5", "0x-1"] {
        let err = PKey::parse(bad).unwrap_err();
        assert_eq!(err.reason(), "invalid_pkey", "{bad}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    assert!(PKey::new(0).is_err());
    assert!(PKey::new(0x8000).is_err());
}

#[test]
fn guid_parses_sixteen_hex_digits_in_any_case_with_optional_prefix() {
    let want = 0x0002_c903_000e_0b72;
    assert_eq!(Guid::parse("0002c903000e0b72").unwrap().value(), want);
    assert_eq!(Guid::parse("0002C903000E0B72").unwrap().value(), want);
    assert_eq!(Guid::parse("0x0002c903000e0b72").unwrap().value(), want);
    assert_eq!(Guid::parse("0X0002C903000E0B72").unwrap().to_string(), "0002c903000e0b72");
}

#[test]
fn guid_rejects_colons_wrong_length_zero_and_garbage() {
    for bad in [
        "00:02:c9:03:00:0e:0b:72",
        "2c903000e0b72",
        "0002c903000e0b7200",
        "0000000000000000",
        "0x0000000000000000",
        "0002c903000e0b7z",
        "",
    ] {
        let err = Guid::parse(bad).unwrap_err();
        assert_eq!(err.reason(), "invalid_guid", "{bad}");
    }
}

#[test]
fn membership_is_strict() {
    assert_eq!(Membership::parse("full").unwrap(), Membership::Full);
    assert_eq!(Membership::parse("limited").unwrap(), Membership::Limited);
    assert!(Membership::parse("Full").is_err());
    assert!(Membership::parse("both").is_err());
}

#[test]
fn new_table_holds_only_the_management_partition() {
    let t = Partitions::new();
    assert_eq!(t.len(), 1);
    let m = t.get(PKey::MANAGEMENT).unwrap();
    assert_eq!(m.name, "management");
    assert!(m.members.is_empty());
}

#[test]
fn adding_guids_creates_an_api_named_partition_with_defaults() {
    let mut t = Partitions::new();
    assert!(t.apply(&add(0x5, &[1, 2])).unwrap());
    let p = t.get(pk(5)).unwrap();
    assert_eq!(p.name, "api_pkey_0x5");
    assert!(p.ip_over_ib);
    assert_eq!(p.qos, Qos::default());
    assert_eq!(p.members.len(), 2);
    // Adding the same members again changes nothing.
    assert!(!t.apply(&add(0x5, &[1, 2])).unwrap());
}

#[test]
fn adding_an_existing_member_updates_its_membership() {
    let mut t = Partitions::new();
    t.apply(&add(0x5, &[1])).unwrap();
    let limited = Mutation::AddGuids {
        pkey: pk(5),
        members: vec![(g(1), Member { membership: Membership::Limited, index0: true })],
        ip_over_ib: Some(false),
        name: None,
    };
    assert!(t.apply(&limited).unwrap());
    let p = t.get(pk(5)).unwrap();
    assert_eq!(p.members[&g(1)].membership, Membership::Limited);
    assert!(p.members[&g(1)].index0);
    assert!(!p.ip_over_ib);
}

#[test]
fn removing_last_guid_deletes_partition() {
    let mut t = Partitions::new();
    t.apply(&add(0x5, &[1, 2])).unwrap();
    assert!(t.apply(&remove(0x5, &[1])).unwrap());
    assert!(t.get(pk(5)).is_some());
    assert!(t.apply(&remove(0x5, &[2])).unwrap());
    assert!(t.get(pk(5)).is_none());
}

#[test]
fn removing_a_non_member_is_a_no_op() {
    let mut t = Partitions::new();
    t.apply(&add(0x5, &[1])).unwrap();
    assert!(!t.apply(&remove(0x5, &[9])).unwrap());
    assert!(!t.apply(&remove(0x6, &[9])).unwrap());
    assert_eq!(t.get(pk(5)).unwrap().members.len(), 1);
}

#[test]
fn removing_from_an_empty_created_partition_keeps_it() {
    let mut t = Partitions::new();
    let create = Mutation::CreateEmpty { pkey: pk(0x12), ip_over_ib: true, qos: Qos::default(), name: None };
    t.apply(&create).unwrap();
    assert!(!t.apply(&remove(0x12, &[1])).unwrap());
    assert!(t.get(pk(0x12)).is_some());
    assert_eq!(t.check(&create), Err(StateError::AlreadyExists(pk(0x12))));
}

#[test]
fn set_replaces_the_member_set() {
    let mut t = Partitions::new();
    t.apply(&add(0x5, &[1, 2, 3])).unwrap();
    let set = Mutation::SetGuids { pkey: pk(5), members: full(&[3, 4]), ip_over_ib: None, name: None };
    assert!(t.apply(&set).unwrap());
    let got: Vec<u64> = t.get(pk(5)).unwrap().members.keys().map(|g| g.value()).collect();
    assert_eq!(got, vec![3, 4]);
    assert!(!t.apply(&set).unwrap());
}

#[test]
fn management_partition_is_read_only() {
    let mut t = Partitions::new();
    let before = t.clone();
    for m in [
        add(0x7fff, &[1]),
        remove(0x7fff, &[1]),
        Mutation::Delete { pkey: PKey::MANAGEMENT },
        Mutation::UpdateQos { pkey: PKey::MANAGEMENT, mtu_limit: Some(4), service_level: None, rate_limit: None },
    ] {
        assert_eq!(t.apply(&m), Err(StateError::ReadOnly(PKey::MANAGEMENT)));
    }
    assert_eq!(t, before);
}

#[test]
fn empty_and_duplicate_guid_lists_are_refused() {
    let t = Partitions::new();
    assert_eq!(t.check(&add(0x5, &[])), Err(StateError::EmptyGuids));
    assert_eq!(t.check(&add(0x5, &[1, 1])), Err(StateError::DuplicateGuid(g(1))));
    assert_eq!(t.check(&remove(0x5, &[])), Err(StateError::EmptyGuids));
}

#[test]
fn delete_and_qos_update_of_absent_pkey_are_not_found() {
    let t = Partitions::new();
    assert_eq!(t.check(&Mutation::Delete { pkey: pk(9) }), Err(StateError::NotFound(pk(9))));
    let qos = Mutation::UpdateQos { pkey: pk(9), mtu_limit: Some(4), service_level: None, rate_limit: None };
    assert_eq!(t.check(&qos), Err(StateError::NotFound(pk(9))));
}

#[test]
fn qos_values_are_range_checked() {
    let mut t = Partitions::new();
    t.apply(&add(0x5, &[1])).unwrap();
    let qos = |mtu, sl, rate| Mutation::UpdateQos { pkey: pk(5), mtu_limit: mtu, service_level: sl, rate_limit: rate };
    assert!(t.check(&qos(Some(3), None, None)).is_err());
    assert!(t.check(&qos(None, Some(16), None)).is_err());
    assert!(t.check(&qos(None, None, Some(7.0))).is_err());
    assert!(t.apply(&qos(Some(4), Some(15), Some(200.0))).unwrap());
    let q = t.get(pk(5)).unwrap().qos;
    assert_eq!((q.mtu_limit, q.service_level, q.rate_limit), (4, 15, 200.0));
    assert!(!t.apply(&qos(Some(4), None, None)).unwrap());
}

#[test]
fn whole_rate_limits_serialize_without_fraction() {
    let q = Qos { mtu_limit: 4, rate_limit: 200.0, service_level: 0 };
    assert_eq!(serde_json::to_string(&q).unwrap(), r#"{"mtu_limit":4,"rate_limit":200,"service_level":0}"#);
    assert!(serde_json::to_string(&Qos::default()).unwrap().contains("2.5"));
}

#[test]
fn partition_names_are_validated_and_used_on_create() {
    let mut t = Partitions::new();
    let named = |name: &str| Mutation::AddGuids {
        pkey: pk(7),
        members: full(&[1]),
        ip_over_ib: None,
        name: Some(name.to_string()),
    };
    assert!(t.check(&named("bad name")).is_err());
    t.apply(&named("tenant-a")).unwrap();
    assert_eq!(t.get(pk(7)).unwrap().name, "tenant-a");
}

#[test]
fn table_round_trips_through_json() {
    let mut t = Partitions::new();
    t.apply(&add(0x5, &[0x0002_c903_000e_0b72])).unwrap();
    let json = serde_json::to_string(&t).unwrap();
    assert!(json.contains("\"0x5\""), "{json}");
    assert!(json.contains("\"0002c903000e0b72\""), "{json}");
    let back: Partitions = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
}
