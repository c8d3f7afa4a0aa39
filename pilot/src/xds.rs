//! The delta xDS server (envoy.service.discovery.v3 `DeltaAggregatedResources`) carrying our
//! `Destination` and `Endpoints` types. Per stream: the proxy's identity (token) and node id,
//! subscriptions by resource name per type, the version last sent of each, ACK/NACK by nonce.
//! A new generation sends each proxy only the subscribed resources whose version changed, so
//! an endpoint change reaches only the subscribers of that cluster's `Endpoints`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Authenticator, Identity};
use crate::index::{DESTINATION_TYPE, ENDPOINTS_TYPE, Generation, ViewKey, WireResource};
use crate::metrics::Metrics;
use crate::name_pool::NamePool;
use outrigger_xds_api::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use outrigger_xds_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

/// The latest generation; `None` until every reflector has synced.
pub type Generations = watch::Receiver<Option<Arc<Generation>>>;

/// View keys of the connected proxies, counted, so a rebuild resolves them ahead.
#[derive(Debug, Default)]
pub struct ActiveViews(Mutex<HashMap<ViewKey, usize>>);

impl ActiveViews {
    fn add(&self, key: &ViewKey) {
        *self.lock().entry(key.clone()).or_default() += 1;
    }

    fn remove(&self, key: &ViewKey) {
        let mut map = self.lock();
        if let Some(count) = map.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                map.remove(key);
            }
        }
    }

    pub fn keys(&self) -> Vec<ViewKey> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ViewKey, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The proxy as its node id names it (Istio's `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    pub ip: String,
    pub pod: String,
    pub namespace: String,
}

impl NodeId {
    pub fn parse(id: &str) -> Result<Self, String> {
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, pod_ns, domain] = parts.as_slice() else {
            return Err(format!(
                "node id {id:?} is not TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local"
            ));
        };
        if !matches!(*kind, "sidecar" | "router") {
            return Err(format!(
                "node id {id:?}: type {kind:?} is not sidecar or router"
            ));
        }
        let namespace = domain.split('.').next().unwrap_or("");
        let pod = pod_ns
            .strip_suffix(&format!(".{namespace}"))
            .filter(|p| !p.is_empty() && !namespace.is_empty())
            .ok_or_else(|| format!("node id {id:?}: {pod_ns:?} is not POD.{namespace}"))?;
        Ok(Self {
            ip: (*ip).to_owned(),
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
        })
    }
}

/// The gRPC service.
#[derive(Clone)]
pub struct XdsServer {
    generations: Generations,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    active: Arc<ActiveViews>,
    queue_depth: usize,
    /// Shares of [`DEFAULT_UNACKED_RESPONSES`]: one per response sent and not yet answered.
    unacked: Arc<Semaphore>,
    ack_wait: Duration,
    /// The subscribed names of every stream, one copy each.
    names: Arc<NamePool>,
}

/// HTTP/2 receive window per stream (`--xds-stream-window`): proxies send only small requests.
pub const DEFAULT_STREAM_WINDOW: u32 = 64 * 1024;

/// HTTP/2 receive window per connection (`--xds-connection-window`; hyper's default). h2 closes
/// a connection (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_data_frames") once the framing overhead
/// of its unread small DATA frames (256 bytes less the payload, each) exceeds half of this.
/// A stream can have a stream window of requests unread, which h2 reads off the socket in one
/// go; with ACKs of ~60 bytes that is up to 3.3 times the stream window in overhead, so the
/// connection window must be at least ~6.5 times the stream window. 1 MiB over 64 KiB is 16.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Responses sent to a proxy and not yet answered by it (ACK or NACK), per stream (the default
/// of `--xds-queue-depth`); the rest wait in the stream's outbox, planned (names and shared
/// resources), and become protobuf only when they are sent. A response is answered once the
/// proxy has it, so this is flow control by ACK (Istio's `PILOT_ENABLE_FLOW_CONTROL`, per
/// response): what pilot holds for a proxy that reads slowly stays a few responses, not
/// everything h2's windows would let it buffer.
pub const DEFAULT_QUEUE_DEPTH: usize = 4;

/// Responses sent and not yet answered across all streams (`--xds-unacked-responses`). While an
/// initial push or a change goes to 2,000 proxies at once, every encoded response waits in h2's
/// buffers until the socket takes it; this bounds that to about this many times
/// [`MAX_RESPONSE_BYTES`] (bench/pilot-load: the heap peaked with 58 MiB of them, and 11 MiB of
/// h2 frame slots, without it).
pub const DEFAULT_UNACKED_RESPONSES: usize = 1024;

