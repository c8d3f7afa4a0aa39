//! HTTP/1.1 and HTTP/2 (prior knowledge) on a captured outbound connection whose destination
//! speaks HTTP per the configuration: a hyper server on the accepted stream; per request the
//! mesh matcher's first match, fault injection, a weighted cluster, the load balancer, the
//! route's timeout and retries, then the pooled upstream client. Every request is counted
//! under Istio's names and logged once with Envoy's response flags.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use outrigger_api::names::networking::{BLACK_HOLE_CLUSTER, BLOCK_ALL_ROUTE};
use outrigger_mesh::config::{ActionKind, FaultAbort, Mirror, OutboundTrafficPolicy, Route};
use outrigger_mesh::protocol::Protocol;
use smallvec::SmallVec;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::addr::OrigDstAddr;
use crate::l7::balance::{ClusterState, EndpointState};
use crate::l7::detect::{self, Detected};
use crate::l7::hash::Downstream;
use crate::l7::headers::{self, Side};
use crate::l7::mirror::{self, Mirrors};
use crate::l7::outlier::Observed;
use crate::l7::peer::{self, Local, OwnLabels, Peers};
use crate::l7::request::{self, Flag, Flags, Outcome, View};
use crate::l7::source::{ConfigStore, Loaded};
use crate::l7::telemetry::{
    L7Metrics, Label, Measured, MirrorResult, RequestLabels, ServiceLabels,
};
use crate::l7::upstream::{Body, UpgradedConnection, Upstream};
use crate::workload::{UNKNOWN, Workload};

/// Bodies up to this size are buffered so the request can be retried; a larger (or unsized)
/// body is streamed and never retried.
pub const MAX_RETRY_BODY: u64 = 64 * 1024;
/// Envoy's retry back-off: 25 ms base, doubled per retry, capped at ten times the base.
const RETRY_BASE: Duration = Duration::from_millis(25);

/// Whether a destination's requests are handled here without detection (`auto` is detected
/// on the first bytes, see [`Outbound::plan`]).
pub fn is_http(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    )
}

/// What a captured outbound connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The HTTP server (routing, or the `REGISTRY_ONLY` 502).
    Http,
    /// The TCP relay to the original destination.
    Tcp,
    /// Closed at once (`REGISTRY_ONLY`, not HTTP): Istio's `BlackHoleCluster`.
    BlackHoleTcp,
}

/// The outbound HTTP handler of one proxy.
#[derive(Debug)]
pub struct Outbound {
    pub store: Arc<ConfigStore>,
    pub metrics: L7Metrics,
    pub workload: Arc<Workload>,
    pub upstream: Upstream,
    pub mirrors: Mirrors,
    /// How long `auto` detection waits for the client's first bytes (`None`: no limit).
    pub detection_timeout: Option<Duration>,
    /// This proxy's metadata exchange headers, sent with every upstream request.
    pub local: Local,
    /// The upstream peers whose answers filled `unknown` destination labels.
    pub peers: Peers,
}

impl Outbound {
    pub fn new(
        store: Arc<ConfigStore>,
        metrics: L7Metrics,
        workload: Arc<Workload>,
        connect_timeout: Duration,
        detection_timeout: Option<Duration>,
    ) -> Self {
        Outbound {
            detection_timeout,
            store,
            mirrors: Mirrors::new(metrics.clone()),
            metrics,
            local: Local::new(workload.clone()),
            peers: Peers::default(),
            workload,
            upstream: Upstream::new(connect_timeout),
        }
    }

    /// What to do with a captured connection: by the destination's protocol, detection on
    /// the first bytes for `auto`, and for an unknown destination the
    /// `outboundTrafficPolicy` (`ALLOW_ANY`: relay; `REGISTRY_ONLY`: HTTP on a port where the
    /// mesh has HTTP, whose requests get 502 `NR` as Istio's `block_all` route answers, else
    /// closed as Istio's `BlackHoleCluster`).
    pub async fn plan(&self, client: &TcpStream, orig_dst: &OrigDstAddr) -> Plan {
        let loaded = self.store.current();
        let config = &loaded.config;
        let port = orig_dst.0.port();
        match config.destination(&orig_dst.0.to_string(), port) {
            Some((_, d)) if is_http(d.protocol) => Plan::Http,
            Some((_, d)) if d.protocol == Protocol::Auto => {
                self.detect(client, port, &d.host, Plan::Tcp).await
            }
            Some(_) => Plan::Tcp,
            None if config.outbound_traffic_policy == OutboundTrafficPolicy::RegistryOnly => {
                let mut on_port = config.destinations.values().filter(|d| d.port == port);
                if on_port.clone().any(|d| is_http(d.protocol)) {
                    Plan::Http
                } else if on_port.any(|d| d.protocol == Protocol::Auto) {
                    self.detect(client, port, BLACK_HOLE_CLUSTER, Plan::BlackHoleTcp)
                        .await
                } else {
                    Plan::BlackHoleTcp
                }
            }
            None => Plan::Tcp,
        }
    }

