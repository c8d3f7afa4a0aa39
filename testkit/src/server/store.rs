//! The store: JSON objects keyed by (group, plural, namespace, name), one global
//! `resourceVersion` counter, the event log since the last compaction, and the writes (create,
//! replace with its `resourceVersion`/`uid` preconditions, delete) that bump the version, log
//! the event and broadcast it to the watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::gate::GateState;
use super::kinds::{CLUSTER_SCOPED, KindInfo, plural_of, split_api_version};
use super::status::{self, status};
use super::{CreateHandler, Fault, Recorded, lock, meta_str};

pub(super) type GroupPlural = (String, String);
pub(super) type Key = (String, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
pub(super) struct Event {
    pub(super) rv: u64,
    pub(super) kind: EventType,
    pub(super) group: String,
    pub(super) plural: String,
    pub(super) old: Option<Value>,
    pub(super) object: Value,
}

#[derive(Debug, Clone)]
pub(super) enum Broadcast {
    Event(Arc<Event>),
    /// Send a BOOKMARK now on every watch that allowed them.
    Bookmark,
    /// End every open watch (as an API server restart does).
    Close,
}

#[derive(Default)]
pub(super) struct Store {
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) log: Vec<Arc<Event>>,
    /// Events with `rv <= compacted` are gone: a watch or continue from before is 410 Gone.
    pub(super) compacted: u64,
    pub(super) kinds: HashMap<GroupPlural, KindInfo>,
}

pub(super) struct Inner {
    pub(super) store: Mutex<Store>,
    pub(super) events: broadcast::Sender<Broadcast>,
    pub(super) handlers: Mutex<HashMap<GroupPlural, CreateHandler>>,
    pub(super) requests: Mutex<Vec<Recorded>>,
    pub(super) bookmark_interval: Mutex<Duration>,
    pub(super) faults: Mutex<VecDeque<Fault>>,
    pub(super) gates: Mutex<Vec<Arc<GateState>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    Create,
    Update,
    Apply,
}

impl Store {
    pub(super) fn kind_info(&self, group: &str, kind: &str) -> KindInfo {
        self.kinds
            .values()
            .find(|info| {
                info.kind == kind
                    && self
                        .kinds
                        .contains_key(&(group.to_owned(), info.plural.clone()))
            })
            .cloned()
            .unwrap_or_else(|| KindInfo {
                kind: kind.to_owned(),
                plural: plural_of(kind),
                namespaced: !CLUSTER_SCOPED.contains(&kind),
            })
    }

    pub(super) fn info_for_plural(&self, group: &str, plural: &str) -> Option<KindInfo> {
        self.kinds
            .get(&(group.to_owned(), plural.to_owned()))
            .cloned()
    }

    pub(super) fn write(
        &mut self,
        events: &broadcast::Sender<Broadcast>,
        mut object: Value,
        mode: Write,
    ) -> Result<Value, Value> {
        // `generateName` on a create: the prefix and a suffix, as the API server does.
        let prefix = meta_str(&object, "generateName").to_owned();
        if mode == Write::Create && meta_str(&object, "name").is_empty() && !prefix.is_empty() {
            let suffix = self.rv + 1;
            object["metadata"]["name"] = json!(format!("{prefix}{suffix:05x}"));
        }
        let api_version = object["apiVersion"].as_str().unwrap_or("").to_owned();
        let kind = object["kind"].as_str().unwrap_or("").to_owned();
        let name = meta_str(&object, "name").to_owned();
        if api_version.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(status(
                422,
                "Invalid",
                "an object needs apiVersion, kind and metadata.name",
            ));
        }
        let (group, _) = split_api_version(&api_version);
        let info = self.kind_info(&group, &kind);
        self.kinds
            .entry((group.clone(), info.plural.clone()))
            .or_insert_with(|| info.clone());
        let namespace = if info.namespaced {
            let ns = meta_str(&object, "namespace");
            if ns.is_empty() { "default" } else { ns }.to_owned()
        } else {
            String::new()
        };
        if info.namespaced {
            object["metadata"]["namespace"] = json!(namespace);
        }
        let key = (
            group.clone(),
            info.plural.clone(),
            namespace.clone(),
            name.clone(),
        );
        let old = self.objects.get(&key).cloned();
        let kind_of_event = match (mode, &old) {
            (Write::Create, Some(_)) => {
                return Err(status::already_exists(&group, &info.plural, &name));
            }
            (Write::Update, None) => {
                return Err(status::not_found(&group, &info.plural, &name));
            }
            (Write::Update, Some(old)) => {
                preconditions(&object, old, &group, &info.plural, &name)?;
                EventType::Modified
            }
            (_, None) => EventType::Added,
            (_, Some(_)) => EventType::Modified,
        };
        self.rv += 1;
        let rv = self.rv;
        let metadata = &mut object["metadata"];
        metadata["resourceVersion"] = json!(rv.to_string());
        match &old {
            Some(old) => {
                metadata["uid"] = old["metadata"]["uid"].clone();
                metadata["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                if metadata["uid"].is_null() {
                    metadata["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
                }
                if metadata["creationTimestamp"].is_null() {
                    metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                }
            }
        }
        self.objects.insert(key, object.clone());
        self.record(
            events,
            Event {
                rv,
                kind: kind_of_event,
                group,
                plural: info.plural,
                old,
                object: object.clone(),
            },
        );
        Ok(object)
    }

    fn record(&mut self, events: &broadcast::Sender<Broadcast>, event: Event) {
        let event = Arc::new(event);
        self.log.push(event.clone());
        // Sent under the store lock, so every watch sees events in resourceVersion order.
        let _ = events.send(Broadcast::Event(event));
    }
}

/// The checks of an update (PUT, PATCH, [`super::FakeApiServer::update`]) as the API server
/// makes them: a `resourceVersion` that is set must be the current one (optimistic
/// concurrency; empty means unconditional), and a `uid` that is set must be the object's.
fn preconditions(
    object: &Value,
    old: &Value,
    group: &str,
    plural: &str,
    name: &str,
) -> Result<(), Value> {
    let rv = meta_str(object, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(old, "resourceVersion") {
        return Err(status::conflict(group, plural, name));
    }
    let uid = meta_str(object, "uid");
    let current = meta_str(old, "uid");
    if !uid.is_empty() && uid != current {
        return Err(status::uid_conflict(group, plural, name, uid, current));
    }
    Ok(())
}

impl Inner {
    /// A write from the test or over HTTP (takes the store lock).
    pub(super) fn write(&self, object: Value, mode: Write) -> Result<Value, Value> {
        lock(&self.store).write(&self.events, object, mode)
    }

    pub(super) fn delete(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Value> {
        let mut store = lock(&self.store);
        let namespaced = store
            .info_for_plural(group, plural)
            .is_none_or(|info| info.namespaced);
        let namespace = if namespaced { namespace } else { "" };
        let key = (
            group.to_owned(),
            plural.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        let Some(mut object) = store.objects.remove(&key) else {
            return Err(status::not_found(group, plural, name));
        };
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.record(
            &self.events,
            Event {
                rv,
                kind: EventType::Deleted,
                group: group.to_owned(),
                plural: plural.to_owned(),
                old: None,
                object: object.clone(),
            },
        );
        Ok(object)
    }
}