/// How long an unanswered response keeps its share of [`DEFAULT_UNACKED_RESPONSES`]: a proxy
/// that stops reading holds its stream's queue depth of responses, but not the other proxies'
/// pushes, beyond this. Its own stream still waits for its answers.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);

impl XdsServer {
    pub fn new(
        generations: Generations,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        active: Arc<ActiveViews>,
    ) -> Self {
        Self {
            generations,
            auth,
            metrics,
            active,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            unacked: Arc::new(Semaphore::new(DEFAULT_UNACKED_RESPONSES)),
            ack_wait: DEFAULT_ACK_WAIT,
            names: Arc::default(),
        }
    }

    /// Responses unanswered per stream (at least 1).
    #[must_use]
    pub fn with_queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }

    /// Responses unanswered across every stream of this server and its clones (at least 1).
    #[must_use]
    pub fn with_unacked_responses(mut self, responses: usize) -> Self {
        self.unacked = Arc::new(Semaphore::new(responses.max(1)));
        self
    }

    /// How long an unanswered response holds its share of the server-wide bound.
    #[must_use]
    pub fn with_ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let token = auth::bearer(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
        );
        let identity = match self.auth.authenticate(token).await {
            Ok(identity) => identity,
            Err(error) => {
                tracing::warn!(%peer, error = %error, "proxy refused: authentication failed");
                return Err(Status::unauthenticated(format!("outrigger-pilot: {error}")));
            }
        };
        let (tx, rx) = mpsc::channel(self.queue_depth);
        // Responses wait in the queue as `Planned` (names and shared resources) and become
        // protobuf only when tonic takes the next one to send.
        let responses = ReceiverStream::new(rx)
            .map(|queued: Queued| queued.map(|p| p.into_response()).map_err(|s| *s));
        let connection = Connection {
            peer,
            identity,
            server: self.clone(),
            tx,
            node: None,
            key: None,
            subscriptions: Subscriptions::default(),
            nonce: 0,
            pending: HashMap::new(),
            acked_generation: 0,
            outbox: VecDeque::new(),
            unanswered: VecDeque::new(),
            behind: false,
        };
        tokio::spawn(connection.run(request.into_inner()));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// What was last sent of a subscribed resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Nothing,
    /// The client said at reconnect it has this version (`initial_resource_versions`), or we
    /// sent it (the wire resource's own, shared).
    Version(Arc<str>),
    /// Sent in `removed_resources` (does not exist in this proxy's view).
    Removed,
}

/// A stream's subscriptions: resource name (pooled) → what was sent, per type.
#[derive(Debug, Default)]
struct Subscriptions {
    destinations: Subscribed,
    endpoints: Subscribed,
}

impl Subscriptions {
    /// The subscriptions of a type URL we serve.
    fn of(&mut self, type_url: &str) -> Option<&mut Subscribed> {
        match type_url {
            DESTINATION_TYPE => Some(&mut self.destinations),
            ENDPOINTS_TYPE => Some(&mut self.endpoints),
            _ => None,
        }
    }
}

/// One type's subscriptions: (name, what was sent), sorted by name, kept at its length.
/// Every connected proxy has one per type (2,000 × ~20 destinations and ~60 clusters in
/// bench/pilot-load): a `BTreeMap` held them in 512-byte nodes, about 7 KiB per stream for 80
/// names where these two vectors take 3.2 KiB (40 bytes a name).
#[derive(Debug, Default)]
struct Subscribed(Vec<(Arc<str>, Sent)>);

impl Subscribed {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Sent> {
        let at = self.find(name).ok()?;
        Some(&mut self.0[at].1)
    }

    /// Adds `name` unless it is there already; whether it was added.
    fn insert_new(&mut self, name: Arc<str>, sent: Sent) -> bool {
        match self.find(&name) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, (name, sent));
                true
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(at) = self.find(name) {
            self.0.remove(at);
        }
    }

    fn names(&self) -> Vec<Arc<str>> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Gives back the room a request's growth left (a vector doubles as it grows).
    fn fit(&mut self) {
        if self.0.capacity() > self.0.len() {
            self.0.shrink_to_fit();
        }
    }
}

