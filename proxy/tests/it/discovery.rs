//! The discovery client against a real outrigger-pilot (the library, fed by outrigger-testkit's
//! fake API server): on-demand subscription by original destination, routing by the
//! VirtualService received, an edit followed within 1 s, a destination pilot does not know
//! relayed as TCP, pilot away (the last configuration served, shown in `/config_dump` and the
//! metrics) and back (resync), a bad token refused, readiness bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_pilot::app::{Debounce, Pilot};
use outrigger_pilot::auth::Authenticator;
use outrigger_proxy::cli::RunArgs;
use outrigger_proxy::discovery::DiscoverySettings;
use outrigger_proxy::workload::Workload;
use outrigger_testkit::FakeApiServer;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::l7::{Conn, app};
use crate::support::*;

const REVIEWS: &str = "10.96.0.10:9080";

fn fixture(port: u16) -> String {
    let pod = |name: &str, app: &str, version: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  labels: {{app: {app}, version: {version}}}\n\
             spec:\n  serviceAccountName: {app}\n  containers:\n  - name: app\n    image: shop/{app}\n\
             status:\n  phase: Running\n  podIP: {ip}\n---\n"
        )
    };
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n");
    text += &pod("web", "web", "v1", "127.0.0.2");
    text += &pod("reviews-v1", "reviews", "v1", "127.0.0.11");
    text += &pod("reviews-v2", "reviews", "v2", "127.0.0.12");
    text += &format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: shop\n\
         spec:\n  clusterIP: 10.96.0.10\n  selector: {{app: reviews}}\n  ports:\n  - name: http\n    port: 9080\n    targetPort: {port}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: reviews-abc\n  namespace: shop\n  labels: {{kubernetes.io/service-name: reviews}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n\
         - addresses: [127.0.0.11]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: reviews-v1, namespace: shop}}\n\
         - addresses: [127.0.0.12]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: reviews-v2, namespace: shop}}\n---\n"
    );
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    text
}

/// The fake API server answers TokenReviews: `token-<sa>` is `shop/<sa>`, anything else is
/// refused.
fn token_reviews(server: &FakeApiServer) {
    server.on_create(
        "authentication.k8s.io/v1",
        "tokenreviews",
        Arc::new(|review: &Value| {
            let token = review["spec"]["token"].as_str().unwrap_or("");
            let audiences = review["spec"]["audiences"].clone();
            let status = match token.strip_prefix("token-") {
                Some(sa) => json!({"authenticated": true, "audiences": audiences,
                                   "user": {"username": format!("system:serviceaccount:shop:{sa}")}}),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            Ok(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "metadata": {}, "spec": review["spec"], "status": status}))
        }),
    );
}

/// A TCP relay in front of pilot that the test can take down (every open connection dropped,
/// as when pilot's pod dies) and bring back on the same port.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    async fn start(addr: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(addr).await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Relay {
            addr,
            target,
            tasks: Some(tasks),
        }
    }

    async fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        *self = Relay::start(self.addr, self.target).await;
    }
}

struct Harness {
    api: FakeApiServer,
    pilot: Pilot,
    relay: Relay,
    _dir: tempfile::TempDir,
    token: std::path::PathBuf,
}