    async fn detect(&self, client: &TcpStream, port: u16, service: &str, otherwise: Plan) -> Plan {
        match detect::detect(client, self.detection_timeout).await {
            Detected::Http => Plan::Http,
            Detected::Tcp => otherwise,
            Detected::TimedOut => {
                tracing::info!(
                    port,
                    service,
                    timeout_ms = self.detection_timeout.map_or(0, |t| t.as_millis() as u64),
                    "protocol detection timed out (the client sent nothing yet; a server-first protocol?): relaying as TCP"
                );
                otherwise
            }
        }
    }

    /// The FQDN, Service name and port of a destination the configuration knows (for the TCP
    /// metrics of a non-HTTP one).
    pub fn service_of(&self, orig_dst: &OrigDstAddr) -> Option<(String, String, u16)> {
        let loaded = self.store.current();
        let (_, destination) = loaded
            .config
            .destination(&orig_dst.0.to_string(), orig_dst.0.port())?;
        let name = destination
            .service
            .split_once('/')
            .map_or(destination.service.as_str(), |(_, name)| name);
        Some((destination.host.clone(), name.to_owned(), destination.port))
    }

    /// Serves HTTP/1.1 or HTTP/2 (prior knowledge) on the captured connection until it ends or
    /// `close` fires.
    pub async fn serve(
        self: Arc<Self>,
        client: TcpStream,
        orig_dst: OrigDstAddr,
        close: CancellationToken,
    ) {
        if let Err(error) = client.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let downstream = match (client.peer_addr(), client.local_addr()) {
            (Ok(peer), Ok(local)) => Some(Downstream { peer, local }),
            _ => None,
        };
        let this = self.clone();
        // The configuration's key of the original destination, formatted once per connection.
        let key: Arc<str> = orig_dst.0.to_string().into();
        let service = service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            let connection = Connection {
                orig_dst: key.clone(),
                port: orig_dst.0.port(),
                downstream,
            };
            async move { Ok::<_, Infallible>(this.handle(req, connection).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(client), service);
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
            }
            () = close.cancelled() => tracing::debug!("closing an HTTP connection: grace over"),
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        connection: Connection,
    ) -> Response<DownstreamBody> {
        let loaded = self.store.current();
        let request_id = request::ensure_request_id(req.headers_mut());
        // The metadata exchange: ours replaces whatever the app sent under those names.
        peer::strip(req.headers_mut());
        let exchange = self.local.exchange(&loaded);
        exchange.insert(req.headers_mut());
        let labels = Self::labels(&exchange.labels);
        let mut record = Record::new(&self.metrics, labels, &req, request_id);
        let mut response = self.route(&loaded, req, &connection, &mut record).await;
        self.upstream_peer(&mut response, &mut record);
        record.respond(response)
    }

    /// Reads and strips the upstream proxy's metadata from its answer (the client app never
    /// sees it). The destination is known from the configuration; the peer's word is used
    /// only for a destination label that would otherwise be `unknown`, and is decoded only
    /// then.
    fn upstream_peer(&self, response: &mut Response<Body>, record: &mut Record) {
        let labels = &mut record.labels;
        let fields = [
            &labels.destination_workload,
            &labels.destination_workload_namespace,
            &labels.destination_app,
            &labels.destination_version,
        ];
        let wanted = fields.iter().any(|value| **value == UNKNOWN);
        let received = self
            .peers
            .receive(response.headers_mut(), &self.metrics, wanted);
        let Some(peer) = received.peer else {
            return;
        };
        for (label, value) in [
            (&mut labels.destination_workload, peer.workload),
            (&mut labels.destination_workload_namespace, peer.namespace),
            (&mut labels.destination_app, peer.app),
            (&mut labels.destination_version, peer.version),
        ] {
            if *label == UNKNOWN {
                *label = value;
            }
        }
    }

