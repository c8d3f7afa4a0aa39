//! Inbound HTTP (15006): a captured connection to one of the pod's own ports whose protocol
//! the configuration knows (the port of an endpoint with the pod's address in a cluster) is
//! served as HTTP when that protocol is HTTP (or `auto` and detected as HTTP), so the server
//! side counts every request too, with `reporter="destination"`. Requests go to the app at
//! the original destination from `127.0.0.6` (`::6`), unchanged but for the hop-by-hop
//! headers: Istio's inbound has no routing, retries or timeouts by default. Any other port is
//! relayed as TCP, as before.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use outrigger_mesh::protocol::Protocol;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::addr::OrigDstAddr;
use crate::l7::detect::{self, Detected};
use crate::l7::http::{
    DownstreamBody, Record, counted, is_grpc, is_http, is_upgrade, local, strip_hop_by_hop, tunnel,
    unbuildable,
};
use crate::l7::peer::{self, Local, OwnLabels, Peer, Peers};
use crate::l7::request::{self, Flag};
use crate::l7::source::{ConfigStore, Loaded};
use crate::l7::telemetry::{L7Metrics, Label, RequestLabels};
use crate::l7::upstream::Body;
use crate::names::{INBOUND_SOURCE_V4, INBOUND_SOURCE_V6};
use crate::workload::{UNKNOWN, Workload};

/// One of the pod's ports as the configuration knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub protocol: Protocol,
    /// The Service's FQDN.
    pub host: String,
    /// `namespace/name` of the Service.
    pub service: String,
    pub port: u16,
}

/// The pod's ports by `ip:port`.
type Ports = HashMap<String, Port>;

/// What a captured inbound connection gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPlan {
    Http(Port),
    Tcp,
}

/// The inbound HTTP handler of one proxy.
#[derive(Debug)]
pub struct Inbound {
    store: Arc<ConfigStore>,
    metrics: L7Metrics,
    detection_timeout: Option<Duration>,
    /// The pod's ports (`ip:port` of its endpoints) of the configuration version in force.
    ports: Mutex<Option<(String, Arc<Ports>)>>,
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
    /// This proxy's metadata exchange headers, answered to a client proxy that sent its own.
    local: Local,
    /// The client proxies the metrics were labelled with.
    peers: Peers,
}

