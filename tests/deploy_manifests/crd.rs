//! The ledger CRD against docs/ledger.md: names, printer columns, no aggregation into tenants'
//! roles, and its structural schema and validation rules applied for real to the documented
//! claim and to broken ones (types, required fields, patterns with the regex crate, bounds, and
//! the `x-kubernetes-validations` rules with the CEL interpreter, `self`/`oldSelf` bound as the
//! API server binds them).

use super::*;
use cel::{Context, Env, Value as Cel};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use std::sync::Arc;

fn crd() -> CustomResourceDefinition {
    typed(BASE, &yaml(&format!("{BASE}/guidclaim-crd.yaml")))
}

fn schema() -> JSONSchemaProps {
    let versions = crd().spec.versions;
    assert_eq!(versions.len(), 1, "one version");
    versions[0].schema.clone().and_then(|s| s.open_api_v3_schema).expect("openAPIV3Schema")
}

/// The claim docs/ledger.md shows (its first YAML block).
fn documented_claim() -> Value {
    let doc = read("docs/ledger.md");
    let start = doc.find("```yaml\n").expect("docs/ledger.md shows a claim") + "```yaml\n".len();
    let end = start + doc[start..].find("```").expect("closed block");
    serde_norway::from_str(&doc[start..end]).expect("the documented claim is YAML")
}

fn items(s: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match s.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(s) => Some(s),
        JSONSchemaPropsOrArray::Schemas(_) => panic!("a structural schema has one item schema"),
    }
}

fn rule_holds(rule: &str, this: &Value, old: Option<&Value>) -> Result<bool, String> {
    let env = Arc::new(Env::stdlib());
    let mut ctx = Context::with_env(env.clone());
    ctx.add_variable("self", this).expect("self");
    if let Some(old) = old {
        ctx.add_variable("oldSelf", old).expect("oldSelf");
    }
    let program = env.compile(rule).map_err(|e| format!("{rule}: {e}"))?;
    match program.execute(&ctx).map_err(|e| format!("{rule}: {e}"))? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!("{rule}: {other:?}")),
    }
}

/// What the API server would refuse in `v` (at `at`), with `old` the stored object for an update.
/// Metadata is the API server's own (only its name is visible to the rules).
fn refusals(s: &JSONSchemaProps, v: &Value, old: Option<&Value>, at: &str, out: &mut Vec<String>) {
    let ty = s.type_.as_deref().unwrap_or_default();
    let type_ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        other => panic!("{at}: type {other:?} not handled here"),
    };
    if !type_ok {
        out.push(format!("{at}: not {ty}: {v}"));
        return;
    }
    if let (Some(p), Some(text)) = (&s.pattern, v.as_str()) {
        if !regex::Regex::new(p).expect("the pattern is a regex").is_match(text) {
            out.push(format!("{at}: {text:?} does not match {p}"));
        }
    }
    if let (Some(max), Some(text)) = (s.max_length, v.as_str()) {
        if text.chars().count() as i64 > max {
            out.push(format!("{at}: longer than {max}"));
        }
    }
    if let (Some(min), Some(n)) = (s.minimum, v.as_f64()) {
        if n < min {
            out.push(format!("{at}: {n} is below {min}"));
        }
    }
    if let Some(list) = v.as_array() {
        if s.max_items.is_some_and(|max| list.len() as i64 > max) {
            out.push(format!("{at}: more than {:?} items", s.max_items));
        }
        let item = items(s).unwrap_or_else(|| panic!("{at}: an array needs items"));
        for (i, x) in list.iter().enumerate() {
            refusals(item, x, None, &format!("{at}[{i}]"), out);
        }
    }
    if let (Some(map), Some(props)) = (v.as_object(), &s.properties) {
        for key in s.required.iter().flatten().filter(|k| !map.contains_key(*k)) {
            out.push(format!("{at}: {key} is required"));
        }
        for (key, x) in map {
            match props.get(key) {
                // Metadata belongs to the API server; the schema only says it is an object.
                _ if at.is_empty() && key == "metadata" => {}
                Some(p) => refusals(p, x, old.and_then(|o| o.get(key)), &format!("{at}.{key}"), out),
                None => out.push(format!("{at}.{key}: not in the schema (it would be pruned)")),
            }
        }
    }
    for r in s.x_kubernetes_validations.iter().flatten() {
        let transition = r.rule.contains("oldSelf");
        if transition && old.is_none() {
            continue; // transition rules run on updates only
        }
        match rule_holds(&r.rule, v, old.filter(|_| transition)) {
            Ok(true) => {}
            Ok(false) => out.push(format!("{at}: {}", r.message.clone().unwrap_or_else(|| r.rule.clone()))),
            Err(e) => out.push(format!("{at}: rule error {e}")),
        }
    }
}

