//! The delta xDS server through a real tonic client, fed by the fake API server: on-demand
//! subscriptions by any name, not-found as removed, ACK/NACK by nonce, a VirtualService edit
//! resends the destination only, an endpoint change resends endpoints only and only to their
//! subscribers, tokens checked with TokenReview, metrics.

use std::sync::Arc;
use std::time::Duration;

use outrigger_pilot::app::{Debounce, Pilot};
use outrigger_pilot::auth::Authenticator;
use outrigger_pilot::index::{DESTINATION_TYPE, ENDPOINTS_TYPE};
use outrigger_pilot::xds::XdsServer;
use outrigger_testkit::FakeApiServer;
use outrigger_xds_api::envoy::config::core::v3::Node;
use outrigger_xds_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use outrigger_xds_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use outrigger_xds_api::google::rpc::Status as RpcStatus;
use outrigger_xds_api::outrigger::v1alpha1;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::{api_server, eventually};

const STOREFRONT: &str = "sidecar~10.244.1.30~storefront-7b9c-xyz12.shop~shop.svc.cluster.local";
const V1: &str = "outbound|8080|v1|catalog.shop.svc.cluster.local";
const V2: &str = "outbound|8080|v2|catalog.shop.svc.cluster.local";

/// The fake API server answers TokenReviews: `token-<sa>` is `shop/<sa>` with audience istio-ca.
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

struct Harness {
    api: FakeApiServer,
    pilot: Pilot,
    url: String,
}

async fn harness() -> Harness {
    harness_with_windows(None).await
}

/// The harness, pilot's HTTP/2 receive windows at (stream, connection) bytes when given.
async fn harness_with_windows(windows: Option<(u32, u32)>) -> Harness {
    harness_with(windows, |xds| xds).await
}

/// The harness with pilot's xDS server configured by `configure`.
async fn harness_with(
    windows: Option<(u32, u32)>,
    configure: impl FnOnce(XdsServer) -> XdsServer,
) -> Harness {
    let api = api_server().await;
    token_reviews(&api);
    let client = api.client().expect("client");
    let pilot = Pilot::start(
        client.clone(),
        Authenticator::token_review(client, "istio-ca"),
        Debounce::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let service = configure(pilot.xds()).into_service();
    let mut server = tonic::transport::Server::builder();
    if let Some((stream, connection)) = windows {
        server = server
            .initial_stream_window_size(stream)
            .initial_connection_window_size(connection);
    }
    tokio::spawn(
        server
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Harness { api, pilot, url }
}

struct Proxy {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

async fn connect(url: &str, token: &str, node: &str) -> Result<Proxy, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    connect_on(channel, token, node).await
}

async fn connect_on(
    channel: tonic::transport::Channel,
    token: &str,
    node: &str,
) -> Result<Proxy, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: node.to_owned(),
            cluster: "outrigger".to_owned(),
        }),
        type_url: DESTINATION_TYPE.to_owned(),
        ..Default::default()
    })
    .await
    .expect("first request");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    let responses = client
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    Ok(Proxy {
        requests: tx,
        responses,
    })
}

impl Proxy {
    async fn subscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.expect("send request");
    }

    async fn next(&mut self) -> Result<DeltaDiscoveryResponse, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("a response in time")?
            .ok_or_else(|| tonic::Status::cancelled("stream ended"))
    }

    /// The next response, ACKed.
    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        let response = self.next().await.expect("response");
        self.ack(&response).await;
        response
    }

    async fn nothing_for(&mut self, wait: Duration) {
        if let Ok(message) = tokio::time::timeout(wait, self.responses.message()).await {
            panic!("expected no response, got {message:?}");
        }
    }
}

