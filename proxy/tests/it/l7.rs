//! The HTTP data path in-process: a configuration written by `outrigger-routes build`, apps on
//! loopback addresses (127.0.0.11-13 for reviews v1-v3), the proxy's original destination fixed
//! to a ClusterIP. Routing, weights, faults, timeouts, retries, limits, HTTP/2, upgrades and the
//! request metrics.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outrigger_proxy::cli::RunArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config_file::routes_build;
use crate::support::*;

pub const REVIEWS: &str = "10.96.0.10:9080";
pub const RATINGS: &str = "10.96.0.20:9080";
pub const DETAILS: &str = "10.96.0.30:9080";
pub const LIMITED: &str = "10.96.0.40:9080";

/// The demo namespace: a client pod, reviews v1/v2/v3, ratings (one live and one dead pod),
/// details (HTTP/2 upstream), limited (a pool of one request).
fn demo_yaml(port: u16) -> String {
    let pod = |name: &str, app: &str, version: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels: {{app: {app}, version: {version}}}\n\
             spec:\n  serviceAccountName: {app}\n  containers:\n  - name: app\n    image: demo/{app}\n\
             status:\n  phase: Running\n  podIP: {ip}\n---\n"
        )
    };
    let service = |name: &str, ip: &str, port_name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\n\
             spec:\n  clusterIP: {ip}\n  selector: {{app: {name}}}\n  ports:\n  - name: {port_name}\n    port: 9080\n    targetPort: {port}\n---\n"
        )
    };
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\n");
    text += &pod("client", "client", "v1", "127.0.0.2");
    for v in 1..=3 {
        text += &pod(
            &format!("reviews-v{v}"),
            "reviews",
            &format!("v{v}"),
            &format!("127.0.0.1{v}"),
        );
    }
    text += &pod("ratings-live", "ratings", "v1", "127.0.0.21");
    text += &pod("ratings-dead", "ratings", "v1", "127.0.0.22");
    text += &pod("details-v1", "details", "v1", "127.0.0.31");
    text += &pod("limited-v1", "limited", "v1", "127.0.0.41");
    text += &service("reviews", "10.96.0.10", "http");
    text += &service("ratings", "10.96.0.20", "http");
    text += &service("details", "10.96.0.30", "http2");
    text += &service("limited", "10.96.0.40", "http");
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: demo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: limited, namespace: demo}
spec:
  host: limited
  trafficPolicy:
    connectionPool:
      http: {http2MaxRequests: 1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: abort
    match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: slow
    match: [{uri: {prefix: /slow}}]
    timeout: 1s
    route: [{destination: {host: reviews, subset: v3}}]
  - name: split
    match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v3}, weight: 10}
  - name: missing-subset
    match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - name: moved
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: rewritten
    match: [{uri: {prefix: /api/v1}}]
    rewrite: {uri: /v1}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    text
}

/// The echo app of one version: answers `version=<v>` and the headers it received;
/// `/slow?ms=N` waits N ms (3 s by default); `/status/N` answers N; an `Upgrade` request gets
/// 101 and then an echo of the upgraded bytes.
pub async fn app(addr: SocketAddr, version: &'static str) {
    let listener = TcpListener::bind(addr).await.expect("bind app");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, version));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn answer(
    mut req: Request<Incoming>,
    version: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.headers().contains_key(http::header::UPGRADE) {
        return Ok(upgrade_echo(&mut req));
    }
    if path.starts_with("/slow") {
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(3000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut body = format!("version={version}\npath={path}\n");
    for (name, value) in req.headers() {
        body += &format!("{name}: {}\n", value.to_str().unwrap_or("?"));
    }
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .status(status)
        .header("x-version", version)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response"))
}

/// The app's answer to an `Upgrade` request: 101, then an echo of the upgraded bytes until the
/// client closes its side.
pub fn upgrade_echo(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// A WebSocket handshake to the proxy at `addr`: the connection once the 101 has come.
pub async fn open_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: reviews:9080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("send upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Apps on every demo address, the configuration built for the client pod; returns its path.
pub async fn demo(dir: &std::path::Path) -> PathBuf {
    let probe = std::net::TcpListener::bind("127.0.0.11:0").expect("free port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    for (ip, version) in [
        ("127.0.0.11", "v1"),
        ("127.0.0.12", "v2"),
        ("127.0.0.13", "v3"),
        ("127.0.0.21", "v1"),
        ("127.0.0.31", "v1"),
        ("127.0.0.41", "v1"),
    ] {
        app(format!("{ip}:{port}").parse().expect("addr"), version).await;
    }
    let input = dir.join("demo.yaml");
    std::fs::write(&input, demo_yaml(port)).expect("write demo");
    let output = dir.join("client.json");
    routes_build(&[input.to_str().expect("utf-8")], "demo/client", &output);
    output
}

/// A proxy whose captured connections all go to `orig_dst`, with the demo configuration.
pub async fn demo_proxy(config: &std::path::Path, orig_dst: &str) -> TestProxy {
    let args = RunArgs {
        config_file: Some(config.to_owned()),
        admin_port: Some(0),
        ..RunArgs::default()
    };
    start_proxy(fixed(orig_dst.parse().expect("addr")), args).await
}

/// An HTTP/1.1 keep-alive connection (or HTTP/2 with prior knowledge) to the proxy.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    pub async fn open(addr: SocketAddr, h2: bool) -> Conn {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn.with_upgrades());
            Conn::H1(send)
        }
    }

    /// Sends `GET path` with `headers`; returns status, response headers and body.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let h2 = matches!(self, Conn::H2(_));
        let uri = if h2 {
            format!("http://reviews:9080{path}")
        } else {
            path.to_owned()
        };
        let mut builder = Request::builder().uri(uri);
        if !h2 {
            builder = builder.header("host", "reviews:9080");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::new())).expect("request");
        let response = match self {
            Conn::H1(send) => send.send_request(request).await,
            Conn::H2(send) => send.send_request(request).await,
        }
        .expect("a response");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn version(&self) -> &str {
        self.headers.get("x-version").map_or("-", String::as_str)
    }
}

