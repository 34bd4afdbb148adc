//! Shared helpers for the node agent tests: fake sysfs trees laid out like a real node's (relative
//! symlinks as the kernel makes them), a fake `VfControl` that records calls and keeps GUIDs, and
//! a fake `AgentCluster` that keeps annotations and Events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use fabric_sync::agent::{AgentCluster, AgentError, AgentEvent, AgentPod, PfRef, RawGuid, Sysfs, VfControl, VfGuids};
use fabric_sync::engine::{Claim, ClaimedAttachment, ObjectKey, PodUid, Slot};
use fabric_sync::ib::{Guid, PKey};
use fabric_sync::netdef::NetworkKey;
use serde_json::Value;

/// A sysfs tree under a temporary directory (`<tmp>/sys`); `<tmp>/outside` lies beyond its root.
pub struct FakeSys {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl FakeSys {
    pub fn new() -> FakeSys {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("sys");
        fs::create_dir_all(&root).expect("root");
        FakeSys { dir, root }
    }

    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.root.clone())
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    pub fn dir(&self, rel: &str) {
        fs::create_dir_all(self.root.join(rel)).expect("dir");
    }

    /// A sysfs attribute: its text and a newline, as the kernel prints.
    pub fn file(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        fs::write(p, format!("{text}\n")).expect("write");
    }

    /// A symlink at `rel` with exactly `target` as its text.
    pub fn raw_link(&self, rel: &str, target: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        symlink(target, p).expect("symlink");
    }

    /// A symlink at `rel` to `to` (both relative to the root), written the way sysfs writes it:
    /// up to the common ancestor of the link's directory and the target's parent, then down.
    pub fn link(&self, rel: &str, to: &str) {
        let from_dir: Vec<&str> = rel.split('/').collect::<Vec<_>>()[..rel.split('/').count() - 1].to_vec();
        let to_parts: Vec<&str> = to.split('/').collect();
        let to_parent = &to_parts[..to_parts.len() - 1];
        let common = from_dir.iter().zip(to_parent).take_while(|(a, b)| a == b).count();
        let mut target: Vec<&str> = vec![".."; from_dir.len() - common];
        target.extend(&to_parts[common..]);
        self.raw_link(rel, &target.join("/"));
    }

    /// `devices/…/<pci>/infiniband/<name>` with `node_guid`, its `device` link, and
    /// `class/infiniband/<name>`.
    pub fn rdma_device(&self, pci_dev: &str, name: &str, node_guid: &str) -> String {
        let base = format!("{pci_dev}/infiniband/{name}");
        self.file(&format!("{base}/node_guid"), node_guid);
        self.link(&format!("{base}/device"), pci_dev);
        self.link(&format!("class/infiniband/{name}"), &base);
        base
    }

    /// One port: `attrs` are `link_layer`, `state`, `phys_state`, `lid` and `gids/0` as sysfs
    /// prints them; `pkeys` is (entries, non-zero values by index).
    pub fn port(&self, base: &str, n: u32, attrs: [&str; 5], pkeys: (u32, &[(u32, &str)])) {
        let [link_layer, state, phys_state, lid, gid0] = attrs;
        let pb = format!("{base}/ports/{n}");
        self.file(&format!("{pb}/link_layer"), link_layer);
        self.file(&format!("{pb}/state"), state);
        self.file(&format!("{pb}/phys_state"), phys_state);
        self.file(&format!("{pb}/lid"), lid);
        self.file(&format!("{pb}/gids/0"), gid0);
        for i in 0..pkeys.0 {
            let v = pkeys.1.iter().find(|(idx, _)| *idx == i).map_or("0x0000", |(_, v)| v);
            self.file(&format!("{pb}/pkeys/{i}"), v);
        }
    }

    pub fn netdev(&self, pci_dev: &str, name: &str, ifindex: u32) {
        self.file(&format!("{pci_dev}/net/{name}/ifindex"), &ifindex.to_string());
    }