fn payload(response: &DeltaDiscoveryResponse, index: usize) -> Value {
    let any = response.resources[index]
        .resource
        .as_ref()
        .expect("resource");
    let json = if any.type_url == DESTINATION_TYPE {
        v1alpha1::Destination::decode(any.value.as_slice())
            .expect("Destination")
            .json
    } else {
        v1alpha1::Endpoints::decode(any.value.as_slice())
            .expect("Endpoints")
            .json
    };
    serde_json::from_slice(&json).expect("json payload")
}

fn addresses(endpoints: &Value) -> Vec<String> {
    endpoints
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["health"] == "healthy")
        .map(|e| e["address"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn on_demand_destinations_and_endpoints_follow_the_cluster() {
    let h = harness().await;
    let mut proxy = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    proxy
        .subscribe(DESTINATION_TYPE, &["catalog:8080", "nope.example:80"])
        .await;
    let first = proxy.recv().await;
    assert_eq!(first.type_url, DESTINATION_TYPE);
    assert_eq!(first.resources.len(), 1);
    assert_eq!(
        first.removed_resources,
        ["nope.example:80"],
        "unknown: removed, so the proxy relays TCP"
    );
    let resource = &first.resources[0];
    assert_eq!(resource.name, "catalog:8080");
    assert_eq!(resource.aliases, ["catalog.shop.svc.cluster.local:8080"]);
    let destination = payload(&first, 0);
    assert_eq!(
        destination["destination"]["http"]["routes"][0]["name"],
        "jason-gets-v2"
    );
    assert!(destination["clusters"][V1].is_object() && destination["clusters"][V2].is_object());
    assert_eq!(
        destination["clusters"][V1]["endpoints"],
        json!([]),
        "endpoints travel separately"
    );
    assert_eq!(destination["addresses"], json!(["10.96.0.10:8080"]));

    proxy.subscribe(ENDPOINTS_TYPE, &[V1, V2]).await;
    let endpoints = proxy.recv().await;
    assert_eq!(endpoints.type_url, ENDPOINTS_TYPE);
    let mut by_name: Vec<(String, Vec<String>)> = (0..endpoints.resources.len())
        .map(|i| {
            (
                endpoints.resources[i].name.clone(),
                addresses(&payload(&endpoints, i)),
            )
        })
        .collect();
    by_name.sort();
    assert_eq!(
        by_name,
        [
            (V1.to_owned(), vec!["10.244.1.11:8080".to_owned()]),
            (V2.to_owned(), vec!["10.244.2.22:8080".to_owned()]),
        ]
    );

    // A second proxy subscribed to v1's endpoints only.
    let mut other = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    other.subscribe(ENDPOINTS_TYPE, &[V1]).await;
    assert_eq!(other.recv().await.resources.len(), 1);

    // v2's endpoint stops being ready: only v2's Endpoints, only to the first proxy.
    h.api
        .modify(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "shop",
            "catalog-7xk2p",
            |slice| slice["endpoints"][1]["conditions"]["ready"] = json!(false),
        )
        .expect("edit the slice");
    let update = proxy.recv().await;
    assert_eq!(
        update.type_url, ENDPOINTS_TYPE,
        "no Destination resend for an endpoint change"
    );
    assert_eq!(update.resources.len(), 1);
    assert_eq!(update.resources[0].name, V2);
    assert!(addresses(&payload(&update, 0)).is_empty());
    other.nothing_for(Duration::from_millis(400)).await;
    proxy.nothing_for(Duration::from_millis(200)).await;

    // The VirtualService edited: the destination is resent, endpoints are not.
    let started = std::time::Instant::now();
    h.api
        .modify(
            "networking.istio.io/v1",
            "VirtualService",
            "shop",
            "catalog",
            |vs| vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = json!("v2"),
        )
        .expect("edit the VirtualService");
    let update = proxy.recv().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(update.type_url, DESTINATION_TYPE);
    assert_eq!(
        payload(&update, 0)["destination"]["http"]["routes"][1]["action"]["destinations"][0]["subset"],
        "v2"
    );
    proxy.nothing_for(Duration::from_millis(300)).await;

    // Unsubscribed: no more updates for it.
    proxy
        .send(DeltaDiscoveryRequest {
            type_url: ENDPOINTS_TYPE.to_owned(),
            resource_names_unsubscribe: vec![V2.to_owned()],
            ..Default::default()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.api
        .modify(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "shop",
            "catalog-7xk2p",
            |slice| slice["endpoints"][1]["conditions"]["ready"] = json!(true),
        )
        .expect("edit the slice back");
    proxy.nothing_for(Duration::from_millis(400)).await;

    let metrics = h.pilot.metrics.encode();
    assert!(metrics.contains("pilot_xds 2"), "{metrics}");
    assert!(
        metrics.contains("pilot_xds_pushes_total{type=\"endpoints\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count"),
        "{metrics}"
    );
    drop(other);
    eventually("the second proxy counted out", || {
        h.pilot.metrics.encode().contains("pilot_xds 1")
    })
    .await;
}

/// A proxy's burst of small requests never costs it its connection: h2 closes a connection
/// (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_data_frames") whose unread small DATA frames cost more
/// than half its receive window in framing overhead, and it reads a whole stream window of
/// them off the socket at once. The proxy here sends 2,000 requests without reading a response
/// (each re-subscribes, so each is answered and pilot's responses back up behind the proxy's
/// own 64 KiB window). Through pilot's default windows every answer arrives; through a
/// connection window equal to the stream window, as the second half shows, the connection is
/// closed.
#[tokio::test]
async fn a_burst_of_small_requests_keeps_its_connection() {
    use outrigger_pilot::xds::{DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW};
    const REQUESTS: usize = 2000;
    let burst = |windows: (u32, u32)| async move {
        let h = harness_with_windows(Some(windows)).await;
        let channel = tonic::transport::Endpoint::from_shared(h.url.clone())
            .expect("url")
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(64 * 1024)
            .connect()
            .await
            .expect("connect");
        let mut proxy = connect_on(channel, "token-storefront", STOREFRONT)
            .await
            .expect("admitted");
        // Pilot answers nothing before its first generation: wait for one answer first.
        proxy.subscribe(DESTINATION_TYPE, &["catalog:8080"]).await;
        assert_eq!(proxy.recv().await.resources.len(), 1);
        let requests = proxy.requests.clone();
        let sender = tokio::spawn(async move {
            for _ in 0..REQUESTS {
                let request = DeltaDiscoveryRequest {
                    type_url: DESTINATION_TYPE.to_owned(),
                    resource_names_unsubscribe: vec!["catalog:8080".to_owned()],
                    resource_names_subscribe: vec!["catalog:8080".to_owned()],
                    ..Default::default()
                };
                if requests.send(request).await.is_err() {
                    return;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut answered = 0;
        while answered < REQUESTS {
            match proxy.next().await {
                Ok(response) => {
                    assert_eq!(response.resources.len(), 1);
                    assert_eq!(response.resources[0].name, "catalog:8080");
                    answered += 1;
                    // Pilot sends a few answers ahead of the ACKs only; the ACKs are more
                    // small frames in the burst.
                    proxy.ack(&response).await;
                }
                Err(status) => {
                    sender.abort();
                    return Err((answered, status));
                }
            }
        }
        sender.await.expect("sender");
        Ok(())
    };
    if let Err((answered, status)) = burst((DEFAULT_STREAM_WINDOW, DEFAULT_CONNECTION_WINDOW)).await
    {
        panic!("with pilot's default windows, after {answered} of {REQUESTS} answers: {status}");
    }
    let Err((_, status)) = burst((DEFAULT_STREAM_WINDOW, DEFAULT_STREAM_WINDOW)).await else {
        panic!(
            "with a connection window equal to the stream window the burst should have closed the connection: this test no longer tests anything"
        );
    };
    assert!(
        status.message().contains("error reading a body"),
        "the connection closed under the stream: {status}"
    );
}

/// An unsubscribe and subscribe of one name: pilot answers each with the resource again.
fn resubscribe() -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: DESTINATION_TYPE.to_owned(),
        resource_names_unsubscribe: vec!["catalog:8080".to_owned()],
        resource_names_subscribe: vec!["catalog:8080".to_owned()],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_proxy_gets_at_most_its_queue_depth_of_unanswered_responses() {
    let h = harness_with(None, |xds| xds.with_queue_depth(2)).await;
    let mut proxy = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    proxy.subscribe(DESTINATION_TYPE, &["catalog:8080"]).await;
    let first = proxy.next().await.expect("first answer");
    for _ in 0..5 {
        proxy.send(resubscribe()).await;
    }
    // Six answers are due; two may be unanswered at once.
    let second = proxy.next().await.expect("second answer");
    proxy.nothing_for(Duration::from_millis(300)).await;
    // An answer to the later nonce covers the earlier one too (one stream, in order).
    proxy.ack(&second).await;
    let third = proxy.next().await.expect("third");
    let fourth = proxy.next().await.expect("fourth");
    proxy.nothing_for(Duration::from_millis(300)).await;
    proxy.ack(&third).await;
    let fifth = proxy.next().await.expect("fifth");
    proxy.nothing_for(Duration::from_millis(300)).await;
    proxy.ack(&fifth).await;
    let sixth = proxy.next().await.expect("sixth");
    proxy.ack(&sixth).await;
    proxy.nothing_for(Duration::from_millis(300)).await;
    let nonces: Vec<u64> = [&first, &second, &third, &fourth, &fifth, &sixth]
        .iter()
        .map(|r| r.nonce.parse().expect("numeric nonce"))
        .collect();
    assert!(
        nonces.windows(2).all(|w| w[0] < w[1]),
        "in order: {nonces:?}"
    );
    assert!(fourth.resources.len() == 1 && sixth.resources[0].name == "catalog:8080");
}

#[tokio::test]
async fn unanswered_responses_are_bounded_across_proxies_and_the_bound_frees_at_the_answer() {
    let h = harness_with(None, |xds| {
        xds.with_unacked_responses(1)
            .with_ack_wait(Duration::from_secs(60))
    })
    .await;
    let mut a = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    a.subscribe(DESTINATION_TYPE, &["catalog:8080"]).await;
    let held = a.next().await.expect("a's answer");
    let mut b = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    b.subscribe(DESTINATION_TYPE, &["catalog:8080"]).await;
    b.nothing_for(Duration::from_millis(500)).await;
    a.ack(&held).await;
    assert_eq!(b.recv().await.resources[0].name, "catalog:8080");
}

#[tokio::test]
async fn a_proxy_that_does_not_answer_holds_back_the_others_only_for_the_ack_wait() {
    let h = harness_with(None, |xds| {
        xds.with_unacked_responses(1)
            .with_ack_wait(Duration::from_secs(2))
    })
    .await;
    let mut silent = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    silent.subscribe(DESTINATION_TYPE, &["catalog:8080"]).await;
    silent.next().await.expect("its answer, never acknowledged");
    let held_at = std::time::Instant::now();
    let mut other = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    other.subscribe(DESTINATION_TYPE, &["catalog:8080"]).await;
    other.nothing_for(Duration::from_millis(500)).await;
    assert_eq!(other.recv().await.resources[0].name, "catalog:8080");
    assert!(
        held_at.elapsed() >= Duration::from_millis(1500),
        "answered after {:?}, before the silent proxy's ack wait ran out",
        held_at.elapsed()
    );
    // The silent proxy's own stream still waits for it: a new answer is due, and with the
    // other proxy's response answered, the server-wide bound is free again.
    silent.send(resubscribe()).await;
    let next = silent
        .next()
        .await
        .expect("its stream goes on within its queue depth");
    assert_eq!(next.resources[0].name, "catalog:8080");
}

#[tokio::test]
async fn nack_is_counted_and_the_stream_goes_on() {
    let h = harness().await;
    let mut proxy = connect(&h.url, "token-storefront", STOREFRONT)
        .await
        .expect("admitted");
    proxy
        .subscribe(DESTINATION_TYPE, &["catalog.shop.svc.cluster.local:8080"])
        .await;
    let response = proxy.next().await.expect("response");
    assert!(
        response.resources[0].aliases.is_empty(),
        "asked by its canonical name"
    );
    proxy
        .send(DeltaDiscoveryRequest {
            type_url: DESTINATION_TYPE.to_owned(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad regex".to_owned(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    eventually("the NACK counted", || {
        h.pilot
            .metrics
            .encode()
            .contains("pilot_total_xds_rejects_total{type=\"destination\"} 1")
    })
    .await;
    proxy.subscribe(ENDPOINTS_TYPE, &[V1]).await;
    assert_eq!(
        proxy.next().await.expect("still served").type_url,
        ENDPOINTS_TYPE
    );
}

#[tokio::test]
async fn bad_tokens_and_foreign_namespaces_are_refused() {
    let h = harness().await;
    let refused = |result: Result<Proxy, tonic::Status>| match result {
        Err(status) => status,
        Ok(_) => panic!("expected a refusal"),
    };
    let status = refused(connect(&h.url, "forged", STOREFRONT).await);
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("invalid bearer token"),
        "{}",
        status.message()
    );

    // A valid token, but for another pod's service account.
    let mut proxy = connect(&h.url, "token-catalog", STOREFRONT)
        .await
        .expect("stream opens");
    let status = proxy.next().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("runs as service account \"storefront\""),
        "{}",
        status.message()
    );

    // The token's namespace is not the node's.
    let mut proxy = connect(
        &h.url,
        "token-storefront",
        "sidecar~10.0.0.1~x.other~other.svc.cluster.local",
    )
    .await
    .expect("stream opens");
    let status = proxy.next().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("may not read the view of namespace \"other\""),
        "{}",
        status.message()
    );

    let mut proxy = connect(&h.url, "token-storefront", "not-a-node-id")
        .await
        .expect("stream opens");
    assert_eq!(
        proxy.next().await.expect_err("refused").code(),
        tonic::Code::InvalidArgument
    );
    assert!(h.pilot.ready().is_ok());
}

#[tokio::test]
async fn tls_port_serves_the_same_stream() {
    let h = harness().await;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(vec!["outrigger-pilot.outrigger-system.svc".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server =
        outrigger_pilot::app::tls_server(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .expect("TLS server");
    let mut server = server;
    tokio::spawn(
        server
            .add_service(h.pilot.xds().into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.pem()))
        .domain_name("outrigger-pilot.outrigger-system.svc");
    let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("client TLS")
        .connect()
        .await
        .expect("TLS connect");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: STOREFRONT.to_owned(),
            cluster: String::new(),
        }),
        type_url: DESTINATION_TYPE.to_owned(),
        resource_names_subscribe: vec!["catalog:8080".to_owned()],
        ..Default::default()
    })
    .await
    .expect("request");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        "Bearer token-storefront".parse().expect("metadata"),
    );
    let mut responses = client
        .delta_aggregated_resources(request)
        .await
        .expect("stream")
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("a response");
    assert_eq!(
        response.resources[0].aliases,
        ["catalog.shop.svc.cluster.local:8080"]
    );
}

#[tokio::test]
async fn monitoring_answers_ready_and_metrics() {
    use tower::ServiceExt as _;
    let h = harness().await;
    eventually("ready", || h.pilot.ready().is_ok()).await;
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let ready = h
        .pilot
        .monitoring()
        .oneshot(get("/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let metrics = h
        .pilot
        .monitoring()
        .oneshot(get("/metrics"))
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("# TYPE pilot_xds gauge"), "{text}");
    assert!(text.contains("pilot_rebuilds_total"), "{text}");
}
