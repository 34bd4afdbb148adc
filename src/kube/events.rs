//! Kubernetes Events (`events.k8s.io/v1`), de-duplicated: the same object, reason and message
//! within [`DEDUP_WINDOW`] bumps the first Event's series count (a merge patch) instead of
//! creating another object. One path for both binaries: [`EventSender`] does the sending and the
//! de-duplication; the controller's [`EventPublisher`] turns the engine's records into it, the
//! node agent (`agent::KubeAgentCluster`) its own reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::watch::NetworkUids;
use super::writer::write_error;
#[cfg(test)]
use crate::engine::Reason;
use crate::engine::{EventRecord, EventType, ObjectKind, WriteError};
use crate::netdef::{NetworkKey, SMC_API_VERSION};

/// Repeats within this window are counted on the first Event.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Most distinct Events remembered for de-duplication.
const CACHE_LIMIT: usize = 4096;
/// Kubernetes rejects notes above 1 kB.
const NOTE_LIMIT: usize = 1024;
/// `reportingController` of the controller's Events.
pub use crate::wire::keys::REPORTING_CONTROLLER;
/// Where Events about a cluster-scoped object (a Node) are kept, as `kubectl` looks for them.
const CLUSTER_SCOPED_EVENTS_NAMESPACE: &str = "default";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    namespace: String,
    name: String,
    reason: String,
    message: String,
}

/// One Event to send: what it is about and what it says.
#[derive(Clone, Debug)]
pub struct EventNote<'a> {
    pub regarding: ObjectReference,
    pub warning: bool,
    /// PascalCase and stable: alerts match on it.
    pub reason: &'a str,
    pub action: &'a str,
    pub note: &'a str,
}

#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    first: Instant,
}

/// What to do with a record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Create,
    /// Patch the series count of this Event.
    Bump {
        namespace: String,
        name: String,
        count: i32,
    },
}

/// Sends Events, de-duplicated, as one reporting controller and instance.
pub struct EventSender {
    client: Client,
    controller: String,
    instance: String,
    cache: Mutex<HashMap<Key, Seen>>,
}

impl EventSender {
    /// `controller` is `reportingController`, `instance` is `reportingInstance`.
    pub fn new(client: Client, controller: &str, instance: &str) -> EventSender {
        EventSender {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn send(&self, e: &EventNote<'_>) -> Result<(), kube::Error> {
        let r = &e.regarding;
        let namespace = r.namespace.clone().unwrap_or_else(|| CLUSTER_SCOPED_EVENTS_NAMESPACE.to_string());
        let key = Key {
            kind: r.kind.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: r.name.clone().unwrap_or_default(),
            reason: e.reason.to_string(),
            message: e.note.to_string(),
        };
        let action = self.decide(&key, Instant::now());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Action::Bump { namespace, name, count } = &action {
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}});
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.remember(key, namespace, name, *count);
                    return Ok(());
                }
                // Expired or deleted meanwhile: start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.build(e, &namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.remember(key, &namespace, &name, 1);
        Ok(())
    }

    fn decide(&self, key: &Key, now: Instant) -> Action {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, s| now.duration_since(s.first) < DEDUP_WINDOW);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        match cache.get(key) {
            Some(s) => Action::Bump { namespace: s.namespace.clone(), name: s.name.clone(), count: s.count + 1 },
            None => Action::Create,
        }
    }

    fn remember(&self, key: Key, namespace: &str, name: &str, count: i32) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let first = cache.get(&key).map_or_else(Instant::now, |s| s.first);
        cache.insert(key, Seen { namespace: namespace.to_string(), name: name.to_string(), count, first });
    }

    fn build(&self, e: &EventNote<'_>, namespace: &str) -> Event {
        let now = Timestamp::now();
        let object = e.regarding.name.as_deref().unwrap_or("event");
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(e.action.to_string()),
            reason: Some(e.reason.to_string()),
            note: Some(truncate(e.note, NOTE_LIMIT)),
            type_: Some(if e.warning { "Warning" } else { "Normal" }.to_string()),
            regarding: Some(e.regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            series: None::<EventSeries>,
            ..Event::default()
        }
    }
}

/// Publishes the engine's Event records through an [`EventSender`].
pub struct EventPublisher {
    sender: EventSender,
    uids: Arc<NetworkUids>,
}

impl EventPublisher {
    /// `instance` is `reportingInstance` (this replica's leader identity).
    pub fn new(client: Client, instance: &str, uids: Arc<NetworkUids>) -> EventPublisher {
        EventPublisher { sender: EventSender::new(client, REPORTING_CONTROLLER, instance), uids }
    }

    pub async fn publish(&self, record: &EventRecord) -> Result<(), WriteError> {
        let o = &record.object;
        let uid =
            o.uid.clone().or_else(|| self.uids.get(o.kind.as_str(), &NetworkKey::new(&o.key.namespace, &o.key.name)));
        let api_version = match o.kind {
            ObjectKind::Pod => "v1",
            ObjectKind::NetworkAttachmentDefinition => "k8s.cni.cncf.io/v1",
            ObjectKind::SpiderMultusConfig => SMC_API_VERSION,
        };
        let regarding = ObjectReference {
            api_version: Some(api_version.to_string()).filter(|v| !v.is_empty()),
            kind: Some(o.kind.as_str().to_string()),
            namespace: Some(o.key.namespace.clone()),
            name: Some(o.key.name.clone()),
            uid,
            ..ObjectReference::default()
        };
        let note = EventNote {
            regarding,
            warning: record.event_type == EventType::Warning,
            reason: record.reason.as_str(),
            action: if o.kind == ObjectKind::Pod { "Configure" } else { "Validate" },
            note: &record.message,
        };
        self.sender.send(&note).await.map_err(write_error)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(message: &str) -> Key {
        Key {
            kind: "Pod".into(),
            namespace: "t".into(),
            name: "p".into(),
            reason: Reason::InvalidNetwork.as_str().into(),
            message: message.into(),
        }
    }

    fn publisher() -> EventSender {
        // Never used for requests: only the cache is exercised.
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        EventSender::new(client, REPORTING_CONTROLLER, "me")
    }

    #[tokio::test]
    async fn repeats_bump_the_series_and_new_messages_create() {
        let p = publisher();
        let now = Instant::now();
        assert_eq!(p.decide(&key("a"), now), Action::Create);
        p.remember(key("a"), "t", "p.1", 1);
        assert_eq!(p.decide(&key("a"), now), Action::Bump { namespace: "t".into(), name: "p.1".into(), count: 2 });
        assert_eq!(p.decide(&key("b"), now), Action::Create);
        let later = Instant::now() + DEDUP_WINDOW + Duration::from_secs(1);
        assert_eq!(p.decide(&key("a"), later), Action::Create);
    }

    #[test]
    fn notes_are_cut_at_a_char_boundary() {
        let long = "é".repeat(600);
        let t = truncate(&long, NOTE_LIMIT);
        assert!(t.len() <= NOTE_LIMIT && t.ends_with("..."));
        assert_eq!(truncate("short", NOTE_LIMIT), "short");
    }
}