    pub fn driver(&self, name: &str) {
        self.file(&format!("bus/pci/drivers/{name}/bind"), "");
        self.file(&format!("bus/pci/drivers/{name}/unbind"), "");
    }

    pub fn bind(&self, pci_dev: &str, driver: &str) {
        self.link(&format!("{pci_dev}/driver"), &format!("bus/pci/drivers/{driver}"));
    }

    /// VF `k` of the PF at `pf_dev`, a sibling PCI function named `vf_pci`.
    pub fn vf(&self, pf_dev: &str, k: u32, vf_pci: &str) -> String {
        let parent = pf_dev.rsplit_once('/').expect("pf path").0;
        let vf_dev = format!("{parent}/{vf_pci}");
        self.dir(&vf_dev);
        self.link(&format!("{pf_dev}/virtfn{k}"), &vf_dev);
        self.link(&format!("{vf_dev}/physfn"), pf_dev);
        vf_dev
    }

    /// MLNX_OFED's `device/sriov/<k>/{node,port,policy}`.
    pub fn ofed_guids(&self, pf_dev: &str, k: u32, node: &str, port: &str) {
        self.file(&format!("{pf_dev}/sriov/{k}/node"), node);
        self.file(&format!("{pf_dev}/sriov/{k}/port"), port);
        self.file(&format!("{pf_dev}/sriov/{k}/policy"), "Follow");
    }
}

pub const PF_A: &str = "devices/pci0000:00/0000:00:02.0/0000:3b:00.0";
pub const PF_B: &str = "devices/pci0000:00/0000:00:03.0/0000:5e:00.0";
pub const PF_ETH: &str = "devices/pci0000:80/0000:80:01.0/0000:86:00.0";
pub const VF_A0: &str = "0000:3b:00.2";
pub const VF_A1: &str = "0000:3b:00.3";
pub const VF_B0: &str = "0000:5e:00.1";

/// A node like a real one:
/// - `mlx5_0` (0000:3b:00.0): InfiniBand, one active port, 128-entry pkey table with 0xffff and
///   0x8005, netdev `ib0` (ifindex 4), SR-IOV 2 of 8 VFs: VF 0 (0000:3b:00.2, bound to mlx5_core,
///   netdev `ib2`, its own RDMA device `mlx5_4`, OFED GUIDs 02:…:01) and VF 1 (0000:3b:00.3,
///   unbound, OFED GUIDs all-ones);
/// - `mlx5_1` (0000:5e:00.0): two InfiniBand ports, port 2 down with a garbage `lid` and a garbage
///   pkey entry; netdev `ib1` (ifindex 5); `sriov_numvfs` says 2 but only VF 0 (0000:5e:00.1,
///   bound, no OFED GUID files) exists;
/// - `mlx5_2` (0000:86:00.0): Ethernet (RoCE), netdev `ens2f0`, no SR-IOV at all.
pub fn realistic_node() -> FakeSys {
    let s = FakeSys::new();
    s.driver("mlx5_core");
    let full: &[(u32, &str)] = &[(0, "0xffff"), (1, "0x8005")];

    let a = s.rdma_device(PF_A, "mlx5_0", "0c42:a103:0016:5e40");
    s.port(
        &a,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x11", "fe80:0000:0000:0000:0c42:a103:0016:5e40"],
        (128, full),
    );
    s.file(&format!("{a}/fw_ver"), "28.39.1002");
    s.netdev(PF_A, "ib0", 4);
    s.bind(PF_A, "mlx5_core");
    s.file(&format!("{PF_A}/sriov_totalvfs"), "8");
    s.file(&format!("{PF_A}/sriov_numvfs"), "2");
    let vf0 = s.vf(PF_A, 0, VF_A0);
    s.bind(&vf0, "mlx5_core");
    s.netdev(&vf0, "ib2", 6);
    let vf0_rdma = s.rdma_device(&vf0, "mlx5_4", "0200:0000:0000:0001");
    s.port(
        &vf0_rdma,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x11", "fe80:0000:0000:0000:0200:0000:0000:0001"],
        (128, &[(0, "0x8005")]),
    );
    s.ofed_guids(PF_A, 0, "02:00:00:00:00:00:00:01", "02:00:00:00:00:00:00:01");
    s.vf(PF_A, 1, VF_A1);
    s.ofed_guids(PF_A, 1, "ff:ff:ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff:ff:ff");

    let b = s.rdma_device(PF_B, "mlx5_1", "0c42:a103:0016:6a10");
    s.port(
        &b,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x12", "fe80:0000:0000:0000:0c42:a103:0016:6a10"],
        (128, full),
    );
    s.port(
        &b,
        2,
        ["InfiniBand", "1: DOWN", "2: Polling", "garbage", "fe80:0000:0000:0000:0c42:a103:0016:6a11"],
        (128, &[(0, "0xffff")]),
    );
    s.file(&format!("{b}/ports/2/pkeys/5"), "0xzz");
    s.netdev(PF_B, "ib1", 5);
    s.bind(PF_B, "mlx5_core");
    s.file(&format!("{PF_B}/sriov_totalvfs"), "4");
    s.file(&format!("{PF_B}/sriov_numvfs"), "2");
    let vfb = s.vf(PF_B, 0, VF_B0);
    s.bind(&vfb, "mlx5_core");

    let e = s.rdma_device(PF_ETH, "mlx5_2", "b859:9f03:00a1:2b3c");
    s.port(
        &e,
        1,
        ["Ethernet", "4: ACTIVE", "5: LinkUp", "0x0", "fe80:0000:0000:0000:ba59:9fff:fea1:2b3c"],
        (128, &[(0, "0xffff")]),
    );
    s.netdev(PF_ETH, "ens2f0", 7);
    s.bind(PF_ETH, "mlx5_core");
    s
}

