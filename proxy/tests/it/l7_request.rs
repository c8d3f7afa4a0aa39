//! The request side of the HTTP path (issue 12): header operations, trace and request-id
//! headers, mirroring, the route timeout over the response body, REGISTRY_ONLY, protocol
//! detection and inbound HTTP. Apps on 127.0.0.51-56 with a configuration written by
//! `outrigger-routes build`; the proxy's original destination fixed to a ClusterIP.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outrigger_proxy::cli::RunArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config_file::routes_build;
use crate::support::*;

pub const FRONT: &str = "10.96.1.10:8080";
pub const AUTO: &str = "10.96.1.30:8080";
/// No Service has this address; port 8080 is an HTTP port of the mesh.
pub const UNKNOWN_HTTP_PORT: &str = "10.96.9.9:8080";
/// No Service has this address or port.
pub const UNKNOWN_PORT: &str = "10.96.9.9:5555";
const REGISTRY_ONLY: &str = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: req}\nspec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n";

/// What the apps saw: `(app, authority, path)` per request.
pub type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

fn yaml(port: u16, extra: &str) -> String {
    let pod = |name: &str, app: &str, version: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: req\n  labels: {{app: {app}, version: {version}}}\n\
             spec:\n  serviceAccountName: {app}\n  containers:\n  - name: app\n    image: req/{app}\n\
             status:\n  phase: Running\n  podIP: {ip}\n---\n"
        )
    };
    let service_on = |name: &str, app: &str, ip: &str, port_name: &str, number: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: req\n\
             spec:\n  clusterIP: {ip}\n  selector: {{app: {app}}}\n  ports:\n  - name: {port_name}\n    port: {number}\n    targetPort: {port}\n---\n"
        )
    };
    let service =
        |name: &str, ip: &str, port_name: &str| service_on(name, name, ip, port_name, 8080);
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: req\n---\n");
    text += &pod("client", "client", "v1", "127.0.0.2");
    text += &pod("front-v1", "front", "v1", "127.0.0.51");
    text += &pod("shadow-v1", "shadow", "v1", "127.0.0.53");
    text += &pod("auto-v1", "auto", "v1", "127.0.0.54");
    text += &pod("banner-v1", "banner", "v1", "127.0.0.57");
    text += &service("front", "10.96.1.10", "http");
    text += &service("shadow", "10.96.1.20", "http");
    text += &service("auto", "10.96.1.30", "web");
    // ClusterIPs that are the pods' own addresses, on the apps' port: the TCP relay (which
    // connects to the original destination) reaches the app itself.
    text += &service_on("banner", "banner", "127.0.0.57", "db", port);
    text += &service_on("autoraw", "auto", "127.0.0.54", "web", port);
    text += r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: req}
spec:
  hosts: [front]
  http:
  - name: headers
    match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-env: rule}, add: {x-tag: rule}, remove: [x-debug]}
      response: {set: {x-served-by: rule}, remove: [x-app-secret]}
    route:
    - destination: {host: front}
      headers:
        request: {set: {x-env: destination}, add: {x-tag: destination}}
        response: {add: {x-destination: front}}
  - name: mirror
    match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: front}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
  - name: half-mirror
    match: [{uri: {prefix: /half}}]
    route: [{destination: {host: front}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 50}
  - name: two-mirrors
    match: [{uri: {prefix: /twomirrors}}]
    route: [{destination: {host: front}}]
    mirrors:
    - destination: {host: shadow}
    - destination: {host: auto}
      percentage: {value: 100}
  - name: body-timeout
    match: [{uri: {prefix: /slowbody}}]
    timeout: 1s
    route: [{destination: {host: front}}]
  - route: [{destination: {host: front}}]
"#;
    text + extra
}

