//! The agent's report: one `NodeFabricStatus` (`fabric-sync.io/v1alpha1`, cluster-scoped, named
//! after the node, owned by the Node) holding, per local attachment, the verdict on its VF's GUID
//! and its fabric readiness, and the VFs carrying GUIDs the ledger does not explain. The
//! controller mirrors what users need onto pods as Events. Built as plain JSON, written only
//! when it changed.

use serde_json::{Value, json};

use super::foreign::ForeignVf;
use super::readiness::{ReadyState, Watch};
use super::verify::{Assigned, Verdict};

pub use crate::wire::keys::GROUP as STATUS_GROUP;
pub const STATUS_VERSION: &str = "v1alpha1";
pub const STATUS_KIND: &str = "NodeFabricStatus";
pub const STATUS_PLURAL: &str = "nodefabricstatuses";

/// Condition reasons of an attachment's fabric readiness (also Event reasons the controller
/// mirrors onto the pod).
pub const FABRIC_READY: &str = "FabricReady";
pub const FABRIC_READY_TIMEOUT: &str = "FabricReadyTimeout";
pub const WAITING_FOR_PKEY: &str = "WaitingForPKey";
pub const NO_PARTITION: &str = "NoPartition";
pub const NOT_VERIFIED: &str = "NotVerified";

/// One checked attachment, as reported.
pub struct AttachmentReport<'a> {
    pub assigned: &'a Assigned,
    pub pod: String,
    pub vf: Option<String>,
    pub vf_guid: Option<String>,
    pub verdict: &'a Verdict,
    pub watch: Option<&'a Watch>,
}

fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The `fabricReady` block of one attachment.
pub fn fabric_ready(r: &AttachmentReport<'_>) -> Value {
    let pkey = r.assigned.ledger.as_ref().ok().and_then(|e| e.pkey);
    let Some(pkey) = pkey else {
        return match &r.assigned.ledger {
            Ok(_) => json!({"status": "True", "reason": NO_PARTITION, "message": "the network has no pkey"}),
            Err(_) => json!({"status": "Unknown", "reason": NOT_VERIFIED, "message": "no ledger record"}),
        };
    };
    let Some(w) = r.watch else {
        return json!({"status": "Unknown", "reason": NOT_VERIFIED,
                      "message": format!("pkey {pkey}: the VF is not known yet")});
    };
    let table = match &w.table {
        Ok(t) => t.describe(),
        Err(why) => format!("no pkey table ({why})"),
    };
    match &w.state {
        ReadyState::Waiting => json!({"status": "False", "reason": WAITING_FOR_PKEY, "pkey": pkey.to_string(),
            "table": table, "message": format!("waiting for pkey {pkey} in {table}")}),
        ReadyState::Ready { after, index, entry } => json!({"status": "True", "reason": FABRIC_READY,
            "pkey": pkey.to_string(), "table": table, "seconds": secs(*after),
            "message": format!("pkey {pkey} is entry {index} ({entry:#06x}, {}) of {table}, {:.3}s after the attachment was seen configured",
                if entry & 0x8000 != 0 { "full member" } else { "limited member" }, after.as_secs_f64())}),
        ReadyState::TimedOut { after } => json!({"status": "False", "reason": FABRIC_READY_TIMEOUT,
            "pkey": pkey.to_string(), "table": table, "seconds": secs(*after),
            "message": format!("pkey {pkey} is not in {table} {}s after the attachment was seen configured{}: \
                check the partition in UFM (fabric-sync ufm show {pkey}), the subnet manager and the port's state",
                after.as_secs(), w.read_error.as_deref().map(|e| format!(" (reading it: {e})")).unwrap_or_default())}),
    }
}

/// The attachment's entry in `status.attachments`.
pub fn attachment_entry(r: &AttachmentReport<'_>) -> Value {
    let a = r.assigned;
    let mut v = json!({
        "pod": r.pod,
        "podUid": a.pod_uid,
        "attachment": a.label,
        "verdict": r.verdict.result(),
        "message": r.verdict.text(a.ledger.as_ref().ok().map(|e| e.guid)),
        "fabricReady": fabric_ready(r),
    });
    if let Ok(e) = &a.ledger {
        v["guid"] = json!(e.guid.to_string());
        if let Some(p) = e.pkey {
            v["pkey"] = json!(p.to_string());
        }
    }
    if let Some(vf) = &r.vf {
        v["vf"] = json!(vf);
    }
    if let Some(g) = &r.vf_guid {
        v["vfGuid"] = json!(g);
    }
    v
}

/// The `status.foreignVfs` entry of a finding; `action` says what program mode did.
pub fn foreign_entry(f: &ForeignVf, assigned: &[Assigned], pods: &[String], action: &str) -> Value {
    let mut v = json!({
        "vf": f.pci, "guid": f.guid.to_string(), "reason": f.kind.reason(),
        "message": f.describe(assigned), "action": action,
    });
    if let Some(a) = f.holder.and_then(|h| assigned.get(h)) {
        v["pod"] = json!(pods.get(a.pod).cloned().unwrap_or_default());
        v["podUid"] = json!(a.pod_uid);
        v["attachment"] = json!(a.label);
    }
    if let Some(o) = &f.owner {
        v["ownerPod"] = json!(o.pod);
        v["ownerPodUid"] = json!(o.pod_uid);
    }
    v
}

/// The whole `status`, with two node-level conditions summing the entries up.
pub fn node_status(mode: &str, attachments: Vec<Value>, foreign: Vec<Value>) -> Value {
    let count = |f: &dyn Fn(&Value) -> bool| attachments.iter().filter(|a| f(a)).count();
    let mismatched = count(&|a| a["verdict"] == "mismatch");
    let timed_out = count(&|a| a["fabricReady"]["reason"] == FABRIC_READY_TIMEOUT);
    let waiting = count(&|a| a["fabricReady"]["reason"] == WAITING_FOR_PKEY);
    let verified = if mismatched == 0 && foreign.is_empty() {
        json!({"type": "VfGuidsVerified", "status": "True", "reason": "Verified",
               "message": format!("{} attachment(s) checked, no VF carries a GUID the ledger does not give it", attachments.len())})
    } else {
        json!({"type": "VfGuidsVerified", "status": "False", "reason": if foreign.is_empty() { "VfGuidMismatch" } else { "VfGuidForeign" },
               "message": format!("{mismatched} attachment(s) on a VF with another GUID, {} VF(s) with a GUID the ledger does not give them", foreign.len())})
    };
    let ready = match (timed_out, waiting) {
        (0, 0) => json!({"type": "FabricReady", "status": "True", "reason": FABRIC_READY,
                         "message": "every configured attachment's pkey is in its pkey table"}),
        (0, w) => json!({"type": "FabricReady", "status": "False", "reason": WAITING_FOR_PKEY,
                         "message": format!("{w} attachment(s) wait for their pkey")}),
        (t, w) => json!({"type": "FabricReady", "status": "False", "reason": FABRIC_READY_TIMEOUT,
                         "message": format!("{t} attachment(s) timed out waiting for their pkey, {w} still waiting")}),
    };
    json!({"mode": mode, "attachments": attachments, "foreignVfs": foreign, "conditions": [verified, ready]})
}

/// The whole object, for a create.
pub fn status_object(node: &str, node_uid: &str, status: &Value) -> Value {
    json!({
        "apiVersion": format!("{STATUS_GROUP}/{STATUS_VERSION}"),
        "kind": STATUS_KIND,
        "metadata": {
            "name": node,
            "labels": {"app.kubernetes.io/managed-by": "fabric-sync-agent"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "status": status,
    })
}
