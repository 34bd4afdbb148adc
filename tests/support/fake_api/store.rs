//! The fake API server's state and semantics: objects by resource, namespace and name; a global
//! resourceVersion counter; a change history that watches replay from (until compacted);
//! optimistic concurrency; finalizers; and the test controls (outages, faults, request log).
//! The garbage collector and the namespace lifecycle are in `gc.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::json::{Selector, json_patch, merge_patch};
pub use super::types::{ApiError, Fault, RequestRecord, Res};

pub(super) type Key = (Res, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeKind {
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

/// A DELETE's options (the `DeleteOptions` body kube sends).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`: 409 unless the object has this UID.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`: 409 unless the object is at this version.
    pub resource_version: Option<String>,
    /// `propagationPolicy: Orphan`: dependents lose their reference to the object instead of
    /// being collected. (`Foreground` is served as `Background`.)
    pub orphan: bool,
}

impl DeleteOptions {
    pub fn parse(body: &[u8]) -> Result<DeleteOptions, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(DeleteOptions::default());
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("bad DeleteOptions: {e}")))?;
        let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        Ok(DeleteOptions {
            uid: text("/preconditions/uid"),
            resource_version: text("/preconditions/resourceVersion"),
            orphan: text("/propagationPolicy").as_deref() == Some("Orphan")
                || v.get("orphanDependents").and_then(Value::as_bool) == Some(true),
        })
    }
}

#[derive(Default)]
pub struct Store {
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Key, Value>,
    /// UID → the object's key, for the garbage collector's owner look-ups.
    pub(super) uids: HashMap<String, Key>,
    history: Vec<Change>,
    compacted: u64,
    watchers: Vec<Watcher>,
    pub absent: HashSet<Res>,
    pub outage: HashSet<Res>,
    pub watch_outage: bool,
    /// While on, removals do not collect dependents (see `gc.rs`).
    pub gc_disabled: bool,
    pub log: Vec<RequestRecord>,
    pub faults: Vec<Fault>,
    /// Merge patches applied (as another writer) just before the next write to an object.
    pub concurrent: Vec<(Key, Value)>,
    pub arrivals: u64,
    next_uid: u64,
    /// Added to every answer but a watch stream's (API server latency).
    pub latency: std::time::Duration,
    /// Most changes kept for resuming watches (older ones are compacted away); `None`: all.
    pub history_limit: Option<usize>,
}

pub(super) fn now_rfc3339() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second()).map(|t| t.to_string()).unwrap_or_default()
}

pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub(super) fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// `metadata.finalizers`, as strings.
pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

pub(super) fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn line(kind: &str, obj: Value) -> String {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    s
}

/// Go's `%#v` of a `[]string`, as validation messages print finalizer lists.
fn go_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