/// The echo app: answers `app=<name>` and the request headers it received, with the headers
/// `x-app: <name>` and `x-app-secret: 1`; `/slow?ms=N` waits N ms before answering;
/// `/slowbody?ms=N` sends the headers at once and the body after N ms.
pub async fn app(addr: SocketAddr, name: &'static str, seen: Seen) {
    let listener = TcpListener::bind(addr).await.expect("bind app");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| answer(req, name, seen.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    name: &'static str,
    seen: Seen,
) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let authority = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    seen.lock()
        .expect("lock")
        .push((name.to_owned(), authority, path.clone()));
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(3000);
    let slow = path.starts_with("/slow") && !path.starts_with("/slowbody");
    if slow || (name == "shadow" && path.contains("/shadowslow")) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut text = format!("app={name}\npath={path}\n");
    for (header, value) in req.headers() {
        text += &format!("{header}: {}\n", value.to_str().unwrap_or("?"));
    }
    let _ = req.into_body().collect().await;
    let body: AppBody = if path.starts_with("/slowbody") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from("first\n")))).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = tx.send(Ok(Frame::data(Bytes::from(text)))).await;
        });
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
    } else {
        Full::new(Bytes::from(text)).boxed()
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("x-app", name)
        .header("x-app-secret", "1")
        .body(body)
        .expect("valid response"))
}

