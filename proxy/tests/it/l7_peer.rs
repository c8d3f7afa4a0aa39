//! Istio's HTTP metadata exchange between two proxies on loopback: a client proxy (pod
//! `client`) whose endpoint for `front` is a server proxy's inbound port, and that server
//! proxy (pod `front-v1`) in front of the echo app. The server side labels its metrics with
//! the client's workload; neither app sees the exchange headers. Apps as in `l7_request`.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outrigger_api::names::peer_metadata::{ID_HEADER, METADATA_HEADER};
use outrigger_proxy::cli::RunArgs;
use outrigger_proxy::config::ProxyConfig;
use outrigger_proxy::l7::peer;
use outrigger_proxy::workload::Workload;
use tokio::net::TcpStream;

use crate::config_file::routes_build;
use crate::l7_request::{Answer, FRONT, front_port, get, setup};
use crate::support::*;

/// The server pod's proxy (front-v1, 127.0.0.51) in front of the app on `port`.
async fn server_proxy(dir: &Path, port: u16) -> TestProxy {
    let config = dir.join("front.json");
    routes_build(
        &[dir.join("req.yaml").to_str().expect("utf-8")],
        "req/front-v1",
        &config,
    );
    let args = RunArgs {
        config_file: Some(config),
        ..RunArgs::default()
    };
    let own: SocketAddr = format!("127.0.0.51:{port}").parse().expect("addr");
    start_proxy_with(fixed(own), args, |config| {
        identity(config, "front-v1", "127.0.0.51")
    })
    .await
}

fn identity(config: &mut ProxyConfig, pod: &str, ip: &str) {
    config.workload = Workload {
        name: pod.into(),
        namespace: "req".into(),
        pod_name: pod.into(),
        instance_ip: Some(ip.parse().expect("ip")),
        cluster_id: Some("Kubernetes".into()),
        service_account: Some(pod.into()),
        ..Workload::default()
    };
}

/// The client pod's proxy, its `front` endpoint moved to the server proxy's inbound port (the
/// app's port is what iptables would redirect there), then `edit`ed; with `external`, the
/// clusters of that endpoint are outside the mesh (as a ServiceEntry's `MESH_EXTERNAL`).
async fn client_proxy(
    dir: &Path,
    client_config: &Path,
    port: u16,
    inbound: u16,
    external: bool,
    edit: impl Fn(&mut serde_json::Value),
) -> TestProxy {
    let text = std::fs::read_to_string(client_config).expect("config");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("JSON config");
    let (app, moved) = (
        format!("127.0.0.51:{port}"),
        format!("127.0.0.51:{inbound}"),
    );
    let mut found = 0;
    for cluster in config["clusters"]
        .as_object_mut()
        .expect("clusters")
        .values_mut()
    {
        let mut moved_here = false;
        for endpoint in cluster["endpoints"].as_array_mut().expect("endpoints") {
            if endpoint["address"] == app.as_str() {
                endpoint["address"] = moved.clone().into();
                edit(endpoint);
                found += 1;
                moved_here = true;
            }
        }
        if external && moved_here {
            cluster["meshExternal"] = true.into();
        }
    }
    assert!(found > 0, "the front endpoint is in the configuration");
    let path = dir.join("client-via-proxy.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let args = RunArgs {
        config_file: Some(path),
        ..RunArgs::default()
    };
    start_proxy_with(fixed(FRONT.parse().expect("addr")), args, |config| {
        identity(config, "client", "127.0.0.2")
    })
    .await
}

/// The node id of the peer of [`ratings_v2_metadata`].
const RATINGS_V2_ID: &str = "sidecar~10.1.0.9~ratings-v2-6f8d.books~books.svc.cluster.local";