impl Store {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    fn key(res: Res, ns: &str, name: &str) -> Key {
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
    /// In a namespace that is being deleted, it answers 403 as the real admission does.
    pub fn create(&mut self, res: Res, ns: &str, mut obj: Value, keep_uid: bool) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the body is not a JSON object"));
        }
        let info = res.info();
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) => {
                self.next_uid += 1;
                format!("{g}{:05x}", self.next_uid)
            }
            _ => return Err(ApiError::new(422, "Invalid", "metadata.name: Required value")),
        };
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
            self.refuse_in_terminating_namespace(res, ns, meta_str(&obj, "name").unwrap_or(""))?;
        }
        let key = Self::key(res, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.qualified()))
                .with_details(json!({"name": name, "group": info.group, "kind": info.plural})));
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
        remove_meta(&mut obj, "deletionTimestamp");
        remove_meta(&mut obj, "deletionGracePeriodSeconds");
        if res == Res::Namespaces {
            // As the real server: the namespace controller's finalizer, and phase Active.
            if obj.pointer("/spec/finalizers").is_none() {
                merge_patch(&mut obj, &json!({"spec": {"finalizers": ["kubernetes"]}}));
            }
            merge_patch(&mut obj, &json!({"status": {"phase": "Active"}}));
        }
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        if let Some(uid) = meta_str(&obj, "uid") {
            self.uids.insert(uid.to_string(), key.clone());
        }
        self.objects.insert(key, obj.clone());
        self.commit(res, ChangeKind::Added, None, obj.clone());
        Ok(obj)
    }

    /// PUT: a stale `metadata.resourceVersion` (or another UID) answers 409.
    pub fn replace(&mut self, res: Res, ns: &str, name: &str, mut obj: Value) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        if !obj.is_object() {
            return Err(ApiError::new(400, "BadRequest", "the body is not a JSON object"));
        }
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
        self.prepare_update(res, name, &old, &mut obj)?;
        Ok(self.update(res, ns, name, old, obj))
    }

    /// PATCH (`merge`: RFC 7386, else RFC 6902). A `resourceVersion` in the patched object
    /// that is not the current one answers 409 (a merge patch naming one, or a JSON patch
    /// replacing it), as does a changed UID.
    pub fn patch(&mut self, res: Res, ns: &str, name: &str, merge: bool, patch: &Value) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        let mut new = if merge {
            let mut new = old.clone();
            merge_patch(&mut new, patch);
            new
        } else {
            json_patch(&old, patch).map_err(|e| ApiError::new(422, "Invalid", e.0))?
        };
        if !new.is_object() {
            return Err(ApiError::new(422, "Invalid", "the patched object is not a JSON object"));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|r| !r.is_empty()) {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::conflict(res, name));
            }
        }
        if meta_str(&new, "uid").is_some_and(|u| Some(u) != meta_str(&old, "uid")) {
            return Err(ApiError::new(409, "Conflict", "Precondition failed: UID in precondition does not match"));
        }
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::new(400, "BadRequest", "metadata.name cannot be changed"));
        }
        self.prepare_update(res, name, &old, &mut new)?;
        Ok(self.update(res, ns, name, old, new))
    }

    /// What the real server does to every update: system fields are kept from the stored
    /// object (a deletionTimestamp can be neither removed nor set), and an object being deleted
    /// takes no new finalizer (422).
    fn prepare_update(&self, res: Res, name: &str, old: &Value, new: &mut Value) -> Result<(), ApiError> {
        if !is_deleting(old) && is_deleting(new) {
            let detail = format!(
                "Invalid value: {}: field is immutable",
                new.pointer("/metadata/deletionTimestamp").cloned().unwrap_or_default()
            );
            return Err(ApiError::invalid(res, name, "metadata.deletionTimestamp", "FieldValueInvalid", &detail));
        }
        if is_deleting(old) {
            let before = finalizers(old);
            let mut added: Vec<String> = finalizers(new).into_iter().filter(|f| !before.contains(f)).collect();
            added.sort();
            added.dedup();
            if !added.is_empty() {
                let detail = format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_strings(&added)
                );
                return Err(ApiError::invalid(res, name, "metadata.finalizers", "FieldValueForbidden", &detail));
            }
        }
        for field in
            ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "deletionGracePeriodSeconds"]
        {
            match old.get("metadata").and_then(|m| m.get(field)) {
                Some(v) => set_meta(new, field, v.clone()),
                None => remove_meta(new, field),
            }
        }
        new["apiVersion"] = json!(res.api_version());
        new["kind"] = json!(res.info().kind);
        Ok(())
    }

    /// Stores `new` (MODIFIED); an object being deleted whose last finalizer went is removed
    /// (DELETED). A namespace goes once it is empty too (`gc.rs`).
    pub(super) fn update(&mut self, res: Res, ns: &str, name: &str, old: Value, mut new: Value) -> Value {
        self.rv += 1;
        set_meta(&mut new, "resourceVersion", json!(self.rv.to_string()));
        if res != Res::Namespaces && is_deleting(&new) && finalizers(&new).is_empty() {
            self.remove(res, old, new.clone());
        } else {
            self.objects.insert(Self::key(res, ns, name), new.clone());
            self.commit(res, ChangeKind::Modified, Some(old), new.clone());
            if res == Res::Namespaces {
                self.finish_namespace_if_done(name);
            }
        }
        new
    }

    /// DELETE: with finalizers the object only gets a `deletionTimestamp`; without, it is
    /// removed and its dependents are collected.
    pub fn delete(&mut self, res: Res, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.delete_with(res, ns, name, &DeleteOptions::default())
    }

    pub fn delete_with(&mut self, res: Res, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        if let Some(uid) = opts.uid.as_deref() {
            let have = meta_str(&old, "uid").unwrap_or("");
            if uid != have {
                let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}");
                return Err(ApiError::conflict_because(res, name, &why));
            }
        }
        if let Some(rv) = opts.resource_version.as_deref() {
            let have = meta_str(&old, "resourceVersion").unwrap_or("");
            if rv != have {
                let why = format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({have}). The object might have been modified"
                );
                return Err(ApiError::conflict_because(res, name, &why));
            }
        }
        if opts.orphan {
            self.orphan_dependents(&old);
        }
        if res == Res::Namespaces {
            return self.delete_namespace(name, old);
        }
        if !finalizers(&old).is_empty() {
            if is_deleting(&old) {
                return Ok(old);
            }
            let mut new = old.clone();
            set_meta(&mut new, "deletionTimestamp", json!(now_rfc3339()));
            set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
            return Ok(self.update(res, ns, name, old, new));
        }
        self.rv += 1;
        let mut gone = old.clone();
        set_meta(&mut gone, "resourceVersion", json!(self.rv.to_string()));
        self.remove(res, old, gone.clone());
        Ok(gone)
    }

    /// Really removes an object (DELETED, with `gone` as its last state, whose resourceVersion
    /// the caller assigned), then lets the garbage collector and the namespace lifecycle react.
    pub(super) fn remove(&mut self, res: Res, old: Value, gone: Value) {
        let key = Self::key(res, meta_str(&gone, "namespace").unwrap_or(""), meta_str(&gone, "name").unwrap_or(""));
        self.objects.remove(&key);
        if let Some(uid) = meta_str(&gone, "uid") {
            if self.uids.get(uid) == Some(&key) {
                self.uids.remove(uid);
            }
        }
        self.commit(res, ChangeKind::Deleted, Some(old), gone.clone());
        self.after_removal(res, &gone);
    }

    pub(super) fn commit(&mut self, res: Res, kind: ChangeKind, prev: Option<Value>, obj: Value) {
        let change = Change { rv: self.rv, res, kind, prev, obj };
        self.watchers.retain(|w| match (w.res == res).then(|| event_for(&w.filter, &change)).flatten() {
            Some(l) => w.tx.send(l).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
        if let Some(limit) = self.history_limit.filter(|l| self.history.len() > (*l).max(1)) {
            let cut = self.history.len() - limit.max(1) / 2;
            self.history.drain(..cut);
            self.compacted = self.history.first().map_or(self.rv + 1, |c| c.rv);
        }
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
    pub fn take_fault(
        &mut self,
        method: &str,
        path: &str,
        client: &str,
        res: Option<Res>,
        verb: Option<&str>,
    ) -> Option<Fault> {
        let i = self.faults.iter().position(|f| f.matches(method, path, client, res, verb))?;
        let fault = self.faults[i].clone();
        match &mut self.faults[i].remaining {
            Some(n) if *n <= 1 => {
                self.faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }

    /// Applies a pending concurrent change to this object, if one is armed.
    pub fn run_concurrent_change(&mut self, res: Res, ns: &str, name: &str) {
        let key = Self::key(res, ns, name);
        if let Some(i) = self.concurrent.iter().position(|(k, _)| *k == key) {
            let (_, patch) = self.concurrent.remove(i);
            let _ = self.patch(res, ns, name, true, &patch);
        }
    }

    pub fn key_for(res: Res, ns: &str, name: &str) -> Key {
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