/// A server-first app (as SMTP or MySQL): a greeting on accept, then an echo.
async fn banner(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind banner");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream.write_all(b"220 banner ready\r\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Apps front (127.0.0.51), shadow (.53) and auto (.54) on one free port, the configuration
/// built for the client pod with `extra` documents; returns its path and what the apps saw.
pub async fn setup(dir: &Path, extra: &str) -> (PathBuf, Seen) {
    let probe = std::net::TcpListener::bind("127.0.0.51:0").expect("free port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let seen = Seen::default();
    for (ip, name) in [
        ("127.0.0.51", "front"),
        ("127.0.0.53", "shadow"),
        ("127.0.0.54", "auto"),
    ] {
        app(
            format!("{ip}:{port}").parse().expect("addr"),
            name,
            seen.clone(),
        )
        .await;
    }
    banner(format!("127.0.0.57:{port}").parse().expect("addr")).await;
    let input = dir.join("req.yaml");
    std::fs::write(&input, yaml(port, extra)).expect("write yaml");
    let output = dir.join("client.json");
    routes_build(&[input.to_str().expect("utf-8")], "req/client", &output);
    (output, seen)
}

pub async fn proxy_to(config: &Path, orig_dst: &str) -> TestProxy {
    proxy_with(config, orig_dst, RunArgs::default()).await
}

pub async fn proxy_with(config: &Path, orig_dst: &str, args: RunArgs) -> TestProxy {
    let args = RunArgs {
        config_file: Some(config.to_owned()),
        ..args
    };
    start_proxy(fixed(orig_dst.parse().expect("addr")), args).await
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request on a new connection: `GET path` with `Host: front:8080`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder().uri(path).header("host", "front:8080");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = send
        .send_request(builder.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
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

/// The request headers the app echoed, name → values in order.
fn echoed(body: &str) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in body.lines() {
        if let Some((name, value)) = line.split_once(": ") {
            headers
                .entry(name.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    headers
}

fn count(seen: &Seen, app: &str) -> usize {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(name, _, _)| name == app)
        .count()
}

#[tokio::test]
async fn header_operations_apply_destination_then_rule_on_both_sides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, FRONT).await;
    let answer = get(
        proxy.outbound(),
        "/headers",
        &[("x-debug", "1"), ("x-tag", "client")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let sent = echoed(&answer.body);
    assert_eq!(sent["x-env"], ["rule"], "the rule's set is applied last");
    assert_eq!(sent["x-tag"], ["client", "destination", "rule"]);
    assert!(!sent.contains_key("x-debug"), "{}", answer.body);
    assert_eq!(answer.headers["x-served-by"], "rule");
    assert_eq!(answer.headers["x-destination"], "front");
    assert_eq!(answer.headers["x-app"], "front");
    assert!(!answer.headers.contains_key("x-app-secret"));

    // Another rule: nothing changed.
    let plain = get(proxy.outbound(), "/plain", &[("x-debug", "1")]).await;
    assert_eq!(echoed(&plain.body)["x-debug"], ["1"]);
    assert!(plain.headers.contains_key("x-app-secret"));
}

#[tokio::test]
async fn request_id_is_kept_and_b3_and_w3c_trace_headers_pass_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, FRONT).await;
    let trace = [
        ("x-request-id", "7f1c2a9e-0000-4000-8000-000000000001"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    let answer = get(proxy.outbound(), "/trace", &trace).await;
    assert_eq!(answer.status, 200);
    let sent = echoed(&answer.body);
    for (name, value) in trace {
        assert_eq!(sent.get(name), Some(&vec![value.to_owned()]), "{name}");
    }
    // Absent: one is generated, a UUID v4.
    let generated = echoed(&get(proxy.outbound(), "/trace", &[]).await.body);
    let id = &generated["x-request-id"][0];
    assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
}

#[tokio::test]
async fn mirror_copies_to_the_shadow_authority_without_waiting_for_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, seen) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, FRONT).await;
    // The shadow takes 2 s; the answer must not wait for it.
    let started = std::time::Instant::now();
    let answer = get(proxy.outbound(), "/mirror/shadowslow?ms=2000", &[]).await;
    let took = started.elapsed();
    assert_eq!(
        (answer.status, &answer.headers["x-app"]),
        (200, &"front".parse().expect("value"))
    );
    assert!(
        took < Duration::from_millis(1000),
        "the answer waited for the mirror: {took:?}"
    );
    assert!(
        eventually(async || count(&seen, "shadow") == 1).await,
        "the shadow never saw the copy"
    );
    let copy = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|(name, _, _)| name == "shadow")
        .cloned()
        .expect("a copy");
    assert_eq!(copy.1, "front-shadow:8080");
    assert_eq!(copy.2, "/mirror/shadowslow");
    // A fast one is counted as sent.
    get(proxy.outbound(), "/mirror/fast", &[]).await;
    assert!(
        eventually(async || {
            sample(
                &metrics(&proxy).await,
                "outrigger_proxy_mirror_requests_total{",
                &[r#"result="sent""#],
            ) == Some(1.0)
        })
        .await
    );
    // Only the mirror rules copy.
    get(proxy.outbound(), "/plain", &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&seen, "shadow"), 2);
}

#[tokio::test]
async fn every_entry_of_mirrors_gets_its_own_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, seen) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, FRONT).await;
    for _ in 0..3 {
        assert_eq!(get(proxy.outbound(), "/twomirrors", &[]).await.status, 200);
    }
    assert!(
        eventually(async || count(&seen, "shadow") == 3 && count(&seen, "auto") == 3).await,
        "each request copied to both mirrors: shadow {}, auto {}",
        count(&seen, "shadow"),
        count(&seen, "auto")
    );
    assert_eq!(count(&seen, "front"), 3);
}

#[tokio::test]
async fn mirror_percentage_copies_about_half_of_200_requests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, seen) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, FRONT).await;
    for _ in 0..200 {
        assert_eq!(get(proxy.outbound(), "/half", &[]).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copies = count(&seen, "shadow");
    // Binomial(200, 0.5): sd ~7; 60..=140 fails about once in 10^8 runs.
    assert!((60..=140).contains(&copies), "{copies} copies of 200");
    assert_eq!(count(&seen, "front"), 200);
}

#[tokio::test]
async fn route_timeout_also_bounds_the_response_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, FRONT).await;
    // Within the 1 s timeout: the whole body arrives.
    let quick = get(proxy.outbound(), "/slowbody?ms=200", &[]).await;
    assert_eq!(quick.status, 200);
    assert!(quick.body.starts_with("first\napp=front"), "{}", quick.body);

    // Headers at once, the rest after 3 s: cut at 1 s.
    let stream = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let started = std::time::Instant::now();
    let request = Request::get("/slowbody?ms=3000")
        .header("host", "front:8080")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = send.send_request(request).await.expect("headers");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await;
    let took = started.elapsed();
    assert!(body.is_err(), "the body was not cut: {body:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&took),
        "cut after {took:?}"
    );
    let flagged = [r#"response_code="200""#, r#"response_flags="UT""#];
    assert!(
        eventually(
            async || sample(&metrics(&proxy).await, "istio_requests_total{", &flagged) == Some(1.0)
        )
        .await,
        "{}",
        metrics(&proxy).await
    );
}