/// At most this many bytes of resources per response (a larger resource goes alone). tonic
/// keeps each stream's encode buffer at the size of its largest message (exactly, with
/// `outrigger_xds_api::codec`), so this bounds what every connected proxy costs at rest after
/// its first, largest push; more responses is only more nonces. (4 KiB used to break bench
/// connections: pilot closed them for too many unread small ACK frames, see
/// `DEFAULT_CONNECTION_WINDOW` and the outbox of `Connection`.)
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024;

/// A queue slot: boxed, so the channel's blocks (32 slots each, allocated per stream) are
/// small; a `Status` inline is ~170 bytes.
type Queued = Result<Box<Planned>, Box<Status>>;

/// A response as queued: the resources are the shared wire resources, not copies.
#[derive(Debug)]
struct Planned {
    system_version_info: String,
    type_url: String,
    /// (name asked, resource).
    resources: Vec<(Arc<str>, Arc<WireResource>)>,
    removed: Vec<Arc<str>>,
    nonce: String,
    /// `nonce` as the number it is.
    number: u64,
}

/// A response sent and not yet answered.
#[derive(Debug)]
struct Unanswered {
    nonce: u64,
    sent: Instant,
    /// Its share of the server-wide bound, given back at the answer or after the ACK wait.
    share: Option<OwnedSemaphorePermit>,
}

impl Planned {
    fn into_response(self) -> DeltaDiscoveryResponse {
        let resources = self
            .resources
            .into_iter()
            .map(|(name, resource)| Resource {
                aliases: if resource.name == name {
                    Vec::new()
                } else {
                    vec![resource.name.to_string()]
                },
                version: resource.version.to_string(),
                resource: Some(encode(&self.type_url, &resource)),
                name: name.to_string(),
            })
            .collect();
        DeltaDiscoveryResponse {
            system_version_info: self.system_version_info,
            resources,
            type_url: self.type_url,
            removed_resources: self.removed.iter().map(|n| n.to_string()).collect(),
            nonce: self.nonce,
        }
    }
}

/// `resources` cut into groups of at most `MAX_RESPONSE_BYTES` encoded bytes (at least one each).
fn chunks(
    resources: Vec<(Arc<str>, Arc<WireResource>)>,
) -> Vec<Vec<(Arc<str>, Arc<WireResource>)>> {
    let mut out: Vec<Vec<(Arc<str>, Arc<WireResource>)>> = Vec::new();
    let mut size = 0;
    for (name, resource) in resources {
        let bytes = resource.encoded().len() + name.len();
        match out.last_mut() {
            Some(last) if size + bytes <= MAX_RESPONSE_BYTES => {
                size += bytes;
                last.push((name, resource));
            }
            _ => {
                size = bytes;
                out.push(vec![(name, resource)]);
            }
        }
    }
    out
}

struct Connection {
    peer: String,
    identity: Option<Identity>,
    server: XdsServer,
    tx: mpsc::Sender<Queued>,
    node: Option<NodeId>,
    key: Option<ViewKey>,
    subscriptions: Subscriptions,
    nonce: u64,
    /// nonce → (type label, generation number, when its first change was seen). Our nonces are
    /// numbers; the map gives its room back once it is empty (an initial push leaves hundreds).
    pending: HashMap<u64, (&'static str, u64, Instant)>,
    acked_generation: u64,
    /// Responses planned but not yet handed to tonic. The stream's task never waits on a send:
    /// it keeps reading the proxy's requests (ACKs) while responses wait here, because h2
    /// closes a whole connection (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_data_frames") whose
    /// small unread DATA frames exceed its budget, and every stream on it fails with it.
    outbox: VecDeque<Box<Planned>>,
    /// Responses sent and not yet answered, in the order sent (at most the queue depth).
    unanswered: VecDeque<Unanswered>,
    /// A newer generation arrived while the outbox was not empty: its push is planned once the
    /// outbox has drained, against the generation current then (a slow proxy gets the latest
    /// versions once, not every generation in between).
    behind: bool,
}

/// A share of the server-wide bound, then room in the stream's queue to tonic. Dropped
/// half-way (another branch won), the share goes back.
async fn send_slot<'a>(
    unacked: &Arc<Semaphore>,
    tx: &'a mpsc::Sender<Queued>,
) -> Option<(OwnedSemaphorePermit, mpsc::Permit<'a, Queued>)> {
    let share = unacked.clone().acquire_owned().await.ok()?;
    let permit = tx.reserve().await.ok()?;
    Some((share, permit))
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

fn type_label(type_url: &str) -> &'static str {
    match type_url {
        DESTINATION_TYPE => "destination",
        ENDPOINTS_TYPE => "endpoints",
        _ => "unknown",
    }
}

