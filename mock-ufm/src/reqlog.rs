//! What the mock was asked: a bounded log of UFM requests and per-endpoint counters, so tests
//! can assert how many calls a client made and what it sent.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Which credentials a request presented (not whether they were good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `Authorization: Basic base64(user:pass)` on `/ufmRest`.
    Basic,
    /// `Authorization: Basic <token>` on `/ufmRestV3`.
    Token,
    /// A verified TLS client certificate (and no Authorization header) on `/ufmRest`.
    ClientCert,
    None,
}

/// One UFM request as the mock saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Increases by one per request, starting at 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub time_ms: u64,
    pub method: String,
    /// The full path, e.g. `/ufmRest/resources/pkeys`.
    pub path: String,
    pub query: Option<String>,
    /// The request body as text (lossy UTF-8, cut at 64 KiB), if any.
    pub body: Option<String>,
    pub auth: AuthKind,
    /// The authenticated user, if authentication succeeded.
    pub user: Option<String>,
    /// `None` when no response was sent (hang, reset).
    pub status: Option<u16>,
    /// The injected fault, if any: `error`, `outage`, `hang`, `reset`, `unauthorized`.
    pub fault: Option<String>,
    /// Injected latency in milliseconds.
    pub latency_ms: u64,
    /// The counter key, e.g. `GET /resources/pkeys/{pkey}`.
    pub endpoint: String,
}

impl RequestRecord {
    /// The request body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        self.body.as_deref().and_then(|b| serde_json::from_str(b).ok())
    }
}

/// Calls to one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub count: u64,
    /// Answered with a status >= 400, or not answered at all.
    pub failed: u64,
}

/// The most recent requests (bounded) and counters since the last reset (unbounded).
#[derive(Debug, Clone)]
pub struct RequestLog {
    records: VecDeque<RequestRecord>,
    capacity: usize,
    next_seq: u64,
    counters: BTreeMap<String, Counter>,
}

impl RequestLog {
    pub fn new(capacity: usize) -> RequestLog {
        RequestLog { records: VecDeque::new(), capacity: capacity.max(1), next_seq: 1, counters: BTreeMap::new() }
    }

    /// Appends `record` (its `seq` is assigned here) and counts it.
    pub fn push(&mut self, mut record: RequestRecord) -> u64 {
        record.seq = self.next_seq;
        self.next_seq += 1;
        let c = self.counters.entry(record.endpoint.clone()).or_default();
        c.count += 1;
        if record.status.is_none_or(|s| s >= 400) {
            c.failed += 1;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        let seq = record.seq;
        self.records.push_back(record);
        seq
    }

    /// Records with `seq > since`.
    pub fn since(&self, since: u64) -> Vec<RequestRecord> {
        self.records.iter().filter(|r| r.seq > since).cloned().collect()
    }

    pub fn counters(&self) -> BTreeMap<String, Counter> {
        self.counters.clone()
    }

    /// Forgets records and counters (sequence numbers keep increasing).
    pub fn clear(&mut self) {
        self.records.clear();
        self.counters.clear();
    }
}

/// The counter key for a request: method plus the path without its API prefix, with pkeys and
/// GUID lists replaced by placeholders (`DELETE /resources/pkeys/{pkey}/guids/{guids}`).
pub fn endpoint_key(method: &str, endpoint_path: &str) -> String {
    let trimmed = endpoint_path.trim_end_matches('/');
    let path = if trimmed.is_empty() { "/" } else { trimmed };
    let segments: Vec<&str> = path.split('/').collect();
    let normalised = match segments.as_slice() {
        ["", "resources", "pkeys", p] if !matches!(*p, "last_updated" | "qos_conf" | "add") => {
            "/resources/pkeys/{pkey}".to_string()
        }
        ["", "resources", "pkeys", _, "guids", _] => "/resources/pkeys/{pkey}/guids/{guids}".to_string(),
        _ => path.to_string(),
    };
    format!("{method} {normalised}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(endpoint: &str, status: Option<u16>) -> RequestRecord {
        RequestRecord {
            seq: 0,
            time_ms: 0,
            method: "GET".to_string(),
            path: "/ufmRest/x".to_string(),
            query: None,
            body: None,
            auth: AuthKind::None,
            user: None,
            status,
            fault: None,
            latency_ms: 0,
            endpoint: endpoint.to_string(),
        }
    }

    #[test]
    fn endpoint_keys_hide_pkeys_and_guids() {
        assert_eq!(endpoint_key("GET", "/resources/pkeys/"), "GET /resources/pkeys");
        assert_eq!(endpoint_key("GET", "/resources/pkeys/0x5"), "GET /resources/pkeys/{pkey}");
        assert_eq!(endpoint_key("GET", "/resources/pkeys/last_updated"), "GET /resources/pkeys/last_updated");
        assert_eq!(
            endpoint_key("DELETE", "/resources/pkeys/0x5/guids/a,b"),
            "DELETE /resources/pkeys/{pkey}/guids/{guids}"
        );
        assert_eq!(endpoint_key("GET", ""), "GET /");
    }

    #[test]
    fn log_is_bounded_but_counters_are_not() {
        let mut log = RequestLog::new(2);
        log.push(record("GET /a", Some(200)));
        log.push(record("GET /a", Some(503)));
        log.push(record("GET /b", None));
        let seqs: Vec<u64> = log.since(0).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        let c = log.counters();
        assert_eq!(c["GET /a"], Counter { count: 2, failed: 1 });
        assert_eq!(c["GET /b"], Counter { count: 1, failed: 1 });
        assert_eq!(log.since(2).len(), 1);
        log.clear();
        assert!(log.since(0).is_empty());
        assert_eq!(log.push(record("GET /a", Some(200))), 4);
    }
}
