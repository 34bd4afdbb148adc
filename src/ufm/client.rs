//! `UfmClient`: the pkey operations fabric-sync needs, over [`Transport`]. Large changes are
//! split into requests of at most `max_guids_per_request` GUIDs; GUID removal uses the current
//! endpoint and falls back, once and for good, to the legacy one on UFMs that lack it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;

use super::error::{Op, Trust, UfmError, excerpt, looks_like_html};
use super::metrics::{UfmCounters, UfmObserver};
use super::transport::{Answer, Call, Transport};
use super::wire::{self, AddGuidsBody, CreatePkeyBody, QosBody, RemoveGuidsBody, UfmPartition};
use crate::config::UfmSettings;
use crate::ib::{Guid, PKey, PartitionSpec, Qos};

/// Most GUIDs in one `DELETE …/guids/<list>` URL: 17 bytes each keeps the request line
/// under Apache's default `LimitRequestLine` of 8190 bytes.
pub const MAX_GUIDS_IN_PATH: usize = 400;

/// A UFM REST client. Cheap to share (`Arc`); every method is safe to call concurrently.
pub struct UfmClient {
    t: Transport,
    max_guids: usize,
    legacy_remove: AtomicBool,
}

impl UfmClient {
    /// Builds the client; fails on TLS material that cannot be used (naming the setting).
    pub fn new(settings: &UfmSettings) -> Result<UfmClient, UfmError> {
        for w in &settings.warnings {
            tracing::warn!("{w}");
        }
        Ok(UfmClient {
            t: Transport::new(settings)?,
            max_guids: settings.max_guids_per_request.max(1),
            legacy_remove: AtomicBool::new(false),
        })
    }

    /// Reports every HTTP attempt to `observer` (request count and duration per op and status).
    pub fn with_observer(mut self, observer: Arc<dyn UfmObserver>) -> UfmClient {
        self.t.observer = observer;
        self
    }

    /// Pauses between retries: `min` before the first, doubling with jitter up to `max`.
    pub fn with_retry_delays(mut self, min: Duration, max: Duration) -> UfmClient {
        self.t.retry_delays = (min, max.max(min));
        self
    }

    /// Names the source of the trusted CA in TLS messages (e.g. `UFM_CERTIFICATE`).
    pub fn with_ca_label(mut self, label: impl Into<String>) -> UfmClient {
        if let Trust::Ca(l) = &mut self.t.trust {
            *l = label.into();
        }
        self
    }

    /// Counters of HTTP attempts by kind (add/remove/list/other/failed).
    pub fn counters(&self) -> Arc<UfmCounters> {
        self.t.counters.clone()
    }

    /// `scheme://host:port` of UFM.
    pub fn base_url(&self) -> &str {
        self.t.base_url()
    }

    /// `host:port` of UFM.
    pub fn target(&self) -> &str {
        self.t.target()
    }

    /// Whether removals go to the legacy `POST /actions/remove_guids_from_pkey`.
    pub fn uses_legacy_remove(&self) -> bool {
        self.legacy_remove.load(Ordering::Relaxed)
    }

    /// `GET /app/ufm_version` → `ufm_release_version`.
    pub async fn version(&self) -> Result<String, UfmError> {
        let a = self.t.send(&get(Op::Version, "/app/ufm_version".into(), None, &[])).await?;
        wire::parse_version(&a.body).map_err(|d| malformed(Op::Version, d, &a))
    }

    /// Every partition with its members (`GET /resources/pkeys?guids_data=true`).
    pub async fn list_pkeys(&self) -> Result<BTreeMap<PKey, UfmPartition>, UfmError> {
        let a = self.t.send(&get(Op::ListPkeys, "/resources/pkeys".into(), Some("guids_data=true"), &[])).await?;
        wire::parse_listing(&a.body).map_err(|d| malformed(Op::ListPkeys, d, &a))
    }

    /// One partition with members and QoS; `None` if UFM has no such pkey (`200 {}` or 404).
    pub async fn get_pkey(&self, pkey: PKey) -> Result<Option<UfmPartition>, UfmError> {
        let call = get(Op::GetPkey, format!("/resources/pkeys/{pkey}"), Some("guids_data=true&qos_conf=true"), &[404]);
        let a = self.t.send(&call).await?;
        if a.status == 404 {
            return Ok(None);
        }
        wire::parse_one(pkey, &a.body).map_err(|d| malformed(Op::GetPkey, d, &a))
    }

