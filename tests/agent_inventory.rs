//! The sysfs inventory on fake trees laid out like real nodes: the whole JSON, the Node annotation
//! summary, symlinks that try to leave `--sysfs-root`, and `fabric-sync agent inventory` itself.

mod agent_support;

use std::process::Command;

use agent_support::*;
use fabric_sync::agent::scan;
use serde_json::{Value, json};

#[test]
fn realistic_node_inventory_is_exactly_what_sysfs_holds() {
    let s = realistic_node();
    let inv = scan(&s.sysfs());
    let pkeys_full =
        json!({"capacity":128,"used":2,"entries":[{"index":0,"pkey":"0xffff"},{"index":1,"pkey":"0x8005"}]});
    let expected = json!({
        "hcas": [
            {
                "name": "mlx5_0", "link_layer": "infiniband", "node_guid": "0c42:a103:0016:5e40",
                "pci_address": "0000:3b:00.0", "physfn": null,
                "netdevs": [{"name": "ib0", "ifindex": 4}],
                "ports": [{
                    "port": 1, "link_layer": "infiniband", "state": "ACTIVE", "phys_state": "LinkUp", "lid": 17,
                    "port_guid": "0c42:a103:0016:5e40", "pkeys": pkeys_full
                }],
                "sriov": {"total_vfs": 8, "num_vfs": 2, "vfs": [
                    {"vf": 0, "pci_address": "0000:3b:00.2", "driver": "mlx5_core", "netdevs": ["ib2"],
                     "rdma_device": "mlx5_4", "node_guid": "02:00:00:00:00:00:00:01", "port_guid": "02:00:00:00:00:00:00:01"},
                    {"vf": 1, "pci_address": "0000:3b:00.3", "driver": null, "netdevs": [],
                     "rdma_device": null, "node_guid": "ff:ff:ff:ff:ff:ff:ff:ff", "port_guid": "ff:ff:ff:ff:ff:ff:ff:ff"}
                ]}
            },
            {
                "name": "mlx5_1", "link_layer": "infiniband", "node_guid": "0c42:a103:0016:6a10",
                "pci_address": "0000:5e:00.0", "physfn": null,
                "netdevs": [{"name": "ib1", "ifindex": 5}],
                "ports": [
                    {"port": 1, "link_layer": "infiniband", "state": "ACTIVE", "phys_state": "LinkUp", "lid": 18,
                     "port_guid": "0c42:a103:0016:6a10", "pkeys": pkeys_full},
                    {"port": 2, "link_layer": "infiniband", "state": "DOWN", "phys_state": "Polling", "lid": null,
                     "port_guid": "0c42:a103:0016:6a11",
                     "pkeys": {"capacity": 128, "used": 1, "entries": [{"index": 0, "pkey": "0xffff"}]}}
                ],
                "sriov": {"total_vfs": 4, "num_vfs": 2, "vfs": [
                    {"vf": 0, "pci_address": "0000:5e:00.1", "driver": "mlx5_core", "netdevs": [],
                     "rdma_device": null, "node_guid": null, "port_guid": null}
                ]}
            },
            {
                "name": "mlx5_2", "link_layer": "ethernet", "node_guid": "b859:9f03:00a1:2b3c",
                "pci_address": "0000:86:00.0", "physfn": null,
                "netdevs": [{"name": "ens2f0", "ifindex": 7}],
                "ports": [{"port": 1, "link_layer": "ethernet", "state": "ACTIVE", "phys_state": "LinkUp",
                           "lid": null, "port_guid": null, "pkeys": null}],
                "sriov": null
            },
            {
                "name": "mlx5_4", "link_layer": "infiniband", "node_guid": "0200:0000:0000:0001",
                "pci_address": "0000:3b:00.2", "physfn": "0000:3b:00.0",
                "netdevs": [{"name": "ib2", "ifindex": 6}],
                "ports": [{"port": 1, "link_layer": "infiniband", "state": "ACTIVE", "phys_state": "LinkUp", "lid": 17,
                           "port_guid": "0200:0000:0000:0001",
                           "pkeys": {"capacity": 128, "used": 1, "entries": [{"index": 0, "pkey": "0x8005"}]}}],
                "sriov": null
            }
        ],
        "warnings": [
            "class/infiniband/mlx5_1/device: sriov_numvfs is 2 but 1 VF link(s) were found",
            "class/infiniband/mlx5_1/ports/2/lid: \"garbage\" is not a LID such as 0x11",
            "class/infiniband/mlx5_1/ports/2/pkeys/5: \"0xzz\" is not a pkey such as 0xffff"
        ]
    });
    assert_eq!(serde_json::to_value(&inv).unwrap(), expected);
}

