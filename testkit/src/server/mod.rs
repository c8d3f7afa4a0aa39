//! The fake API server: [`FakeApiServer`] and what tests do with it. The parts: `kinds`
//! (plural and scope of a kind), `store` (objects, `resourceVersion`, event log, writes),
//! `http` (routing and `Status` answers), `list` (LIST and paging), `watch` (WATCH fan-out).

mod http;
mod kinds;
mod list;
mod store;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use tokio::sync::broadcast;

pub use kinds::KindInfo;
use kinds::split_api_version;
use store::{Broadcast, Inner, Store, Write};

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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the next assertion behind a poison error.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
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
        let app = Router::new()
            .fallback(http::handle)
            .with_state(inner.clone());
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