#[tokio::test]
async fn default_route_to_v1_header_rule_to_v2_and_request_id_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, REVIEWS).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let plain = conn.get("/reviews", &[]).await;
    assert_eq!((plain.status, plain.version()), (200, "v1"), "{plain:?}");
    assert!(plain.body.contains("x-request-id: "), "{}", plain.body);
    assert!(plain.body.contains("host: reviews:9080"), "{}", plain.body);
    let jason = conn.get("/reviews", &[("end-user", "jason")]).await;
    assert_eq!((jason.status, jason.version()), (200, "v2"));
    let kept = conn.get("/reviews", &[("x-request-id", "abc-123")]).await;
    assert!(kept.body.contains("x-request-id: abc-123"), "{}", kept.body);

    let text = metrics(&proxy).await;
    let labels = [
        r#"reporter="source""#,
        r#"source_workload="web""#,
        r#"source_app="client""#,
        r#"destination_service="reviews.demo.svc.cluster.local""#,
        r#"destination_service_name="reviews""#,
        r#"destination_service_namespace="demo""#,
        r#"destination_workload="reviews-v1""#,
        r#"destination_version="v1""#,
        r#"request_protocol="http""#,
        r#"response_code="200""#,
        r#"response_flags="-""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&proxy).await, "istio_requests_total{", &labels) == Some(2.0)
        )
        .await,
        "{text}"
    );
    let v2 = [r#"destination_version="v2""#, r#"response_code="200""#];
    assert_eq!(sample(&text, "istio_requests_total{", &v2), Some(1.0));
    for family in [
        "istio_request_duration_milliseconds_count{",
        "istio_request_bytes_count{",
        "istio_response_bytes_count{",
    ] {
        assert_eq!(sample(&text, family, &v2), Some(1.0), "{family}");
    }
}

#[tokio::test]
async fn weights_split_ninety_ten_per_request_over_200_calls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, REVIEWS).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let mut v3 = 0;
    for _ in 0..200 {
        let answer = conn.get("/split", &[]).await;
        assert_eq!(answer.status, 200);
        if answer.version() == "v3" {
            v3 += 1;
        }
    }
    // 10 % of 200 = 20; binomial sd ~4.2: 5..=40 fails about once in 10^5 runs.
    assert!(
        (5..=40).contains(&v3),
        "v3 got {v3} of 200 on one connection"
    );
}

