//! The upstream side of the HTTP path in-process: outlier detection, consistent hashing and the
//! connection pool, against apps on loopback addresses (127.0.0.51-53 "flaky", 61-63
//! "sticky", 71-73 "cookie", 91-93 "session", 81 "pooled", 101 "idle", 111 "multiplexed", 131
//! "capped")
//! with a configuration written by `outrigger-routes build`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outrigger_proxy::cli::RunArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config_file::routes_build;
use crate::l7::{Conn, demo_proxy, open_websocket, upgrade_echo};
use crate::support::*;

const FLAKY: &str = "10.96.0.50:9080";
const STICKY: &str = "10.96.0.60:9080";
const COOKIE: &str = "10.96.0.70:9080";
const SESSION: &str = "10.96.0.90:9080";
const POOLED: &str = "10.96.0.80:9080";
const IDLE: &str = "10.96.0.100:9080";
const MULTIPLEXED: &str = "10.96.0.110:9080";
const SILENT: &str = "10.96.0.120:9080";
const CAPPED: &str = "10.96.0.130:9080";

/// One app instance (an `Upgrade` gets 101 and an echo): answers `status` (500 on `/fail`, after 700 ms on any path with `/slow`) with `x-version: <name>` and `x-peer:
/// <the proxy's address and port>` (one value per upstream connection).
async fn app(listener: std::net::TcpListener, name: &'static str, status: u16) {
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("app listener");
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| answer(req, name, status, peer));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn answer(
    mut req: Request<Incoming>,
    name: &'static str,
    status: u16,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) {
        return Ok(upgrade_echo(&mut req));
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut body = format!(
        "version={name}\nauthority={authority}\nprotocol={:?}\n",
        req.version()
    );
    for (header, value) in req.headers() {
        body += &format!("{header}: {}\n", value.to_str().unwrap_or("?"));
    }
    if req.uri().path().contains("/slow") {
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let status = if req.uri().path().starts_with("/fail") {
        500
    } else {
        status
    };
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .status(status)
        .header("x-version", name)
        .header("x-peer", peer.to_string())
        .body(Full::new(Bytes::from(body)))
        .expect("valid response"))
}

/// A socket bound to `addr`, to become [`silent`].
fn bind_silent(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listener whose accept queue is full and never drained: new connections to it get no
/// answer (their SYN is dropped), so a connect to it runs into the connect timeout.
fn silent(socket: socket2::Socket) {
    let addr: SocketAddr = socket
        .local_addr()
        .expect("bound")
        .as_socket()
        .expect("an IP socket");
    socket.listen(0).expect("listen");
    let mut held = vec![socket];
    for _ in 0..3 {
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        client.set_nonblocking(true).expect("nonblocking");
        let _ = client.connect(&addr.into());
        held.push(client);
    }
    std::thread::sleep(Duration::from_millis(50));
    // Kept open for the whole test process.
    std::mem::forget(held);
}

/// Pods, Services and DestinationRules of the upstream tests; `port` is every app's port.
fn topology(port: u16) -> String {
    let pod = |name: &str, app: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels: {{app: {app}, version: v1}}\n\
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
    text += &pod("client", "client", "127.0.0.2");
    for (app, base) in [
        ("flaky", 50),
        ("sticky", 60),
        ("cookie", 70),
        ("session", 90),
    ] {
        for i in 1..=3 {
            text += &pod(&format!("{app}-{i}"), app, &format!("127.0.0.{}", base + i));
        }
        text += &service(app, &format!("10.96.0.{base}"), "http");
    }
    text += &pod("pooled-1", "pooled", "127.0.0.81");
    text += &service("pooled", "10.96.0.80", "http");
    text += &pod("idle-1", "idle", "127.0.0.101");
    text += &service("idle", "10.96.0.100", "http");
    text += &pod("multiplexed-1", "multiplexed", "127.0.0.111");
    text += &service("multiplexed", "10.96.0.110", "http2");
    text += &pod("silent-1", "silent", "127.0.0.121");
    text += &service("silent", "10.96.0.120", "http2");
    text += &pod("capped-1", "capped", "127.0.0.131");
    text += &service("capped", "10.96.0.130", "http");
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: demo}
spec:
  host: flaky
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 1s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky, namespace: demo}
spec:
  host: sticky
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
    outlierDetection:
      consecutive5xxErrors: 1
      baseEjectionTime: 30s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cookie, namespace: demo}
