//! The fake API server: [`FakeApiServer`] and what tests do with it. The parts: `kinds`
//! (plural and scope of a kind), `store` (objects, `resourceVersion`, event log, writes),
//! `http` (routing), `status` (the API server's `Status` bodies), `patch` (merge, strategic
//! merge and JSON patch), `list` (LIST and paging), `watch` (WATCH fan-out), `faults` (scripted
//! failures), `gate` (requests held until N arrive), `tls` (HTTPS with a throwaway CA).

mod faults;
mod gate;
mod http;
mod kinds;
mod list;
mod patch;
mod status;
mod store;
mod tls;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use tokio::sync::broadcast;

pub use faults::Fault;
pub use gate::Gate;
pub use kinds::KindInfo;
use kinds::split_api_version;
use store::{Broadcast, Inner, Store, Write};

/// Answers a create (POST) of a kind that is not stored, e.g. `TokenReview`: the request body
/// in, the response object or `(status code, message)` out.
pub type CreateHandler = Arc<dyn Fn(&Value) -> Result<Value, (u16, String)> + Send + Sync>;

/// One request as received, and the status it was answered with (for assertions on what a
/// client asked and what it was told). The log is in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// As sent (percent-encoded).
    pub query: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The answer's status code; `None` while the request is held or being served (a WATCH
    /// has its status as soon as the stream starts).
    pub status: Option<u16>,
}

impl Recorded {
    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether this is `method` on exactly `path`.
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.path == path
    }
}

impl std::fmt::Display for Recorded {
    /// `METHOD path?query -> status` (`-> ...` while unanswered).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        match self.status {
            Some(code) => write!(f, " -> {code}"),
            None => write!(f, " -> ..."),
        }
    }
}

/// A kube-apiserver stand-in on `127.0.0.1`: plain HTTP (kube's client accepts an `http://`
/// cluster URL) or HTTPS with a throwaway CA. It runs on the runtime that called
/// [`FakeApiServer::start`] / [`FakeApiServer::start_tls`], or on its own thread
/// ([`FakeApiServer::start_in_background`], for synchronous tests and child processes).
#[derive(Clone)]
pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// The CA (PEM, DER) when serving HTTPS.
    ca: Option<Arc<(String, Vec<u8>)>>,
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
    /// Binds `127.0.0.1:0` and serves plain HTTP on the current tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    /// Binds `127.0.0.1:0` and serves HTTPS (a throwaway CA: [`Self::ca_pem`]) on the current
    /// tokio runtime.
    pub async fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    /// Starts on a thread of its own (a 2-worker runtime living as long as the process), so a
    /// synchronous test, a child process or a test's own short-lived runtime can use it.
    pub fn start_in_background(tls: bool) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fake-api-server".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = tx.send(Err(anyhow::Error::from(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let started = Self::start_with(tls).await;
                    let failed = started.is_err();
                    let _ = tx.send(started);
                    if !failed {
                        std::future::pending::<()>().await;
                    }
                });
            })?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the fake API server thread ended before starting"))?
    }

    async fn start_with(tls: bool) -> anyhow::Result<Self> {
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
            faults: Mutex::new(VecDeque::new()),
            gates: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(http::handle)
            .with_state(inner.clone());
        let ca = if tls {
            let tls = tls::self_signed()?;
            tokio::spawn(tls::serve(listener, tls.acceptor, app));
            Some(Arc::new((tls.ca_pem, tls.ca_der)))
        } else {
            tokio::spawn(async move {
                // The server ends with the test's runtime; an accept error ends it early and
                // the test then fails on its requests.
                let _ = axum::serve(listener, app).await;
            });
            None
        };
        Ok(Self { addr, inner, ca })
    }

    /// The CA certificate (PEM) a client must trust, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_deref().map(|(pem, _)| pem.as_str())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A kubeconfig naming this server, for a child process (`KUBECONFIG`) such as
    /// outrigger-pilot: one cluster, a placeholder token. Plain HTTP only (it carries no CA).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: '{}'}}}}]\n\
             users: [{{name: fake, user: {{token: x}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            self.url()
        )
    }

    /// A kube client for this server (namespace `default`; trusting its CA over HTTPS).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.url().parse()?);
        if let Some(ca) = &self.ca {
            config.root_cert = Some(vec![ca.1.clone()]);
        }
        Ok(kube::Client::try_from(config)?)
    }

    /// The next requests are answered with these faults, in order, before normal service.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.inner.faults).extend(faults);
    }

    /// The next requests get these `Status` codes, in order.
    pub fn fail_next(&self, codes: &[u16]) {
        self.inject(codes.iter().copied().map(Fault::Status));
    }

    /// The next requests get `200 OK` with these bodies (whatever they are), in order.
    pub fn answer_next_raw(&self, bodies: Vec<Vec<u8>>) {
        self.inject(bodies.into_iter().map(Fault::Body));
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

    /// Replaces an existing object (MODIFIED). A `resourceVersion` it carries must be the
    /// current one and a `uid` the object's (else the `Conflict` the API server gives).
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

    /// Changes a stored object in place (MODIFIED), atomically: no write over HTTP comes
    /// between the read and the write.
    pub fn modify(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> anyhow::Result<Value> {
        let (group, _) = split_api_version(api_version);
        let mut store = lock(&self.inner.store);
        let info = store.kind_info(&group, kind);
        let namespace = if info.namespaced { namespace } else { "" };
        let mut object = store
            .objects
            .get(&(group, info.plural, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{kind} {namespace}/{name} not found"))?;
        change(&mut object);
        store
            .write(&self.inner.events, object, Write::Update)
            .map_err(anyhow_status)
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

    /// Every request so far, in arrival order, with the status it was answered with.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.requests).clone()
    }

    /// The requests of `method` on exactly `path` so far.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        lock(&self.inner.requests)
            .iter()
            .filter(|r| r.is(method, path))
            .cloned()
            .collect()
    }

    /// Holds the answers of the next `n` requests of `method` on exactly `path` until all `n`
    /// have arrived, then releases them together (a race between clients made certain). Each
    /// is answered from the store as it is when it arrives (a scripted fault included), so all
    /// `n` saw the same state however late a released one runs; one that has waited `timeout`
    /// goes on alone ([`Gate::timed_out`]). Later requests pass.
    pub fn hold(&self, method: &str, path: &str, n: usize, timeout: Duration) -> Gate {
        let (gate, state) = Gate::new(method, path, n, timeout);
        lock(&self.inner.gates).push(state);
        gate
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
