//! Applying the engine's writes to a pod's networks annotation: only our keys change
//! (the GUID field, `mellanox.infiniband.app`, `pkey`), everything else is kept as it was.
//! Shared by the Kubernetes adapter and the simulator so both write exactly the same bytes.

use super::model::AttachmentRequest;
use super::ports::{AttachmentWrite, PatchOutcome};
use crate::netdef::{
    CNI_ARG_CONFIGURED, CNI_ARG_GUID, CNI_ARG_PKEY, CONFIGURED_VALUE, GuidVia, NetdefError, NetworkSelection,
    encode_networks, parse_networks,
};

pub use crate::wire::keys::STATUS_ANNOTATION;

/// Applies `writes` to the annotation text. Returns the new text, or `AttachmentGone` when an
/// attachment to write is not in the annotation any more.
pub fn apply_writes(
    pod_namespace: &str,
    annotation: &str,
    writes: &[AttachmentWrite],
) -> Result<Result<String, PatchOutcome>, NetdefError> {
    let mut elements = parse_networks(annotation)?;
    let requests = AttachmentRequest::from_selections(pod_namespace, &elements);
    for w in writes {
        let Some(i) = requests.iter().position(|r| r.network == w.network && r.slot == w.slot) else {
            return Ok(Err(PatchOutcome::AttachmentGone));
        };
        write_element(&mut elements[i], w);
    }
    Ok(Ok(encode_networks(&elements)))
}

fn write_element(e: &mut NetworkSelection, w: &AttachmentWrite) {
    match (w.guid, w.guid_via) {
        (Some(g), GuidVia::RuntimeConfig) => {
            e.set_infiniband_guid(Some(g));
            // A stale cni-args.guid would contradict the runtime-config GUID.
            if e.cni_arg(CNI_ARG_GUID).is_some() {
                e.set_cni_arg(CNI_ARG_GUID, &g.to_string());
            }
        }
        (Some(g), GuidVia::CniArgs) => e.set_cni_arg(CNI_ARG_GUID, &g.to_string()),
        (None, _) => {
            e.set_infiniband_guid(None);
            e.remove_cni_arg(CNI_ARG_GUID);
        }
    }
    if !w.configured {
        e.remove_cni_arg(CNI_ARG_CONFIGURED);
        e.remove_cni_arg(CNI_ARG_PKEY);
        return;
    }
    e.set_cni_arg(CNI_ARG_CONFIGURED, CONFIGURED_VALUE);
    match w.pkey {
        Some(p) => e.set_cni_arg(CNI_ARG_PKEY, &p.to_string()),
        None => e.remove_cni_arg(CNI_ARG_PKEY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::Slot;
    use crate::netdef::NetworkKey;
    use serde_json::{Value, json};

    fn write(net: &str, slot: Slot, via: GuidVia) -> AttachmentWrite {
        AttachmentWrite {
            network: NetworkKey::new("t", net),
            slot,
            guid: Some("02:00:00:00:00:00:00:0a".parse().unwrap()),
            guid_via: via,
            configured: true,
            pkey: Some("0x10".parse().unwrap()),
        }
    }

    #[test]
    fn cni_args_variant_matches_the_contract_and_keeps_other_fields() {
        let ann = r#"[{"name":"ib","ips":["10.0.0.2/24"],"cni-args":{"foo":"bar"}},{"name":"eth"}]"#;
        let out = apply_writes("t", ann, &[write("ib", Slot::Occurrence(0), GuidVia::CniArgs)]).unwrap().unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!([{"name":"ib","ips":["10.0.0.2/24"],"cni-args":{"foo":"bar","guid":"02:00:00:00:00:00:00:0a","mellanox.infiniband.app":"configured","pkey":"0x10"}},{"name":"eth"}])
        );
    }

    #[test]
    fn infiniband_guid_variant_from_text_form() {
        let out = apply_writes("t", "ib@net1", &[write("ib", Slot::Interface("net1".into()), GuidVia::RuntimeConfig)])
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!([{"name":"ib","interface":"net1","infiniband-guid":"02:00:00:00:00:00:00:0a","cni-args":{"mellanox.infiniband.app":"configured","pkey":"0x10"}}])
        );
    }

    #[test]
    fn second_occurrence_is_written_not_the_first() {
        let out = apply_writes("t", "ib,ib", &[write("ib", Slot::Occurrence(1), GuidVia::CniArgs)]).unwrap().unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(v[0].get("cni-args").is_none());
        assert_eq!(v[1]["cni-args"]["guid"], "02:00:00:00:00:00:00:0a");
    }

    #[test]
    fn a_strip_removes_the_marker_the_pkey_and_an_unbacked_guid() {
        let ann = r#"[{"name":"ib","infiniband-guid":"02:00:00:00:00:00:00:99","cni-args":{"guid":"02:00:00:00:00:00:00:99","mellanox.infiniband.app":"configured","pkey":"0x10","keep":"1"}}]"#;
        let strip = AttachmentWrite {
            guid: None,
            configured: false,
            pkey: None,
            ..write("ib", Slot::Occurrence(0), GuidVia::CniArgs)
        };
        let v: Value = serde_json::from_str(&apply_writes("t", ann, &[strip]).unwrap().unwrap()).unwrap();
        assert_eq!(v, json!([{"name":"ib","cni-args":{"keep":"1"}}]));
    }

    #[test]
    fn missing_attachment_is_reported() {
        assert_eq!(
            apply_writes("t", "other", &[write("ib", Slot::Occurrence(0), GuidVia::CniArgs)]).unwrap(),
            Err(PatchOutcome::AttachmentGone)
        );
    }
}