spec:
  host: cookie
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, path: /, ttl: 60s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: session, namespace: demo}
spec:
  host: session
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: user}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pooled, namespace: demo}
spec:
  host: pooled
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: idle, namespace: demo}
spec:
  host: idle
  trafficPolicy:
    connectionPool:
      http: {idleTimeout: 300ms}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: multiplexed, namespace: demo}
spec:
  host: multiplexed
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 2, idleTimeout: 300ms}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: silent, namespace: demo}
spec:
  host: silent
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 1s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: capped, namespace: demo}
spec:
  host: capped
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: capped, namespace: demo}
spec:
  hosts: [capped]
  http:
  - name: paced
    match: [{uri: {prefix: /paced}}]
    timeout: 3s
    retries: {attempts: 1, perTryTimeout: 300ms}
    route: [{destination: {host: capped}}]
  - name: hurried
    match: [{uri: {prefix: /hurried}}]
    timeout: 200ms
    route: [{destination: {host: capped}}]
  - route: [{destination: {host: capped}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: silent, namespace: demo}
spec:
  hosts: [silent]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: silent}}]
"#;
    text
}

/// Apps on every address of [`topology`] (`flaky-1` answers 500), the configuration built for
/// the client pod; returns its path.
async fn upstream_demo(dir: &Path) -> PathBuf {
    let apps: [(&str, &'static str, u16); 16] = [
        ("127.0.0.51", "flaky-1", 500),
        ("127.0.0.52", "flaky-2", 200),
        ("127.0.0.53", "flaky-3", 200),
        ("127.0.0.61", "sticky-1", 200),
        ("127.0.0.62", "sticky-2", 200),
        ("127.0.0.63", "sticky-3", 200),
        ("127.0.0.71", "cookie-1", 200),
        ("127.0.0.72", "cookie-2", 200),
        ("127.0.0.73", "cookie-3", 200),
        ("127.0.0.81", "pooled-1", 200),
        ("127.0.0.91", "session-1", 200),
        ("127.0.0.92", "session-2", 200),
        ("127.0.0.93", "session-3", 200),
        ("127.0.0.101", "idle-1", 200),
        ("127.0.0.111", "multiplexed-1", 200),
        ("127.0.0.131", "capped-1", 200),
    ];
    // One port free on every address: a port free on 127.0.0.51 may still be held on
    // 127.0.0.121 by an earlier test's silent socket, which lives as long as the process.
    let (port, listeners, silent_socket) = (0..50)
        .find_map(|_| {
            let probe = std::net::TcpListener::bind("127.0.0.51:0").ok()?;
            let port = probe.local_addr().ok()?.port();
            drop(probe);
            let listeners = apps
                .iter()
                .map(|(ip, _, _)| std::net::TcpListener::bind(format!("{ip}:{port}")))
                .collect::<std::io::Result<Vec<_>>>()
                .ok()?;
            let silent_socket = bind_silent(format!("127.0.0.121:{port}").parse().ok()?).ok()?;
            Some((port, listeners, silent_socket))
        })
        .expect("a port free on every test address");
    for (listener, (_, name, status)) in listeners.into_iter().zip(apps) {
        app(listener, name, status).await;
    }
    silent(silent_socket);
    let input = dir.join("upstream.yaml");
    std::fs::write(&input, topology(port)).expect("write topology");
    let output = dir.join("client.json");
    routes_build(&[input.to_str().expect("utf-8")], "demo/client", &output);
    output
}

/// The `/clusters` lines of one endpoint.
async fn endpoint_lines(proxy: &TestProxy, address_prefix: &str) -> Vec<String> {
    let (_, clusters) = http(proxy.admin(), "GET", "/clusters").await;
    clusters
        .lines()
        .filter(|l| l.contains(&format!("::{address_prefix}")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_endpoint_answering_5xx_is_ejected_shown_in_clusters_and_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let proxy = demo_proxy(&config, FLAKY).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;

    // Round robin over three: flaky-1 answers every third request with 500; its second 500
    // ejects it (consecutive5xxErrors: 2).
    let mut errors = 0;
    for _ in 0..6 {
        let answer = conn.get("/", &[]).await;
        if answer.status == 500 {
            assert_eq!(answer.version(), "flaky-1");
            errors += 1;
        }
    }
    assert_eq!(errors, 2, "two 500s, then ejected");
    let lines = endpoint_lines(&proxy, "127.0.0.51:").await;
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("::health_flags::/failed_outlier_check")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("::outlier_ejections::1")),
        "{lines:?}"
    );
    let (_, json) = http(proxy.admin(), "GET", "/clusters?format=json").await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let flaky = json["clusters"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["name"] == "outbound|9080||flaky.demo.svc.cluster.local")
        })
        .expect("the flaky cluster");
    let bad = flaky["endpoints"]
        .as_array()
        .and_then(|all| {
            all.iter().find(|e| {
                e["address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.51:"))
            })
        })
        .expect("flaky-1");
    assert_eq!(bad["ejected"], true, "{bad}");
    assert_eq!(bad["ejections"], 1);

    // While ejected, traffic goes to the healthy two only.
    let mut versions = BTreeSet::new();
    for _ in 0..20 {
        let answer = conn.get("/", &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        versions.insert(answer.version().to_owned());
    }
    assert_eq!(
        versions,
        BTreeSet::from(["flaky-2".to_owned(), "flaky-3".to_owned()])
    );

    // After baseEjectionTime x 1 it is back in the pool.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lines = endpoint_lines(&proxy, "127.0.0.51:").await;
    assert!(
        lines.iter().any(|l| l.ends_with("::health_flags::healthy")),
        "{lines:?}"
    );
    let mut back = false;
    for _ in 0..3 {
        back |= conn.get("/", &[]).await.version() == "flaky-1";
    }
    assert!(back, "flaky-1 gets traffic again after its ejection time");
}