/// Records every call; keeps GUIDs per (PF ifindex, VF) so a set is seen by the next read.
#[derive(Default)]
pub struct FakeVf {
    pub guids: Mutex<BTreeMap<(u32, u32), (RawGuid, RawGuid)>>,
    pub calls: Mutex<Vec<String>>,
    /// When set, `vf_guids` fails (a driver without `ndo_get_vf_guid`, say).
    pub fail_reads: Mutex<bool>,
}

impl FakeVf {
    pub fn with(guids: &[((u32, u32), u64)]) -> FakeVf {
        let f = FakeVf::default();
        if let Ok(mut g) = f.guids.lock() {
            for (k, v) in guids {
                g.insert(*k, (RawGuid(*v), RawGuid(*v)));
            }
        }
        f
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut c) = self.calls.lock() {
            c.clear();
        }
    }

    fn log(&self, s: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(s);
        }
    }

    fn set(&self, pf: &PfRef, vf: u32, guid: RawGuid, node: bool) {
        if let Ok(mut g) = self.guids.lock() {
            let e = g.entry((pf.ifindex, vf)).or_insert((RawGuid::ZERO, RawGuid::ZERO));
            if node {
                e.0 = guid;
            } else {
                e.1 = guid;
            }
        }
    }
}

#[async_trait]
impl VfControl for FakeVf {
    async fn vf_guids(&self, pf: &PfRef) -> Result<Vec<VfGuids>, AgentError> {
        self.log(format!("vf_guids {}", pf.name));
        if self.fail_reads.lock().map(|f| *f).unwrap_or(false) {
            return Err(AgentError::Netlink {
                pf: pf.name.clone(),
                op: "get_vf_info",
                detail: "Operation not supported".into(),
            });
        }
        let g = self.guids.lock().map(|g| g.clone()).unwrap_or_default();
        Ok(g.iter()
            .filter(|((i, _), _)| *i == pf.ifindex)
            .map(|((_, vf), (n, p))| VfGuids { vf: *vf, node_guid: Some(*n), port_guid: Some(*p) })
            .collect())
    }

    async fn set_node_guid(&self, pf: &PfRef, vf: u32, guid: RawGuid) -> Result<(), AgentError> {
        self.log(format!("set_node {} vf{vf} {guid}", pf.name));
        self.set(pf, vf, guid, true);
        Ok(())
    }