    /// Istio's labels of an outbound request: this workload is the source.
    fn labels(own: &OwnLabels) -> RequestLabels {
        let unknown = Label::unknown;
        RequestLabels {
            reporter: "source",
            source_workload: own.workload.clone(),
            source_workload_namespace: own.namespace.clone(),
            source_app: own.app.clone(),
            source_version: own.version.clone(),
            destination_workload: unknown(),
            destination_workload_namespace: unknown(),
            destination_app: unknown(),
            destination_version: unknown(),
            destination_service: unknown(),
            destination_service_name: unknown(),
            destination_service_namespace: unknown(),
            request_protocol: "http",
            response_code: Label::empty(),
            response_flags: Label::empty(),
            grpc_response_status: Label::empty(),
            connection_security_policy: "unknown",
        }
    }

    async fn route(
        &self,
        loaded: &Loaded,
        req: Request<Incoming>,
        connection: &Connection,
        record: &mut Record,
    ) -> Response<Body> {
        let Some((key, destination)) = loaded
            .config
            .destination(&connection.orig_dst, connection.port)
        else {
            if loaded.config.outbound_traffic_policy == OutboundTrafficPolicy::RegistryOnly {
                record.black_hole();
                return local(record, Flag::NoRoute, StatusCode::BAD_GATEWAY);
            }
            // The destination left the configuration while the connection was open.
            return local(record, Flag::NoRoute, StatusCode::SERVICE_UNAVAILABLE);
        };
        record.destination(loaded.service_labels(key, destination));
        let (parts, body) = req.into_parts();
        // A shared buffer, not a copy.
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = request::authority(&parts.uri, &parts.headers).to_owned();
        let scheme = parts.uri.scheme_str().unwrap_or("http");
        let view = View {
            method: parts.method.as_str(),
            scheme,
            authority: &authority,
            path: path.as_str(),
            headers: &parts.headers,
        };
        let Some((index, action)) = destination.http.select(&view) else {
            return local(record, Flag::NoRoute, StatusCode::NOT_FOUND);
        };
        let route = &destination.http.routes[index];
        if let Some(log) = record.log() {
            log.route = route.name.clone().or_else(|| {
                route
                    .virtual_service
                    .as_ref()
                    .map(|vs| format!("{vs}#{}", route.rule.unwrap_or_default()))
            });
        }
        match action.kind {
            ActionKind::Redirect => {
                let Some(redirect) = &action.redirect else {
                    return local(record, Flag::NoRoute, StatusCode::NOT_FOUND);
                };
                let location =
                    request::redirect_location(redirect, scheme, &authority, path.as_str());
                let status =
                    StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                let mut response = full(status, Bytes::new());
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            }
            ActionKind::DirectResponse => {
                let (status, body) = action
                    .direct_response
                    .as_ref()
                    .map(|d| (d.status, d.body.clone().unwrap_or_default()))
                    .unwrap_or((200, String::new()));
                full(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    Bytes::from(body),
                )
            }
            ActionKind::Route => {
                let target = Target {
                    route,
                    path,
                    authority,
                    downstream: connection.downstream,
                };
                self.forward(loaded, target, parts, body, record).await
            }
        }
    }

    async fn forward(
        &self,
        loaded: &Loaded,
        target: Target<'_>,
        mut parts: Parts,
        body: Incoming,
        record: &mut Record,
    ) -> Response<Body> {
        let route = target.route;
        if let Some(fault) = &route.fault {
            if let Some(delay) = &fault.delay
                && hit(delay.percentage)
            {
                record.flags.add(Flag::DelayInjected);
                tokio::time::sleep(Duration::from_millis(delay.fixed_delay_ms)).await;
            }
            if let Some(abort) = &fault.abort
                && hit(abort.percentage)
            {
                record.flags.add(Flag::FaultInjected);
                return abort_response(abort, record.grpc);
            }
        }
        let Some(choice) = request::choose(&route.action.destinations, fastrand::u32(..100)) else {
            return local(record, Flag::NoRoute, StatusCode::SERVICE_UNAVAILABLE);
        };
        let Some(cluster) = loaded.clusters.get(&choice.cluster) else {
            // A subset no DestinationRule defines (Istio: 503 NR).
            if let Some(log) = record.log() {
                log.cluster = Some(choice.cluster.clone());
            }
            return local(record, Flag::NoRoute, StatusCode::SERVICE_UNAVAILABLE);
        };
        if let Some(log) = record.log() {
            log.cluster = Some(cluster.name.clone());
        }
        let (rule_headers, destination_headers) =
            (route.headers.as_deref(), choice.headers.as_deref());
        headers::apply(
            Side::Request,
            rule_headers,
            destination_headers,
            &mut parts.headers,
        );
        let mut response = self
            .send(loaded, cluster, target, parts, body, record)
            .await;
        if cluster.mesh_external {
            // An answer from outside the mesh is not a peer's word.
            peer::strip(response.headers_mut());
        }
        headers::apply(
            Side::Response,
            rule_headers,
            destination_headers,
            response.headers_mut(),
        );
        response
    }

