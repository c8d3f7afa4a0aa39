//! The fake API server: one store of JSON objects keyed by (group, plural, namespace, name), one
//! global `resourceVersion` counter, an event log since the last compaction, and a broadcast
//! channel that carries every change (and test controls) to the open watches.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::SinkExt as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::selector::{FieldSelector, LabelSelector};

/// How a kind is served: its plural (the URL segment) and whether it lives in namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

/// Answers a create (POST) of a kind that is not stored, e.g. `TokenReview`: the request body
/// in, the response object or `(status code, message)` out.
pub type CreateHandler = Arc<dyn Fn(&Value) -> Result<Value, (u16, String)> + Send + Sync>;

/// One request as received (for assertions on what a client asked).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
}

type GroupPlural = (String, String);
type Key = (String, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
struct Event {
    rv: u64,
    kind: EventType,
    group: String,
    plural: String,
    old: Option<Value>,
    object: Value,
}

#[derive(Debug, Clone)]
enum Broadcast {
    Event(Arc<Event>),
    /// Send a BOOKMARK now on every watch that allowed them.
    Bookmark,
    /// End every open watch (as an API server restart does).
    Close,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<Arc<Event>>,
    /// Events with `rv <= compacted` are gone: a watch or continue from before is 410 Gone.
    compacted: u64,
    kinds: HashMap<GroupPlural, KindInfo>,
}

struct Inner {
    store: Mutex<Store>,
    events: broadcast::Sender<Broadcast>,
    handlers: Mutex<HashMap<GroupPlural, CreateHandler>>,
    requests: Mutex<Vec<Recorded>>,
    bookmark_interval: Mutex<Duration>,
}

/// A kube-apiserver stand-in on `127.0.0.1`, plain HTTP (kube's client accepts an `http://`
/// cluster URL). It runs on the runtime that called [`FakeApiServer::start`].
#[derive(Clone)]
pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the next assertion behind a poison error.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The plural of a kind as Kubernetes spells the built-in ones.
pub(crate) fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" => lower,
        _ if lower.ends_with('s') || lower.ends_with('x') => format!("{lower}es"),
        _ if lower.ends_with('y') && !lower.ends_with("ay") && !lower.ends_with("ey") => {
            format!("{}ies", &lower[..lower.len() - 1])
        }
        _ => format!("{lower}s"),
    }
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "StorageClass",
    "PriorityClass",
    "TokenReview",
];