    async fn set_port_guid(&self, pf: &PfRef, vf: u32, guid: RawGuid) -> Result<(), AgentError> {
        self.log(format!("set_port {} vf{vf} {guid}", pf.name));
        self.set(pf, vf, guid, false);
        Ok(())
    }

    fn unbind(&self, vf_pci: &str, driver: &str) -> Result<(), AgentError> {
        self.log(format!("unbind {vf_pci} {driver}"));
        Ok(())
    }

    fn bind(&self, vf_pci: &str, driver: &str) -> Result<(), AgentError> {
        self.log(format!("bind {vf_pci} {driver}"));
        Ok(())
    }
}

/// Keeps pods, claims, the Node's annotations, the NodeFabricStatus and Events the way an API
/// server would for these calls.
#[derive(Default)]
pub struct FakeCluster {
    pub pods: Mutex<Vec<AgentPod>>,
    /// Labelled claims (listed by node) and claims written before the label (found by name).
    pub claims: Mutex<Vec<Claim>>,
    pub unlabelled: Mutex<Vec<Claim>>,
    pub claim_gets: Mutex<Vec<String>>,
    pub node_annotations: Mutex<BTreeMap<String, String>>,
    pub node_patches: Mutex<usize>,
    /// Every status written, in order.
    pub statuses: Mutex<Vec<Value>>,
    pub events: Mutex<Vec<AgentEvent>>,
}

impl FakeCluster {
    pub fn with_pods(pods: Vec<AgentPod>) -> FakeCluster {
        FakeCluster { pods: Mutex::new(pods), ..FakeCluster::default() }
    }

    pub fn events(&self) -> Vec<AgentEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn pod(&self, name: &str) -> Option<AgentPod> {
        self.pods.lock().ok()?.iter().find(|p| p.name == name).cloned()
    }

    pub fn set_pods(&self, pods: Vec<AgentPod>) {
        if let Ok(mut p) = self.pods.lock() {
            *p = pods;
        }
    }

    pub fn set_claims(&self, claims: Vec<Claim>) {
        if let Ok(mut c) = self.claims.lock() {
            *c = claims;
        }
    }

    /// The NodeFabricStatus as last written.
    pub fn status(&self) -> Value {
        self.statuses.lock().ok().and_then(|s| s.last().cloned()).unwrap_or(Value::Null)
    }