#[tokio::test]
async fn registry_only_answers_502_nr_on_http_ports_and_closes_other_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, seen) = setup(dir.path(), REGISTRY_ONLY).await;
    let proxy = proxy_to(&config, UNKNOWN_HTTP_PORT).await;
    let refused = get(proxy.outbound(), "/anything", &[]).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    let labels = [
        r#"destination_service="BlackHoleCluster""#,
        r#"destination_service_name="BlackHoleCluster""#,
        r#"response_code="502""#,
        r#"response_flags="NR""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&proxy).await, "istio_requests_total{", &labels) == Some(1.0)
        )
        .await,
        "{}",
        metrics(&proxy).await
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        0,
        "nothing reached an app"
    );

    // A port the mesh has no HTTP on: the connection is closed, counted as BlackHoleCluster.
    let proxy = proxy_to(&config, UNKNOWN_PORT).await;
    let mut stream = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let _ = stream.write_all(b"hello").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("closed, not hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let tcp = [r#"destination_service_name="BlackHoleCluster""#];
    assert!(
        eventually(async || {
            sample(
                &metrics(&proxy).await,
                "istio_tcp_connections_opened_total{",
                &tcp,
            ) == Some(1.0)
        })
        .await,
        "{}",
        metrics(&proxy).await
    );
}

#[tokio::test]
async fn allow_any_relays_an_unknown_destination_and_registry_only_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = setup(dir.path(), "").await;
    let port = front_port(&config);
    // The shadow pod's own address is no Service's: ALLOW_ANY passes it through.
    let pod = format!("127.0.0.53:{port}");
    let proxy = proxy_to(&config, &pod).await;
    let answer = get(proxy.outbound(), "/direct", &[]).await;
    assert_eq!(
        (answer.status, &answer.headers["x-app"]),
        (200, &"shadow".parse().expect("value"))
    );
    let passthrough = [r#"destination_service_name="PassthroughCluster""#];
    assert!(
        eventually(async || {
            sample(
                &metrics(&proxy).await,
                "istio_tcp_connections_opened_total{",
                &passthrough,
            ) == Some(1.0)
        })
        .await
    );

    let other = dir.path().join("registry-only");
    std::fs::create_dir(&other).expect("dir");
    let (registry_only, _) = setup(&other, REGISTRY_ONLY).await;
    let port = front_port(&registry_only);
    let proxy = proxy_to(&registry_only, &format!("127.0.0.53:{port}")).await;
    // The mesh has `auto` Services on this port: detected as HTTP, refused with 502.
    let refused = get(proxy.outbound(), "/direct", &[]).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    assert!(!refused.headers.contains_key("x-app"), "{refused:?}");
}

/// The apps' port, from the built configuration (front's endpoint).
pub fn front_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).expect("config");
    let start = text.find("127.0.0.51:").expect("front endpoint") + "127.0.0.51:".len();
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("port")
}