    /// Makes `guids` members of the partition with the spec's membership, index0 and IPoIB.
    ///
    /// If the spec sets QoS, the partition is made to carry it *before* any GUID joins: an
    /// absent partition is created with its QoS (`POST /resources/pkeys/add`), an existing
    /// one whose QoS differs is updated (`PUT /resources/pkeys/qos_conf`). On UFMs without
    /// the create endpoint (before 6.15) the QoS is set right after the first add instead.
    pub async fn add_guids(&self, spec: &PartitionSpec, guids: &[Guid]) -> Result<(), UfmError> {
        let guids = dedup(guids);
        if guids.is_empty() {
            return Ok(());
        }
        let mut qos_after_first_add = false;
        if !spec.qos.is_default() {
            qos_after_first_add = !self.ensure_qos(spec).await?;
        }
        for chunk in guids.chunks(self.max_guids) {
            let body = json(&AddGuidsBody::new(spec, chunk));
            self.t.send(&write(Op::AddGuids, Method::POST, "/resources/pkeys".into(), body, &[])).await?;
            if std::mem::take(&mut qos_after_first_add) {
                self.update_qos(spec.pkey, &spec.qos).await?;
            }
        }
        tracing::debug!(pkey = %spec.pkey, guids = guids.len(), "UFM accepted GUIDs");
        Ok(())
    }