    pub fn status_writes(&self) -> usize {
        self.statuses.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// `status.attachments[*]` of the attachment `label` of pod `pod` (namespace/name).
    pub fn attachment(&self, pod: &str, label: &str) -> Value {
        let s = self.status();
        s["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["pod"] == pod && a["attachment"] == label)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[async_trait]
impl AgentCluster for FakeCluster {
    async fn list_pods(&self, _node: &str) -> Result<Vec<AgentPod>, AgentError> {
        Ok(self.pods.lock().map(|p| p.clone()).unwrap_or_default())
    }

    async fn list_claims(&self, node: &str) -> Result<Vec<Claim>, AgentError> {
        let all = self.claims.lock().map(|c| c.clone()).unwrap_or_default();
        Ok(all.into_iter().filter(|c| c.node.as_ref() == node).collect())
    }

    async fn get_claim(&self, namespace: &str, pod_uid: &str) -> Result<Option<Claim>, AgentError> {
        if let Ok(mut g) = self.claim_gets.lock() {
            g.push(format!("{namespace}/{pod_uid}"));
        }
        let all: Vec<Claim> = [&self.claims, &self.unlabelled]
            .iter()
            .flat_map(|m| m.lock().map(|c| c.clone()).unwrap_or_default())
            .collect();
        Ok(all.into_iter().find(|c| c.pod.namespace == namespace && c.pod_uid.as_str() == pod_uid))
    }

    async fn patch_node_annotation(&self, _node: &str, key: &str, value: &str) -> Result<Option<String>, AgentError> {
        if let Ok(mut a) = self.node_annotations.lock() {
            a.insert(key.into(), value.into());
        }
        if let Ok(mut n) = self.node_patches.lock() {
            *n += 1;
        }
        Ok(Some("node-uid-1".into()))
    }

    async fn write_fabric_status(&self, _node: &str, node_uid: &str, status: &Value) -> Result<(), AgentError> {
        assert_eq!(node_uid, "node-uid-1", "the status is owned by the Node");
        if let Ok(mut s) = self.statuses.lock() {
            s.push(status.clone());
        }
        Ok(())
    }

    async fn publish_event(&self, event: &AgentEvent) -> Result<(), AgentError> {
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
        Ok(())
    }
}

/// The GuidClaim the controller writes for `pod` (as built by [`pod`]): `t/ib@net1` has `guid`
/// in `pkey`, on node `node`.
pub fn claim_of(pod: &AgentPod, node: &str, guid: &str, pkey: Option<u16>) -> Claim {
    Claim {
        pod_uid: PodUid::new(&pod.uid),
        pod: ObjectKey { namespace: pod.namespace.clone(), name: pod.name.clone() },
        node: node.into(),
        migrated: false,
        deleting: false,
        attachments: vec![ClaimedAttachment {
            network: NetworkKey::new("t", "ib"),
            slot: Slot::Interface("net1".into()),
            guid: guid.parse::<Guid>().expect("guid"),
            pkey: pkey.and_then(PKey::new),
            former_pkeys: vec![],
            fabric: None,
        }],
    }
}

/// A pod on the node with one configured attachment to `t/ib` carrying `guid`, and (when `vf`
/// is given) Multus' network-status putting it on that VF as `net1`.
pub fn pod(name: &str, guid: &str, vf: Option<&str>) -> AgentPod {
    let networks = format!(
        r#"[{{"name":"ib","interface":"net1","cni-args":{{"guid":"{guid}","mellanox.infiniband.app":"configured","pkey":"0x5"}}}}]"#
    );
    let status = vf.map(|pci| {
        format!(
            r#"[{{"name":"cbr0","interface":"eth0","ips":["10.1.0.5"],"default":true}},
                {{"name":"t/ib","interface":"net1","device-info":{{"type":"pci","version":"1.1.0","pci":{{"pci-address":"{pci}"}}}}}}]"#
        )
    });
    AgentPod {
        namespace: "t".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        networks: Some(networks),
        network_status: status,
        ..AgentPod::default()
    }
}

/// A pod whose network-status names `vf` without a netdev (a VFIO VF handed to a VM).
pub fn vfio_pod(name: &str, guid: &str, vf: &str) -> AgentPod {
    let mut p = pod(name, guid, None);
    p.network_status = Some(format!(
        r#"[{{"name":"cbr0","interface":"eth0","ips":["10.1.0.6"],"default":true}},
            {{"name":"t/ib","interface":"net1","device-info":{{"type":"pci","version":"1.1.0","pci":{{"pci-address":"{vf}"}}}}}}]"#
    ));
    p
}

pub const CX7_PF: &str = "devices/pci0000:16/0000:16:02.0/0000:17:00.0";
pub const CX6_PF: &str = "devices/pci0000:c9/0000:c9:02.0/0000:ca:00.0";
pub const CX7_VF0: &str = "0000:17:00.1";
pub const CX7_VF1: &str = "0000:17:00.2";
pub const CX6_VF0: &str = "0000:ca:00.1";

/// A GPU node with one ConnectX-7 and one ConnectX-6, both InfiniBand, laid out as mlx5_core
/// and MLNX_OFED make it:
/// - `mlx5_0` (ConnectX-7, 15b3:1021, 0000:17:00.0, netdev `ibp23s0` ifindex 4): port 1 ACTIVE,
///   128-entry pkey table (0: 0xffff), gids/0..3; SR-IOV 2 of 16 VFs:
///   VF 0 0000:17:00.1 (mlx5_core, netdev `ibp23s0v0`, RDMA device `mlx5_2` with its own
///   128-entry pkey table, 0: 0x7fff limited), VF 1 0000:17:00.2 (vfio-pci, no netdev, no RDMA
///   device on the host); `device/sriov/<vf>/{node,port,policy}` for both, unset (all-ones);
/// - `mlx5_1` (ConnectX-6, 15b3:101b, 0000:ca:00.0, netdev `ibp202s0` ifindex 5): port 1 ACTIVE;
///   SR-IOV 1 of 8: VF 0 0000:ca:00.1 (mlx5_core, RDMA device `mlx5_3`).
///
/// Pkey tables change over time with [`FakeSys::set_pkey`].
pub fn connectx_node() -> FakeSys {
    let s = FakeSys::new();
    s.driver("mlx5_core");
    s.driver("vfio-pci");
    let pf_table: &[(u32, &str)] = &[(0, "0xffff")];
    let vf_table: &[(u32, &str)] = &[(0, "0x7fff")];
    for (pf, dev, device_id, guid, netdev, ifindex, total) in [
        (CX7_PF, "mlx5_0", "0x1021", "a088:c203:00b1:0a10", "ibp23s0", 4, 16),
        (CX6_PF, "mlx5_1", "0x101b", "b83f:d203:0042:7e20", "ibp202s0", 5, 8),
    ] {
        s.file(&format!("{pf}/vendor"), "0x15b3");
        s.file(&format!("{pf}/device"), device_id);
        let base = s.rdma_device(pf, dev, guid);
        let gid = format!("fe80:0000:0000:0000:{guid}");
        s.port(&base, 1, ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x1a", &gid], (128, pf_table));
        for i in 1..4 {
            s.file(&format!("{base}/ports/1/gids/{i}"), "0000:0000:0000:0000:0000:0000:0000:0000");
        }
        s.file(&format!("{base}/fw_ver"), if dev == "mlx5_0" { "28.41.1000" } else { "20.40.1000" });
        s.netdev(pf, netdev, ifindex);
        s.bind(pf, "mlx5_core");
        s.file(&format!("{pf}/sriov_totalvfs"), &total.to_string());
    }
    s.file(&format!("{CX7_PF}/sriov_numvfs"), "2");
    s.file(&format!("{CX6_PF}/sriov_numvfs"), "1");
    let unset = "ff:ff:ff:ff:ff:ff:ff:ff";
    let vf0 = s.vf(CX7_PF, 0, CX7_VF0);
    s.bind(&vf0, "mlx5_core");
    s.netdev(&vf0, "ibp23s0v0", 8);
    let r = s.rdma_device(&vf0, "mlx5_2", "0000:0000:0000:0000");
    s.port(
        &r,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x1b", "fe80:0000:0000:0000:0000:0000:0000:0000"],
        (128, vf_table),
    );
    s.ofed_guids(CX7_PF, 0, unset, unset);
    let vf1 = s.vf(CX7_PF, 1, CX7_VF1);
    s.bind(&vf1, "vfio-pci");
    s.ofed_guids(CX7_PF, 1, unset, unset);
    let vf = s.vf(CX6_PF, 0, CX6_VF0);
    s.bind(&vf, "mlx5_core");
    s.netdev(&vf, "ibp202s0v0", 9);
    let r = s.rdma_device(&vf, "mlx5_3", "0000:0000:0000:0000");
    s.port(
        &r,
        1,
        ["InfiniBand", "4: ACTIVE", "5: LinkUp", "0x1c", "fe80:0000:0000:0000:0000:0000:0000:0000"],
        (128, vf_table),
    );
    s.ofed_guids(CX6_PF, 0, unset, unset);
    s
}

impl FakeSys {
    /// Entry `index` of the pkey table of `dev` port `port` (what the subnet manager programs).
    pub fn set_pkey(&self, dev: &str, port: u32, index: u32, value: &str) {
        let rel = format!("class/infiniband/{dev}/ports/{port}/pkeys/{index}");
        let path = self.sysfs().path(&rel).expect("pkey entry under the root");
        fs::write(path, format!("{value}\n")).expect("write pkey");
    }
}