#[test]
fn node_annotation_summary_is_small_and_carries_pkey_capacity() {
    let s = realistic_node();
    let summary = serde_json::to_value(scan(&s.sysfs()).summary()).unwrap();
    assert_eq!(
        summary,
        json!({
            "version": 1, "pkey_capacity": 128,
            "hcas": 3, "ib_hcas": 2, "ethernet_hcas": 1, "ib_ports": 3, "ib_ports_active": 2,
            "vfs_total": 12, "vfs_enabled": 4,
            "ports": [
                {"hca": "mlx5_0", "port": 1, "state": "ACTIVE", "pkeys_used": 2, "pkeys_capacity": 128},
                {"hca": "mlx5_1", "port": 1, "state": "ACTIVE", "pkeys_used": 2, "pkeys_capacity": 128},
                {"hca": "mlx5_1", "port": 2, "state": "DOWN", "pkeys_used": 1, "pkeys_capacity": 128}
            ],
            "warnings": 3
        })
    );
}

#[test]
fn pkey_capacity_is_the_smallest_ib_table_and_ignores_ethernet_and_vf_devices() {
    let s = FakeSys::new();
    let a = s.rdma_device(PF_A, "mlx5_0", "0c42:a103:0016:5e40");
    s.port(
        &a,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x1", "fe80:0000:0000:0000:0c42:a103:0016:5e40"],
        (128, &[]),
    );
    let b = s.rdma_device(PF_B, "mlx5_1", "0c42:a103:0016:6a10");
    s.port(
        &b,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x2", "fe80:0000:0000:0000:0c42:a103:0016:6a10"],
        (64, &[]),
    );
    // A 16-entry RoCE table and a 32-entry VF device table must not lower the node's capacity.
    let e = s.rdma_device(PF_ETH, "mlx5_2", "b859:9f03:00a1:2b3c");
    s.port(&e, 1, ["Ethernet", "4: ACTIVE", "5: LinkUp", "0x0", "fe80::1"], (16, &[]));
    let vf = s.vf(PF_A, 0, VF_A0);
    let v = s.rdma_device(&vf, "mlx5_3", "0200:0000:0000:0001");
    s.port(
        &v,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x1", "fe80:0000:0000:0000:0200:0000:0000:0001"],
        (32, &[]),
    );
    let summary = scan(&s.sysfs()).summary();
    assert_eq!(summary.pkey_capacity, Some(64));
    assert_eq!((summary.hcas, summary.ib_ports, summary.ethernet_hcas), (3, 2, 1));
}

#[test]
fn node_without_rdma_devices_reports_no_capacity_and_says_why() {
    let s = FakeSys::new();
    let inv = scan(&s.sysfs());
    assert!(inv.hcas.is_empty());
    assert_eq!(inv.warnings, vec!["class/infiniband: missing (no RDMA devices, or their drivers are not loaded)"]);
    let summary = serde_json::to_value(inv.summary()).unwrap();
    assert!(summary.get("pkey_capacity").is_none(), "{summary}");
}

