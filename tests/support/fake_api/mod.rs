//! A fake Kubernetes API server speaking the real wire protocol over plain HTTP on loopback,
//! for driving a real `kube::Client`: list (with resourceVersion), watch (JSON lines,
//! bookmarks, 410 Gone after compaction), get, create, replace, merge and JSON patch with
//! `409 Conflict` on a stale resourceVersion, delete with finalizers and preconditions,
//! selectors, and the metadata-only (`PartialObjectMetadata`) representation. Like the real
//! control plane it collects garbage by `ownerReferences` and deletes namespaces with their
//! content (`gc.rs`). Tests seed and read objects, cut watches, cause outages and faults, and
//! read the request log by client (`User-Agent`), method and resource.

pub mod gc;
pub mod http;
pub mod json;
pub mod store;
pub mod types;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, header};
use serde_json::Value;
use tokio::task::JoinHandle;

use store::Store;
pub use store::{ApiError, Fault, RequestRecord, Res};

pub struct FakeApi {
    addr: SocketAddr,
    shared: http::Shared,
    server: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let shared: http::Shared = Arc::new(Mutex::new(Store::default()));
        let app = axum::Router::new().fallback(http::handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { addr, shared, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client that identifies itself as `identity` (its `User-Agent`).
    pub fn client(&self, identity: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("url"));
        config.headers.push((header::USER_AGENT, HeaderValue::from_str(identity).expect("identity is a header value")));
        kube::Client::try_from(config).expect("client")
    }

    /// Creates an object (keeping a `metadata.uid` it carries); panics on refusal.
    pub fn create(&self, res: Res, obj: Value) -> Value {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
        self.store().create(res, &ns, obj, true).expect("create")
    }

    pub fn merge_patch(&self, res: Res, ns: &str, name: &str, patch: Value) -> Value {
        self.store().patch(res, ns, name, true, &patch).expect("patch")
    }

    /// Deletes as a client would (finalizers, garbage collection, namespace lifecycle); panics
    /// on refusal.
    pub fn delete(&self, res: Res, ns: &str, name: &str) -> Value {
        self.store().delete(res, ns, name).expect("delete")
    }

    pub fn try_delete(&self, res: Res, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.store().delete(res, ns, name)
    }

    /// Off: removals no longer collect the removed object's dependents (as a cluster whose
    /// garbage collector is down). Back on: a full pass runs, as a restarted collector does.
    pub fn set_garbage_collection(&self, on: bool) {
        let mut s = self.store();
        s.gc_disabled = !on;
        if on {
            s.collect_garbage();
        }
    }

    /// A full garbage-collection pass, also while collection is off: every object whose owners
    /// are all gone is deleted (dependents of what that removes too).
    pub fn collect_garbage(&self) {
        self.store().collect_garbage();
    }

    pub fn get(&self, res: Res, ns: &str, name: &str) -> Option<Value> {
        self.store().get(res, ns, name).ok()
    }

    pub fn list(&self, res: Res) -> Vec<Value> {
        self.store().list(res, &store::Filter::default())
    }

    pub fn resource_version(&self) -> u64 {
        self.store().rv()
    }

    /// Ends every open watch stream.
    pub fn drop_watches(&self) {
        self.store().drop_watches();
    }

    /// While on, watch requests answer 503.
    pub fn set_watch_outage(&self, on: bool) {
        self.store().watch_outage = on;
    }

    /// While on, lists and watches of `res` answer 503.
    pub fn set_outage(&self, res: Res, on: bool) {
        let mut s = self.store();
        if on {
            s.outage.insert(res);
        } else {
            s.outage.remove(&res);
        }
    }

    /// While on, `res` is not served at all (404), as a CRD that is not installed.
    pub fn set_absent(&self, res: Res, absent: bool) {
        let mut s = self.store();
        if absent {
            s.absent.insert(res);
        } else {
            s.absent.remove(&res);
        }
    }

    /// Expires every resourceVersion handed out so far: resuming watches get 410 Gone.
    pub fn compact(&self) {
        self.store().compact();
    }

    pub fn open_watches(&self, res: Res) -> usize {
        self.store().open_watches(res)
    }

    pub fn fail(&self, fault: Fault) {
        self.store().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.store().faults.clear();
    }

    /// Just before the next PATCH or PUT of this object, another writer merge-patches it.
    pub fn concurrent_change_before_next_write(&self, res: Res, ns: &str, name: &str, patch: Value) {
        self.store().concurrent.push((Store::key_for(res, ns, name), patch));
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.store().log.clone()
    }

    /// The log from entry `from` on (`requests()[from..]`), without copying the rest.
    pub fn requests_since(&self, from: usize) -> Vec<RequestRecord> {
        let s = self.store();
        s.log.get(from..).map(<[RequestRecord]>::to_vec).unwrap_or_default()
    }

    pub fn log_len(&self) -> usize {
        self.store().log.len()
    }

    /// Every answer but a watch stream's waits this long first (API server latency).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.store().latency = latency;
    }

    /// Keeps only about the last `changes` changes for resuming watches (older versions
    /// answer 410 Gone), so a long benchmark does not hold every object version.
    pub fn set_history_limit(&self, changes: usize) {
        self.store().history_limit = Some(changes);
    }

    /// Forgets the request log (a benchmark between phases).
    pub fn clear_requests(&self) {
        self.store().log.clear();
    }

    pub fn requests_by(&self, client: &str) -> Vec<RequestRecord> {
        self.store().log.iter().filter(|r| r.client == client).cloned().collect()
    }

    /// How many `method` requests (`GET`, `PATCH`, ..., case-insensitive) on `res` were answered,
    /// failed ones included (a watch is a `GET`).
    pub fn count(&self, method: &str, res: Res) -> usize {
        self.store().log.iter().filter(|r| r.res == Some(res) && r.method.eq_ignore_ascii_case(method)).count()
    }

    /// How many requests with RBAC verb `verb` (`get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`) on `res` were answered.
    pub fn count_verb(&self, verb: &str, res: Res) -> usize {
        self.store().log.iter().filter(|r| r.res == Some(res) && r.verb == Some(verb)).count()
    }
}