    /// Sends the request to the cluster: pool limit, rewrite, body, then the tries.
    async fn send(
        &self,
        loaded: &Loaded,
        cluster: &ClusterState,
        target: Target<'_>,
        mut parts: Parts,
        body: Incoming,
        record: &mut Record,
    ) -> Response<Body> {
        let route = target.route;
        let Some(_slot) = cluster.request_slot() else {
            return local(
                record,
                Flag::UpstreamOverflow,
                StatusCode::SERVICE_UNAVAILABLE,
            );
        };
        let rewrite = route.action.rewrite.as_ref();
        let path = match rewrite.and_then(|r| r.uri.as_deref()) {
            Some(uri) => {
                let rewritten = request::rewrite_path(route, target.path.as_str(), uri);
                match PathAndQuery::try_from(rewritten) {
                    Ok(path) => path,
                    Err(error) => {
                        return unbuildable(record, "the rewritten path is not a URI path", error);
                    }
                }
            }
            None => target.path,
        };
        let authority = rewrite
            .and_then(|r| r.authority.clone())
            .unwrap_or(target.authority);
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let upgrade = is_upgrade(&parts.headers);
        // Istio: no retry and no timeout on a route with a fault.
        let faulted = route.fault.is_some();
        let timeout = route
            .timeout_ms
            .filter(|_| !faulted)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut payload = if upgrade {
            Payload::Streaming(Some(body))
        } else if body.is_end_stream() {
            Payload::Buffered(Bytes::new())
        } else if content_length(&parts.headers).is_some_and(|len| len <= MAX_RETRY_BODY) {
            match body.collect().await {
                Ok(collected) => Payload::Buffered(collected.to_bytes()),
                Err(error) => {
                    tracing::debug!(%error, "the client's request body failed");
                    record.flags.add(Flag::DownstreamDisconnect);
                    return full(StatusCode::BAD_REQUEST, Bytes::new());
                }
            }
        } else {
            Payload::Streaming(Some(body))
        };
        let attempts = match payload {
            Payload::Buffered(ref bytes) => {
                record.request_bytes = bytes.len() as u64;
                1 + if faulted { 0 } else { route.retries.attempts }
            }
            Payload::Streaming(_) => 1,
        };
        // Each mirror (`mirror`, or every `mirrors` entry) draws its own percentage.
        for mirror in route.mirrors.iter().filter(|m| hit(m.percentage)) {
            match &payload {
                Payload::Buffered(bytes) => {
                    let copy = MirrorCopy {
                        parts: &parts,
                        path: &path,
                        authority: &authority,
                        body: bytes.clone(),
                    };
                    self.mirror(loaded, mirror, copy, timeout);
                }
                // Envoy would tee the stream; a copy of an unbounded body is not kept here.
                Payload::Streaming(_) => self.metrics.mirror(MirrorResult::Dropped),
            }
        }
        let retry_on = loaded.retry_on(&route.retries.retry_on);
        let per_try = route.retries.per_try_timeout_ms.map(Duration::from_millis);
        let client = self.upstream.client(cluster);
        let (hash_key, set_cookie) = cluster.hash.as_ref().map_or((None, None), |hash| {
            hash.request_key(
                &parts.headers,
                parts.uri.query(),
                target.downstream.as_ref(),
            )
        });
        // Endpoints of earlier tries (few: the route's attempts), kept inline.
        let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
        let mut _retry_slot = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(index) = cluster.pick(&tried, hash_key) else {
                return local(
                    record,
                    Flag::NoHealthyUpstream,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            };
            tried.push(index);
            let endpoint = &cluster.endpoints[index];
            record.endpoint(endpoint);
            let body = match &mut payload {
                Payload::Buffered(bytes) => Full::new(bytes.clone())
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
                Payload::Streaming(body) => match body.take() {
                    Some(body) => counted(body, record.streamed_bytes()),
                    None => Full::new(Bytes::new())
                        .map_err(|never: Infallible| match never {})
                        .boxed(),
                },
            };
            let upstream_request =
                match build_request(&parts, &path, &authority, endpoint, cluster, upgrade, body) {
                    Ok(request) => request,
                    Err(error) => {
                        return unbuildable(record, "cannot build the upstream request", error);
                    }
                };
            let _active = EndpointLoad::start(endpoint);
            // The route's deadline bounds the whole try, a wait for a `maxConnections` slot
            // included; `perTryTimeout` only the try once its connection is in hand (Envoy's
            // per-try timer starts when the pool is ready).
            let sent = client.try_request(cluster, index, upstream_request, per_try);
            let result = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, sent).await.ok(),
                None => Some(sent.await),
            };
            let (outcome, response) = match result {
                Some(Ok(response)) => {
                    let grpc = grpc_status(response.headers());
                    (
                        Outcome::Response(response.status().as_u16(), grpc),
                        Some(response),
                    )
                }
                // At maxConnections with http1MaxPendingRequests already waiting: not retried
                // (Envoy does not retry an overflow) and not the endpoint's fault.
                Some(Err(error)) if error.is_overflow() => {
                    cluster.overflows.fetch_add(1, Ordering::Relaxed);
                    return local(
                        record,
                        Flag::UpstreamOverflow,
                        StatusCode::SERVICE_UNAVAILABLE,
                    );
                }
                Some(Err(error)) if error.is_per_try_timeout() => {
                    tracing::debug!(%error, address = %endpoint.address, "upstream try timed out");
                    (Outcome::PerTryTimeout, None)
                }
                Some(Err(error)) if error.is_connect() => {
                    tracing::debug!(%error, address = %endpoint.address, "upstream connect failed");
                    (Outcome::ConnectFailure, None)
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, address = %endpoint.address, "upstream request failed");
                    (Outcome::Reset, None)
                }
                None => {
                    cluster.observe(index, Observed::timeout());
                    return local(record, Flag::UpstreamTimeout, StatusCode::GATEWAY_TIMEOUT);
                }
            };
            cluster.observe(index, Observed::of(outcome));
            let retriable = retry_on.retries(outcome);
            if retriable && attempt < attempts {
                if _retry_slot.is_none() {
                    _retry_slot = cluster.retry_slot();
                }
                if _retry_slot.is_some() {
                    let backoff = backoff(attempt);
                    let wake = Instant::now() + backoff;
                    if deadline.is_none_or(|d| wake < d) {
                        tokio::time::sleep_until(wake).await;
                        continue;
                    }
                }
            }
            if retriable && attempts > 1 {
                record.flags.add(Flag::RetryLimitExceeded);
            }
            let Some(mut response) = response else {
                let flag = match outcome {
                    Outcome::ConnectFailure => Flag::UpstreamConnectFailure,
                    Outcome::PerTryTimeout => Flag::UpstreamTimeout,
                    _ => Flag::UpstreamReset,
                };
                let status = if flag == Flag::UpstreamTimeout {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return local(record, flag, status);
            };
            if let Some(cookie) = set_cookie {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // The upgraded connection keeps its maxConnections slot until the tunnel closes.
                let held = response.extensions_mut().remove::<UpgradedConnection>();
                tunnel(client_upgrade, hyper::upgrade::on(&mut response), held);
            } else {
                record.deadline = deadline;
            }
            return response.map(|body| body.boxed());
        }
    }
}