#[tokio::test]
async fn a_header_hash_keeps_each_user_on_one_endpoint_and_an_ejection_moves_only_its_users() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let proxy = demo_proxy(&config, STICKY).await;
    let (_, clusters) = http(proxy.admin(), "GET", "/clusters").await;
    assert!(
        clusters.contains("outbound|9080||sticky.demo.svc.cluster.local::lb_policy::RING_HASH"),
        "{clusters}"
    );
    let users: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    let mut before = Vec::new();
    for user in &users {
        let mut seen = BTreeSet::new();
        // Over new connections each time: the key decides, not the connection.
        for _ in 0..4 {
            let mut conn = Conn::open(proxy.outbound(), false).await;
            let answer = conn.get("/", &[("x-user", user)]).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            seen.insert(answer.version().to_owned());
        }
        assert_eq!(seen.len(), 1, "{user} moved: {seen:?}");
        before.push(seen.pop_first().expect("one"));
    }
    let spread: BTreeSet<&String> = before.iter().collect();
    assert!(spread.len() >= 2, "24 users all on {spread:?}");

    // One 500 ejects the first user's endpoint (consecutive5xxErrors: 1).
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let failed = conn.get("/fail", &[("x-user", &users[0])]).await;
    assert_eq!(failed.status, 500);
    let ejected = failed.version().to_owned();
    assert_eq!(ejected, before[0]);
    for (user, was) in users.iter().zip(&before) {
        let now = conn.get("/", &[("x-user", user)]).await;
        assert_eq!(now.status, 200, "{now:?}");
        if *was == ejected {
            assert_ne!(
                now.version(),
                ejected,
                "{user} still on the ejected endpoint"
            );
        } else {
            assert_eq!(
                now.version(),
                was,
                "{user} moved although its endpoint is fine"
            );
        }
    }
}