    /// Returns `false` if the partition does not exist and cannot be created empty on this UFM.
    async fn ensure_qos(&self, spec: &PartitionSpec) -> Result<bool, UfmError> {
        if let Some(p) = self.get_pkey(spec.pkey).await? {
            if !p.qos.is_some_and(|q| q.satisfies(&spec.qos)) {
                self.update_qos(spec.pkey, &spec.qos).await?;
            }
            return Ok(true);
        }
        match self.create_pkey(spec).await {
            Ok(true) => Ok(true),
            Ok(false) => Ok(false),
            // Created meanwhile by someone else (or by an earlier attempt that timed out)?
            Err(e @ UfmError::Rejected { status: 400 | 409, .. }) => match self.get_pkey(spec.pkey).await? {
                Some(_) => {
                    self.update_qos(spec.pkey, &spec.qos).await?;
                    Ok(true)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Creates an empty partition with the spec's attributes and QoS (`POST /resources/pkeys/add`).
    /// Returns `false` if this UFM has no such endpoint (404/405 from before UFM 6.15).
    pub async fn create_pkey(&self, spec: &PartitionSpec) -> Result<bool, UfmError> {
        self.create_named_pkey(spec, None).await
    }

    /// [`UfmClient::create_pkey`] with UFM's `partition_name` (automatic partitions name theirs).
    pub async fn create_named_pkey(&self, spec: &PartitionSpec, name: Option<&str>) -> Result<bool, UfmError> {
        let body = json(&CreatePkeyBody {
            pkey: spec.pkey.to_string(),
            index0: spec.index0,
            ip_over_ib: spec.ip_over_ib,
            qos: (&spec.qos).into(),
            partition_name: name.map(str::to_string),
        });
        let a =
            self.t.send(&write(Op::CreatePkey, Method::POST, "/resources/pkeys/add".into(), body, &[404, 405])).await?;
        if a.status == 404 || a.status == 405 {
            tracing::info!(pkey = %spec.pkey, status = a.status, "this UFM cannot create empty pkeys; QoS is set after the first add");
            return Ok(false);
        }
        Ok(true)
    }

    /// Deletes the partition (`DELETE /resources/pkeys/<pkey>`); `false` if UFM had none (404).
    pub async fn delete_pkey(&self, pkey: PKey) -> Result<bool, UfmError> {
        let call = Call {
            op: Op::DeletePkey,
            method: Method::DELETE,
            path: format!("/resources/pkeys/{pkey}"),
            query: None,
            body: None,
            accept: &[404],
        };
        let a = self.t.send(&call).await?;
        if a.status == 404 && !is_json(&a.body) {
            return Err(UfmError::Rejected { op: Op::DeletePkey, status: 404, answer: excerpt(&a.body, &[]) });
        }
        Ok(a.status != 404)
    }

    /// Sets the QoS attributes `qos` sets (`PUT /resources/pkeys/qos_conf`); the pkey must exist.
    pub async fn update_qos(&self, pkey: PKey, qos: &Qos) -> Result<(), UfmError> {
        let body = json(&QosBody { pkey: pkey.to_string(), qos: qos.into() });
        self.t.send(&write(Op::UpdateQos, Method::PUT, "/resources/pkeys/qos_conf".into(), body, &[])).await?;
        Ok(())
    }

    /// Removes `guids` from the partition; removing a non-member, or from an absent pkey, is not an error.
    pub async fn remove_guids(&self, pkey: PKey, guids: &[Guid]) -> Result<(), UfmError> {
        let guids = dedup(guids);
        let mut rest: &[Guid] = &guids;
        if !self.uses_legacy_remove() {
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rest.len().min(self.max_guids.min(MAX_GUIDS_IN_PATH)));
                let list: Vec<String> = chunk.iter().map(|g| g.to_ufm()).collect();
                let path = format!("/resources/pkeys/{pkey}/guids/{}", list.join(","));
                let call = Call {
                    op: Op::RemoveGuids,
                    method: Method::DELETE,
                    path,
                    query: None,
                    body: None,
                    accept: &[404, 405],
                };
                let a = self.t.send(&call).await?;
                if a.status == 405 || (a.status == 404 && !is_json(&a.body)) {
                    // The endpoint itself is missing (UFM before the resources API).
                    self.legacy_remove.store(true, Ordering::Relaxed);
                    tracing::info!(
                        status = a.status,
                        "UFM lacks DELETE /resources/pkeys/<pkey>/guids; using the legacy remove from now on"
                    );
                    break;
                }
                // A JSON 404 is UFM saying the pkey does not exist: nothing to remove.
                rest = tail;
            }
        }
        for chunk in rest.chunks(self.max_guids) {
            let body =
                json(&RemoveGuidsBody { pkey: pkey.to_string(), guids: chunk.iter().map(|g| g.to_ufm()).collect() });
            let call =
                write(Op::RemoveGuidsLegacy, Method::POST, "/actions/remove_guids_from_pkey".into(), body, &[404]);
            let a = self.t.send(&call).await?;
            if a.status == 404 && !is_json(&a.body) {
                return Err(UfmError::Rejected {
                    op: Op::RemoveGuidsLegacy,
                    status: 404,
                    answer: excerpt(&a.body, &[]),
                });
            }
        }
        tracing::debug!(%pkey, guids = guids.len(), "UFM removed GUIDs");
        Ok(())
    }
}

fn get(op: Op, path: String, query: Option<&'static str>, accept: &'static [u16]) -> Call<'static> {
    Call { op, method: Method::GET, path, query, body: None, accept }
}

fn write(op: Op, method: Method, path: String, body: Vec<u8>, accept: &'static [u16]) -> Call<'static> {
    Call { op, method, path, query: None, body: Some(body), accept }
}

fn json<T: Serialize>(body: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(body).unwrap_or_default()
}

fn malformed(op: Op, detail: String, a: &Answer) -> UfmError {
    UfmError::Malformed { op, detail, answer: excerpt(&a.body, &[]) }
}

fn is_json(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    !looks_like_html(&text) && serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.is_object())
}

/// `guids` without repeats, first occurrence kept (UFM refuses a request naming a GUID twice).
fn dedup(guids: &[Guid]) -> Vec<Guid> {
    let mut seen = HashSet::with_capacity(guids.len());
    guids.iter().copied().filter(|g| seen.insert(*g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_dropped_in_order() {
        let g = |v| Guid::new(v).unwrap();
        assert_eq!(dedup(&[g(3), g(1), g(3), g(2), g(1)]), vec![g(3), g(1), g(2)]);
    }

    #[test]
    fn only_json_objects_count_as_ufm_answers() {
        assert!(is_json(br#"{"error":"pkey not found"}"#));
        assert!(!is_json(b"<html><title>404 Not Found</title></html>"));
        assert!(!is_json(b"[]"));
    }

    #[test]
    fn a_path_of_max_guids_fits_apaches_request_line() {
        let list = vec!["0200000000000001"; MAX_GUIDS_IN_PATH].join(",");
        let line = format!("DELETE /ufmRestV3/resources/pkeys/0x7ffe/guids/{list} HTTP/1.1");
        assert!(line.len() < 8190, "{}", line.len());
    }
}
