//! The cluster-wide cap on upstream connections (`maxConnections`, Envoy's `max_connections`)
//! and the count of requests waiting under it (`http1MaxPendingRequests`, Envoy's
//! `max_pending_requests`), shared by every endpoint pool and worker of a cluster.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::l7::upstream::Pool;

/// What an unset limit is: Istio's own default for both is 2^32-1 as well.
const UNLIMITED: u32 = u32::MAX;

/// The connections of one cluster: how many are open against the cap, how many requests
/// wait for one, and the pools that hold them (so a waiting request can close an idle
/// connection elsewhere to free its slot). Carried over a reload by cluster name, with the new
/// caps written in: the connections already open count against the new cap.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicU32,
    max_pending: AtomicU32,
    open: AtomicU32,
    pending: AtomicU32,
    /// Told (one waiter) when a connection closes and gives its slot back.
    freed: Notify,
    /// The pools of the cluster's endpoints, registered as they are created.
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl ConnectionLimit {
    pub fn new(max: Option<u32>, max_pending: Option<u32>) -> Self {
        ConnectionLimit {
            max: AtomicU32::new(max.unwrap_or(UNLIMITED)),
            max_pending: AtomicU32::new(max_pending.unwrap_or(UNLIMITED)),
            open: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            freed: Notify::new(),
            pools: Mutex::default(),
        }
    }

    /// `maxConnections`, `None` when unset.
    pub fn max(&self) -> Option<u32> {
        Some(self.max.load(Ordering::Relaxed)).filter(|m| *m != UNLIMITED)
    }

    /// `http1MaxPendingRequests`, `None` when unset.
    pub fn max_pending(&self) -> Option<u32> {
        Some(self.max_pending.load(Ordering::Relaxed)).filter(|m| *m != UNLIMITED)
    }

    /// The cluster sets `maxConnections`.
    pub fn is_capped(&self) -> bool {
        self.max.load(Ordering::Relaxed) != UNLIMITED
    }

    /// Upstream connections open now, over every endpoint and worker.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Requests waiting now for a connection.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Writes the caps of a new configuration into the state carried over a reload; waiting
    /// requests look again (a higher cap may have room for them).
    pub fn set_caps(&self, from: &ConnectionLimit) {
        self.max
            .store(from.max.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max_pending
            .store(from.max_pending.load(Ordering::Relaxed), Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    /// A slot for one more connection, or `None` at the cap.
    pub fn try_open(self: &Arc<Self>) -> Option<Permit> {
        let max = self.max.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.clone()))
    }

    /// A slot even at the cap (HTTP/2: counted, never refused, see the README).
    pub fn open_anyway(self: &Arc<Self>) -> Permit {
        self.open.fetch_add(1, Ordering::AcqRel);
        Permit(self.clone())
    }

    /// Counts a request as waiting for a connection, or `None` when `http1MaxPendingRequests`
    /// already wait (503 `UO`).
    pub fn start_pending(&self) -> Option<Pending<'_>> {
        let previous = self.pending.fetch_add(1, Ordering::AcqRel);
        let pending = Pending(self);
        (previous < self.max_pending.load(Ordering::Relaxed)).then_some(pending)
    }

    /// Resolves when a connection may have given its slot back; `enable` it before looking
    /// with [`ConnectionLimit::try_open`], so a slot freed in between is not missed.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    pub fn register(&self, pool: Weak<Pool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// The pools of the cluster that are still alive.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.iter().filter_map(Weak::upgrade).collect()
    }
}

