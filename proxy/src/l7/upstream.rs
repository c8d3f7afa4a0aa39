//! Upstream connections: a pool per endpoint (kept in the endpoint's run-time state, so it
//! carries over a reload and closes with the endpoint), HTTP/1.1 keep-alive or one multiplexed
//! HTTP/2 connection, closed after `maxRequestsPerConnection` requests and after
//! `idleTimeout` without requests. HTTP/2 requests carry the route's authority as
//! `:authority`; the endpoint address only picks the socket. As Envoy's, the pool is per
//! worker ([`crate::worker`]): a request uses only connections its own thread opened (and
//! drives), so one HTTP/2 connection per endpoint and worker. Every connection holds a slot of
//! its cluster's [`ConnectionLimit`] while it is open; at `maxConnections` an HTTP/1 request
//! waits for a connection of its endpoint to become idle or for a slot to be freed. An
//! upgraded HTTP/1.1 connection (WebSocket) keeps its slot until its tunnel closes. A try's
//! `perTryTimeout` starts once its connection is in hand, as Envoy starts its per-try timer when
//! the pool is ready.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::l7::balance::ClusterState;
use crate::l7::limit::{ConnectionLimit, Permit};

/// Bodies on both sides of the proxy.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long an idle pooled connection is kept when the cluster sets no `idleTimeout`.
const DEFAULT_IDLE: Duration = Duration::from_secs(90);
/// How many times a request that never reached a reused connection (it closed in between) is
/// sent again on a new one.
const STALE_RETRIES: usize = 2;
/// How often a request waiting for a connection looks at the pools again on its own. Every
/// change it waits for wakes it; this only catches connections that went back to the pool
/// before a reload set `maxConnections` (those rejoin the pool busy, without telling anyone).
const WAIT_RECHECK: Duration = Duration::from_millis(100);

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {address} failed")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("connect to {address} timed out after {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    #[error("HTTP/2 handshake with {address} failed")]
    Handshake {
        address: String,
        #[source]
        source: hyper::Error,
    },
    #[error("connect to {address} failed while this request waited for it")]
    ConnectWaited { address: String },
    #[error("the cluster is at maxConnections and http1MaxPendingRequests requests already wait")]
    Overflow,
    #[error("no response headers within the per-try timeout of {timeout:?}")]
    PerTryTimeout { timeout: Duration },
    #[error("the upstream request failed")]
    Request(#[source] hyper::Error),
}

impl Error {
    /// No connection was made (Envoy's connect failure, `UF`).
    pub fn is_connect(&self) -> bool {
        !matches!(
            self,
            Error::Request(_) | Error::Overflow | Error::PerTryTimeout { .. }
        )
    }

    /// The try had its connection but no response headers within its `perTryTimeout`.
    pub fn is_per_try_timeout(&self) -> bool {
        matches!(self, Error::PerTryTimeout { .. })
    }

    /// The connection-pool limits refused the request (Envoy's overflow, `UO`).
    pub fn is_overflow(&self) -> bool {
        matches!(self, Error::Overflow)
    }
}

/// The connection settings of the proxy (the default connect timeout).
#[derive(Debug)]
pub struct Upstream {
    connect_timeout: Duration,
}

impl Upstream {
    /// `connect_timeout` applies when a cluster sets no `connectTimeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Upstream { connect_timeout }
    }

    /// The client for a cluster's protocol and pool settings.
    pub fn client(&self, cluster: &ClusterState) -> Client {
        Client {
            settings: Settings {
                http2: cluster.http2,
                connect_timeout: cluster.connect_timeout.unwrap_or(self.connect_timeout),
                idle_timeout: cluster
                    .idle_timeout
                    .filter(|t| !t.is_zero())
                    .unwrap_or(DEFAULT_IDLE),
                max_requests: cluster.max_requests_per_connection.filter(|n| *n > 0),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    http2: bool,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// `maxRequestsPerConnection` (0 or unset: unlimited).
    max_requests: Option<u32>,
}

/// Sends requests of one cluster.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    settings: Settings,
}

impl Client {
    /// Sends `request` to the cluster's endpoint `index` on a pooled connection (or a new
    /// one). HTTP/1 requests must have origin-form URIs and a `Host`; HTTP/2 ones an absolute
    /// URI whose authority is the `:authority` to send.
    pub async fn request(
        &self,
        cluster: &ClusterState,
        index: usize,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, Error> {
        self.try_request(cluster, index, request, None).await
    }

    /// [`Client::request`] as one try of a route: `per_try` (the route's `perTryTimeout`)
    /// bounds it from the moment its connection is in hand (an idle one, a new one once
    /// connected, or the endpoint's HTTP/2 connection) to its response headers, as Envoy
    /// starts its per-try timer when the pool is ready; the wait for a `maxConnections` slot
    /// and the connect are not under it (the caller's route timeout bounds them). Past it:
    /// [`Error::PerTryTimeout`].
    pub async fn try_request(
        &self,
        cluster: &ClusterState,
        index: usize,
        request: Request<Body>,
        per_try: Option<Duration>,
    ) -> Result<Response<Incoming>, Error> {
        let address = &cluster.endpoints[index].address;
        self.send(address, cluster.pool(index), request, per_try)
            .await
    }

    /// [`Client::request`] to an endpoint's address and pool, for a request that outlives the
    /// borrow of its endpoint (a mirrored copy sent in the background).
    pub async fn request_to(
        &self,
        address: &str,
        pool: &Arc<Pool>,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, Error> {
        self.send(address, pool, request, None).await
    }

    async fn send(
        &self,
        address: &str,
        pool: &Arc<Pool>,
        request: Request<Body>,
        per_try: Option<Duration>,
    ) -> Result<Response<Incoming>, Error> {
        if self.settings.http2 {
            self.request_http2(address, pool, request, per_try).await
        } else {
            self.request_http1(address, pool, request, per_try).await
        }
    }

    async fn request_http1(
        &self,
        address: &str,
        pool: &Arc<Pool>,
        mut request: Request<Body>,
        per_try: Option<Duration>,
    ) -> Result<Response<Incoming>, Error> {
        let mut stale = 0;
        // When the first connection was in hand: a request sent again because its reused
        // connection had closed stays under the same per-try clock.
        let mut in_hand = None;
        loop {
            let (mut conn, reused) = match pool.idle_http1() {
                Some(conn) => (conn, true),
                None => match pool.limit.try_open() {
                    Some(slot) => (
                        pool.connect_http1(address, self.settings, slot).await?,
                        false,
                    ),
                    None => match pool.wait_http1().await? {
                        Waited::Idle(conn) => (conn, true),
                        Waited::Slot(slot) => (
                            pool.connect_http1(address, self.settings, slot).await?,
                            false,
                        ),
                    },
                },
            };
            let per_try = per_try.map(|t| (*in_hand.get_or_insert_with(Instant::now), t));
            // An upgrade keeps the connection counted open for its tunnel: taken while the
            // connection's task still holds it, before the 101 can end that task.
            let upgrade = request
                .headers()
                .contains_key(http::header::UPGRADE)
                .then(|| conn.open.upgrade())
                .flatten();
            conn.served += 1;
            let sent = conn.send.try_send_request(request);
            // Dispatched: the connection goes back to the pool, unless it has served its share.
            if self
                .settings
                .max_requests
                .is_none_or(|max| conn.served < max)
            {
                pool.put_http1(conn);
            }
            match within(per_try, sent).await? {
                Ok(mut response) => {
                    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
                        && let Some(open) = upgrade
                    {
                        response
                            .extensions_mut()
                            .insert(UpgradedConnection { _open: open });
                    }
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // Never written: the reused connection was closed in between.
                    Some(unsent) if reused && stale < STALE_RETRIES => {
                        stale += 1;
                        request = unsent;
                    }
                    _ => return Err(Error::Request(error.into_error())),
                },
            }
        }
    }

    async fn request_http2(
        &self,
        address: &str,
        pool: &Arc<Pool>,
        request: Request<Body>,
        per_try: Option<Duration>,
    ) -> Result<Response<Incoming>, Error> {
        let mut send = pool.http2_sender(address, self.settings).await?;
        let per_try = per_try.map(|t| (Instant::now(), t));
        within(per_try, send.send_request(request))
            .await?
            .map_err(Error::Request)
    }
}

/// `sent` bounded by a per-try clock (when it started, how long it runs), if any.
async fn within<T>(
    per_try: Option<(Instant, Duration)>,
    sent: impl Future<Output = T>,
) -> Result<T, Error> {
    match per_try {
        Some((started, timeout)) => tokio::time::timeout_at(started + timeout, sent)
            .await
            .map_err(|_| Error::PerTryTimeout { timeout }),
        None => Ok(sent.await),
    }
}

struct Http1Conn {
    id: u64,
    /// The worker whose runtime drives the connection.
    worker: usize,
    send: http1::SendRequest<Body>,
    served: u32,
    idle_since: Instant,
    /// The connection's count as open, held by its task; an upgrade request takes a share of
    /// it for the tunnel (a `Weak`, so a closed connection in the pool holds no slot).
    open: Weak<OpenConnection>,
}

struct Http2Conn {
    id: u64,
    send: http2::SendRequest<Body>,
    served: u32,
    last_used: Instant,
}

/// One worker's HTTP/2 connection slot.
type Http2Slot = Arc<tokio::sync::Mutex<Option<Http2Conn>>>;

/// The HTTP/1 side of a pool.
#[derive(Default)]
struct Http1Pool {
    /// Idle connections of every worker (each takes only its own). Without `maxConnections`
    /// a connection is put back as soon as its request is dispatched (it is not ready before
    /// the exchange is over); with it, once it is ready, so a waiting request hears of it.
    idle: Vec<Http1Conn>,
    /// Requests waiting for a connection of this endpoint, oldest first.
    waiting: Vec<Waiter>,
}

/// A request of worker `worker` waiting for an idle connection (handed over on `conn`).
struct Waiter {
    worker: usize,
    conn: oneshot::Sender<Http1Conn>,
}

/// What a request waiting at `maxConnections` got first.
enum Waited {
    /// A connection of its endpoint and worker that became idle.
    Idle(Http1Conn),
    /// A freed slot: it may connect.
    Slot(Permit),
}

/// The connections to one endpoint.
pub struct Pool {
    http1: Mutex<Http1Pool>,
    /// HTTP/2 slots by worker, created on a worker's first request.
    http2: Mutex<Vec<(usize, Http2Slot)>>,
    next_id: AtomicU64,
    /// HTTP/2 connect attempts that failed: a request that waited for the slot while one
    /// failed fails with it, instead of trying again after it (one attempt per wait).
    http2_failures: AtomicU64,
    /// Connections opened (Envoy's `cx_total`, for `/clusters`).
    pub opened: AtomicU64,
    /// Connections open now, in the pool or not (Envoy's `cx_active`).
    pub open: AtomicU64,
    /// The cluster's cap on connections, which every connection holds a slot of.
    limit: Arc<ConnectionLimit>,
    /// The pool itself, for the connection tasks' idle checks.
    this: Weak<Pool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("opened", &self.opened.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// The pool of an endpoint of the cluster whose connections `limit` caps.
    pub fn new(limit: Arc<ConnectionLimit>) -> Arc<Pool> {
        let pool = Arc::new_cyclic(|this| Pool {
            http1: Mutex::default(),
            http2: Mutex::default(),
            next_id: AtomicU64::new(0),
            http2_failures: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            open: AtomicU64::new(0),
            limit: limit.clone(),
            this: this.clone(),
        });
        limit.register(Arc::downgrade(&pool));
        pool
    }

    fn weak(&self) -> Weak<Pool> {
        self.this.clone()
    }

    fn lock_http1(&self) -> std::sync::MutexGuard<'_, Http1Pool> {
        self.http1.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idle HTTP/1 connections open now (for tests and `/clusters`).
    pub fn idle_connections(&self) -> usize {
        let http1 = self.lock_http1();
        http1.idle.iter().filter(|c| !c.send.is_closed()).count()
    }

    /// A keep-alive connection of this worker ready for a request; closed ones are dropped
    /// on the way.
    fn idle_http1(&self) -> Option<Http1Conn> {
        take_idle(&mut self.lock_http1(), crate::worker::index())
    }

    /// Puts a dispatched connection back: at once without `maxConnections` (the hot path, as
    /// before the cap existed), else when its exchange is over, from a small task.
    fn put_http1(&self, mut conn: Http1Conn) {
        if !self.limit.is_capped() {
            conn.idle_since = Instant::now();
            self.lock_http1().idle.push(conn);
            return;
        }
        let pool = self.weak();
        tokio::spawn(async move {
            if conn.send.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.ready_http1(conn);
            }
        });
    }

    /// A connection whose exchange is over (under `maxConnections`): to the oldest request of
    /// its worker waiting on this endpoint; else, when requests of the cluster wait for a
    /// slot, closed so that one of them gets its slot; else idle in the pool.
    fn ready_http1(&self, mut conn: Http1Conn) {
        conn.idle_since = Instant::now();
        let mut http1 = self.lock_http1();
        while let Some(at) = http1.waiting.iter().position(|w| w.worker == conn.worker) {
            match http1.waiting.remove(at).conn.send(conn) {
                Ok(()) => return,
                // That request is gone (its timeout, or its client left).
                Err(back) => conn = back,
            }
        }
        if self.limit.pending() > 0 {
            drop(http1);
            tracing::debug!(
                id = conn.id,
                "closing an idle upstream connection for a waiting request"
            );
            return;
        }
        http1.idle.push(conn);
    }

    /// Waits, counted as pending (over `http1MaxPendingRequests`: [`Error::Overflow`]), for
    /// whichever comes first: a connection of this endpoint and worker becoming idle, or a
    /// free slot of the cluster. While none is free it closes one idle connection that this
    /// request cannot use (another endpoint's, or another worker's), so that a cluster at its
    /// cap with idle connections elsewhere cannot keep this request waiting for ever.
    async fn wait_http1(&self) -> Result<Waited, Error> {
        let Some(_pending) = self.limit.start_pending() else {
            return Err(Error::Overflow);
        };
        let worker = crate::worker::index();
        let (tx, mut rx) = oneshot::channel();
        {
            // Registered together with the idle check, so a connection put back in between
            // comes here.
            let mut http1 = self.lock_http1();
            if let Some(conn) = take_idle(&mut http1, worker) {
                return Ok(Waited::Idle(conn));
            }
            http1.waiting.retain(|w| !w.conn.is_closed());
            http1.waiting.push(Waiter { worker, conn: tx });
        }
        let mut listening = true;
        loop {
            let mut freed = pin!(self.limit.freed());
            freed.as_mut().enable();
            if let Some(conn) = take_idle(&mut self.lock_http1(), worker) {
                return Ok(Waited::Idle(conn));
            }
            if let Some(slot) = self.limit.try_open() {
                // A connection handed over meanwhile is better than a new one.
                return Ok(match rx.try_recv() {
                    Ok(conn) => Waited::Idle(conn),
                    Err(_) => Waited::Slot(slot),
                });
            }
            self.close_idle_elsewhere(worker);
            tokio::select! {
                biased;
                conn = &mut rx, if listening => match conn {
                    Ok(conn) => return Ok(Waited::Idle(conn)),
                    // Not while this request waits (the pool drops only waiters whose receiver
                    // is gone); a slot is then all there is to wait for.
                    Err(_) => listening = false,
                },
                () = &mut freed => {}
                () = tokio::time::sleep(WAIT_RECHECK) => {}
            }
        }
    }

    /// Closes one idle HTTP/1 connection of the cluster that a request of `worker` to this
    /// endpoint cannot use; its slot is given back when its task ends.
    fn close_idle_elsewhere(&self, worker: usize) {
        for pool in self.limit.pools() {
            let own = std::ptr::eq(Arc::as_ptr(&pool), self);
            let closed = {
                let mut http1 = pool.lock_http1();
                http1.idle.retain(|c| !c.send.is_closed());
                let at = http1
                    .idle
                    .iter()
                    .position(|c| c.send.is_ready() && !(own && c.worker == worker));
                at.map(|at| http1.idle.swap_remove(at))
            };
            if let Some(conn) = closed {
                tracing::debug!(
                    id = conn.id,
                    "closing an idle upstream connection to free its slot for a waiting request"
                );
                return;
            }
        }
    }

    async fn connect_http1(
        &self,
        address: &str,
        settings: Settings,
        slot: Permit,
    ) -> Result<Http1Conn, Error> {
        let io = connect(address, settings.connect_timeout).await?;
        let (send, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| Error::Handshake {
                address: address.to_owned(),
                source,
            })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        let open = drive(
            conn.with_upgrades(),
            self.weak(),
            id,
            settings.idle_timeout,
            slot,
        );
        Ok(Http1Conn {
            id,
            worker: crate::worker::index(),
            send,
            served: 0,
            idle_since: Instant::now(),
            open,
        })
    }

    /// A handle on the endpoint's HTTP/2 connection, opened (one at a time) when there is none,
    /// it closed, or it has carried `maxRequestsPerConnection` streams.
    async fn http2_sender(
        &self,
        address: &str,
        settings: Settings,
    ) -> Result<http2::SendRequest<Body>, Error> {
        let failures = self.http2_failures.load(Ordering::Acquire);
        let slot = self.http2_slot(crate::worker::index());
        let mut slot = slot.lock().await;
        let usable = |c: &Http2Conn| {
            !c.send.is_closed() && settings.max_requests.is_none_or(|max| c.served < max)
        };
        let conn = match slot.take() {
            Some(conn) if usable(&conn) => slot.insert(conn),
            // None, closed, or it has carried its share: the old one (if any) closes once its
            // streams are done.
            _ => {
                if self.http2_failures.load(Ordering::Acquire) != failures {
                    return Err(Error::ConnectWaited {
                        address: address.to_owned(),
                    });
                }
                let opened = async {
                    let io = connect(address, settings.connect_timeout).await?;
                    http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .handshake(io)
                        .await
                        .map_err(|source| Error::Handshake {
                            address: address.to_owned(),
                            source,
                        })
                };
                let (send, conn) = match opened.await {
                    Ok(opened) => opened,
                    Err(error) => {
                        self.http2_failures.fetch_add(1, Ordering::Release);
                        return Err(error);
                    }
                };
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                self.opened.fetch_add(1, Ordering::Relaxed);
                // Counted against maxConnections but never refused or waited for (README).
                let counted = self.limit.open_anyway();
                // HTTP/2 is not upgraded here: no handle on the count is needed.
                let _ = drive(conn, self.weak(), id, settings.idle_timeout, counted);
                slot.insert(Http2Conn {
                    id,
                    send,
                    served: 0,
                    last_used: Instant::now(),
                })
            }
        };
        conn.served += 1;
        conn.last_used = Instant::now();
        let send = conn.send.clone();
        if settings.max_requests.is_some_and(|max| conn.served >= max) {
            *slot = None;
        }
        Ok(send)
    }

    /// This worker's HTTP/2 slot.
    fn http2_slot(&self, worker: usize) -> Http2Slot {
        let mut slots = self.http2.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, slot)) = slots.iter().find(|(w, _)| *w == worker) {
            return slot.clone();
        }
        let slot = Http2Slot::default();
        slots.push((worker, slot.clone()));
        slot
    }

    /// The idle check of connection `id`: `None` when it was closed for being idle
    /// `idle` long, else how long to wait before checking again.
    fn reap(&self, id: u64, idle: Duration) -> Option<Duration> {
        // A busy connection is checked again soon, so it closes at most idle/8 late.
        let soon = (idle / 8).max(Duration::from_millis(10));
        {
            let mut http1 = self.lock_http1();
            let conns = &mut http1.idle;
            if let Some(at) = conns.iter().position(|c| c.id == id) {
                let conn = &mut conns[at];
                if !conn.send.is_ready() {
                    conn.idle_since = Instant::now();
                    return Some(soon);
                }
                let waited = conn.idle_since.elapsed();
                if waited >= idle {
                    conns.swap_remove(at);
                    return None;
                }
                return Some(idle - waited);
            }
        }
        let slots: Vec<Http2Slot> = {
            let slots = self.http2.lock().unwrap_or_else(|p| p.into_inner());
            slots.iter().map(|(_, slot)| slot.clone()).collect()
        };
        for slot in slots {
            let Ok(mut slot) = slot.try_lock() else {
                return Some(soon);
            };
            if let Some(conn) = slot.as_ref().filter(|c| c.id == id) {
                let waited = conn.last_used.elapsed();
                if waited >= idle {
                    *slot = None;
                    return None;
                }
                return Some(idle - waited);
            }
        }
        // Not in the pool (in use, or retired after its last request): it closes when its
        // requests end.
        Some(idle)
    }
}

async fn connect(address: &str, timeout: Duration) -> Result<TokioIo<TcpStream>, Error> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(Error::Connect {
                address: address.to_owned(),
                source,
            });
        }
        Err(_) => {
            return Err(Error::ConnectTimeout {
                address: address.to_owned(),
                timeout,
            });
        }
    };
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY upstream");
    }
    Ok(TokioIo::new(stream))
}