#[tokio::test]
async fn abort_timeout_missing_subset_redirect_and_rewrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, REVIEWS).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;

    let abort = conn.get("/abort", &[]).await;
    assert_eq!(abort.status, 500);
    assert_eq!(abort.body, "fault filter abort");

    let started = std::time::Instant::now();
    let slow = conn.get("/slow", &[]).await;
    assert_eq!(slow.status, 504, "{slow:?}");
    assert_eq!(slow.body, "upstream request timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the 1 s timeout fired"
    );

    let nr = conn.get("/nosubset", &[]).await;
    assert_eq!(nr.status, 503);

    let moved = conn.get("/old/page", &[]).await;
    assert_eq!(moved.status, 301);
    assert_eq!(moved.headers["location"], "http://reviews:9080/new");

    let rewritten = conn.get("/api/v1/items?x=1", &[]).await;
    assert!(
        rewritten.body.contains("path=/v1/items\n"),
        "{}",
        rewritten.body
    );

    let text = metrics(&proxy).await;
    for (code, flags) in [("500", "FI"), ("504", "UT"), ("503", "NR")] {
        let labels = [
            format!(r#"response_code="{code}""#),
            format!(r#"response_flags="{flags}""#),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            sample(&text, "istio_requests_total{", &labels),
            Some(1.0),
            "{code} {flags}: {text}"
        );
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_downstream_and_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let reviews = demo_proxy(&config, REVIEWS).await;
    let mut conn = Conn::open(reviews.outbound(), true).await;
    for _ in 0..3 {
        let answer = conn.get("/reviews", &[("end-user", "jason")]).await;
        assert_eq!((answer.status, answer.version()), (200, "v2"), "{answer:?}");
    }
    // `details` names its port http2: the proxy speaks HTTP/2 to the app too.
    let details = demo_proxy(&config, DETAILS).await;
    let mut conn = Conn::open(details.outbound(), false).await;
    let answer = conn.get("/details", &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn default_retries_hide_an_endpoint_that_refuses_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, RATINGS).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;
    for _ in 0..30 {
        let answer = conn.get("/ratings", &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let text = metrics(&proxy).await;
    assert_eq!(
        sample(&text, "istio_requests_total{", &[r#"response_code="200""#]),
        Some(30.0),
        "{text}"
    );
}

#[tokio::test]
async fn pool_overflow_answers_503_uo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, LIMITED).await;
    let addr = proxy.outbound();
    let call = async move || Conn::open(addr, false).await.get("/slow?ms=600", &[]).await;
    let (a, b) = tokio::join!(call(), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        call().await
    });
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 503], "{a:?} {b:?}");
    let text = metrics(&proxy).await;
    assert_eq!(
        sample(&text, "istio_requests_total{", &[r#"response_flags="UO""#]),
        Some(1.0)
    );
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, REVIEWS).await;
    let mut stream = open_websocket(proxy.outbound()).await;
    stream
        .write_all(b"ping over the tunnel")
        .await
        .expect("send");
    let mut echoed = [0u8; 20];
    stream.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping over the tunnel");
}

#[tokio::test]
async fn unknown_destinations_are_still_relayed_as_tcp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let upstream = echo_server(false).await;
    let proxy = demo_proxy(&config, &upstream.to_string()).await;
    let answer = echo_through(proxy.outbound(), b"raw bytes")
        .await
        .expect("relay");
    assert_eq!(answer, b"raw bytes");
}

#[tokio::test]
async fn admin_port_is_loopback_and_dumps_config_clusters_and_stats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, REVIEWS).await;
    assert!(
        proxy.addrs.admin.iter().all(|a| a.ip().is_loopback()),
        "{:?}",
        proxy.addrs.admin
    );
    let mut conn = Conn::open(proxy.outbound(), false).await;
    assert_eq!(conn.get("/reviews", &[]).await.status, 200);

    let (status, dump) = http(proxy.admin(), "GET", "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("JSON");
    assert_eq!(dump["version"], on_disk["version"]);
    assert_eq!(
        dump["config"], on_disk,
        "the configuration in force, as loaded"
    );
    assert_eq!(dump["source"], config.display().to_string());

    let (_, clusters) = http(proxy.admin(), "GET", "/clusters").await;
    let v1 = "outbound|9080|v1|reviews.demo.svc.cluster.local";
    assert!(
        clusters.contains(&format!("{v1}::lb_policy::LEAST_REQUEST")),
        "{clusters}"
    );
    let line = clusters
        .lines()
        .find(|l| l.starts_with(&format!("{v1}::127.0.0.11:")) && l.contains("::rq_total::"))
        .expect("the v1 endpoint");
    assert!(line.ends_with("::rq_total::1"), "{line}");
    assert!(clusters.contains("::health_flags::healthy"));
    let (_, json) = http(proxy.admin(), "GET", "/clusters?format=json").await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(json["clusters"].as_array().is_some_and(|c| !c.is_empty()));

    let (_, stats) = http(proxy.admin(), "GET", "/stats").await;
    assert!(stats.contains("istio_requests_total{"), "{stats}");
}

#[tokio::test]
async fn a_config_file_replaced_while_requests_flow_fails_no_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = demo(dir.path()).await;
    let proxy = demo_proxy(&config, REVIEWS).await;
    let addr = proxy.outbound();
    let caller = tokio::spawn(async move {
        let mut conn = Conn::open(addr, false).await;
        let mut versions = Vec::new();
        for _ in 0..150 {
            let answer = conn.get("/reviews", &[]).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            versions.push(answer.version().to_owned());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        versions
    });
    // Half-way, all traffic moves to v3 (a new file renamed over the old one).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut moved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("JSON");
    let routes =
        &mut moved["destinations"]["reviews.demo.svc.cluster.local:9080"]["http"]["routes"];
    let last = routes.as_array().map_or(0, Vec::len) - 1;
    let target = &mut routes[last]["action"]["destinations"][0];
    target["cluster"] = "outbound|9080|v3|reviews.demo.svc.cluster.local".into();
    target["subset"] = "v3".into();
    moved["version"] = "0000000000000001".into();
    let staged = dir.path().join("staged.json");
    std::fs::write(&staged, serde_json::to_string_pretty(&moved).expect("JSON")).expect("write");
    std::fs::rename(&staged, &config).expect("rename");
    let versions = caller.await.expect("caller");
    assert_eq!(versions.first().map(String::as_str), Some("v1"));
    assert_eq!(
        versions.last().map(String::as_str),
        Some("v3"),
        "the new file took effect"
    );
}