fn refused(v: &Value, old: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    refusals(&schema(), v, old, "", &mut out);
    out
}

#[test]
fn ledger_crd_names_columns_and_no_aggregation_match_docs_ledger_md() {
    let crd = crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("guidclaims.fabric-sync.io"));
    let labels = crd.metadata.labels.clone().unwrap_or_default();
    assert!(
        labels.keys().all(|k| !k.starts_with("rbac.authorization.k8s.io/aggregate-to")),
        "tenants' admin/edit/view roles must not cover the ledger: {labels:?}"
    );
    let spec = &crd.spec;
    assert_eq!((spec.group.as_str(), spec.scope.as_str()), ("fabric-sync.io", "Namespaced"));
    let n = &spec.names;
    assert_eq!(
        (n.kind.as_str(), n.plural.as_str(), n.singular.as_deref()),
        ("GuidClaim", "guidclaims", Some("guidclaim"))
    );
    assert_eq!(n.short_names.clone().unwrap_or_default(), ["gclaim"]);
    assert!(n.categories.is_none(), "not in `kubectl get all`");
    let v = &spec.versions[0];
    assert_eq!((v.name.as_str(), v.served, v.storage), ("v1alpha1", true, true));
    assert!(v.subresources.is_none(), "no status subresource: the controller writes the whole claim");
    let columns: Vec<(&str, &str, &str)> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Pod", "string", ".spec.pod"),
            ("Node", "string", ".spec.node"),
            ("Networks", "string", ".spec.attachments[*].network"),
            ("GUIDs", "string", ".spec.attachments[*].guid"),
            ("PKeys", "string", ".spec.attachments[*].pkey"),
            ("Removing", "date", ".metadata.deletionTimestamp"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
    // Every spec column names a field of the schema.
    let schema = schema();
    for (name, _, path) in &columns {
        let Some(rest) = path.strip_prefix(".spec.") else { continue };
        let mut s = &schema.properties.as_ref().unwrap()["spec"];
        for part in rest.split('.') {
            let (field, list) = part.strip_suffix("[*]").map_or((part, false), |f| (f, true));
            s = s.properties.as_ref().and_then(|p| p.get(field)).unwrap_or_else(|| panic!("column {name}: no {field}"));
            if list {
                s = items(s).unwrap_or_else(|| panic!("column {name}: {field} is not a list"));
            }
        }
    }
    let doc = read("docs/ledger.md");
    assert!(doc.contains(
        "`kubectl get guidclaims -A` shows pod, node, networks, GUIDs, pkeys, whether it is being\nremoved, and age"
    ));
}

