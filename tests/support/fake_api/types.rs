//! The fake API server's vocabulary: the resources it serves, its error answers (`Status`),
//! the request log and the injectable faults.

use serde_json::{Value, json};

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
    GuidClaims,
    NodeFabricStatuses,
    PartitionClaims,
}

pub struct ResInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl Res {
    pub const ALL: [Res; 11] = [
        Res::Pods,
        Res::Nodes,
        Res::Namespaces,
        Res::CoreEvents,
        Res::Events,
        Res::Leases,
        Res::Nads,
        Res::Smcs,
        Res::GuidClaims,
        Res::NodeFabricStatuses,
        Res::PartitionClaims,
    ];

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
            Res::GuidClaims => ("fabric-sync.io", "v1alpha1", "guidclaims", "GuidClaim", true),
            Res::NodeFabricStatuses => ("fabric-sync.io", "v1alpha1", "nodefabricstatuses", "NodeFabricStatus", false),
            Res::PartitionClaims => ("fabric-sync.io", "v1alpha1", "partitionclaims", "PartitionClaim", false),
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

    /// `pods`, `guidclaims.fabric-sync.io`: the group-qualified resource, as errors name it.
    pub fn qualified(self) -> String {
        let i = self.info();
        if i.group.is_empty() { i.plural.to_string() } else { format!("{}.{}", i.plural, i.group) }
    }

    /// `Pod`, `GuidClaim.fabric-sync.io`: the group-qualified kind, as `Invalid` errors name it.
    pub fn qualified_kind(self) -> String {
        let i = self.info();
        if i.group.is_empty() { i.kind.to_string() } else { format!("{}.{}", i.kind, i.group) }
    }
}

/// The RBAC verb of a request: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
pub fn verb_of(method: &str, named: bool, watch: bool) -> Option<&'static str> {
    Some(match (method, named) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

/// The `reason` the real server gives with an HTTP status code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// An answer other than success, rendered as a `Status`.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// The Status' `details` (name, group, kind, causes, retryAfterSeconds), when there are some.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn not_found(res: Res, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", res.qualified()))
            .with_details(json!({"name": name, "group": res.info().group, "kind": res.info().plural}))
    }

    pub fn conflict(res: Res, name: &str) -> ApiError {
        ApiError::conflict_because(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `409 Conflict`: "Operation cannot be fulfilled on {resource} "{name}": {why}".
    pub fn conflict_because(res: Res, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", res.qualified()),
        )
        .with_details(json!({"name": name, "group": res.info().group, "kind": res.info().plural}))
    }

    /// `403 Forbidden`: "{resource} "{name}" is forbidden: {why}".
    pub fn forbidden(res: Res, name: &str, why: &str) -> ApiError {
        let subject = if name.is_empty() { res.qualified() } else { format!("{} \"{name}\"", res.qualified()) };
        ApiError::new(403, "Forbidden", format!("{subject} is forbidden: {why}"))
            .with_details(json!({"name": name, "group": res.info().group, "kind": res.info().plural}))
    }

    /// `422 Invalid` with one field cause (`reason`: `FieldValueForbidden`, `FieldValueInvalid`).
    pub fn invalid(res: Res, name: &str, field: &str, reason: &str, detail: &str) -> ApiError {
        let cause = format!("{field}: {detail}");
        ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {cause}", res.qualified_kind()))
            .with_details(json!({"name": name, "group": res.info().group, "kind": res.info().kind,
                   "causes": [{"reason": reason, "message": detail, "field": field}]}))
    }

    pub fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": self.message, "reason": self.reason, "code": self.code});
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
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
    /// The resource the path names, if it names one the fake serves.
    pub res: Option<Res>,
    /// The RBAC verb (`list`, `watch`, `patch`, ...), for a path that names a resource.
    pub verb: Option<&'static str>,
    /// When the request arrived, and when its answer was ready (for a watch: when it started).
    pub at: std::time::Instant,
    pub done: std::time::Instant,
}

impl RequestRecord {
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// A failure for requests that match every field set (`None`: any); `remaining` times, or
/// until cleared.
///
/// `Fault::on("PATCH", Res::Pods, 403)` refuses every pod patch until `clear_faults`;
/// `Fault::on("PATCH", Res::Pods, 429).retry_after(1).times(1)` throttles the next one.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// The caller's `User-Agent`.
    pub client: Option<String>,
    /// The HTTP method (`GET`, `PATCH`, ...), case-insensitive.
    pub method: Option<String>,
    pub path_contains: Option<String>,
    /// The resource the path names.
    pub res: Option<Res>,
    /// The RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`).
    pub verb: Option<String>,
    pub code: u16,
    /// `None`: for ever (until `clear_faults`).
    pub remaining: Option<u32>,
    /// Sent as the `Retry-After` header (seconds) and the Status' `details.retryAfterSeconds`.
    pub retry_after: Option<u32>,
    /// The Status' message (default: "injected fault {code}").
    pub message: Option<String>,
}

impl Fault {
    /// Every `method` request on `res` answers `code`, until cleared.
    pub fn on(method: &str, res: Res, code: u16) -> Fault {
        Fault { method: Some(method.to_ascii_uppercase()), res: Some(res), code, ..Fault::default() }
    }

    /// Every request with RBAC verb `verb` (e.g. `watch`, `list`) on `res` answers `code`.
    pub fn on_verb(verb: &str, res: Res, code: u16) -> Fault {
        Fault { verb: Some(verb.to_string()), res: Some(res), code, ..Fault::default() }
    }

    /// Only the next `n` matching requests fail.
    pub fn times(mut self, n: u32) -> Fault {
        self.remaining = Some(n);
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Fault {
        self.retry_after = Some(seconds);
        self
    }

    pub fn for_client(mut self, client: &str) -> Fault {
        self.client = Some(client.to_string());
        self
    }

    pub fn message(mut self, message: &str) -> Fault {
        self.message = Some(message.to_string());
        self
    }

    pub fn matches(&self, method: &str, path: &str, client: &str, res: Option<Res>, verb: Option<&str>) -> bool {
        self.client.as_deref().is_none_or(|c| c == client)
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self.res.is_none_or(|r| Some(r) == res)
            && self.verb.as_deref().is_none_or(|v| Some(v) == verb)
    }

    /// The answer: a `Status` with the code's reason (and `retryAfterSeconds`).
    pub fn error(&self) -> ApiError {
        let message = self.message.clone().unwrap_or_else(|| format!("injected fault {}", self.code));
        let e = ApiError::new(self.code, reason_for(self.code), message);
        match self.retry_after {
            Some(s) => e.with_details(json!({"retryAfterSeconds": s})),
            None => e,
        }
    }
}