/// A peer's metadata header value written by hand as Istio's proxy writes it: workload
/// ratings-v2 in namespace books, labels app=ratings, version=v2.
fn ratings_v2_metadata() -> String {
    let workload = Workload {
        name: "ratings-v2".into(),
        namespace: "books".into(),
        pod_name: "ratings-v2-6f8d".into(),
        instance_ip: Some("10.1.0.9".parse().expect("ip")),
        ..Workload::default()
    };
    let labels = [("app", "ratings"), ("version", "v2")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    peer::encode(&peer::node_metadata(&workload, &labels))
}

fn assert_no_exchange_headers(answer: &Answer) {
    assert!(!answer.body.contains(METADATA_HEADER), "{}", answer.body);
    assert!(!answer.headers.contains_key(METADATA_HEADER), "{answer:?}");
    assert!(!answer.headers.contains_key(ID_HEADER), "{answer:?}");
}

#[tokio::test]
async fn the_server_side_learns_the_client_and_neither_app_sees_the_exchange() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_config, _) = setup(dir.path(), "").await;
    let port = front_port(&client_config);
    let server = server_proxy(dir.path(), port).await;
    let client = client_proxy(
        dir.path(),
        &client_config,
        port,
        server.inbound().port(),
        false,
        |_| {},
    )
    .await;

    // HTTP/1.1 from the client app, which also tries to speak for its proxy: replaced.
    let answer = get(
        client.outbound(),
        "/peer",
        &[
            (METADATA_HEADER, "c3Bvb2ZlZA=="),
            (ID_HEADER, "sidecar~6.6.6.6~evil.req~req.svc.cluster.local"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.starts_with("app=front"), "{}", answer.body);
    assert!(
        answer.headers.contains_key("x-app"),
        "the app's own headers pass"
    );
    assert_no_exchange_headers(&answer);

    // HTTP/2 with prior knowledge from the client app.
    let stream = TcpStream::connect(client.outbound())
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::get("http://front:8080/peer-h2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = send.send_request(request).await.expect("h2 answer");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let answer = Answer {
        status: 200,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    assert!(answer.body.starts_with("app=front"), "{}", answer.body);
    assert_no_exchange_headers(&answer);

    // The server proxy counted both with the client's workload, namespace, app and version.
    let labels = [
        r#"reporter="destination""#,
        r#"source_workload="client""#,
        r#"source_workload_namespace="req""#,
        r#"source_app="client""#,
        r#"source_version="v1""#,
        r#"destination_workload="front-v1""#,
        r#"destination_app="front""#,
        r#"response_code="200""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&server).await, "istio_requests_total{", &labels) == Some(2.0)
        )
        .await,
        "{}",
        metrics(&server).await
    );
    let text = metrics(&server).await;
    assert!(
        !text.contains("outrigger_proxy_peer_metadata_errors_total{"),
        "the app's spoofed header never reached the server: {text}"
    );
    // The client side, as before: itself as the source, the endpoint's labels as destination.
    let source = [
        r#"reporter="source""#,
        r#"source_workload="client""#,
        r#"destination_workload="front-v1""#,
        r#"response_code="200""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&client).await, "istio_requests_total{", &source) == Some(2.0)
        )
        .await,
        "{}",
        metrics(&client).await
    );
}