impl Inbound {
    pub fn new(
        store: Arc<ConfigStore>,
        metrics: L7Metrics,
        workload: Arc<Workload>,
        connect_timeout: Duration,
        detection_timeout: Option<Duration>,
    ) -> Self {
        let client = |http2: bool| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(connect_timeout));
            connector.set_nodelay(true);
            // The pod's rules return traffic from these addresses instead of capturing it.
            connector.set_local_addresses(INBOUND_SOURCE_V4, INBOUND_SOURCE_V6);
            let mut builder = Client::builder(TokioExecutor::new());
            builder.pool_timer(TokioTimer::new());
            if http2 {
                builder.http2_only(true).timer(TokioTimer::new());
            }
            builder.build(connector)
        };
        Inbound {
            store,
            metrics,
            local: Local::new(workload),
            peers: Peers::default(),
            detection_timeout,
            ports: Mutex::default(),
            http1: client(false),
            http2: client(true),
        }
    }

    /// The pod's ports of the configuration in force, indexed once per version.
    fn ports(&self, loaded: &Loaded) -> Arc<Ports> {
        let mut cached = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, ports)) = cached.as_ref()
            && *version == loaded.config.version
        {
            return ports.clone();
        }
        let ports = Arc::new(own_ports(loaded));
        *cached = Some((loaded.config.version.clone(), ports.clone()));
        ports
    }

    /// HTTP when the port's protocol says so (or `auto` and the first bytes are HTTP).
    pub async fn plan(&self, client: &TcpStream, orig_dst: &OrigDstAddr) -> InboundPlan {
        let loaded = self.store.current();
        let ports = self.ports(&loaded);
        let Some(port) = ports.get(&orig_dst.0.to_string()) else {
            return InboundPlan::Tcp;
        };
        if is_http(port.protocol) {
            return InboundPlan::Http(port.clone());
        }
        if port.protocol != Protocol::Auto {
            return InboundPlan::Tcp;
        }
        match detect::detect(client, self.detection_timeout).await {
            Detected::Http => InboundPlan::Http(port.clone()),
            Detected::Tcp => InboundPlan::Tcp,
            Detected::TimedOut => {
                tracing::info!(
                    port = port.port,
                    service = %port.host,
                    "inbound protocol detection timed out: relaying as TCP"
                );
                InboundPlan::Tcp
            }
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on the captured connection until it ends or `close` fires.
    pub async fn serve(
        self: Arc<Self>,
        client: TcpStream,
        orig_dst: OrigDstAddr,
        port: Port,
        close: CancellationToken,
    ) {
        if let Err(error) = client.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let port = Arc::new(port);
        let this = self.clone();
        let service = service_fn(move |req| {
            let (this, port) = (this.clone(), port.clone());
            async move { Ok::<_, Infallible>(this.handle(req, orig_dst, &port).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(client), service);
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "inbound HTTP connection ended with an error");
                }
            }
            () = close.cancelled() => tracing::debug!("closing an inbound HTTP connection: grace over"),
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        orig_dst: OrigDstAddr,
        port: &Port,
    ) -> Response<DownstreamBody> {
        let loaded = self.store.current();
        let request_id = request::ensure_request_id(req.headers_mut());
        // The client proxy's metadata: read, and stripped before the app sees the request.
        let received = self.peers.receive(req.headers_mut(), &self.metrics, true);
        let exchange = self.local.exchange(&loaded);
        let labels = Self::labels(&exchange.labels, port, received.peer);
        let mut record = Record::new(&self.metrics, labels, &req, request_id);
        if let Some(log) = record.log() {
            log.cluster = Some(format!("inbound|{}||", port.port));
            log.upstream = Some(orig_dst.0.to_string());
        }
        let mut response = self.forward(req, orig_dst, port, &mut record).await;
        // Only the proxy speaks for this pod: the app's own headers of these names go, and
        // ours answer a client proxy that sent its own (as Istio's filter does).
        peer::strip(response.headers_mut());
        exchange.answer(response.headers_mut(), received.id, received.metadata);
        record.respond(response)
    }

    /// Istio's labels of an inbound request: this workload is the destination; the source is
    /// the client proxy's metadata exchange, else `unknown` (no mTLS identity yet).
    fn labels(own: &OwnLabels, port: &Port, peer: Option<Peer>) -> RequestLabels {
        let (namespace, name) = port
            .service
            .split_once('/')
            .unwrap_or((UNKNOWN, port.service.as_str()));
        let unknown = Label::unknown;
        let (workload, peer_namespace, app, version) = match peer {
            Some(peer) => (peer.workload, peer.namespace, peer.app, peer.version),
            None => (unknown(), unknown(), unknown(), unknown()),
        };
        RequestLabels {
            reporter: "destination",
            source_workload: workload,
            source_workload_namespace: peer_namespace,
            source_app: app,
            source_version: version,
            destination_workload: own.workload.clone(),
            destination_workload_namespace: own.namespace.clone(),
            destination_app: own.app.clone(),
            destination_version: own.version.clone(),
            destination_service: Label::from(port.host.as_str()),
            destination_service_name: Label::from(name),
            destination_service_namespace: Label::from(namespace),
            request_protocol: "http",
            response_code: Label::empty(),
            response_flags: Label::empty(),
            grpc_response_status: Label::empty(),
            connection_security_policy: "unknown",
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        orig_dst: OrigDstAddr,
        port: &Port,
        record: &mut Record,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let upgrade = is_upgrade(&parts.headers);
        let http2 = matches!(port.protocol, Protocol::Http2 | Protocol::Grpc);
        let authority = request::authority(&parts.uri, &parts.headers).to_owned();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(orig_dst.0.to_string())
            .path_and_query(path)
            .build();
        let request = uri.and_then(|uri| {
            Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(if http2 {
                    Version::HTTP_2
                } else {
                    Version::HTTP_11
                })
                .body(counted(body, record.streamed_bytes()))
        });
        let mut request = match request {
            Ok(request) => request,
            Err(error) => {
                return unbuildable(record, "cannot build the request to the app", error);
            }
        };
        let grpc = is_grpc(&parts.headers);
        let headers = request.headers_mut();
        *headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(headers, upgrade);
        if grpc {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if http2 {
            headers.remove(header::HOST);
        } else if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&authority)
        {
            headers.insert(header::HOST, host);
        }
        let client = if http2 { &self.http2 } else { &self.http1 };
        match client.request(request).await {
            Ok(mut response) => {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    // The app's connection is not under a cluster's maxConnections.
                    tunnel(client_upgrade, hyper::upgrade::on(&mut response), None);
                }
                response.map(|body| body.boxed())
            }
            Err(error) if error.is_connect() => {
                tracing::debug!(%error, app = %orig_dst, "the app refused the connection");
                local(
                    record,
                    Flag::UpstreamConnectFailure,
                    StatusCode::SERVICE_UNAVAILABLE,
                )
            }
            Err(error) => {
                tracing::debug!(%error, app = %orig_dst, "the app's answer failed");
                local(record, Flag::UpstreamReset, StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

/// The pod's ports: every cluster endpoint with the pod's address (`proxy.ip`; any address
/// when the configuration has none), by `ip:port`, with the cluster's protocol and Service.
fn own_ports(loaded: &Loaded) -> Ports {
    let config = &loaded.config;
    let own_ip: Option<IpAddr> = config.proxy.ip.as_deref().and_then(|ip| ip.parse().ok());
    let mut ports = HashMap::new();
    for (name, cluster) in &config.clusters {
        // The endpoints live in the run-time state (the model's clusters have none left).
        let Some(state) = loaded.clusters.get(name) else {
            continue;
        };
        let service = config
            .destinations
            .get(&format!("{}:{}", cluster.host, cluster.port))
            .map(|d| d.service.clone())
            .unwrap_or_else(|| UNKNOWN.to_owned());
        for endpoint in &state.endpoints {
            let Ok(address) = endpoint.address.parse::<std::net::SocketAddr>() else {
                continue;
            };
            if own_ip.is_some_and(|ip| ip != address.ip()) {
                continue;
            }
            ports.entry(address.to_string()).or_insert_with(|| Port {
                protocol: cluster.protocol,
                host: cluster.host.clone(),
                service: service.clone(),
                port: address.port(),
            });
        }
    }
    ports
}