/// What a mirrored copy is made of: the request head after rewrite and header operations,
/// and its buffered body.
struct MirrorCopy<'a> {
    parts: &'a Parts,
    path: &'a PathAndQuery,
    authority: &'a str,
    body: Bytes,
}

impl Outbound {
    /// Sends a copy of the request to the mirror's cluster, in the background.
    fn mirror(
        &self,
        loaded: &Loaded,
        mirror: &Mirror,
        copy: MirrorCopy<'_>,
        timeout: Option<Duration>,
    ) {
        let Some(cluster) = loaded.clusters.get(&mirror.cluster) else {
            tracing::debug!(cluster = %mirror.cluster, "not mirrored: no such cluster");
            self.metrics.mirror(MirrorResult::Failed);
            return;
        };
        let Some(index) = cluster.pick(&[], None) else {
            self.metrics.mirror(MirrorResult::Failed);
            return;
        };
        let body = Full::new(copy.body)
            .map_err(|never: Infallible| match never {})
            .boxed();
        let endpoint = &cluster.endpoints[index];
        match build_request(
            copy.parts,
            copy.path,
            copy.authority,
            endpoint,
            cluster,
            false,
            body,
        ) {
            Ok(request) => {
                let client = self.upstream.client(cluster);
                let (address, pool) = (endpoint.address.clone(), cluster.pool(index).clone());
                self.mirrors.send(
                    request,
                    timeout.unwrap_or(mirror::DEFAULT_TIMEOUT),
                    move |request| async move { client.request_to(&address, &pool, request).await },
                );
            }
            Err(error) => {
                tracing::debug!(%error, "not mirrored: cannot build the request");
                self.metrics.mirror(MirrorResult::Failed);
            }
        }
    }
}