#[tokio::test]
async fn a_cookie_with_a_ttl_is_generated_when_absent_and_then_sticks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let proxy = demo_proxy(&config, COOKIE).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let first = conn.get("/", &[]).await;
    assert_eq!(first.status, 200, "{first:?}");
    let set = first.headers.get("set-cookie").expect("a generated cookie");
    assert!(set.starts_with("user=\""), "{set}");
    assert!(set.ends_with("; Max-Age=60; Path=/; HttpOnly"), "{set}");
    let cookie = set.split(';').next().expect("name=value").to_owned();
    for _ in 0..10 {
        let mut conn = Conn::open(proxy.outbound(), false).await;
        let answer = conn.get("/", &[("cookie", &cookie)]).await;
        assert_eq!(answer.version(), first.version(), "{cookie}");
        assert!(
            !answer.headers.contains_key("set-cookie"),
            "kept, not replaced"
        );
    }
}

#[tokio::test]
async fn a_cookie_without_a_ttl_is_never_generated_but_sticks_when_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let proxy = demo_proxy(&config, SESSION).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let mut without = BTreeSet::new();
    for _ in 0..30 {
        let answer = conn.get("/", &[]).await;
        assert!(!answer.headers.contains_key("set-cookie"), "{answer:?}");
        without.insert(answer.version().to_owned());
    }
    assert!(
        without.len() >= 2,
        "no key: the ring is entered at random, got {without:?}"
    );
    let pinned = conn.get("/", &[("cookie", "theme=dark; user=alice")]).await;
    for _ in 0..10 {
        let answer = conn.get("/", &[("cookie", "user=alice")]).await;
        assert_eq!(answer.version(), pinned.version());
    }
}

#[tokio::test]
async fn a_bad_consistent_hash_refuses_the_file_naming_the_cluster_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("JSON");
    let cluster = "outbound|9080||cookie.demo.svc.cluster.local";
    json["clusters"][cluster]["consistentHash"] = serde_json::json!({"httpCookie": {"ttl": "1m"}});
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, json.to_string()).expect("write");
    let error = outrigger_proxy::l7::source::load(&bad).expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: clusters.{cluster}.consistentHash.httpCookie.name: required: the cookie's name",
            bad.display()
        )
    );
}

/// The upstream connection (the proxy's address and port the app saw) of each of `n` calls on
/// one downstream keep-alive connection, `pause` apart.
async fn upstream_peers(proxy: &TestProxy, n: usize, pause: Duration) -> Vec<String> {
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let mut peers = Vec::new();
    for _ in 0..n {
        let answer = conn.get("/", &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        peers.push(answer.headers["x-peer"].clone());
        tokio::time::sleep(pause).await;
    }
    peers
}

fn distinct(peers: &[String]) -> usize {
    peers.iter().collect::<BTreeSet<_>>().len()
}

#[tokio::test]
async fn max_requests_per_connection_one_opens_a_connection_per_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let pooled = demo_proxy(&config, POOLED).await;
    let peers = upstream_peers(&pooled, 5, Duration::ZERO).await;
    assert_eq!(distinct(&peers), 5, "{peers:?}");
    let lines = endpoint_lines(&pooled, "127.0.0.81:").await;
    assert!(
        lines.iter().any(|l| l.ends_with("::cx_total::5")),
        "{lines:?}"
    );
    // Without the limit the keep-alive connection is reused.
    let plain = demo_proxy(&config, FLAKY).await;
    let mut conn = Conn::open(plain.outbound(), false).await;
    let mut by_version = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for _ in 0..9 {
        let answer = conn.get("/", &[]).await;
        by_version
            .entry(answer.version().to_owned())
            .or_default()
            .insert(answer.headers["x-peer"].clone());
    }
    assert!(
        by_version.values().all(|peers| peers.len() == 1),
        "one connection per endpoint: {by_version:?}"
    );
}

#[tokio::test]
async fn idle_timeout_closes_idle_upstream_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    // One worker: upstream pools are per worker, and the calls below come on two downstream
    // connections, which two workers could each take.
    let args = RunArgs {
        config_file: Some(config.clone()),
        admin_port: Some(0),
        concurrency: Some(1),
        ..RunArgs::default()
    };
    let proxy = start_proxy(fixed(IDLE.parse().expect("addr")), args).await;
    let quick = upstream_peers(&proxy, 3, Duration::from_millis(50)).await;
    assert_eq!(distinct(&quick), 1, "reused within idleTimeout: {quick:?}");
    let slow = upstream_peers(&proxy, 3, Duration::from_millis(600)).await;
    assert_eq!(distinct(&slow), 3, "closed after 300 ms idle: {slow:?}");
    let lines = endpoint_lines(&proxy, "127.0.0.101:").await;
    assert!(
        lines.iter().any(|l| l.ends_with("::cx_active::0")),
        "every connection closed: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("::cx_total::3")),
        "the quick calls' connection, reused by the first slow call, then two more: {lines:?}"
    );
}

