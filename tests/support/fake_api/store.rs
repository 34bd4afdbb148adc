//! The fake API server's state and semantics: objects by resource, namespace and name; a global
//! resourceVersion counter; a change history that watches replay from (until compacted);
//! optimistic concurrency; finalizers; and the test controls (outages, faults, request log).

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::json::{Selector, json_patch, merge_patch};

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Pods,
    Nodes,
    Namespaces,
    CoreEvents,
    Events,
    Leases,
    Nads,
    Smcs,
}

pub struct ResInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl Res {
    pub const ALL: [Res; 8] =
        [Res::Pods, Res::Nodes, Res::Namespaces, Res::CoreEvents, Res::Events, Res::Leases, Res::Nads, Res::Smcs];

    pub fn info(self) -> ResInfo {
        let (group, version, plural, kind, namespaced) = match self {
            Res::Pods => ("", "v1", "pods", "Pod", true),
            Res::Nodes => ("", "v1", "nodes", "Node", false),
            Res::Namespaces => ("", "v1", "namespaces", "Namespace", false),
            Res::CoreEvents => ("", "v1", "events", "Event", true),
            Res::Events => ("events.k8s.io", "v1", "events", "Event", true),
            Res::Leases => ("coordination.k8s.io", "v1", "leases", "Lease", true),
            Res::Nads => {
                ("k8s.cni.cncf.io", "v1", "network-attachment-definitions", "NetworkAttachmentDefinition", true)
            }
            Res::Smcs => ("spiderpool.spidernet.io", "v2beta1", "spidermultusconfigs", "SpiderMultusConfig", true),
        };
        ResInfo { group, version, plural, kind, namespaced }
    }

    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() { i.version.to_string() } else { format!("{}/{}", i.group, i.version) }
    }

    pub fn find(group: &str, version: &str, plural: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| {
            let i = r.info();
            i.group == group && i.version == version && i.plural == plural
        })
    }
}

/// An answer other than success, rendered as a `Status`.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into() }
    }

    pub fn not_found(res: Res, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", res.info().plural))
    }

    pub fn conflict(res: Res, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.info().plural
            ),
        )
    }

    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Arrival order (assigned when the request arrives; the log is in completion order).
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<String>,
    /// The caller's `User-Agent`.
    pub client: String,
    pub status: u16,
}

impl RequestRecord {
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// A one-shot (or n-shot) failure for requests that match.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    pub client: Option<String>,
    pub method: Option<String>,
    pub path_contains: Option<String>,
    pub code: u16,
    /// `None`: for ever.
    pub remaining: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    res: Res,
    kind: ChangeKind,
    prev: Option<Value>,
    obj: Value,
}

/// A watch's scope.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
    /// Answer `PartialObjectMetadata` (kube's metadata watches ask for it).
    pub meta_only: bool,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str()) {
                return false;
            }
        }
        self.labels.matches_labels(obj) && self.fields.matches_fields(obj)
    }

    fn render(&self, obj: &Value) -> Value {
        if self.meta_only { partial_meta(obj) } else { obj.clone() }
    }
}

pub fn partial_meta(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

struct Watcher {
    res: Res,
    filter: Filter,
    tx: mpsc::UnboundedSender<String>,
}

/// How a watch starts.
pub enum WatchStart {
    /// The resourceVersion was compacted away: one ERROR event with a 410 Status.
    Gone(String),
    Stream(mpsc::UnboundedReceiver<String>),
}

#[derive(Default)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<(Res, String, String), Value>,
    history: Vec<Change>,
    compacted: u64,
    watchers: Vec<Watcher>,
    pub absent: HashSet<Res>,
    pub outage: HashSet<Res>,
    pub watch_outage: bool,
    pub log: Vec<RequestRecord>,
    pub faults: Vec<Fault>,
    /// Merge patches applied (as another writer) just before the next write to an object.
    pub concurrent: Vec<((Res, String, String), Value)>,
    pub arrivals: u64,
    next_uid: u64,
}

fn now_rfc3339() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second()).map(|t| t.to_string()).unwrap_or_default()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

fn line(kind: &str, obj: Value) -> String {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    s
}

impl Store {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    fn key(res: Res, ns: &str, name: &str) -> (Res, String, String) {
        let ns = if res.info().namespaced { ns.to_string() } else { String::new() };
        (res, ns, name.to_string())
    }