#[tokio::test]
async fn the_server_answers_a_peer_with_its_own_metadata_and_bad_metadata_is_unknown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_config, _) = setup(dir.path(), "").await;
    let port = front_port(&client_config);
    let server = server_proxy(dir.path(), port).await;

    // A client that is no proxy: no metadata asked, none given.
    let plain = get(server.inbound(), "/plain", &[]).await;
    assert_eq!(plain.status, 200);
    assert_no_exchange_headers(&plain);

    // A peer written by hand as Istio's proxy writes it.
    let value = ratings_v2_metadata();
    let id = RATINGS_V2_ID;
    let answer = get(
        server.inbound(),
        "/from-peer",
        &[(METADATA_HEADER, value.as_str()), (ID_HEADER, id)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(!answer.body.contains(METADATA_HEADER), "{}", answer.body);
    assert_eq!(
        answer.headers.get(ID_HEADER).and_then(|v| v.to_str().ok()),
        Some("sidecar~127.0.0.51~front-v1.req~req.svc.cluster.local")
    );
    let theirs = answer
        .headers
        .get(METADATA_HEADER)
        .expect("the server's metadata");
    let (server_peer, _) = peer::peer_of(&peer::decode(theirs.as_bytes()).expect("decodes"));
    assert_eq!(
        (server_peer.workload.as_str(), server_peer.app.as_str()),
        ("front-v1", "front")
    );

    // Garbage and an oversize value: served all the same, the source unknown, counted.
    let garbage = get(
        server.inbound(),
        "/garbage",
        &[(METADATA_HEADER, "!!not base64!!")],
    )
    .await;
    assert_eq!(garbage.status, 200);
    assert!(!garbage.body.contains(METADATA_HEADER), "{}", garbage.body);
    let big = "A".repeat(peer::MAX_HEADER_BYTES + 4);
    let oversize = get(server.inbound(), "/big", &[(METADATA_HEADER, big.as_str())]).await;
    assert_eq!(oversize.status, 200);
    assert!(!oversize.body.contains(METADATA_HEADER));

    let from_peer = [
        r#"reporter="destination""#,
        r#"source_workload="ratings-v2""#,
        r#"source_workload_namespace="books""#,
        r#"source_app="ratings""#,
        r#"source_version="v2""#,
    ];
    let unknown = [
        r#"reporter="destination""#,
        r#"source_workload="unknown""#,
        r#"source_app="unknown""#,
    ];
    assert!(
        eventually(async || {
            let text = metrics(&server).await;
            sample(&text, "istio_requests_total{", &from_peer) == Some(1.0)
                && sample(&text, "istio_requests_total{", &unknown) == Some(3.0)
        })
        .await,
        "{}",
        metrics(&server).await
    );
    let text = metrics(&server).await;
    for reason in ["not_base64", "too_large"] {
        assert_eq!(
            sample(
                &text,
                "outrigger_proxy_peer_metadata_errors_total{",
                &[&format!(r#"reason="{reason}""#)]
            ),
            Some(1.0),
            "{text}"
        );
    }
}

#[tokio::test]
async fn the_client_fills_only_unknown_destination_labels_from_the_servers_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_config, _) = setup(dir.path(), "").await;
    let port = front_port(&client_config);
    let server = server_proxy(dir.path(), port).await;
    // An endpoint the configuration knows no workload or labels of (as a ServiceEntry's).
    let client = client_proxy(
        dir.path(),
        &client_config,
        port,
        server.inbound().port(),
        false,
        |endpoint| {
            let endpoint = endpoint.as_object_mut().expect("endpoint");
            endpoint.remove("workload");
            endpoint.remove("labels");
        },
    )
    .await;
    let answer = get(client.outbound(), "/fill", &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_no_exchange_headers(&answer);
    // Workload, app and version from the server's answer; the namespace the configuration
    // knew is kept.
    let labels = [
        r#"reporter="source""#,
        r#"destination_workload="front-v1""#,
        r#"destination_workload_namespace="req""#,
        r#"destination_app="front""#,
        r#"destination_version="v1""#,
        r#"response_code="200""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&client).await, "istio_requests_total{", &labels) == Some(1.0)
        )
        .await,
        "{}",
        metrics(&client).await
    );
}

/// A host that records the metadata-exchange headers it is sent and answers every request
/// with a peer's metadata (ratings-v2), as a meshed server would.
async fn far_host() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.51:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let metadata = ratings_v2_metadata();
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, metadata) = (recorded.clone(), metadata.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let sent = req.headers().contains_key(METADATA_HEADER)
                        || req.headers().contains_key(ID_HEADER);
                    seen.lock().expect("lock").push(sent);
                    let response = http::Response::builder()
                        .header(METADATA_HEADER, metadata.as_str())
                        .header(ID_HEADER, RATINGS_V2_ID)
                        .body(Full::new(Bytes::from_static(b"far")))
                        .expect("response");
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Istio's `metadataExchangeHeaders: IN_MESH`, as our default: a cluster outside the mesh (a
/// `MESH_EXTERNAL` ServiceEntry's) is sent no metadata and its answer's is not read. The same
/// far host inside the mesh, first, gets ours and names the destination.
#[tokio::test]
async fn a_host_outside_the_mesh_gets_no_metadata_and_its_answer_is_not_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_config, _) = setup(dir.path(), "").await;
    let port = front_port(&client_config);
    let (far, seen) = far_host().await;
    for external in [false, true] {
        let run = tempfile::tempdir().expect("temp dir");
        // Endpoints of a ServiceEntry: no workload or labels known.
        let client = client_proxy(
            run.path(),
            &client_config,
            port,
            far.port(),
            external,
            |endpoint| {
                let endpoint = endpoint.as_object_mut().expect("endpoint");
                endpoint.remove("workload");
                endpoint.remove("labels");
            },
        )
        .await;
        let answer = get(
            client.outbound(),
            "/far",
            &[(METADATA_HEADER, "c3Bvb2ZlZA==")],
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, "far");
        assert_no_exchange_headers(&answer);
        assert_eq!(
            seen.lock().expect("lock").pop(),
            Some(!external),
            "metadata sent to a host {} the mesh",
            if external { "outside" } else { "inside" }
        );
        let destination = if external {
            r#"destination_workload="unknown""#
        } else {
            r#"destination_workload="ratings-v2""#
        };
        let labels = [
            r#"reporter="source""#,
            r#"source_workload="client""#,
            destination,
        ];
        assert!(
            eventually(async || {
                sample(&metrics(&client).await, "istio_requests_total{", &labels) == Some(1.0)
            })
            .await,
            "external {external}: {}",
            metrics(&client).await
        );
    }
}