#[tokio::test]
async fn http2_upstream_sends_the_route_authority_and_rolls_over_after_max_requests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let proxy = demo_proxy(&config, MULTIPLEXED).await;
    let mut conn = Conn::open(proxy.outbound(), false).await;
    let mut peers = Vec::new();
    for _ in 0..4 {
        let answer = conn.get("/", &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body.contains("protocol=HTTP/2.0\n"),
            "{}",
            answer.body
        );
        assert!(
            answer.body.contains("authority=reviews:9080\n"),
            "the client's authority, not the endpoint address: {}",
            answer.body
        );
        peers.push(answer.headers["x-peer"].clone());
    }
    assert_eq!(peers[0], peers[1], "{peers:?}");
    assert_ne!(
        peers[1], peers[2],
        "a new connection after 2 streams: {peers:?}"
    );
    assert_eq!(peers[2], peers[3], "{peers:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = conn.get("/", &[]).await;
    assert_ne!(
        after.headers["x-peer"], peers[3],
        "closed after 300 ms idle"
    );
}

#[tokio::test]
async fn a_request_longer_than_the_idle_timeout_is_not_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    // idleTimeout 300 ms on both: HTTP/1.1 (idle) and HTTP/2 (multiplexed) upstreams.
    for service in [IDLE, MULTIPLEXED] {
        let proxy = demo_proxy(&config, service).await;
        let mut conn = Conn::open(proxy.outbound(), false).await;
        let answer = conn.get("/slow", &[]).await;
        assert_eq!(answer.status, 200, "{service}: {answer:?}");
        assert!(answer.body.starts_with("version="), "{service}: {answer:?}");
    }
}

#[tokio::test]
async fn requests_waiting_for_a_failing_http2_connect_fail_with_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = upstream_demo(dir.path()).await;
    let proxy = demo_proxy(&config, SILENT).await;
    let addr = proxy.outbound();
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { Conn::open(addr, false).await.get("/", &[]).await }))
        .collect();
    for call in calls {
        let answer = call.await.expect("call");
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.body.contains("connection failure"), "{answer:?}");
    }
    // One connect attempt (1 s) for all four, not one after the other (4 s).
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test]
async fn max_connections_one_serves_a_pending_request_in_turn_and_overflows_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = capped_proxy(dir.path()).await;
    let addr = proxy.outbound();
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let answer = Conn::open(addr, false).await.get("/slow", &[]).await;
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("call"));
    }
    answers.sort_by_key(|(answer, took)| (answer.status, *took));
    let statuses: Vec<u16> = answers.iter().map(|(a, _)| a.status).collect();
    assert_eq!(statuses, [200, 200, 503], "{answers:?}");
    let (first, second) = (&answers[0], &answers[1]);
    assert_eq!(
        first.0.headers["x-peer"], second.0.headers["x-peer"],
        "one upstream connection"
    );
    assert!(
        second.1 >= Duration::from_millis(1400),
        "the pending one after the first (700 ms each): {answers:?}"
    );
    let lines = endpoint_lines(&proxy, "127.0.0.131:").await;
    assert!(
        lines.iter().any(|l| l.ends_with("::cx_total::1")),
        "{lines:?}"
    );
    let (_, clusters) = http(proxy.admin(), "GET", "/clusters").await;
    let cluster = "outbound|9080||capped.demo.svc.cluster.local";
    for line in [
        "::circuit_breakers::max_connections::1",
        "::circuit_breakers::max_pending_requests::1",
        "::circuit_breakers::max_requests::unlimited",
        "::circuit_breakers::rq_overflow::1",
        "::cx_active::1",
        "::rq_pending_active::0",
    ] {
        assert!(
            clusters.contains(&format!("{cluster}{line}\n")),
            "{line}: {clusters}"
        );
    }
    assert_requests_flagged(&proxy, "503", "UO", 1.0).await;
}