async fn harness() -> Harness {
    let probe = std::net::TcpListener::bind("127.0.0.11:0").expect("free port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    app(format!("127.0.0.11:{port}").parse().expect("addr"), "v1").await;
    app(format!("127.0.0.12:{port}").parse().expect("addr"), "v2").await;
    let api = FakeApiServer::start().await.expect("fake API server");
    api.load_yaml(&fixture(port)).expect("fixture");
    token_reviews(&api);
    let client = api.client().expect("client");
    let pilot = Pilot::start(
        client.clone(),
        Authenticator::token_review(client, outrigger_api::names::TOKEN_AUDIENCE),
        Debounce::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind pilot");
    let pilot_addr = listener.local_addr().expect("pilot addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pilot.xds().into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), pilot_addr).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "token-web\n").expect("token");
    Harness {
        api,
        pilot,
        relay,
        _dir: dir,
        token,
    }
}

fn settings(h: &Harness) -> DiscoverySettings {
    let address = format!("http://{}", h.relay.addr);
    DiscoverySettings {
        uri: address.clone(),
        address,
        host: "127.0.0.1".into(),
        tls: false,
        ca_file: "/nonexistent".into(),
        token_file: h.token.clone(),
        node_id: "sidecar~127.0.0.2~web.shop~shop.svc.cluster.local".into(),
        on_demand_timeout: Duration::from_secs(1),
        ready_timeout: Duration::from_secs(2),
        idle_timeout: None,
    }
}

async fn discovery_proxy(settings: DiscoverySettings, orig_dst: &str) -> TestProxy {
    let args = RunArgs {
        admin_port: Some(0),
        ..RunArgs::default()
    };
    start_proxy_with(fixed(orig_dst.parse().expect("addr")), args, |config| {
        config.workload = Workload {
            name: "web".into(),
            namespace: "shop".into(),
            pod_name: "web".into(),
            instance_ip: Some("127.0.0.2".parse().expect("ip")),
            ..Workload::default()
        };
        config.discovery = Some(settings);
    })
    .await
}

async fn config_dump(proxy: &TestProxy) -> Value {
    let (status, body) = http(proxy.admin(), "GET", "/config_dump").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("config_dump JSON")
}

fn route_to(h: &Harness, subset: &str) {
    h.api
        .modify(
            "networking.istio.io/v1",
            "VirtualService",
            "shop",
            "reviews",
            |vs| {
                vs["spec"]["http"] =
                    json!([{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]);
            },
        )
        .expect("edit the VirtualService");
}

/// Polls a fresh connection's answer until it comes from `version`, for up to `limit`.
async fn answers_from(proxy: &TestProxy, version: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut conn = Conn::open(proxy.outbound(), false).await;
        if conn.get("/reviews", &[]).await.version() == version {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_destination_met_is_asked_of_pilot_and_routed_by_its_virtual_service() {
    let h = harness().await;
    let proxy = discovery_proxy(settings(&h), REVIEWS).await;
    assert!(
        eventually(async || http(proxy.health(), "GET", "/healthz/ready").await.0 == 200).await,
        "ready once connected to pilot"
    );
    // The first connection waits for the destination and its endpoints.
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let first = conn.get("/reviews", &[]).await;
    assert_eq!((first.status, first.version()), (200, "v1"), "{first:?}");

    let dump = config_dump(&proxy).await;
    assert_eq!(dump["source"], "discovery");
    assert_eq!(dump["mode"], "l7");
    assert_eq!(dump["discovery"]["connected"], true, "{dump}");
    assert_eq!(
        dump["discovery"]["address"],
        format!("http://{}", h.relay.addr)
    );
    assert!(
        dump["discovery"]["lastUpdateUnixSeconds"].is_u64(),
        "{dump}"
    );
    assert_eq!(
        dump["config"]["addresses"][REVIEWS],
        "reviews.shop.svc.cluster.local:9080"
    );
    let clusters = dump["config"]["clusters"].as_object().expect("clusters");
    assert!(
        clusters
            .keys()
            .any(|c| c == "outbound|9080|v1|reviews.shop.svc.cluster.local"),
        "{dump}"
    );

    let text = metrics(&proxy).await;
    assert_eq!(
        sample(&text, "outrigger_proxy_discovery_connected ", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "outrigger_proxy_discovery_updates_total{",
            &[r#"type="destination""#]
        ) >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "outrigger_proxy_discovery_updates_total{",
            &[r#"type="endpoints""#]
        ) >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "outrigger_proxy_discovery_rejects_total{", &[]),
        None
    );

    // The VirtualService edited: new connections and the open one move within 1 s.
    route_to(&h, "v2");
    let moved = answers_from(&proxy, "v2", Duration::from_secs(3)).await;
    assert!(
        moved.is_some_and(|t| t < Duration::from_secs(1)),
        "moved after {moved:?}"
    );
    let again = conn.get("/reviews", &[]).await;
    assert_eq!(again.version(), "v2", "the open connection follows too");
}

#[tokio::test]
async fn a_destination_pilot_does_not_know_is_relayed_as_tcp_without_waiting_the_bound() {
    let h = harness().await;
    let echo = echo_server(false).await;
    let mut slow = settings(&h);
    slow.on_demand_timeout = Duration::from_secs(5);
    let proxy = discovery_proxy(slow, &echo.to_string()).await;
    assert!(
        eventually(async || http(proxy.health(), "GET", "/healthz/ready").await.0 == 200).await
    );
    let started = Instant::now();
    let answer = echo_through(proxy.outbound(), b"ping")
        .await
        .expect("relayed");
    assert_eq!(answer, b"ping");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "pilot's answer ends the wait"
    );
    let text = metrics(&proxy).await;
    assert_eq!(
        sample(
            &text,
            "outrigger_proxy_discovery_on_demand_timeouts_total ",
            &[]
        ),
        Some(0.0)
    );
    // The second connection does not ask again.
    let started = Instant::now();
    echo_through(proxy.outbound(), b"pong")
        .await
        .expect("relayed");
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn pilot_away_keeps_the_last_configuration_and_pilot_back_resyncs() {
    let mut h = harness().await;
    let proxy = discovery_proxy(settings(&h), REVIEWS).await;
    assert!(
        answers_from(&proxy, "v1", Duration::from_secs(3))
            .await
            .is_some()
    );

    h.relay.stop().await;
    assert!(
        eventually(async || config_dump(&proxy).await["discovery"]["connected"] == false).await,
        "the lost stream is seen"
    );
    // Served from the last good configuration, and counted.
    for _ in 0..3 {
        let mut conn = Conn::open(proxy.outbound(), false).await;
        assert_eq!(conn.get("/reviews", &[]).await.version(), "v1");
    }
    let dump = config_dump(&proxy).await;
    assert!(dump["discovery"]["lastError"].is_string(), "{dump}");
    assert!(
        dump["discovery"]["disconnectedSinceUnixSeconds"].is_u64(),
        "{dump}"
    );
    assert_eq!(
        dump["config"]["addresses"][REVIEWS],
        "reviews.shop.svc.cluster.local:9080"
    );
    assert_eq!(
        http(proxy.health(), "GET", "/healthz/ready").await.0,
        200,
        "still ready"
    );
    let text = metrics(&proxy).await;
    assert_eq!(
        sample(&text, "outrigger_proxy_discovery_connected ", &[]),
        Some(0.0)
    );
    assert!(sample(&text, "outrigger_proxy_discovery_disconnects_total ", &[]) >= Some(1.0));
    assert!(
        sample(
            &text,
            "outrigger_proxy_discovery_stale_connections_total ",
            &[]
        ) >= Some(3.0),
        "{text}"
    );

    // Changed while the proxy was away: the resync brings it.
    route_to(&h, "v2");
    h.relay.restart().await;
    let moved = answers_from(&proxy, "v2", Duration::from_secs(5)).await;
    assert!(moved.is_some(), "resynced after pilot came back");
    assert_eq!(config_dump(&proxy).await["discovery"]["connected"], true);
    assert!(
        sample(
            &metrics(&proxy).await,
            "outrigger_proxy_discovery_connects_total ",
            &[]
        ) >= Some(2.0)
    );
}

#[tokio::test]
async fn a_bad_token_is_refused_by_pilot_and_the_proxy_still_relays_after_the_ready_bound() {
    let h = harness().await;
    std::fs::write(&h.token, "not-a-token").expect("token");
    let mut bounded = settings(&h);
    bounded.ready_timeout = Duration::from_millis(700);
    let started = Instant::now();
    let proxy = discovery_proxy(bounded, REVIEWS).await;
    assert_eq!(
        http(proxy.health(), "GET", "/healthz/ready").await.0,
        503,
        "not ready yet"
    );
    assert!(
        eventually(async || {
            config_dump(&proxy).await["discovery"]["lastError"]
                .as_str()
                .is_some_and(|e| {
                    e.contains("Unauthenticated") && e.contains("token not authenticated")
                })
        })
        .await,
        "{}",
        config_dump(&proxy).await
    );
    assert!(
        eventually(async || http(proxy.health(), "GET", "/healthz/ready").await.0 == 200).await
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "ready only after the bound"
    );
    // The token is re-read at each reconnect: fixed, the proxy gets in (after its backoff).
    std::fs::write(&h.token, "token-web").expect("token");
    let deadline = Instant::now() + Duration::from_secs(20);
    while config_dump(&proxy).await["discovery"]["connected"] != true {
        assert!(Instant::now() < deadline, "{}", config_dump(&proxy).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answers_from(&proxy, "v1", Duration::from_secs(3))
            .await
            .is_some()
    );
}

mod scripted {
    //! A scripted xDS server: the test sees every request and writes every response.

    use std::pin::Pin;

    use outrigger_xds_api::envoy::service::discovery::v3::aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    };
    use outrigger_xds_api::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    };
    use tokio::sync::mpsc;
    use tokio_stream::{Stream, StreamExt};
    use tonic::{Request, Response, Status, Streaming};

    pub type Responses = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

    #[derive(Clone)]
    pub struct Scripted {
        pub requests: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
        pub streams: mpsc::UnboundedSender<Responses>,
    }

    type Out = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl AggregatedDiscoveryService for Scripted {
        type DeltaAggregatedResourcesStream = Out;

        async fn delta_aggregated_resources(
            &self,
            request: Request<Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<Response<Out>, Status> {
            let mut incoming = request.into_inner();
            let requests = self.requests.clone();
            tokio::spawn(async move {
                while let Some(Ok(request)) = incoming.next().await {
                    let _ = requests.send(request);
                }
            });
            let (tx, rx) = mpsc::channel(8);
            let _ = self.streams.send(tx);
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    }

    impl Scripted {
        pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
            AggregatedDiscoveryServiceServer::new(self)
        }
    }
}

fn resource(
    type_url: &str,
    name: &str,
    version: &str,
    json: &Value,
) -> outrigger_xds_api::envoy::service::discovery::v3::Resource {
    use outrigger_xds_api::outrigger::v1alpha1;
    use prost::Message as _;
    let bytes = serde_json::to_vec(json).expect("json");
    let value = if type_url == outrigger_xds_api::DESTINATION_TYPE {
        v1alpha1::Destination { json: bytes }.encode_to_vec()
    } else {
        v1alpha1::Endpoints { json: bytes }.encode_to_vec()
    };
    outrigger_xds_api::envoy::service::discovery::v3::Resource {
        name: name.to_owned(),
        aliases: Vec::new(),
        version: version.to_owned(),
        resource: Some(prost_types::Any {
            type_url: type_url.to_owned(),
            value,
        }),
    }
}

const CLUSTER_V1: &str = "outbound|9080|v1|reviews.shop.svc.cluster.local";

fn destination_payload(prefix: &str) -> Value {
    json!({
        "destination": {
            "host": "reviews.shop.svc.cluster.local", "port": 9080, "service": "shop/reviews",
            "protocol": "http", "protocolReason": "port name http",
            "http": {"fromVirtualService": true, "routes": [{
                "virtualService": "shop/reviews", "rule": 0,
                "matches": [{"index": 0, "uri": {"kind": "regex", "value": prefix}}],
                "action": {"type": "route", "destinations": [{"cluster": CLUSTER_V1,
                    "host": "reviews.shop.svc.cluster.local", "subset": "v1", "port": 9080,
                    "weight": 100}]},
                "retries": {"attempts": 2, "retryOn": "connect-failure"}
            }]}
        },
        "clusters": {CLUSTER_V1: {
            "name": CLUSTER_V1, "host": "reviews.shop.svc.cluster.local", "port": 9080,
            "subset": "v1", "protocol": "http", "loadBalancer": "LEAST_REQUEST",
            "connectionPool": {}, "endpoints": []
        }},
        "addresses": [REVIEWS]
    })
}

fn response(
    type_url: &str,
    nonce: &str,
    resources: Vec<outrigger_xds_api::envoy::service::discovery::v3::Resource>,
) -> outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryResponse {
    outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryResponse {
        type_url: type_url.to_owned(),
        resources,
        nonce: nonce.to_owned(),
        ..Default::default()
    }
}

/// The next request the scripted server received that matches `check`.
async fn request_where(
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<
        outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest,
    >,
    check: impl Fn(&outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest) -> bool,
) -> outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest {
    loop {
        let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .expect("a request in time")
            .expect("server running");
        if check(&request) {
            return request;
        }
    }
}

/// A proxy streaming from the scripted server, with the app v1 on `127.0.0.11:port`.
struct Scripted {
    proxy: TestProxy,
    streams: tokio::sync::mpsc::UnboundedReceiver<scripted::Responses>,
    requests: tokio::sync::mpsc::UnboundedReceiver<
        outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest,
    >,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Waits until the proxy's client has the stream's answer headers (it then counts as
/// connected). A connection before that is relayed at once, as with pilot away; the scripted
/// server sees the stream a little earlier, and a worker thread may take the call in between.
async fn stream_up(proxy: &TestProxy) {
    assert!(
        eventually(async || config_dump(proxy).await["discovery"]["connected"] == true).await,
        "the discovery stream is up: {}",
        config_dump(proxy).await
    );
}

async fn scripted_proxy(idle_timeout: Option<Duration>) -> Scripted {
    let probe = std::net::TcpListener::bind("127.0.0.11:0").expect("free port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    app(format!("127.0.0.11:{port}").parse().expect("addr"), "v1").await;
    let (requests_tx, requests) = tokio::sync::mpsc::unbounded_channel();
    let (streams_tx, streams) = tokio::sync::mpsc::unbounded_channel();
    let server = scripted::Scripted {
        requests: requests_tx,
        streams: streams_tx,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "token-web").expect("token");
    let address = format!("http://{addr}");
    let proxy = discovery_proxy(
        DiscoverySettings {
            uri: address.clone(),
            address,
            host: "127.0.0.1".into(),
            tls: false,
            ca_file: "/nonexistent".into(),
            token_file: token,
            node_id: "sidecar~127.0.0.2~web.shop~shop.svc.cluster.local".into(),
            on_demand_timeout: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(2),
            idle_timeout,
        },
        REVIEWS,
    )
    .await;
    Scripted {
        proxy,
        streams,
        requests,
        port,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_response_that_does_not_compile_is_nacked_and_the_previous_version_kept_and_reconnects_send_versions()
 {
    use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
    let Scripted {
        proxy,
        mut streams,
        mut requests,
        port,
        _dir,
    } = scripted_proxy(None).await;
    let stream = streams.recv().await.expect("a stream");
    stream_up(&proxy).await;
    let first = request_where(&mut requests, |r| r.type_url == DESTINATION_TYPE).await;
    assert_eq!(
        first.node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar~127.0.0.2~web.shop~shop.svc.cluster.local")
    );

    // A connection asks for the destination; the answer and its endpoints let it through.
    let outbound = proxy.outbound();
    let call = tokio::spawn(async move {
        let mut conn = Conn::open(outbound, false).await;
        conn.get("/reviews", &[]).await
    });
    request_where(&mut requests, |r| r.resource_names_subscribe == [REVIEWS]).await;
    stream
        .send(Ok(response(
            DESTINATION_TYPE,
            "1",
            vec![resource(
                DESTINATION_TYPE,
                REVIEWS,
                "d1",
                &destination_payload("/.*"),
            )],
        )))
        .await
        .expect("send");
    let ack = request_where(&mut requests, |r| r.response_nonce == "1").await;
    assert!(ack.error_detail.is_none(), "ACK: {ack:?}");
    let endpoints_wanted = request_where(&mut requests, |r| {
        r.type_url == ENDPOINTS_TYPE && !r.resource_names_subscribe.is_empty()
    })
    .await;
    assert_eq!(endpoints_wanted.resource_names_subscribe, [CLUSTER_V1]);
    let endpoints = json!([{"address": format!("127.0.0.11:{port}"), "health": "healthy", "namespace": "shop"}]);
    stream
        .send(Ok(response(
            ENDPOINTS_TYPE,
            "2",
            vec![resource(ENDPOINTS_TYPE, CLUSTER_V1, "e1", &endpoints)],
        )))
        .await
        .expect("send");
    let answer = call.await.expect("call");
    assert_eq!((answer.status, answer.version()), (200, "v1"), "{answer:?}");

    // A regex that does not compile: NACKed with the reason, the previous version serves.
    stream
        .send(Ok(response(
            DESTINATION_TYPE,
            "3",
            vec![resource(
                DESTINATION_TYPE,
                REVIEWS,
                "d2",
                &destination_payload("(unclosed"),
            )],
        )))
        .await
        .expect("send");
    let nack = request_where(&mut requests, |r| r.response_nonce == "3").await;
    let detail = nack.error_detail.expect("NACK carries error_detail");
    assert!(
        detail
            .message
            .starts_with("destination \"10.96.0.10:9080\": destination.http"),
        "{}",
        detail.message
    );
    let mut conn = Conn::open(proxy.outbound(), false).await;
    assert_eq!(conn.get("/reviews", &[]).await.version(), "v1");
    let text = metrics(&proxy).await;
    assert_eq!(
        sample(
            &text,
            "outrigger_proxy_discovery_rejects_total{",
            &[r#"type="destination""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "outrigger_proxy_config_loads_total{",
            &[r#"result="refused""#]
        ),
        Some(1.0),
        "{text}"
    );

    // The stream ends: the proxy reconnects, resubscribes and says which versions it has.
    stream
        .send(Err(tonic::Status::unavailable("replica going away")))
        .await
        .expect("send");
    drop(stream);
    let _again = streams.recv().await.expect("a new stream");
    let resubscribe = request_where(&mut requests, |r| r.node.is_some()).await;
    assert_eq!(resubscribe.type_url, DESTINATION_TYPE);
    assert_eq!(resubscribe.resource_names_subscribe, [REVIEWS]);
    assert_eq!(
        resubscribe
            .initial_resource_versions
            .get(REVIEWS)
            .map(String::as_str),
        Some("d1")
    );
    let endpoints_again = request_where(&mut requests, |r| r.type_url == ENDPOINTS_TYPE).await;
    assert_eq!(endpoints_again.resource_names_subscribe, [CLUSTER_V1]);
    assert_eq!(
        endpoints_again
            .initial_resource_versions
            .get(CLUSTER_V1)
            .map(String::as_str),
        Some("e1")
    );
}

#[tokio::test]
async fn the_tls_port_is_verified_against_the_ca_file() {
    let h = harness().await;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut server =
        outrigger_pilot::app::tls_server(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .expect("TLS server");
    tokio::spawn(
        server
            .add_service(h.pilot.xds().into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let ca = h.token.with_file_name("root-cert.pem");
    std::fs::write(&ca, cert.pem()).expect("CA file");
    let address = format!("localhost:{port}");
    let (uri, host, tls) = outrigger_proxy::discovery::parse_address(&address).expect("address");
    assert!(tls, "a port other than 15010 is TLS");
    let proxy = discovery_proxy(
        DiscoverySettings {
            address,
            uri,
            host,
            tls,
            ca_file: ca.clone(),
            ..settings(&h)
        },
        REVIEWS,
    )
    .await;
    assert!(
        answers_from(&proxy, "v1", Duration::from_secs(3))
            .await
            .is_some()
    );
    assert_eq!(config_dump(&proxy).await["discovery"]["connected"], true);

    // Another CA: the handshake fails and says so.
    let other = rcgen::KeyPair::generate().expect("key");
    let other = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&other)
        .expect("certificate");
    let wrong = h.token.with_file_name("other-root.pem");
    std::fs::write(&wrong, other.pem()).expect("CA file");
    let address = format!("localhost:{port}");
    let (uri, host, tls) = outrigger_proxy::discovery::parse_address(&address).expect("address");
    let refused = discovery_proxy(
        DiscoverySettings {
            address,
            uri,
            host,
            tls,
            ca_file: wrong,
            ..settings(&h)
        },
        REVIEWS,
    )
    .await;
    assert!(
        eventually(async || {
            config_dump(&refused).await["discovery"]["lastError"]
                .as_str()
                .is_some_and(|e| e.starts_with("cannot connect to localhost:"))
        })
        .await,
        "{}",
        config_dump(&refused).await
    );
}

/// Answers the first subscription to REVIEWS with its destination and endpoints.
async fn answer_reviews(
    stream: &scripted::Responses,
    requests: &mut tokio::sync::mpsc::UnboundedReceiver<
        outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest,
    >,
    port: u16,
) {
    use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
    request_where(requests, |r| r.resource_names_subscribe == [REVIEWS]).await;
    let destination = resource(DESTINATION_TYPE, REVIEWS, "d1", &destination_payload("/.*"));
    let sent = stream.send(Ok(response(DESTINATION_TYPE, "1", vec![destination])));
    sent.await.expect("send");
    request_where(requests, |r| {
        r.type_url == ENDPOINTS_TYPE && r.resource_names_subscribe == [CLUSTER_V1]
    })
    .await;
    let endpoints = json!([{"address": format!("127.0.0.11:{port}"), "health": "healthy", "namespace": "shop"}]);
    let endpoints = resource(ENDPOINTS_TYPE, CLUSTER_V1, "e1", &endpoints);
    let sent = stream.send(Ok(response(ENDPOINTS_TYPE, "2", vec![endpoints])));
    sent.await.expect("send");
}

#[tokio::test]
async fn a_destination_no_connection_uses_is_unsubscribed_after_the_idle_timeout() {
    use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
    let Scripted {
        proxy,
        mut streams,
        mut requests,
        port,
        _dir,
    } = scripted_proxy(Some(Duration::from_millis(300))).await;
    let stream = streams.recv().await.expect("a stream");
    stream_up(&proxy).await;
    let outbound = proxy.outbound();
    let call = tokio::spawn(async move {
        let mut conn = Conn::open(outbound, false).await;
        let answer = conn.get("/reviews", &[]).await;
        (conn, answer)
    });
    answer_reviews(&stream, &mut requests, port).await;
    let (mut conn, answer) = call.await.expect("call");
    assert_eq!(answer.version(), "v1");

    // In use (a keep-alive connection open) for longer than the idle timeout: kept.
    tokio::time::sleep(Duration::from_millis(800)).await;
    while let Ok(request) = requests.try_recv() {
        assert!(request.resource_names_unsubscribe.is_empty(), "{request:?}");
    }
    assert_eq!(conn.get("/reviews", &[]).await.version(), "v1");

    // Closed, then idle: unsubscribed with its clusters, and gone from the configuration.
    drop(conn);
    let gone = request_where(&mut requests, |r| !r.resource_names_unsubscribe.is_empty()).await;
    assert_eq!(
        (
            gone.type_url.as_str(),
            gone.resource_names_unsubscribe.as_slice()
        ),
        (DESTINATION_TYPE, [REVIEWS.to_owned()].as_slice())
    );
    let clusters = request_where(&mut requests, |r| !r.resource_names_unsubscribe.is_empty()).await;
    assert_eq!(
        (
            clusters.type_url.as_str(),
            clusters.resource_names_unsubscribe.as_slice()
        ),
        (ENDPOINTS_TYPE, [CLUSTER_V1.to_owned()].as_slice())
    );
    let dump = config_dump(&proxy).await;
    assert!(dump["config"]["addresses"].get(REVIEWS).is_none(), "{dump}");
    assert!(
        dump["config"]["clusters"]
            .as_object()
            .is_some_and(|c| c.is_empty()),
        "{dump}"
    );

    // Met again: asked again.
    let outbound = proxy.outbound();
    let call = tokio::spawn(async move {
        let mut conn = Conn::open(outbound, false).await;
        conn.get("/reviews", &[]).await
    });
    answer_reviews(&stream, &mut requests, port).await;
    assert_eq!(call.await.expect("call").version(), "v1");
}