fn encode(type_url: &str, resource: &WireResource) -> prost_types::Any {
    // `Destination` and `Endpoints` encode alike (`bytes json = 1`): the bytes encoded once.
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: resource.encoded().to_vec(),
    }
}

impl Connection {
    async fn run(mut self, mut requests: Streaming<DeltaDiscoveryRequest>) {
        self.server.metrics.connected.inc();
        let result = self.serve(&mut requests).await;
        self.server.metrics.connected.dec();
        if let Some(key) = &self.key {
            self.server.active.remove(key);
        }
        let node = self
            .node
            .as_ref()
            .map(|n| format!("{}/{}", n.namespace, n.pod));
        match result {
            Ok(()) => tracing::info!(peer = %self.peer, node = ?node, "proxy disconnected"),
            Err(status) => {
                tracing::warn!(peer = %self.peer, node = ?node, error = %status.message(), "proxy refused");
                let _ = self.tx.send(Err(Box::new(status))).await;
            }
        }
    }

    async fn serve(
        &mut self,
        requests: &mut Streaming<DeltaDiscoveryRequest>,
    ) -> Result<(), Status> {
        let mut generations = self.server.generations.clone();
        // Wait for the first generation (every reflector synced) before answering anything.
        let mut generation = loop {
            if let Some(g) = generations.borrow_and_update().clone() {
                break g;
            }
            if generations.changed().await.is_err() {
                return Err(Status::unavailable("outrigger-pilot is shutting down"));
            }
        };
        // Handles of its own: the select's futures borrow them while a branch borrows `self`.
        let tx = self.tx.clone();
        let unacked = self.server.unacked.clone();
        loop {
            let may_send =
                !self.outbox.is_empty() && self.unanswered.len() < self.server.queue_depth;
            let share_due = self.share_due();
            tokio::select! {
                request = requests.next() => {
                    let request = match request {
                        None => return Ok(()),
                        Some(Err(status)) => {
                            tracing::debug!(peer = %self.peer, error = %status, "stream ended");
                            return Ok(());
                        }
                        Some(Ok(request)) => request,
                    };
                    self.on_request(&generation, request)?;
                }
                changed = generations.changed() => {
                    if changed.is_err() {
                        return Err(Status::unavailable("outrigger-pilot is shutting down"));
                    }
                    let Some(next) = generations.borrow_and_update().clone() else { continue };
                    generation = next;
                    self.behind = self.key.is_some();
                }
                slot = send_slot(&unacked, &tx), if may_send => {
                    let (share, permit) = slot.ok_or_else(|| Status::cancelled("proxy went away"))?;
                    if let Some(planned) = self.outbox.pop_front() {
                        self.unanswered.push_back(Unanswered {
                            nonce: planned.number,
                            sent: Instant::now(),
                            share: Some(share),
                        });
                        permit.send(Ok(planned));
                    }
                }
                () = sleep_until(share_due), if share_due.is_some() => self.give_back_overdue_shares(),
            }
            if self.behind && self.outbox.is_empty() {
                self.behind = false;
                for type_url in [DESTINATION_TYPE, ENDPOINTS_TYPE] {
                    self.push(&generation, type_url, None);
                }
            }
        }
    }

    /// When the oldest unanswered response that still holds a share must give it back.
    fn share_due(&self) -> Option<Instant> {
        self.unanswered
            .iter()
            .find(|u| u.share.is_some())
            .map(|u| u.sent + self.server.ack_wait)
    }

    fn give_back_overdue_shares(&mut self) {
        let now = Instant::now();
        let mut overdue = 0;
        for unanswered in &mut self.unanswered {
            if unanswered.share.is_some() && unanswered.sent + self.server.ack_wait <= now {
                unanswered.share = None;
                overdue += 1;
            }
        }
        if overdue > 0 {
            tracing::warn!(peer = %self.peer, node = ?self.node.as_ref().map(|n| format!("{}/{}", n.namespace, n.pod)),
                responses = overdue, wait = ?self.server.ack_wait,
                "proxy has not answered (ACK/NACK) its responses in time: they no longer hold back other proxies' pushes; its own stream waits");
        }
    }

    /// The proxy answered `nonce`: it has every response sent before it too (one stream, in
    /// order), so they stop counting against the bounds, answered or not.
    fn answered(&mut self, nonce: u64) {
        while self.unanswered.front().is_some_and(|u| u.nonce <= nonce) {
            self.unanswered.pop_front();
        }
    }