/// `istio_requests_total` of the responses with this code and Envoy response flag is `count`.
async fn assert_requests_flagged(proxy: &TestProxy, code: &str, flags: &str, count: f64) {
    let text = metrics(proxy).await;
    let labels = [
        format!(r#"response_code="{code}""#),
        format!(r#"response_flags="{flags}""#),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    assert_eq!(
        sample(&text, "istio_requests_total{", &labels),
        Some(count),
        "{code} {flags}: {text}"
    );
}

/// The capped cluster (`maxConnections: 1`, one pending request) behind a proxy with one
/// worker (two workers would each hold the slot in turn over their own connection).
async fn capped_proxy(dir: &Path) -> TestProxy {
    let config = upstream_demo(dir).await;
    let args = RunArgs {
        config_file: Some(config),
        admin_port: Some(0),
        concurrency: Some(1),
        ..RunArgs::default()
    };
    start_proxy(fixed(CAPPED.parse().expect("addr")), args).await
}

#[tokio::test]
async fn per_try_timeout_starts_when_the_connection_is_in_hand_and_the_route_timeout_bounds_the_wait()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = capped_proxy(dir.path()).await;
    let addr = proxy.outbound();
    let get = move |path: &'static str| async move {
        let started = std::time::Instant::now();
        let answer = Conn::open(addr, false).await.get(path, &[]).await;
        (answer, started.elapsed())
    };
    // `/slow` holds the only connection for 700 ms; `/paced` (perTryTimeout 300 ms, timeout
    // 3 s) waits about 600 ms for it, longer than its per-try timeout, then is answered at once.
    let holder = tokio::spawn(get("/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (paced, took) = get("/paced").await;
    assert_eq!(paced.status, 200, "served once the slot freed: {paced:?}");
    assert!(
        took >= Duration::from_millis(400),
        "it did wait for the slot: {took:?}"
    );
    assert_eq!(holder.await.expect("holder").0.status, 200);
    // The route's timeout still bounds the wait: `/hurried` (200 ms) gives up waiting.
    let holder = tokio::spawn(get("/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (hurried, took) = get("/hurried").await;
    assert_eq!(hurried.status, 504, "{hurried:?}");
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert_eq!(holder.await.expect("holder").0.status, 200);
    // The per-try timeout still bounds the try itself once it has its connection.
    let (slow, took) = get("/paced/slow").await;
    assert_eq!(slow.status, 504, "{slow:?}");
    assert_eq!(slow.body, "upstream request timeout");
    assert!(
        took < Duration::from_millis(650),
        "per try, not the app's 700 ms: {took:?}"
    );
    assert_requests_flagged(&proxy, "504", "UT", 2.0).await;
}

#[tokio::test]
async fn an_upgraded_connection_holds_its_max_connections_slot_until_the_tunnel_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = capped_proxy(dir.path()).await;
    let addr = proxy.outbound();
    let mut tunnel = open_websocket(addr).await;
    tunnel.write_all(b"ping").await.expect("send");
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping");
    let (_, clusters) = http(proxy.admin(), "GET", "/clusters").await;
    let cluster = "outbound|9080||capped.demo.svc.cluster.local";
    assert!(
        clusters.contains(&format!("{cluster}::cx_active::1\n")),
        "the tunnel's connection is open: {clusters}"
    );
    // The tunnel holds the only slot: the next request waits (http1MaxPendingRequests 1) and
    // the one after overflows.
    let waiting = tokio::spawn(async move { Conn::open(addr, false).await.get("/", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a request waits while the tunnel is open"
    );
    let overflow = Conn::open(addr, false).await.get("/", &[]).await;
    assert_eq!(overflow.status, 503, "{overflow:?}");
    // Closing the tunnel gives the slot to the waiting request.
    drop(tunnel);
    let served = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("served once the tunnel closed")
        .expect("the call ran");
    assert_eq!(served.status, 200, "{served:?}");
    // And a new tunnel gets a connection again.
    let mut again = open_websocket(addr).await;
    again.write_all(b"pong").await.expect("send");
    again.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"pong");
    assert_requests_flagged(&proxy, "503", "UO", 1.0).await;
}