    pub fn get(&self, res: Res, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects.get(&Self::key(res, ns, name)).cloned().ok_or_else(|| ApiError::not_found(res, name))
    }

    pub fn list(&self, res: Res, filter: &Filter) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, _, _), o)| *r == res && filter.matches(o))
            .map(|(_, o)| filter.render(o))
            .collect()
    }

    /// Creates an object. With `keep_uid`, a `metadata.uid` in `obj` is kept (test seeding).
    pub fn create(&mut self, res: Res, ns: &str, mut obj: Value, keep_uid: bool) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the body is not a JSON object"));
        }
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) => {
                self.next_uid += 1;
                format!("{g}{:05x}", self.next_uid)
            }
            _ => return Err(ApiError::new(422, "Invalid", "metadata.name: Required value")),
        };
        let info = res.info();
        if info.namespaced {
            match meta_str(&obj, "namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::new(
                        400,
                        "BadRequest",
                        "the namespace of the object does not match the request",
                    ));
                }
                _ => set_meta(&mut obj, "namespace", json!(ns)),
            }
        }
        let key = Self::key(res, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", info.plural)));
        }
        self.next_uid += 1;
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(info.kind);
        set_meta(&mut obj, "name", json!(name));
        if !(keep_uid && meta_str(&obj, "uid").is_some()) {
            set_meta(&mut obj, "uid", json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid)));
        }
        set_meta(&mut obj, "creationTimestamp", json!(now_rfc3339()));
        set_meta(&mut obj, "generation", json!(1));
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("deletionTimestamp");
        }
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        self.objects.insert(key, obj.clone());
        self.commit(res, ChangeKind::Added, None, obj.clone());
        Ok(obj)
    }

    /// PUT: a stale `metadata.resourceVersion` (or another UID) answers 409.
    pub fn replace(&mut self, res: Res, ns: &str, name: &str, mut obj: Value) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        if meta_str(&obj, "name").is_some_and(|n| n != name) {
            return Err(ApiError::new(400, "BadRequest", "the name of the object does not match the request"));
        }
        if let Some(rv) = meta_str(&obj, "resourceVersion").filter(|r| !r.is_empty()) {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::conflict(res, name));
            }
        }
        if meta_str(&obj, "uid").is_some_and(|u| Some(u) != meta_str(&old, "uid")) {
            return Err(ApiError::new(409, "Conflict", "Precondition failed: UID in precondition does not match"));
        }
        for field in ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"] {
            match old.get("metadata").and_then(|m| m.get(field)) {
                Some(v) => set_meta(&mut obj, field, v.clone()),
                None => {
                    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove(field);
                    }
                }
            }
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.info().kind);
        Ok(self.update(res, ns, name, old, obj))
    }

    /// PATCH (`merge`: RFC 7386, else RFC 6902). A `resourceVersion` in the patch that is not
    /// the current one answers 409, as does a changed UID.
    pub fn patch(&mut self, res: Res, ns: &str, name: &str, merge: bool, patch: &Value) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        let new = if merge {
            if let Some(rv) = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                if Some(rv) != meta_str(&old, "resourceVersion") {
                    return Err(ApiError::conflict(res, name));
                }
            }
            let mut new = old.clone();
            merge_patch(&mut new, patch);
            new
        } else {
            let new = json_patch(&old, patch).map_err(|e| ApiError::new(422, "Invalid", e.0))?;
            if meta_str(&new, "resourceVersion") != meta_str(&old, "resourceVersion") {
                return Err(ApiError::conflict(res, name));
            }
            new
        };
        if meta_str(&new, "uid") != meta_str(&old, "uid") {
            return Err(ApiError::new(409, "Conflict", "Precondition failed: UID in precondition does not match"));
        }
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::new(400, "BadRequest", "metadata.name cannot be changed"));
        }
        Ok(self.update(res, ns, name, old, new))
    }

    fn update(&mut self, res: Res, ns: &str, name: &str, old: Value, mut new: Value) -> Value {
        self.rv += 1;
        set_meta(&mut new, "resourceVersion", json!(self.rv.to_string()));
        let key = Self::key(res, ns, name);
        let finalizers_left =
            new.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if new.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_left {
            self.objects.remove(&key);
            self.commit(res, ChangeKind::Deleted, Some(old), new.clone());
        } else {
            self.objects.insert(key, new.clone());
            self.commit(res, ChangeKind::Modified, Some(old), new.clone());
        }
        new
    }

    /// DELETE: with finalizers the object only gets a `deletionTimestamp`.
    pub fn delete(&mut self, res: Res, ns: &str, name: &str) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        let has_finalizers =
            old.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old.clone();
            set_meta(&mut new, "deletionTimestamp", json!(now_rfc3339()));
            set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
            return Ok(self.update(res, ns, name, old, new));
        }
        self.objects.remove(&Self::key(res, ns, name));
        self.rv += 1;
        let mut gone = old.clone();
        set_meta(&mut gone, "resourceVersion", json!(self.rv.to_string()));
        self.commit(res, ChangeKind::Deleted, Some(old), gone.clone());
        Ok(gone)
    }

    fn commit(&mut self, res: Res, kind: ChangeKind, prev: Option<Value>, obj: Value) {
        let change = Change { rv: self.rv, res, kind, prev, obj };
        self.watchers.retain(|w| match (w.res == res).then(|| event_for(&w.filter, &change)).flatten() {
            Some(l) => w.tx.send(l).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
    }

    /// Starts a watch from `rv` (`None` or 0: the current objects as ADDED first).
    pub fn watch(&mut self, res: Res, filter: Filter, rv: Option<u64>, bookmarks: bool) -> WatchStart {
        let (tx, rx) = mpsc::unbounded_channel();
        match rv.filter(|v| *v > 0) {
            Some(from) if from < self.compacted => {
                let status =
                    ApiError::new(410, "Expired", format!("too old resource version: {from} ({})", self.compacted))
                        .status();
                return WatchStart::Gone(line("ERROR", status));
            }
            Some(from) => {
                for c in self.history.iter().filter(|c| c.rv > from && c.res == res) {
                    if let Some(l) = event_for(&filter, c) {
                        let _ = tx.send(l);
                    }
                }
            }
            None => {
                for o in self.list(res, &Filter { meta_only: false, ..filter.clone() }) {
                    let _ = tx.send(line("ADDED", filter.render(&o)));
                }
            }
        }
        if bookmarks {
            let info = res.info();
            let kind = if filter.meta_only { "PartialObjectMetadata" } else { info.kind };
            let api_version = if filter.meta_only { "meta.k8s.io/v1".to_string() } else { res.api_version() };
            let bm =
                json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": self.rv.to_string()}});
            let _ = tx.send(line("BOOKMARK", bm));
        }
        self.watchers.push(Watcher { res, filter, tx });
        WatchStart::Stream(rx)
    }

    /// Ends every watch stream (clients see the connection close and resume).
    pub fn drop_watches(&mut self) {
        self.watchers.clear();
    }

    pub fn open_watches(&self, res: Res) -> usize {
        self.watchers.iter().filter(|w| w.res == res && !w.tx.is_closed()).count()
    }

    /// Forgets the history: a watch from any version seen so far answers 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv + 1;
    }

    /// The first fault matching a request, used up by one.
    pub fn take_fault(&mut self, method: &str, path: &str, client: &str) -> Option<u16> {
        let i = self.faults.iter().position(|f| {
            f.client.as_deref().is_none_or(|c| c == client)
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let code = self.faults[i].code;
        match &mut self.faults[i].remaining {
            Some(n) if *n <= 1 => {
                self.faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(code)
    }

    /// Applies a pending concurrent change to this object, if one is armed.
    pub fn run_concurrent_change(&mut self, res: Res, ns: &str, name: &str) {
        let key = Self::key(res, ns, name);
        if let Some(i) = self.concurrent.iter().position(|(k, _)| *k == key) {
            let (_, patch) = self.concurrent.remove(i);
            let _ = self.patch(res, ns, name, true, &patch);
        }
    }

    pub fn key_for(res: Res, ns: &str, name: &str) -> (Res, String, String) {
        Self::key(res, ns, name)
    }
}

fn event_for(filter: &Filter, c: &Change) -> Option<String> {
    let now = filter.matches(&c.obj);
    let before = c.prev.as_ref().is_some_and(|p| filter.matches(p));
    let kind = match c.kind {
        ChangeKind::Added if now => "ADDED",
        ChangeKind::Modified if now && before => "MODIFIED",
        ChangeKind::Modified if now => "ADDED",
        ChangeKind::Modified if before => "DELETED",
        ChangeKind::Deleted if now || before => "DELETED",
        _ => return None,
    };
    Some(line(kind, filter.render(&c.obj)))
}
