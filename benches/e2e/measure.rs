//! What the e2e bench measures: the controller process's CPU and peak RSS (from /proc), and the
//! requests both servers answered, by resource and verb.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::RequestRecord;

/// The controller's /proc entry.
pub struct Proc {
    pid: u32,
    ticks_per_second: f64,
}

impl Proc {
    pub fn new(pid: u32) -> Proc {
        let ticks = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        Proc { pid, ticks_per_second: ticks }
    }

    /// utime + stime of the process, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else { return 0.0 };
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
        ticks / self.ticks_per_second
    }

    /// VmHWM: the peak resident set size, in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else { return 0.0 };
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// Requests counted by `"<resource> <verb>"` (API) and by operation (UFM).
#[derive(Default)]
pub struct Tally {
    pub api: BTreeMap<String, u64>,
    pub ufm: BTreeMap<String, u64>,
    pub ufm_adds_per_pkey: BTreeMap<String, u64>,
}

impl Tally {
    pub fn api(&mut self, r: &RequestRecord) {
        let res = r.res.map_or("other", |r| r.info().plural);
        let verb = r.verb.unwrap_or("other");
        *self.api.entry(format!("{res} {verb}")).or_default() += 1;
    }

    fn api_count(&self, res: &str, verbs: &[&str]) -> u64 {
        verbs.iter().map(|v| self.api.get(&format!("{res} {v}")).copied().unwrap_or(0)).sum()
    }

    /// Pod and GuidClaim writes.
    pub fn writes(&self) -> u64 {
        let w = ["create", "update", "patch", "delete"];
        self.api_count("pods", &w) + self.api_count("guidclaims", &w)
    }

    /// Pod and GuidClaim reads of one object (lists and watches are the watchers').
    pub fn reads(&self) -> u64 {
        self.api_count("pods", &["get"]) + self.api_count("guidclaims", &["get"])
    }

    pub fn ufm(&mut self, r: &mock_ufm::RequestRecord) {
        let path = r.path.trim_end_matches('/');
        let op = match r.method.as_str() {
            "POST" | "PUT" if path.ends_with("/resources/pkeys") => "add",
            "DELETE" => "remove",
            "POST" if path.contains("delete") || path.contains("remove") => "remove",
            "GET" => "list",
            _ => "other",
        };
        *self.ufm.entry(op.to_string()).or_default() += 1;
        if op == "add" {
            let pkey = r
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .and_then(|v| v.get("pkey").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "?".into());
            *self.ufm_adds_per_pkey.entry(pkey).or_default() += 1;
        }
    }
}

/// The `q` quantile of sorted `v` (nearest rank); 0 when empty.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