/// One connection's slot, held by the task that drives it, so it is given back when the
/// connection closes for any reason.
#[derive(Debug)]
pub struct Permit(Arc<ConnectionLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

/// A request counted as waiting, until dropped.
#[derive(Debug)]
pub struct Pending<'a>(&'a ConnectionLimit);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    //! The cap against real upstreams on 127.0.0.1, through the pool and client of
    //! `l7::upstream`.

    use std::convert::Infallible;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use outrigger_mesh::config::ConnectionPool;
    use outrigger_mesh::protocol::Protocol;
    use tokio::net::TcpListener;

    use super::*;
    use crate::l7::balance::ClusterState;
    use crate::l7::upstream::{Client, Error, Upstream};

    /// What the upstreams of one test saw: connections accepted, and the most that were open
    /// at once (counted at each accept: the earlier ones whose client had not closed them).
    #[derive(Default)]
    struct Seen {
        accepted: AtomicUsize,
        most_open: AtomicUsize,
        open: Mutex<Vec<std::net::TcpStream>>,
    }

    impl Seen {
        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::Relaxed)
        }

        fn most_open(&self) -> usize {
            self.most_open.load(Ordering::Relaxed)
        }

        fn accept(&self, stream: &tokio::net::TcpStream) {
            let probe = socket2::SockRef::from(stream)
                .try_clone()
                .expect("dup the accepted socket");
            probe.set_nonblocking(true).expect("nonblocking probe");
            let mut open = self.open.lock().expect("not poisoned");
            // The client closes a connection before it gives its slot back, and on loopback
            // its FIN is queued before the next SYN: a closed one reads end of stream here.
            open.retain(|s| {
                let mut byte = [0u8; 1];
                match s.peek(&mut byte) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                }
            });
            open.push(probe.into());
            self.accepted.fetch_add(1, Ordering::Relaxed);
            self.most_open.fetch_max(open.len(), Ordering::Relaxed);
        }
    }

    /// An HTTP/1.1 (or, with prior knowledge, HTTP/2) upstream that answers `200` with its
    /// connection's peer address after `delay`.
    async fn upstream(seen: Arc<Seen>, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                seen.accept(&stream);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(peer.to_string()))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        addr
    }

    fn cluster(
        addresses: &[SocketAddr],
        protocol: Protocol,
        pool: ConnectionPool,
    ) -> Arc<ClusterState> {
        Arc::new(ClusterState::for_tests(addresses, protocol, pool))
    }

    fn capped(max_connections: Option<u32>, pending: Option<u32>) -> ConnectionPool {
        ConnectionPool {
            max_connections,
            http1_max_pending_requests: pending,
            ..Default::default()
        }
    }

    fn client(cluster: &ClusterState) -> Client {
        Upstream::new(Duration::from_secs(2)).client(cluster)
    }

    /// One GET to endpoint `index`, its body read to the end: the peer address the upstream
    /// saw (which connection served it).
    async fn get(cluster: &ClusterState, index: usize) -> Result<String, Error> {
        // HTTP/2 requests carry their `:authority` in the URI.
        let uri = if cluster.http2 { "http://c.test/" } else { "/" };
        let request = Request::get(uri)
            .header(http::header::HOST, "c.test")
            .body(
                Full::new(Bytes::new())
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
            )
            .expect("request");
        let response = client(cluster).request(cluster, index, request).await?;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body");
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    }

    /// `n` GETs to endpoint `index` at once, with the time each took.
    async fn concurrent(
        cluster: &Arc<ClusterState>,
        index: usize,
        n: usize,
    ) -> Vec<(Result<String, Error>, Duration)> {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = get(&cluster, index).await;
                    (result, started.elapsed())
                })
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.expect("the call ran"));
        }
        results
    }

    /// Waits until endpoint `index` has `n` idle connections (capped pools put a connection
    /// back from a task once its exchange is over).
    async fn idle(cluster: &ClusterState, index: usize, n: usize) {
        for _ in 0..200 {
            if cluster.pool(index).idle_connections() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("endpoint {index} never had {n} idle connections");
    }

    const DELAY: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn max_connections_two_serves_six_requests_over_two_connections() {
        let seen = Arc::new(Seen::default());
        let addr = upstream(seen.clone(), DELAY).await;
        let cluster = cluster(&[addr], Protocol::Http, capped(Some(2), None));
        let results = concurrent(&cluster, 0, 6).await;
        let mut peers = std::collections::BTreeSet::new();
        for (result, _) in &results {
            peers.insert(result.as_ref().expect("served").clone());
        }
        assert_eq!(seen.most_open(), 2, "open at once");
        assert_eq!(seen.accepted(), 2, "connections accepted");
        assert_eq!(peers.len(), 2, "{peers:?}");
        let slowest = results.iter().map(|(_, took)| *took).max().expect("six");
        assert!(slowest >= DELAY * 3, "three in turn on each: {slowest:?}");
        assert_eq!(cluster.connections.pending(), 0);
        assert!(cluster.connections.open() <= 2);
    }

    #[tokio::test]
    async fn one_connection_and_one_pending_request_overflow_the_third() {
        let seen = Arc::new(Seen::default());
        let addr = upstream(seen.clone(), DELAY).await;
        let cluster = cluster(&[addr], Protocol::Http, capped(Some(1), Some(1)));
        let results = concurrent(&cluster, 0, 3).await;
        let overflows = results
            .iter()
            .filter(|(r, _)| r.as_ref().is_err_and(Error::is_overflow))
            .count();
        assert_eq!(overflows, 1, "{results:?}");
        let mut served: Vec<_> = results
            .iter()
            .filter_map(|(r, took)| r.as_ref().ok().map(|peer| (peer.clone(), *took)))
            .collect();
        served.sort_by_key(|(_, took)| *took);
        assert_eq!(served.len(), 2, "{results:?}");
        assert_eq!(served[0].0, served[1].0, "one connection: {served:?}");
        assert!(served[1].1 >= DELAY * 2, "in turn: {served:?}");
        assert_eq!(seen.accepted(), 1);
        assert_eq!(cluster.connections.pending(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_of_another_endpoint_gives_its_slot_to_a_waiting_request() {
        let seen = Arc::new(Seen::default());
        let a = upstream(seen.clone(), DELAY).await;
        let b = upstream(seen.clone(), DELAY).await;
        let cluster = cluster(&[a, b], Protocol::Http, capped(Some(1), None));
        // A's connection is idle in its pool when B's request comes.
        get(&cluster, 0).await.expect("A");
        idle(&cluster, 0, 1).await;
        let to_b = tokio::time::timeout(Duration::from_secs(3), get(&cluster, 1));
        to_b.await.expect("no deadlock").expect("B");
        // B's request in flight while A's comes: A waits for B's exchange to end, which then
        // closes and gives A its slot.
        let (to_b, to_a) = tokio::join!(get(&cluster, 1), async {
            tokio::time::sleep(DELAY / 3).await;
            tokio::time::timeout(Duration::from_secs(3), get(&cluster, 0)).await
        });
        to_b.expect("B again");
        to_a.expect("no deadlock").expect("A again");
        assert_eq!(seen.most_open(), 1, "open at once over both endpoints");
        assert_eq!(seen.accepted(), 3, "A, B, then A again");
        assert!(cluster.connections.open() <= 1);
    }

    #[tokio::test]
    async fn a_waiting_request_that_times_out_leaves_the_pending_count() {
        let seen = Arc::new(Seen::default());
        let addr = upstream(seen.clone(), DELAY).await;
        let cluster = cluster(&[addr], Protocol::Http, capped(Some(1), Some(1)));
        let (first, waited) = tokio::join!(get(&cluster, 0), async {
            tokio::time::sleep(DELAY / 3).await;
            let waiting = tokio::time::timeout(DELAY / 3, get(&cluster, 0));
            let timed_out = waiting.await.is_err();
            (timed_out, cluster.connections.pending())
        });
        first.expect("the first");
        assert_eq!(
            waited,
            (true, 0),
            "timed out while pending, and counted out"
        );
        get(&cluster, 0).await.expect("the slot still works");
        assert_eq!(seen.accepted(), 1);
    }

    #[tokio::test]
    async fn without_limits_concurrent_requests_open_concurrent_connections() {
        let seen = Arc::new(Seen::default());
        let addr = upstream(seen.clone(), DELAY).await;
        let cluster = cluster(&[addr], Protocol::Http, ConnectionPool::default());
        assert!(!cluster.connections.is_capped());
        let results = concurrent(&cluster, 0, 4).await;
        assert!(results.iter().all(|(r, _)| r.is_ok()), "{results:?}");
        assert_eq!(seen.accepted(), 4);
        assert_eq!(seen.most_open(), 4);
        // Counted all the same (for `/clusters` and a later cap), and back in the pool at once.
        assert_eq!(cluster.connections.open(), 4);
        assert_eq!(cluster.pool(0).idle_connections(), 4);
    }

    #[tokio::test]
    async fn http2_connections_are_counted_but_never_refused() {
        let seen = Arc::new(Seen::default());
        let a = upstream(seen.clone(), Duration::ZERO).await;
        let b = upstream(seen.clone(), Duration::ZERO).await;
        let cluster = cluster(&[a, b], Protocol::Http2, capped(Some(1), Some(0)));
        for index in [0, 1, 0, 1] {
            get(&cluster, index).await.expect("served");
        }
        assert_eq!(
            seen.accepted(),
            2,
            "one multiplexed connection per endpoint"
        );
        assert_eq!(cluster.connections.open(), 2, "over the cap of 1");
    }
}