#[tokio::test]
async fn auto_detects_http1_and_http2_and_relays_other_bytes_as_tcp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = setup(dir.path(), "").await;
    let proxy = proxy_to(&config, AUTO).await;
    let answer = get(proxy.outbound(), "/detected", &[]).await;
    assert_eq!(
        (answer.status, &answer.headers["x-app"]),
        (200, &"auto".parse().expect("value"))
    );
    // HTTP/2 with prior knowledge: the preface.
    let stream = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::get("http://auto:8080/h2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = send.send_request(request).await.expect("h2 answer");
    assert_eq!(response.status(), 200);
    let http = [
        r#"destination_service_name="auto""#,
        r#"response_code="200""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&proxy).await, "istio_requests_total{", &http) == Some(2.0)
        )
        .await,
        "both requests went through the HTTP path: {}",
        metrics(&proxy).await
    );
    // Not HTTP: relayed untouched, so the app itself answers the garbage.
    let raw = format!("127.0.0.54:{}", front_port(&config));
    let proxy = proxy_to(&config, &raw).await;
    let mut stream = TcpStream::connect(proxy.outbound()).await.expect("connect");
    stream
        .write_all(b"HELLO THERE\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let tcp = [r#"destination_service_name="autoraw""#];
    assert!(
        eventually(async || {
            sample(
                &metrics(&proxy).await,
                "istio_tcp_connections_opened_total{",
                &tcp,
            ) == Some(1.0)
        })
        .await
    );
}

#[tokio::test]
async fn a_server_first_protocol_on_an_auto_port_waits_only_the_detection_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = setup(dir.path(), "").await;
    let args = RunArgs {
        protocol_detection_timeout: Some(Duration::from_millis(300)),
        ..RunArgs::default()
    };
    let banner = format!("127.0.0.57:{}", front_port(&config));
    let proxy = proxy_with(&config, &banner, args).await;
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("the greeting came: the connection did not hang")
        .expect("read");
    let took = started.elapsed();
    assert_eq!(&buf[..n], b"220 banner ready\r\n");
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(2000)).contains(&took),
        "greeting after {took:?}"
    );
    // Relayed as TCP from then on.
    stream.write_all(b"PING\r\n").await.expect("write");
    let n = stream.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"PING\r\n");
}

#[tokio::test]
async fn inbound_http_is_counted_by_the_server_side_and_other_ports_stay_tcp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_config, _) = setup(dir.path(), "").await;
    let port = front_port(&client_config);
    // The configuration of the server pod, front-v1 (127.0.0.51).
    let config = dir.path().join("front.json");
    routes_build(
        &[dir.path().join("req.yaml").to_str().expect("utf-8")],
        "req/front-v1",
        &config,
    );
    let own = format!("127.0.0.51:{port}");
    let proxy = proxy_to(&config, &own).await;
    let stream = TcpStream::connect(proxy.inbound()).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let request = Request::get("/inbound")
            .header("host", "front.req.svc.cluster.local:8080")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = send.send_request(request).await.expect("answer");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(body.starts_with("app=front"), "{body}");
        assert!(
            body.contains("host: front.req.svc.cluster.local:8080"),
            "{body}"
        );
        assert!(body.contains("x-request-id: "), "{body}");
    }
    let labels = [
        r#"reporter="destination""#,
        r#"source_workload="unknown""#,
        r#"destination_workload="web""#,
        r#"destination_app="front""#,
        r#"destination_version="v1""#,
        r#"destination_service="front.req.svc.cluster.local""#,
        r#"destination_service_name="front""#,
        r#"destination_service_namespace="req""#,
        r#"response_code="200""#,
        r#"response_flags="-""#,
        r#"request_protocol="http""#,
    ];
    assert!(
        eventually(
            async || sample(&metrics(&proxy).await, "istio_requests_total{", &labels) == Some(2.0)
        )
        .await,
        "{}",
        metrics(&proxy).await
    );

    // A port of the pod no Service names: relayed as TCP, no request metrics.
    let listener = TcpListener::bind("127.0.0.51:0").await.expect("bind");
    let other = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = proxy_to(&config, &other.to_string()).await;
    let mut stream = TcpStream::connect(proxy.inbound()).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n", "echoed as bytes");
    let text = metrics(&proxy).await;
    assert!(!text.contains("istio_requests_total{"), "{text}");
}