/// The route and the request's path and authority as received.
struct Target<'a> {
    route: &'a Route,
    path: PathAndQuery,
    authority: String,
    downstream: Option<Downstream>,
}

/// What every request of a captured connection shares.
struct Connection {
    /// The original destination, `ip:port` (the configuration's key of addresses).
    orig_dst: Arc<str>,
    port: u16,
    /// The client's and our socket addresses (`consistentHash` by source IP).
    downstream: Option<Downstream>,
}

enum Payload {
    Buffered(Bytes),
    Streaming(Option<Incoming>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of the answers to the client: the upstream's (or a local reply), carrying the
/// request's [`Record`] (its bytes and gRPC status counted here, written when the body is done
/// or dropped), and cut at the route's deadline when it has one, which is why its error is not
/// `hyper::Error`. One struct, not a wrapper box per concern: no allocation per answer.
pub struct DownstreamBody {
    inner: Body,
    record: Record,
    /// The route's deadline over the body (Istio's timeout covers the whole exchange).
    cut: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    /// Past the deadline after the headers went out, the client sees the stream reset
    /// (HTTP/2) or the connection closed (HTTP/1.1), and the request is logged with `UT`, as
    /// Envoy does when its route timeout fires then.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(frame)) = &frame {
                if let Some(data) = frame.data_ref() {
                    this.record.response_bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(code) = grpc_status(trailers)
                {
                    this.record.grpc_status = Some(code);
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        if let Some(sleep) = &mut this.cut
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.cut = None;
            this.record.body_timed_out = true;
            return Poll::Ready(Some(Err("upstream request timeout".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request in flight on an endpoint (for LEAST_REQUEST and `/clusters`).
struct EndpointLoad<'a>(&'a EndpointState);

impl<'a> EndpointLoad<'a> {
    fn start(endpoint: &'a EndpointState) -> Self {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        endpoint.total.fetch_add(1, Ordering::Relaxed);
        EndpointLoad(endpoint)
    }
}

impl Drop for EndpointLoad<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn hit(percentage: f64) -> bool {
    percentage >= 100.0 || fastrand::f64() * 100.0 < percentage
}

fn backoff(attempt: u32) -> Duration {
    let ceiling = RETRY_BASE * 2u32.saturating_pow(attempt.saturating_sub(1)).min(10);
    // Full jitter, as Envoy.
    ceiling
        .mul_f64(fastrand::f64())
        .max(Duration::from_millis(1))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Hop-by-hop headers, never forwarded (an upgrade keeps `connection` and `upgrade`); names,
/// not text, so that removing them hashes no string.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers of a request about to be forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    for name in &HOP_BY_HOP {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
}

fn build_request(
    parts: &Parts,
    path: &PathAndQuery,
    authority: &str,
    endpoint: &EndpointState,
    cluster: &ClusterState,
    upgrade: bool,
    body: Body,
) -> Result<Request<Body>, http::Error> {
    // HTTP/2: the route's authority is `:authority` (the endpoint only picks the socket);
    // HTTP/1: origin form, the authority goes in `Host` below.
    let uri = if cluster.http2 {
        http::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path.clone())
            .build()
            .or_else(|_| {
                http::Uri::builder()
                    .scheme("http")
                    .authority(endpoint.address.as_str())
                    .path_and_query(path.clone())
                    .build()
            })?
    } else {
        http::Uri::builder().path_and_query(path.clone()).build()?
    };
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(if cluster.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        })
        .body(body)?;
    let headers = request.headers_mut();
    *headers = parts.headers.clone();
    if cluster.mesh_external {
        // Our workload's name, labels and IPs stay inside the mesh (Istio's
        // `metadataExchangeHeaders: IN_MESH`), for the tries and the mirrors alike.
        peer::strip(headers);
    }
    strip_hop_by_hop(headers, upgrade);
    // gRPC needs `te: trailers` end to end.
    if is_grpc(&parts.headers) {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if cluster.http2 {
        headers.remove(header::HOST);
    } else if headers
        .get(header::HOST)
        .is_none_or(|host| host.as_bytes() != authority.as_bytes())
        && let Ok(host) = HeaderValue::from_str(authority)
    {
        headers.insert(header::HOST, host);
    }
    Ok(request)
}

/// Joins the two upgraded connections (WebSocket and other `Upgrade`s) and copies both ways.
/// `held` (the pooled upstream connection's count as open, with its `maxConnections` slot) is
/// given back when the tunnel closes, after the upstream socket is closed.
pub(crate) fn tunnel(
    client: Option<hyper::upgrade::OnUpgrade>,
    upstream: hyper::upgrade::OnUpgrade,
    held: Option<UpgradedConnection>,
) {
    let Some(client) = client else {
        tracing::debug!("101 from upstream but the client connection cannot be upgraded");
        return;
    };
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
                drop(upstream);
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
        drop(held);
    });
}

fn full(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// A request that cannot be built for its upstream (a rewrite or a value that is not valid
/// HTTP): logged, and answered 503 with `UF` as if the connection had failed.
pub(crate) fn unbuildable(
    record: &mut Record,
    what: &str,
    error: impl std::fmt::Display,
) -> Response<Body> {
    tracing::warn!(%error, "{what}");
    local(
        record,
        Flag::UpstreamConnectFailure,
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

/// A reply of the proxy itself, with Envoy's body for the flag.
pub(crate) fn local(record: &mut Record, flag: Flag, status: StatusCode) -> Response<Body> {
    record.flags.add(flag);
    let (_, text) = request::local_reply(flag);
    let mut response = full(status, Bytes::from_static(text.as_bytes()));
    if !text.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

fn abort_response(abort: &FaultAbort, grpc: bool) -> Response<Body> {
    if let Some(code) = abort
        .grpc_status
        .as_deref()
        .and_then(request::grpc_status_code)
    {
        // A trailers-only gRPC response.
        let mut response = full(StatusCode::OK, Bytes::new());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("fault filter abort"),
        );
        return response;
    }
    let status = abort
        .http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = full(status, Bytes::from_static(b"fault filter abort"));
    if grpc {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// Counts the bytes of a streamed body into `bytes`.
pub(crate) fn counted(body: Incoming, bytes: Arc<AtomicU64>) -> Body {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    })
    .boxed()
}

/// What one request did, recorded (metrics and one access-log line) when its response body is
/// done or dropped, or, when the client went away first, with `DC` and code 0.
#[derive(Debug)]
pub(crate) struct Record {
    metrics: L7Metrics,
    started: Instant,
    labels: RequestLabels,
    flags: Flags,
    grpc: bool,
    /// What only the access log reads; `None` while the access log is off, so that a request
    /// copies none of it (and holds no share of the connection's read buffer).
    log: Option<LogFields>,
    status: Option<u16>,
    grpc_status: Option<u32>,
    /// A buffered request body's size.
    request_bytes: u64,
    /// A streamed request body's count (made when the body is streamed).
    streamed_bytes: Option<Arc<AtomicU64>>,
    response_bytes: u64,
    /// The route's deadline, which also bounds the response body (Istio's timeout is the
    /// whole exchange); set when the request went upstream.
    deadline: Option<Instant>,
    /// Set when the deadline cut the response body.
    body_timed_out: bool,
}

/// The access log's fields of a request beside its labels (shared buffers, not copies).
#[derive(Debug, Default)]
pub(crate) struct LogFields {
    method: http::Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    pub(crate) route: Option<String>,
    pub(crate) cluster: Option<String>,
    pub(crate) upstream: Option<String>,
}

/// Whether the access log is on (its filter can change at run time).
fn access_log_enabled() -> bool {
    tracing::enabled!(target: "outrigger_proxy::access", tracing::Level::INFO)
}

impl Record {
    /// `labels` are the request's side of Istio's labels (the destination's are filled in as
    /// routing learns them); the protocol is set here from the request.
    pub(crate) fn new(
        metrics: &L7Metrics,
        mut labels: RequestLabels,
        req: &Request<Incoming>,
        request_id: HeaderValue,
    ) -> Self {
        let grpc = is_grpc(req.headers());
        labels.request_protocol = if grpc { "grpc" } else { "http" };
        let log = access_log_enabled().then(|| LogFields {
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(header::HOST).cloned(),
            request_id: Some(request_id),
            ..LogFields::default()
        });
        Record {
            metrics: metrics.clone(),
            started: Instant::now(),
            labels,
            flags: Flags::default(),
            grpc,
            log,
            status: None,
            grpc_status: None,
            request_bytes: 0,
            streamed_bytes: None,
            response_bytes: 0,
            deadline: None,
            body_timed_out: false,
        }
    }

    /// The access log's fields to fill in, when the access log is on.
    pub(crate) fn log(&mut self) -> Option<&mut LogFields> {
        self.log.as_mut()
    }

    /// The counter a streamed request body adds its bytes to.
    pub(crate) fn streamed_bytes(&mut self) -> Arc<AtomicU64> {
        self.streamed_bytes.get_or_insert_default().clone()
    }

    fn destination(&mut self, service: ServiceLabels) {
        self.labels.destination_service = service.service;
        self.labels.destination_service_name = service.name;
        self.labels.destination_service_namespace = service.namespace;
    }

    /// A request refused under `REGISTRY_ONLY`, labelled as Istio labels it.
    fn black_hole(&mut self) {
        self.labels.destination_service = Label::from(BLACK_HOLE_CLUSTER);
        self.labels.destination_service_name = Label::from(BLACK_HOLE_CLUSTER);
        if let Some(log) = self.log() {
            log.route = Some(BLOCK_ALL_ROUTE.to_owned());
            log.cluster = Some(BLACK_HOLE_CLUSTER.to_owned());
        }
    }

    fn endpoint(&mut self, endpoint: &EndpointState) {
        self.labels.destination_workload = Label::from(&endpoint.workload);
        self.labels.destination_workload_namespace = Label::from(&endpoint.namespace);
        self.labels.destination_app = Label::from(&endpoint.app);
        self.labels.destination_version = Label::from(&endpoint.version);
        if let Some(log) = self.log() {
            log.upstream = Some(endpoint.address.clone());
        }
    }

    /// Takes the response: its body now carries this record, counted and written when done.
    pub(crate) fn respond(mut self, response: Response<Body>) -> Response<DownstreamBody> {
        self.status = Some(response.status().as_u16());
        self.grpc_status = grpc_status(response.headers());
        let (parts, inner) = response.into_parts();
        let cut = self
            .deadline
            .take()
            .map(|deadline| Box::pin(tokio::time::sleep_until(deadline)));
        let body = DownstreamBody {
            inner,
            record: self,
            cut,
        };
        Response::from_parts(parts, body)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.flags.add(Flag::DownstreamDisconnect);
        }
        if self.body_timed_out {
            self.flags.add(Flag::UpstreamTimeout);
        }
        let code = self.status.unwrap_or(0);
        let labels = &mut self.labels;
        labels.response_code = code_label(code);
        labels.response_flags = self.flags.label();
        labels.grpc_response_status = match (self.grpc, self.grpc_status) {
            (_, Some(status)) => code_label(status.min(u32::from(u16::MAX)) as u16),
            (true, None) => code_label(2), // UNKNOWN: a gRPC call without a status
            (false, None) => Label::empty(),
        };
        let labels = &self.labels;
        let duration = self.started.elapsed();
        let request_bytes = self.request_bytes
            + self
                .streamed_bytes
                .as_ref()
                .map_or(0, |count| count.load(Ordering::Relaxed));
        self.metrics.record(
            labels,
            Measured {
                duration_ms: duration.as_secs_f64() * 1000.0,
                request_bytes,
                response_bytes: self.response_bytes,
            },
        );
        let Some(log) = &self.log else {
            return;
        };
        tracing::info!(
            target: "outrigger_proxy::access",
            method = %log.method,
            path = log.uri.path_and_query().map_or("/", |p| p.as_str()),
            authority = log
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| log.host.as_ref().and_then(|h| h.to_str().ok()))
                .unwrap_or_default(),
            response_code = code,
            response_flags = %labels.response_flags,
            grpc_status = %labels.grpc_response_status,
            route = log.route.as_deref().unwrap_or("-"),
            cluster = log.cluster.as_deref().unwrap_or("-"),
            upstream_host = log.upstream.as_deref().unwrap_or("-"),
            request_id = log
                .request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .unwrap_or("-"),
            source_workload = %labels.source_workload,
            source_namespace = %labels.source_workload_namespace,
            source_app = %labels.source_app,
            source_version = %labels.source_version,
            bytes_received = request_bytes,
            bytes_sent = self.response_bytes,
            duration_ms = duration.as_millis() as u64,
            "request"
        );
    }
}

/// A status code as a label value: the common ones allocated once per process.
fn code_label(code: u16) -> Label {
    const CACHED: usize = 600;
    static CODES: [OnceLock<Label>; CACHED] = [const { OnceLock::new() }; CACHED];
    match CODES.get(usize::from(code)) {
        Some(cell) => cell.get_or_init(|| Label::from(code.to_string())).clone(),
        None => Label::from(code.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_an_upgrade_keeps_its_two() {
        let headers = || {
            let mut headers = HeaderMap::new();
            for name in [
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "te",
                "upgrade",
                "x-b3-traceid",
            ] {
                headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            }
            headers
        };
        let mut plain = headers();
        strip_hop_by_hop(&mut plain, false);
        let names: Vec<&str> = plain.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-b3-traceid"]);
        let mut upgrade = headers();
        strip_hop_by_hop(&mut upgrade, true);
        let mut names: Vec<&str> = upgrade.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["connection", "upgrade", "x-b3-traceid"]);
    }
}
