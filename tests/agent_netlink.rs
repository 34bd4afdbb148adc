//! The rtnetlink messages behind `VfControl`: the RTM_SETLINK that sets a VF GUID, encoded to the
//! bytes the kernel receives and parsed back with netlink-packet-route, and the RTM_NEWLINK answer
//! the VF GUIDs are read from; and the real rtnetlink read on loopback.

use fabric_sync::agent::netlink::{encode_setlink, set_vf_guid_message, vf_guids_of};
use fabric_sync::agent::{GuidKind, RawGuid, VfGuids};
use fabric_sync::ib::Guid;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkVfInfo, VfInfo, VfInfoGuid, VfInfoMac};
use proptest::prelude::*;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};

const RTM_SETLINK: u16 = 19;
const IFLA_VFINFO_LIST: u16 = 22;
const IFLA_VF_INFO: u16 = 1;
const IFLA_VF_IB_NODE_GUID: u16 = 10;
const IFLA_VF_IB_PORT_GUID: u16 = 11;

fn parse_setlink(bytes: &[u8]) -> (NetlinkMessage<RouteNetlinkMessage>, LinkMessage) {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).expect("parses");
    let link = match &msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(m)) => m.clone(),
        other => panic!("not a SetLink: {other:?}"),
    };
    (msg, link)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

#[test]
fn node_guid_message_round_trips_with_ifindex_vf_and_value() {
    let guid: Guid = "02:00:00:00:00:00:00:2a".parse().unwrap();
    let bytes = encode_setlink(set_vf_guid_message(7, 3, GuidKind::Node, guid.into()));
    let (msg, link) = parse_setlink(&bytes);
    assert_eq!(msg.header.message_type, RTM_SETLINK);
    assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(msg.header.length as usize, bytes.len());
    assert_eq!(link.header.index, 7);
    assert_eq!(
        link.attributes,
        vec![LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![VfInfo::IbNodeGuid(VfInfoGuid::new(
            3,
            0x0200_0000_0000_002a
        ))])])]
    );
}

#[test]
fn port_guid_message_uses_attribute_11() {
    let bytes = encode_setlink(set_vf_guid_message(7, 0, GuidKind::Port, RawGuid(0x0200_0000_0000_0001)));
    let (_, link) = parse_setlink(&bytes);
    assert_eq!(
        link.attributes,
        vec![LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![VfInfo::IbPortGuid(VfInfoGuid::new(
            0,
            0x0200_0000_0000_0001
        ))])])]
    );
    assert_eq!(u16_at(&bytes, 42), IFLA_VF_IB_PORT_GUID);
}

/// The bytes themselves: nlmsghdr, ifinfomsg, then IFLA_VFINFO_LIST > IFLA_VF_INFO >
/// IFLA_VF_IB_NODE_GUID with `struct ifla_vf_guid { u32 vf; (pad) u64 guid; }` in host order,
/// where the u64 is the GUID's bytes read big-endian (as `ip link … node_guid` and
/// vishvananda/netlink build it).
#[cfg(target_pointer_width = "64")]
#[test]
fn wire_bytes_carry_the_kernels_struct_layout() {
    let guid: Guid = "02:11:22:33:44:55:66:2a".parse().unwrap();
    let bytes = encode_setlink(set_vf_guid_message(9, 5, GuidKind::Node, guid.into()));
    assert_eq!(bytes.len(), 16 + 16 + 4 + 4 + 4 + 16);
    assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 9, "ifi_index");
    assert_eq!((u16_at(&bytes, 32), u16_at(&bytes, 34) & 0x3fff), (28, IFLA_VFINFO_LIST));
    assert_eq!((u16_at(&bytes, 36), u16_at(&bytes, 38) & 0x3fff), (24, IFLA_VF_INFO));
    assert_eq!((u16_at(&bytes, 40), u16_at(&bytes, 42)), (20, IFLA_VF_IB_NODE_GUID));
    assert_eq!(&bytes[44..48], &5u32.to_ne_bytes(), "vf");
    assert_eq!(&bytes[48..52], &[0, 0, 0, 0], "padding before the u64");
    assert_eq!(u64::from_ne_bytes(bytes[52..60].try_into().unwrap()), u64::from_be_bytes(guid.to_be_bytes()));
    #[cfg(target_endian = "little")]
    assert_eq!(&bytes[52..60], &[0x2a, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x02]);
}