fn split_api_version(api_version: &str) -> (String, String) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (String::new(), api_version.to_owned()),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let status_code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status_code,
        [(header::CONTENT_TYPE, "application/json")],
        status(code, reason, message).to_string(),
    )
        .into_response()
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or("")
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            store: Mutex::new(Store {
                rv: 1000,
                ..Store::default()
            }),
            events: broadcast::channel(65_536).0,
            handlers: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            // The server ends with the test's runtime; an accept error ends it early and the
            // test then fails on its requests.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (namespace `default`).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// Serves `kind` of `api_version` under `plural` (for kinds whose plural or scope the
    /// built-in rule gets wrong). Fixtures register their kinds on load.
    pub fn register_kind(&self, api_version: &str, kind: &str, plural: &str, namespaced: bool) {
        let (group, _) = split_api_version(api_version);
        lock(&self.inner.store).kinds.insert(
            (group, plural.to_owned()),
            KindInfo {
                kind: kind.to_owned(),
                plural: plural.to_owned(),
                namespaced,
            },
        );
    }

    /// Answers POSTs to `api_version`/`plural` with `handler` instead of storing the object.
    pub fn on_create(&self, api_version: &str, plural: &str, handler: CreateHandler) {
        let (group, _) = split_api_version(api_version);
        lock(&self.inner.handlers).insert((group, plural.to_owned()), handler);
    }

    /// How often open watches that allow bookmarks get one (default 1 s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *lock(&self.inner.bookmark_interval) = interval;
    }

    /// Loads multi-document YAML (a `List` is unpacked): each object is created.
    pub fn load_yaml(&self, text: &str) -> anyhow::Result<()> {
        use serde::Deserialize as _;
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let value = Value::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            if value["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
                for item in value["items"].as_array().cloned().unwrap_or_default() {
                    self.create(item)?;
                }
            } else {
                self.create(value)?;
            }
        }
        Ok(())
    }

    /// Creates an object (ADDED to every watch); returns it with `resourceVersion`, `uid` and
    /// `creationTimestamp` filled in.
    pub fn create(&self, object: Value) -> anyhow::Result<Value> {
        self.inner
            .write(object, Write::Create)
            .map_err(anyhow_status)
    }

    /// Replaces an existing object (MODIFIED).
    pub fn update(&self, object: Value) -> anyhow::Result<Value> {
        self.inner
            .write(object, Write::Update)
            .map_err(anyhow_status)
    }

    /// Creates or replaces.
    pub fn apply(&self, object: Value) -> anyhow::Result<Value> {
        self.inner
            .write(object, Write::Apply)
            .map_err(anyhow_status)
    }

    /// Changes a stored object in place (MODIFIED).
    pub fn modify(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> anyhow::Result<Value> {
        let mut object = self
            .get(api_version, kind, namespace, name)
            .ok_or_else(|| anyhow::anyhow!("{kind} {namespace}/{name} not found"))?;
        change(&mut object);
        self.update(object)
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let (group, _) = split_api_version(api_version);
        let store = lock(&self.inner.store);
        let info = store.kind_info(&group, kind);
        let namespace = if info.namespaced { namespace } else { "" };
        store
            .objects
            .get(&(group, info.plural, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Deletes an object (DELETED); returns the last state.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Value> {
        let (group, _) = split_api_version(api_version);
        let plural = lock(&self.inner.store).kind_info(&group, kind).plural;
        self.inner
            .delete(&group, &plural, namespace, name)
            .map_err(anyhow_status)
    }

    /// The current `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner.store).rv
    }

    /// Forgets the event log: a watch or `continue` from an earlier `resourceVersion` than the
    /// current one is answered 410 Gone (as after etcd compaction).
    pub fn compact(&self) {
        let mut store = lock(&self.inner.store);
        store.compacted = store.rv;
        store.log.clear();
    }

    /// Compacts past the current `resourceVersion` and ends every open watch: each client's next
    /// watch is answered 410 Gone and it must list again (what a long API server outage or an
    /// etcd compaction does to a slow client).
    pub fn expire_watches(&self) {
        {
            let mut store = lock(&self.inner.store);
            store.rv += 1;
            store.compacted = store.rv;
            store.log.clear();
        }
        self.close_watches();
    }

    /// Ends every open watch; clients watch again from their last `resourceVersion`.
    pub fn close_watches(&self) {
        let _ = self.inner.events.send(Broadcast::Close);
    }

    /// Sends a BOOKMARK now on every watch that allowed them.
    pub fn bookmark(&self) {
        let _ = self.inner.events.send(Broadcast::Bookmark);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.requests).clone()
    }

    /// Number of watches open now.
    pub fn open_watches(&self) -> usize {
        self.inner.events.receiver_count()
    }
}

fn anyhow_status(value: Value) -> anyhow::Error {
    anyhow::anyhow!(
        "{} ({})",
        value["message"].as_str().unwrap_or("request failed"),
        value["reason"].as_str().unwrap_or("")
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Update,
    Apply,
}

impl Store {
    fn kind_info(&self, group: &str, kind: &str) -> KindInfo {
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

    fn info_for_plural(&self, group: &str, plural: &str) -> Option<KindInfo> {
        self.kinds
            .get(&(group.to_owned(), plural.to_owned()))
            .cloned()
    }

    fn record(&mut self, events: &broadcast::Sender<Broadcast>, event: Event) {
        let event = Arc::new(event);
        self.log.push(event.clone());
        // Sent under the store lock, so every watch sees events in resourceVersion order.
        let _ = events.send(Broadcast::Event(event));
    }
}

impl Inner {
    fn write(&self, mut object: Value, mode: Write) -> Result<Value, Value> {
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
        let mut store = lock(&self.store);
        let info = store.kind_info(&group, &kind);
        store
            .kinds
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
        let old = store.objects.get(&key).cloned();
        let kind_of_event = match (mode, &old) {
            (Write::Create, Some(_)) => {
                return Err(status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", info.plural),
                ));
            }
            (Write::Update, None) => {
                return Err(status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", info.plural),
                ));
            }
            (_, None) => EventType::Added,
            (_, Some(_)) => EventType::Modified,
        };
        store.rv += 1;
        let rv = store.rv;
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
        store.objects.insert(key, object.clone());
        store.record(
            &self.events,
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

    fn delete(
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
            return Err(status(
                404,
                "NotFound",
                &format!("{plural} \"{name}\" not found"),
            ));
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

/// What a request path names.
#[derive(Debug)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (String::new(), *version, rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), *version, rest),
        _ => return None,
    };
    let (plural, namespace, name) = match rest {
        [plural] => (*plural, None, None),
        ["namespaces", ns, plural] => (*plural, Some(*ns), None),
        ["namespaces", ns, plural, name] => (*plural, Some(*ns), Some(*name)),
        // `/api/v1/namespaces/{name}`: the Namespace object itself.
        [plural, name] => (*plural, None, Some(*name)),
        _ => return None,
    };
    Some(Target {
        group,
        version: version.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The object as served at the requested version (the API server converts; our kinds share
/// one schema across versions).
fn served(object: &Value, group: &str, version: &str) -> Value {
    let mut object = object.clone();
    object["apiVersion"] = json!(if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    });
    object
}

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn from_query(
        target: &Target,
        query: &HashMap<String, String>,
    ) -> Result<Self, crate::selector::SelectorError> {
        Ok(Self {
            namespace: target.namespace.clone(),
            labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
            fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta_str(object, "namespace") == ns)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    lock(&inner.requests).push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
    });
    let Some(target) = parse_path(uri.path()) else {
        return status_response(
            404,
            "NotFound",
            &format!("the server could not find {}", uri.path()),
        );
    };
    let query = query_map(&uri);
    match (method, target.name.is_some()) {
        (Method::GET, true) => get_one(&inner, &target),
        (Method::GET, false) => {
            let filter = match Filter::from_query(&target, &query) {
                Ok(f) => f,
                Err(e) => return status_response(400, "BadRequest", &e.to_string()),
            };
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                watch(&inner, target, filter, &query)
            } else {
                list(&inner, &target, &filter, &query)
            }
        }
        (Method::POST, false) => create_over_http(&inner, &target, &body),
        (Method::PUT, true) => match serde_json::from_slice::<Value>(&body) {
            Ok(object) => match inner.write(object, Write::Update) {
                Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
                Err(s) => status_json(&s),
            },
            Err(e) => status_response(400, "BadRequest", &format!("request body: {e}")),
        },
        (Method::DELETE, true) => {
            let namespace = target.namespace.clone().unwrap_or_default();
            let name = target.name.clone().unwrap_or_default();
            match inner.delete(&target.group, &target.plural, &namespace, &name) {
                Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
                Err(s) => status_json(&s),
            }
        }
        (method, _) => status_response(
            405,
            "MethodNotAllowed",
            &format!("{method} is not served here"),
        ),
    }
}

fn status_json(status: &Value) -> Response {
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        status,
    )
}

fn create_over_http(inner: &Inner, target: &Target, body: &[u8]) -> Response {
    let object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status_response(400, "BadRequest", &format!("request body: {e}")),
    };
    let handler = lock(&inner.handlers)
        .get(&(target.group.clone(), target.plural.clone()))
        .cloned();
    if let Some(handler) = handler {
        return match handler(&object) {
            Ok(answer) => json_response(StatusCode::CREATED, &answer),
            Err((code, message)) => status_response(code, "Failure", &message),
        };
    }
    let mut object = object;
    if let Some(ns) = &target.namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    match inner.write(object, Write::Create) {
        Ok(o) => json_response(
            StatusCode::CREATED,
            &served(&o, &target.group, &target.version),
        ),
        Err(s) => status_json(&s),
    }
}

fn get_one(inner: &Inner, target: &Target) -> Response {
    let store = lock(&inner.store);
    let name = target.name.clone().unwrap_or_default();
    let key = (
        target.group.clone(),
        target.plural.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.clone(),
    );
    match store.objects.get(&key) {
        Some(object) => json_response(
            StatusCode::OK,
            &served(object, &target.group, &target.version),
        ),
        None => status_response(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", target.plural),
        ),
    }
}

fn list_kind(store: &Store, target: &Target) -> String {
    store
        .info_for_plural(&target.group, &target.plural)
        .map_or_else(|| "List".to_owned(), |info| format!("{}List", info.kind))
}

fn list(
    inner: &Inner,
    target: &Target,
    filter: &Filter,
    query: &HashMap<String, String>,
) -> Response {
    let store = lock(&inner.store);
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // `continue` is "<resourceVersion of the first page>/<last key served>", base64.
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((rv, after)) = decoded.as_deref().and_then(|d| d.split_once('/')) else {
                return status_response(400, "BadRequest", "invalid continue token");
            };
            let rv: u64 = rv.parse().unwrap_or(0);
            if rv < store.compacted {
                return status_response(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                );
            }
            (rv, Some(after.to_owned()))
        }
        None => (store.rv, None),
    };
    let mut items = Vec::new();
    let mut next = None;
    for ((group, plural, namespace, name), object) in &store.objects {
        if *group != target.group || *plural != target.plural {
            continue;
        }
        let position = format!("{namespace}\u{1}{name}");
        if after
            .as_ref()
            .is_some_and(|a| position.as_str() <= a.as_str())
        {
            continue;
        }
        if !filter.matches(object) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            let last = items
                .last()
                .map(|o: &Value| {
                    format!("{}\u{1}{}", meta_str(o, "namespace"), meta_str(o, "name"))
                })
                .unwrap_or_default();
            next =
                Some(base64::engine::general_purpose::STANDARD.encode(format!("{list_rv}/{last}")));
            break;
        }
        items.push(served(object, &target.group, &target.version));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let api_version = served(&json!({}), &target.group, &target.version)["apiVersion"].clone();
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": list_kind(&store, target), "metadata": metadata, "items": items}),
    )
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(
    inner: &Arc<Inner>,
    target: Target,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Response {
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let requested = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| rv.parse::<u64>().unwrap_or(0));
    let interval = *lock(&inner.bookmark_interval);

    // Under the store lock: what to replay, and the subscription, so nothing falls between.
    let (initial, start_rv, mut receiver, kind_name) = {
        let store = lock(&inner.store);
        let receiver = inner.events.subscribe();
        let kind_name = store
            .info_for_plural(&target.group, &target.plural)
            .map_or_else(String::new, |info| info.kind);
        let mut initial = Vec::new();
        match requested {
            Some(rv) if rv < store.compacted => {
                let gone = status(
                    410,
                    "Expired",
                    &format!("too old resource version: {rv} ({})", store.compacted),
                );
                initial.push(watch_line("ERROR", &gone));
                return streaming(initial, None);
            }
            Some(rv) => {
                for event in store.log.iter().filter(|e| e.rv > rv) {
                    if let Some(line) = event_line(event, &target, &filter) {
                        initial.push(line);
                    }
                }
            }
            None => {
                for ((group, plural, _, _), object) in &store.objects {
                    if *group == target.group && *plural == target.plural && filter.matches(object)
                    {
                        initial.push(watch_line(
                            "ADDED",
                            &served(object, &target.group, &target.version),
                        ));
                    }
                }
            }
        }
        (initial, store.rv, receiver, kind_name)
    };

    let (mut sender, body_rx) =
        futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        for line in initial {
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let mut last_rv = start_rv;
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(86_400)));
        tokio::pin!(deadline);
        let api_version = served(&json!({}), &target.group, &target.version)["apiVersion"].clone();
        let bookmark = |rv: u64| {
            watch_line(
                "BOOKMARK",
                &json!({"kind": kind_name, "apiVersion": api_version,
                        "metadata": {"resourceVersion": rv.to_string()}}),
            )
        };
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => Some(bookmark(last_rv)),
                message = receiver.recv() => match message {
                    Ok(Broadcast::Event(event)) => {
                        if event.rv <= last_rv {
                            continue;
                        }
                        last_rv = event.rv;
                        event_line(&event, &target, &filter)
                    }
                    Ok(Broadcast::Bookmark) => bookmarks.then(|| bookmark(last_rv)),
                    // Closed, or this watch fell behind: end it, the client watches again.
                    Ok(Broadcast::Close) | Err(_) => return,
                },
            };
            if let Some(line) = line
                && sender.send(Ok(line)).await.is_err()
            {
                return;
            }
        }
    });
    streaming(Vec::new(), Some(body_rx))
}