/// A keep-alive connection of `worker` ready for a request; closed ones are dropped on the way.
fn take_idle(http1: &mut Http1Pool, worker: usize) -> Option<Http1Conn> {
    http1.idle.retain(|c| !c.send.is_closed());
    let ready = http1
        .idle
        .iter()
        .rposition(|c| c.worker == worker && c.send.is_ready())?;
    Some(http1.idle.swap_remove(ready))
}

/// One upstream connection counted open: in its pool's `open` (`cx_active`) and with its slot
/// of the cluster's `maxConnections`, until the last holder lets go: the task that drives it,
/// and for an upgraded HTTP/1.1 connection the tunnel that carries its bytes
/// ([`UpgradedConnection`]).
#[derive(Debug)]
pub struct OpenConnection {
    pool: Weak<Pool>,
    _slot: Permit,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Carried in the extensions of a `101` response: the upgraded connection's count as open,
/// for the tunnel to hold until it closes (Envoy keeps an upgraded stream's upstream
/// connection busy, under `max_connections`, until the stream ends).
#[derive(Debug, Clone)]
pub struct UpgradedConnection {
    _open: Arc<OpenConnection>,
}

/// Runs a connection until it ends; every idle period it asks the pool whether the connection
/// has been idle too long (the pool then drops its handle and the connection closes). The
/// task holds the connection's `slot` of the cluster's cap, given back when the task ends
/// (after the connection's socket is closed: the connection is dropped first), or, after an
/// upgrade, when the tunnel lets go of it too. Returns a handle on that count for upgrades.
fn drive<C, E>(
    conn: C,
    pool: Weak<Pool>,
    id: u64,
    idle: Duration,
    slot: Permit,
) -> Weak<OpenConnection>
where
    C: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send,
{
    if let Some(pool) = pool.upgrade() {
        pool.open.fetch_add(1, Ordering::Relaxed);
    }
    let open = Arc::new(OpenConnection {
        pool: pool.clone(),
        _slot: slot,
    });
    let handle = Arc::downgrade(&open);
    tokio::spawn(async move {
        let _open = open;
        let mut conn = std::pin::pin!(conn);
        let mut wait = idle;
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "upstream connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep(wait) => {
                    let next = match pool.upgrade() {
                        Some(pool) => pool.reap(id, idle),
                        None => None,
                    };
                    match next {
                        Some(next) => wait = next,
                        None => {
                            tracing::debug!(id, "closing an idle upstream connection");
                            if let Err(error) = conn.await {
                                tracing::debug!(%error, "upstream connection ended with an error");
                            }
                            return;
                        }
                    }
                }
            }
        }
    });
    handle
}