    /// Identity, namespace and pod checks on the first request; the view key.
    fn admit(
        &mut self,
        generation: &Generation,
        request: &DeltaDiscoveryRequest,
    ) -> Result<(), Status> {
        let id = request.node.as_ref().map(|n| n.id.as_str()).unwrap_or("");
        let node = NodeId::parse(id).map_err(Status::invalid_argument)?;
        if let Some(identity) = &self.identity
            && identity.namespace != node.namespace
        {
            return Err(Status::permission_denied(format!(
                "outrigger-pilot: the token of service account {}/{} may not read the view of namespace {:?} (node {id:?})",
                identity.namespace, identity.service_account, node.namespace
            )));
        }
        let pod = generation.pod(&node.namespace, &node.pod);
        if let (Some(identity), Some(pod)) = (&self.identity, pod) {
            let account = &pod.service_account;
            if *account != identity.service_account {
                return Err(Status::permission_denied(format!(
                    "outrigger-pilot: pod {}/{} runs as service account {account:?}, the token is {:?}'s",
                    node.namespace, node.pod, identity.service_account
                )));
            }
        }
        // A pod not in the store yet (just created) gets its namespace's view without labels.
        let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
        let key = generation.view_key(&node.namespace, &labels);
        tracing::info!(peer = %self.peer, namespace = %node.namespace, pod = %node.pod, "proxy connected");
        self.server.active.add(&key);
        self.key = Some(key);
        self.node = Some(node);
        Ok(())
    }

