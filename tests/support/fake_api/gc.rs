//! What the real control plane does around deletion, done inside the fake at once (the
//! controller under test may be stopped; nothing here needs it):
//!
//! * the garbage collector, background propagation: when an object is removed, every object
//!   that names it in `metadata.ownerReferences` (by UID) and has no other owner left is deleted
//!   (with finalizers: it only gets a `deletionTimestamp`); a dependent with another live owner
//!   only loses the dangling reference. A namespaced dependent's owner must be cluster-scoped or
//!   in its namespace, or it counts as absent. `collect_garbage` is a full pass, which also
//!   collects dependents whose owners vanished while collection was off.
//! * the namespace lifecycle: deleting a namespace marks it `Terminating`, deletes everything
//!   in it, refuses new content (403) and removes the namespace once nothing is left in it.

use serde_json::{Value, json};

use super::json::merge_patch;
use super::store::{ApiError, ChangeKind, Key, Res, Store, finalizers, is_deleting, meta_str, now_rfc3339, set_meta};

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_string).collect())
        .unwrap_or_default()
}

fn namespace_key(name: &str) -> Key {
    (Res::Namespaces, String::new(), name.to_string())
}

impl Store {
    /// Called once an object is really gone.
    pub(super) fn after_removal(&mut self, res: Res, gone: &Value) {
        let ns = res.info().namespaced.then(|| meta_str(gone, "namespace").unwrap_or("").to_string());
        if !self.gc_disabled {
            if let Some(uid) = meta_str(gone, "uid") {
                self.collect_dependents_of(uid, ns.as_deref());
            }
        }
        if let Some(ns) = ns {
            self.finish_namespace_if_done(&ns);
        }
    }

    /// Whether the owner with `uid` exists for a dependent in namespace `dependent_ns` (`""`
    /// for a cluster-scoped one).
    fn owner_exists(&self, uid: &str, dependent_ns: &str) -> bool {
        self.uids.get(uid).is_some_and(|(_, ns, _)| ns.is_empty() || ns == dependent_ns)
    }

    /// Collects the dependents of the removed object `uid` (namespaced in `owner_ns`, or
    /// cluster-scoped).
    fn collect_dependents_of(&mut self, uid: &str, owner_ns: Option<&str>) {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|((_, ns, _), o)| owner_ns.is_none_or(|n| n == ns) && owner_uids(o).iter().any(|u| u == uid))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dependents {
            self.collect(&key);
        }
    }

    /// One object's turn in the collector: deleted when every owner is gone, or stripped of
    /// the references to gone owners when another is alive. Whether it changed anything.
    fn collect(&mut self, key: &Key) -> bool {
        let Some(obj) = self.objects.get(key).cloned() else { return false };
        if is_deleting(&obj) {
            return false;
        }
        let refs: Vec<Value> =
            obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        let (live, dangling): (Vec<Value>, Vec<Value>) = refs
            .into_iter()
            .partition(|r| r.get("uid").and_then(Value::as_str).is_some_and(|u| self.owner_exists(u, &key.1)));
        if dangling.is_empty() {
            return false;
        }
        let (res, ns, name) = key.clone();
        if live.is_empty() {
            let _ = self.delete(res, &ns, &name);
        } else {
            let mut new = obj.clone();
            set_meta(&mut new, "ownerReferences", json!(live));
            self.update(res, &ns, &name, obj, new);
        }
        true
    }

    /// A full pass of the garbage collector, until nothing more is collected.
    pub fn collect_garbage(&mut self) {
        loop {
            let keys: Vec<Key> =
                self.objects.iter().filter(|(_, o)| !owner_uids(o).is_empty()).map(|(k, _)| k.clone()).collect();
            let mut changed = false;
            for key in keys {
                changed |= self.collect(&key);
            }
            if !changed {
                return;
            }
        }
    }

    /// `propagationPolicy: Orphan`: the dependents of `owner` lose their reference to it.
    pub(super) fn orphan_dependents(&mut self, owner: &Value) {
        let Some(uid) = meta_str(owner, "uid").map(str::to_string) else { return };
        let dependents: Vec<Key> =
            self.objects.iter().filter(|(_, o)| owner_uids(o).contains(&uid)).map(|(k, _)| k.clone()).collect();
        for (res, ns, name) in dependents {
            let Ok(old) = self.get(res, &ns, &name) else { continue };
            let refs: Vec<Value> = old
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter(|r| r.get("uid").and_then(Value::as_str) != Some(&uid)).cloned().collect())
                .unwrap_or_default();
            let mut new = old.clone();
            set_meta(&mut new, "ownerReferences", json!(refs));
            self.update(res, &ns, &name, old, new);
        }
    }

    pub(super) fn namespace_terminating(&self, ns: &str) -> bool {
        self.objects.get(&namespace_key(ns)).is_some_and(is_deleting)
    }

    /// The NamespaceLifecycle admission: no new content in a namespace being deleted.
    pub(super) fn refuse_in_terminating_namespace(&self, res: Res, ns: &str, name: &str) -> Result<(), ApiError> {
        if !self.namespace_terminating(ns) {
            return Ok(());
        }
        let why = format!("unable to create new content in namespace {ns} because it is being terminated");
        let mut e = ApiError::forbidden(res, name, &why);
        if let Some(d) = e.details.as_mut() {
            d["causes"] = json!([{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                  "message": format!("namespace {ns} is being terminated")}]);
        }
        Err(e)
    }

    fn namespace_is_empty(&self, ns: &str) -> bool {
        !self.objects.keys().any(|(r, n, _)| r.info().namespaced && n == ns)
    }

    /// DELETE of a namespace: the first marks it `Terminating` and deletes its content; later
    /// ones answer 409 as the real server does while content remains.
    pub(super) fn delete_namespace(&mut self, name: &str, old: Value) -> Result<Value, ApiError> {
        if is_deleting(&old) {
            let spec_finalizers =
                old.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            if spec_finalizers {
                return Err(ApiError::conflict_because(
                    Res::Namespaces,
                    name,
                    "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.",
                ));
            }
            return Ok(old);
        }
        let mut new = old.clone();
        set_meta(&mut new, "deletionTimestamp", json!(now_rfc3339()));
        set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
        new["status"] = json!({"phase": "Terminating"});
        self.rv += 1;
        set_meta(&mut new, "resourceVersion", json!(self.rv.to_string()));
        self.objects.insert(namespace_key(name), new.clone());
        self.commit(Res::Namespaces, ChangeKind::Modified, Some(old), new.clone());
        // The namespace controller: everything in it is deleted (background propagation).
        let content: Vec<Key> =
            self.objects.keys().filter(|(r, n, _)| r.info().namespaced && n == name).cloned().collect();
        for (res, ns, obj) in content {
            let _ = self.delete(res, &ns, &obj);
        }
        self.finish_namespace_if_done(name);
        Ok(new)
    }

    /// Removes a `Terminating` namespace once nothing is left in it and it has no finalizer
    /// of its own (`metadata.finalizers`).
    pub(super) fn finish_namespace_if_done(&mut self, ns: &str) {
        let Some(obj) = self.objects.get(&namespace_key(ns)).cloned() else { return };
        if !is_deleting(&obj) || !finalizers(&obj).is_empty() || !self.namespace_is_empty(ns) {
            return;
        }
        let mut gone = obj.clone();
        merge_patch(&mut gone, &json!({"spec": {"finalizers": []}}));
        self.rv += 1;
        set_meta(&mut gone, "resourceVersion", json!(self.rv.to_string()));
        self.remove(Res::Namespaces, obj, gone);
    }
}