#[test]
fn vf_guids_are_read_from_a_newlink_answer() {
    let mut answer = LinkMessage::default();
    answer.header.index = 4;
    let mac = [0u8; 20];
    answer.attributes = vec![
        LinkAttribute::IfName("ib0".into()),
        LinkAttribute::VfInfoList(vec![
            LinkVfInfo(vec![
                VfInfo::Mac(VfInfoMac::new(0, &mac)),
                VfInfo::IbNodeGuid(VfInfoGuid::new(0, 0x0200_0000_0000_0001)),
                VfInfo::IbPortGuid(VfInfoGuid::new(0, 0x0200_0000_0000_0002)),
            ]),
            LinkVfInfo(vec![
                VfInfo::Mac(VfInfoMac::new(1, &mac)),
                VfInfo::IbNodeGuid(VfInfoGuid::new(1, u64::MAX)),
                VfInfo::IbPortGuid(VfInfoGuid::new(1, u64::MAX)),
            ]),
            // A driver without ndo_get_vf_guid reports no GUIDs at all.
            LinkVfInfo(vec![VfInfo::Mac(VfInfoMac::new(2, &mac))]),
        ]),
    ];
    let mut nl = NetlinkMessage::from(RouteNetlinkMessage::NewLink(answer));
    nl.finalize();
    let mut bytes = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut bytes);
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = parsed.payload else {
        panic!("not a NewLink");
    };
    assert_eq!(
        vf_guids_of(&link),
        vec![
            VfGuids {
                vf: 0,
                node_guid: Some(RawGuid(0x0200_0000_0000_0001)),
                port_guid: Some(RawGuid(0x0200_0000_0000_0002))
            },
            VfGuids { vf: 1, node_guid: Some(RawGuid::RESET), port_guid: Some(RawGuid::RESET) },
            VfGuids { vf: 2, node_guid: None, port_guid: None },
        ]
    );
}

proptest! {
    #[test]
    fn any_guid_and_vf_round_trip(ifindex in 1u32.., vf in 0u32..1024, value: u64, port: bool) {
        let kind = if port { GuidKind::Port } else { GuidKind::Node };
        let (_, link) = parse_setlink(&encode_setlink(set_vf_guid_message(ifindex, vf, kind, RawGuid(value))));
        prop_assert_eq!(link.header.index, ifindex);
        let got = vf_guids_of(&link);
        let want = if port {
            VfGuids { vf, node_guid: None, port_guid: Some(RawGuid(value)) }
        } else {
            VfGuids { vf, node_guid: Some(RawGuid(value)), port_guid: None }
        };
        prop_assert_eq!(got, vec![want]);
    }
}

/// The real rtnetlink path, on the loopback device every network namespace has: a PF without VFs
/// answers with no VF list, and an ifindex that does not exist is an error naming the PF.
#[tokio::test]
async fn real_rtnetlink_reads_vf_info_and_names_the_pf_in_errors() {
    use fabric_sync::agent::{NetlinkVfControl, PfRef, Sysfs, VfControl};
    let vf = NetlinkVfControl::connect(Sysfs::new("/sys")).expect("rtnetlink socket");
    assert_eq!(vf.vf_guids(&PfRef { name: "lo".into(), ifindex: 1 }).await, Ok(vec![]));
    let err = vf.vf_guids(&PfRef { name: "ib9".into(), ifindex: u32::MAX - 7 }).await.unwrap_err();
    assert!(err.to_string().starts_with("netlink get_vf_info on ib9: "), "{err}");
    assert_eq!(err.kind(), "netlink");
}

/// Unbind and bind write the VF's PCI address to the driver's files under the sysfs root, and
/// refuse anything that is not a PCI address or a plain driver name.
#[tokio::test]
async fn rebind_writes_the_vf_address_to_the_driver_files() {
    use fabric_sync::agent::{NetlinkVfControl, Sysfs, VfControl};
    let dir = tempfile::tempdir().unwrap();
    let drv = dir.path().join("bus/pci/drivers/mlx5_core");
    std::fs::create_dir_all(&drv).unwrap();
    std::fs::write(drv.join("unbind"), "").unwrap();
    std::fs::write(drv.join("bind"), "").unwrap();
    let vf = NetlinkVfControl::connect(Sysfs::new(dir.path())).expect("rtnetlink socket");
    vf.unbind("0000:3b:00.2", "mlx5_core").unwrap();
    assert_eq!(std::fs::read_to_string(drv.join("unbind")).unwrap(), "0000:3b:00.2");
    vf.bind("0000:3b:00.3", "mlx5_core").unwrap();
    assert_eq!(std::fs::read_to_string(drv.join("bind")).unwrap(), "0000:3b:00.3");
    for (pci, driver) in
        [("../../../etc/passwd", "mlx5_core"), ("0000:3b:00.2", "../../../../etc"), ("0000:3b:00.2", "")]
    {
        let err = vf.unbind(pci, driver).unwrap_err();
        assert_eq!(err.kind(), "rebind", "{err}");
    }
    let err = vf.bind("0000:3b:00.2", "vfio-pci").unwrap_err();
    assert!(err.to_string().contains("bus/pci/drivers/vfio-pci/bind: missing"), "{err}");
}