#[test]
fn symlinks_never_lead_outside_the_sysfs_root() {
    let s = FakeSys::new();
    // Something worth stealing outside the root, shaped like an RDMA device.
    let outside = s.outside();
    std::fs::create_dir_all(outside.join("dev/ports/1/pkeys")).unwrap();
    std::fs::write(outside.join("dev/node_guid"), "dead:beef:dead:beef\n").unwrap();
    std::fs::write(outside.join("dev/ports/1/link_layer"), "InfiniBand\n").unwrap();
    std::fs::create_dir_all(outside.join("pci")).unwrap();
    std::fs::write(outside.join("pci/sriov_totalvfs"), "64\n").unwrap();

    s.raw_link("class/infiniband/abs_etc", "/etc");
    s.raw_link("class/infiniband/abs_real", &outside.join("dev").to_string_lossy());
    s.raw_link("class/infiniband/climb", "../../../outside/dev");
    s.raw_link("class/infiniband/way_up", "../../../../../../../../../..");
    // A real-looking device whose `device` link climbs out, and one VF link that does too.
    let a = s.rdma_device(PF_A, "mlx5_0", "0c42:a103:0016:5e40");
    s.port(
        &a,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x11", "fe80:0000:0000:0000:0c42:a103:0016:5e40"],
        (128, &[]),
    );
    std::fs::remove_file(s.root.join(format!("{a}/device"))).unwrap();
    s.raw_link(&format!("{a}/device"), "../../../../../../../outside/pci");
    let b = s.rdma_device(PF_B, "mlx5_1", "0c42:a103:0016:6a10");
    s.port(
        &b,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x12", "fe80:0000:0000:0000:0c42:a103:0016:6a10"],
        (128, &[]),
    );
    s.file(&format!("{PF_B}/sriov_totalvfs"), "4");
    s.file(&format!("{PF_B}/sriov_numvfs"), "1");
    s.raw_link(&format!("{PF_B}/virtfn0"), "/etc");

    let inv = scan(&s.sysfs());
    let text = serde_json::to_string(&inv).unwrap();
    assert!(!text.contains("dead:beef"), "{text}");
    let names: Vec<&str> = inv.hcas.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["mlx5_0", "mlx5_1"]);
    assert_eq!((&inv.hcas[0].pci_address, &inv.hcas[0].sriov), (&None, &None));
    assert_eq!(inv.hcas[1].sriov.as_ref().map(|s| s.vfs.len()), Some(0));
    let abs_real = outside.join("dev").to_string_lossy().into_owned();
    assert_eq!(
        inv.warnings,
        vec![
            "class/infiniband/abs_etc: symlink to \"/etc\" leads outside --sysfs-root, refused".to_string(),
            format!("class/infiniband/abs_real: symlink to {abs_real:?} leads outside --sysfs-root, refused"),
            "class/infiniband/climb: symlink to \"../../../outside/dev\" leads outside --sysfs-root, refused".into(),
            format!("{a}/device: symlink to \"../../../../../../../outside/pci\" leads outside --sysfs-root, refused"),
            format!("{PF_B}/virtfn0: symlink to \"/etc\" leads outside --sysfs-root, refused"),
            "class/infiniband/mlx5_1/device: sriov_numvfs is 1 but 0 VF link(s) were found".into(),
            "class/infiniband/way_up: symlink to \"../../../../../../../../../..\" leads outside --sysfs-root, refused"
                .into(),
        ]
    );
}

#[test]
fn inventory_command_prints_the_same_json_and_a_table() {
    let s = realistic_node();
    let bin = env!("CARGO_BIN_EXE_fabric-sync");
    let out = Command::new(bin)
        .args(["agent", "inventory", "--json", "--sysfs-root"])
        .arg(&s.root)
        .env_remove("FABRIC_SYNC_SYSFS_ROOT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::to_value(scan(&s.sysfs())).unwrap());

    let out = Command::new(bin).args(["agent", "inventory"]).env("FABRIC_SYNC_SYSFS_ROOT", &s.root).output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("mlx5_0") && l.contains("0c42:a103:0016:5e40") && l.ends_with("2/8")));
    assert!(table.contains("pkeys 2/128"));
    assert!(table.contains("pkeys n/a (Ethernet)"));
    assert!(table.contains("vf 0     0000:3b:00.2"));
    assert!(table.contains("warnings:"));

    let out = Command::new(bin).args(["agent", "inventory", "--sysfs-root", "/nonexistent/sys"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("FABRIC_SYNC_SYSFS_ROOT (--sysfs-root)"));
}