    fn on_request(
        &mut self,
        generation: &Generation,
        request: DeltaDiscoveryRequest,
    ) -> Result<(), Status> {
        if self.key.is_none() {
            self.admit(generation, &request)?;
        }
        let type_url = request.type_url.clone();
        if type_url != DESTINATION_TYPE && type_url != ENDPOINTS_TYPE {
            return Err(Status::invalid_argument(format!(
                "outrigger-pilot serves {DESTINATION_TYPE} and {ENDPOINTS_TYPE}, not {type_url:?}"
            )));
        }
        let nonce = request.response_nonce.parse::<u64>().ok();
        if let Some(nonce) = nonce {
            self.answered(nonce);
        }
        if let Some(nonce) = nonce
            && let Some((sent_type, number, changed_at)) = self.pending.remove(&nonce)
        {
            if self.pending.is_empty() {
                self.pending.shrink_to_fit();
            }
            match &request.error_detail {
                Some(error) => {
                    self.server.metrics.reject(sent_type);
                    tracing::warn!(peer = %self.peer, nonce = %request.response_nonce, r#type = sent_type, error = %error.message, "proxy rejected a response (NACK)");
                }
                // Converged once every response of the generation is ACKed.
                None if number > self.acked_generation
                    && number == generation.number
                    && !self.pending.values().any(|(_, n, _)| *n == number) =>
                {
                    self.acked_generation = number;
                    self.server
                        .metrics
                        .convergence
                        .observe(changed_at.elapsed().as_secs_f64());
                }
                None => {}
            }
        }
        let names = &self.server.names;
        let Some(subscriptions) = self.subscriptions.of(&type_url) else {
            return Ok(());
        };
        for name in &request.resource_names_unsubscribe {
            subscriptions.remove(name.as_str());
        }
        let mut new = Vec::new();
        for name in &request.resource_names_subscribe {
            if !subscriptions.contains(name.as_str()) {
                let known = request
                    .initial_resource_versions
                    .get(name)
                    .map_or(Sent::Nothing, |v| Sent::Version(Arc::from(v.as_str())));
                let name = names.intern(name);
                subscriptions.insert_new(name.clone(), known);
                new.push(name);
            }
        }
        // Names the client says it has but did not subscribe to are kept too (Envoy's rule).
        for (name, version) in &request.initial_resource_versions {
            let name = names.intern(name);
            subscriptions.insert_new(name.clone(), Sent::Version(Arc::from(version.as_str())));
            new.push(name);
        }
        subscriptions.fit();
        if !new.is_empty() {
            self.push(generation, &type_url, Some(new));
        }
        Ok(())
    }

    /// Sends the subscribed resources of `type_url` (only `names` when given) whose version in
    /// this generation differs from what the proxy has, into the outbox.
    fn push(&mut self, generation: &Generation, type_url: &str, names: Option<Vec<Arc<str>>>) {
        let Some(key) = &self.key else { return };
        let view = generation.view(key);
        let Some(subscriptions) = self.subscriptions.of(type_url) else {
            return;
        };
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let names = names.unwrap_or_else(|| subscriptions.names());
        for name in names {
            let Some(sent) = subscriptions.get_mut(&name) else {
                continue;
            };
            match view.resource(type_url, &name) {
                Some(resource) => {
                    if !matches!(sent, Sent::Version(v) if *v == resource.version) {
                        *sent = Sent::Version(resource.version.clone());
                        resources.push((name, resource.clone()));
                    }
                }
                None => {
                    if *sent != Sent::Removed {
                        *sent = Sent::Removed;
                        removed.push(name);
                    }
                }
            }
        }
        if resources.is_empty() && removed.is_empty() {
            return;
        }
        let mut groups = chunks(resources);
        if groups.is_empty() {
            groups.push(Vec::new());
        }
        for (index, resources) in groups.into_iter().enumerate() {
            self.nonce += 1;
            let nonce = self.nonce.to_string();
            self.pending.insert(
                self.nonce,
                (
                    type_label(type_url),
                    generation.number,
                    generation.changed_at,
                ),
            );
            let planned = Planned {
                system_version_info: generation.number.to_string(),
                type_url: type_url.to_owned(),
                resources,
                removed: if index == 0 {
                    std::mem::take(&mut removed)
                } else {
                    Vec::new()
                },
                nonce,
                number: self.nonce,
            };
            self.server.metrics.push(type_label(type_url));
            self.outbox.push_back(Box::new(planned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, bytes: usize) -> (Arc<str>, Arc<WireResource>) {
        let pool = crate::index::WirePool::default();
        (Arc::from(name), pool.intern(name, vec![b'x'; bytes]))
    }

    #[test]
    fn responses_are_cut_at_the_size_bound() {
        let small: Vec<_> = (0..40).map(|i| resource(&format!("r{i}"), 1000)).collect();
        let groups = chunks(small);
        assert!(
            groups.len() > 1,
            "40 kB of resources is more than one response"
        );
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 40, "none lost");
        for group in &groups {
            let bytes: usize = group.iter().map(|(n, r)| n.len() + r.encoded().len()).sum();
            assert!(bytes <= MAX_RESPONSE_BYTES, "{bytes}");
        }
        let names: Vec<&str> = groups.iter().flatten().map(|(n, _)| &**n).collect();
        let expected: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
        assert_eq!(names, expected, "in order");
        // A resource larger than the bound goes alone, never dropped.
        let big = chunks(vec![
            resource("a", 10),
            resource("huge", 100_000),
            resource("b", 10),
        ]);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert!(chunks(Vec::new()).is_empty());
    }

    #[test]
    fn subscriptions_are_sorted_once_each_and_kept_at_their_length() {
        let mut subscribed = Subscribed::default();
        for name in ["outbound|8080||b", "a:8080", "c:8080"] {
            assert!(
                subscribed.insert_new(Arc::from(name), Sent::Nothing),
                "{name}"
            );
        }
        assert!(
            !subscribed.insert_new(Arc::from("a:8080"), Sent::Removed),
            "a name is subscribed once"
        );
        assert_eq!(
            subscribed.get_mut("a:8080"),
            Some(&mut Sent::Nothing),
            "the first kept"
        );
        let names = |s: &Subscribed| s.names().iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&subscribed), ["a:8080", "c:8080", "outbound|8080||b"]);
        subscribed.remove("c:8080");
        subscribed.remove("never:8080");
        assert!(!subscribed.contains("c:8080"));
        assert!(subscribed.contains("outbound|8080||b"));
        subscribed.fit();
        assert_eq!(subscribed.0.capacity(), subscribed.0.len());
    }

    #[test]
    fn node_ids_as_istio_writes_them() {
        assert_eq!(
            NodeId::parse("sidecar~10.244.1.30~storefront-7b9c-xyz12.shop~shop.svc.cluster.local"),
            Ok(NodeId {
                ip: "10.244.1.30".into(),
                pod: "storefront-7b9c-xyz12".into(),
                namespace: "shop".into()
            })
        );
        for bad in [
            "",
            "sidecar~1.2.3.4~pod~shop.svc.cluster.local",
            "gateway~1~p.shop~shop.svc",
            "sidecar~1~.shop~shop.svc",
        ] {
            assert!(NodeId::parse(bad).is_err(), "{bad}");
        }
    }
}