#[test]
fn ledger_crd_accepts_the_documented_claim_and_refuses_broken_ones() {
    let good = documented_claim();
    assert_eq!(refused(&good, None), Vec::<String>::new(), "the claim docs/ledger.md shows");
    assert_eq!(refused(&good, Some(&good)), Vec::<String>::new(), "an update that changes nothing");
    let spec = schema().properties.unwrap()["spec"].clone();
    let attachment = items(&spec.properties.as_ref().unwrap()["attachments"]).unwrap().clone();
    let mut fields: Vec<&str> = spec.properties.as_ref().unwrap().keys().map(String::as_str).collect();
    fields.extend(attachment.properties.as_ref().unwrap().keys().map(String::as_str));
    fields.sort_unstable();
    let mut expected = [
        "attachments",
        "fabric",
        "formerPkeys",
        "guid",
        "interface",
        "migrated",
        "network",
        "node",
        "occurrence",
        "pkey",
        "pod",
        "podUid",
    ];
    expected.sort_unstable();
    assert_eq!(fields, expected, "spec and attachment fields (docs/ledger.md)");
    assert_eq!(attachment.required.clone().unwrap_or_default(), ["network", "guid"]);

    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        refused(&v, None)
    };
    let first = |v: &mut Value| v.pointer_mut("/spec/attachments/0").unwrap().clone();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("guid short", broken(&|v| v["spec"]["attachments"][0]["guid"] = "02:00".into()), "does not match"),
        (
            "guid upper case",
            broken(&|v| v["spec"]["attachments"][0]["guid"] = "02:00:00:00:00:00:00:2A".into()),
            "does not match",
        ),
        (
            "guid bare hex",
            broken(&|v| v["spec"]["attachments"][0]["guid"] = "020000000000002a".into()),
            "does not match",
        ),
        ("pkey without 0x", broken(&|v| v["spec"]["attachments"][0]["pkey"] = "1000".into()), "does not match"),
        ("pkey too long", broken(&|v| v["spec"]["attachments"][0]["pkey"] = "0x18000".into()), "does not match"),
        ("former pkey", broken(&|v| v["spec"]["attachments"][0]["formerPkeys"][0] = "4095".into()), "does not match"),
        (
            "no guid",
            broken(&|v| {
                v["spec"]["attachments"][0].as_object_mut().unwrap().remove("guid");
            }),
            "guid is required",
        ),
        (
            "no network",
            broken(&|v| {
                v["spec"]["attachments"][0].as_object_mut().unwrap().remove("network");
            }),
            "required",
        ),
        ("occurrence -1", broken(&|v| v["spec"]["attachments"][0]["occurrence"] = (-1).into()), "below"),
        ("occurrence text", broken(&|v| v["spec"]["attachments"][0]["occurrence"] = "0".into()), "not integer"),
        ("migrated text", broken(&|v| v["spec"]["migrated"] = "false".into()), "not boolean"),
        ("unknown field", broken(&|v| v["spec"]["owner"] = "me".into()), "not in the schema"),
        (
            "same GUID twice",
            broken(&|v| {
                let a = first(v);
                v["spec"]["attachments"].as_array_mut().unwrap().push(a);
            }),
            "a GUID appears at most once",
        ),
        (
            "65 attachments",
            broken(&|v| {
                let a = first(v);
                let list = v["spec"]["attachments"].as_array_mut().unwrap();
                list.clear();
                for i in 0..65 {
                    let mut x = a.clone();
                    x["guid"] = format!("02:00:00:00:00:00:00:{i:02x}").into();
                    list.push(x);
                }
            }),
            "more than",
        ),
        (
            "named after another pod",
            broken(&|v| v["metadata"]["name"] = "trainer-0".into()),
            "named after its pod's UID",
        ),
    ];
    for (what, refusals, expected) in cases {
        assert!(refusals.iter().any(|r| r.contains(expected)), "{what}: expected {expected:?}, got {refusals:?}");
    }
    // 64 distinct attachments are fine.
    let mut many = good.clone();
    let a = first(&mut many);
    let list: Vec<Value> = (0..64)
        .map(|i| {
            let mut x = a.clone();
            x["guid"] = format!("02:00:00:00:00:00:01:{i:02x}").into();
            x
        })
        .collect();
    many["spec"]["attachments"] = Value::Array(list);
    assert_eq!(refused(&many, None), Vec::<String>::new());
    // A claim belongs to one pod for good.
    for field in ["pod", "podUid"] {
        let mut moved = good.clone();
        moved["spec"][field] = "other".into();
        let r = refused(&moved, Some(&good));
        assert!(r.iter().any(|m| m.contains(&format!("spec.{field} is immutable"))), "{field}: {r:?}");
    }
}

#[test]
fn partition_claim_crd_accepts_what_the_controller_writes_and_refuses_a_claim_not_named_after_its_pkey() {
    let crd: CustomResourceDefinition = typed(BASE, &yaml(&format!("{BASE}/partitionclaim-crd.yaml")));
    assert_eq!(crd.spec.scope, "Cluster");
    assert!(crd.metadata.labels.unwrap_or_default().keys().all(|k| !k.contains("aggregate-to")), "no aggregation");
    let schema = crd.spec.versions[0].schema.clone().and_then(|s| s.open_api_v3_schema).expect("schema");
    let check = |v: &Value| {
        let mut out = Vec::new();
        refusals(&schema, v, None, "", &mut out);
        out
    };
    use fabric_sync::engine::PartitionScope;
    use fabric_sync::ib::PKey;
    use fabric_sync::netdef::NetworkKey;
    for (p, scope) in [
        (0x0010, PartitionScope::Network(NetworkKey::new("tenant-a", "ib-auto"))),
        (0x1000, PartitionScope::Namespace("team-c".into())),
        (0x7ffe, PartitionScope::Network(NetworkKey::new("t", "n"))),
    ] {
        let obj = fabric_sync::kube::partition_claim_object(PKey::new(p).unwrap(), &scope, "fs_x");
        let v = serde_json::to_value(&obj).unwrap();
        assert!(check(&v).is_empty(), "{v}: {:?}", check(&v));
        let mut renamed = v.clone();
        renamed["metadata"]["name"] = Value::String("pkey-0x0001".into());
        assert!(check(&renamed).iter().any(|r| r.contains("named after its pkey")), "{:?}", check(&renamed));
    }
    let obj = fabric_sync::kube::partition_claim_object(
        PKey::new(0x10).unwrap(),
        &PartitionScope::Namespace("t".into()),
        "x",
    );
    let mut v = serde_json::to_value(&obj).unwrap();
    v["spec"]["pkey"] = Value::String("0x10".into());
    assert!(!check(&v).is_empty(), "an unpadded pkey is refused");
    v["spec"]["pkey"] = Value::String("0x0010".into());
    v["spec"]["scope"] = serde_json::json!({"network": "t/n", "namespace": "t"});
    assert!(!check(&v).is_empty(), "one scope, not both");
}