fn streaming(
    lines: Vec<Bytes>,
    rest: Option<futures::channel::mpsc::Receiver<Result<Bytes, std::io::Error>>>,
) -> Response {
    use futures::StreamExt as _;
    let head = futures::stream::iter(lines.into_iter().map(Ok::<_, std::io::Error>));
    let body = match rest {
        Some(rest) => Body::from_stream(head.chain(rest)),
        None => Body::from_stream(head),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The watch line of an event for one watch, with the API server's selector semantics: an
/// object that stops matching is DELETED for that watch, one that starts matching ADDED.
fn event_line(event: &Event, target: &Target, filter: &Filter) -> Option<Bytes> {
    if event.group != target.group || event.plural != target.plural {
        return None;
    }
    let now = filter.matches(&event.object);
    let before = event.old.as_ref().is_some_and(|old| filter.matches(old));
    let kind = match event.kind {
        EventType::Added if now => "ADDED",
        EventType::Deleted if now => "DELETED",
        EventType::Modified if now && before => "MODIFIED",
        EventType::Modified if now => "ADDED",
        EventType::Modified if before => "DELETED",
        _ => return None,
    };
    Some(watch_line(
        kind,
        &served(&event.object, &target.group, &target.version),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_as_kubernetes_spells_them() {
        for (kind, plural) in [
            ("Pod", "pods"),
            ("Endpoints", "endpoints"),
            ("EndpointSlice", "endpointslices"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("VirtualService", "virtualservices"),
            ("Gateway", "gateways"),
        ] {
            assert_eq!(plural_of(kind), plural);
        }
    }

    #[test]
    fn paths_name_group_version_plural_namespace_name() {
        let t = parse_path("/apis/networking.istio.io/v1/namespaces/shop/virtualservices/catalog")
            .expect("path");
        assert_eq!(
            (t.group.as_str(), t.version.as_str(), t.plural.as_str()),
            ("networking.istio.io", "v1", "virtualservices")
        );
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.name.as_deref(), Some("catalog"));
        let ns = parse_path("/api/v1/namespaces/shop").expect("namespace path");
        assert_eq!(
            (ns.plural.as_str(), ns.name.as_deref()),
            ("namespaces", Some("shop"))
        );
        assert!(parse_path("/healthz").is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("app%3Dweb%2Cversion"), "app=web,version");
        assert_eq!(percent_decode("a+in+%28x%29"), "a in (x)");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
