//! Connection limits with real clients: HTTP/2 and HTTP/1 idle timeouts, the metrics port's
//! header timeout, the connection cap, idle connections at SIGTERM, the shutdown delay, and 413
//! for a body over the limit sent without `Expect: 100-continue`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use crate::common::pod_review;
use crate::process::{Client, Injector};

fn certs_arg(dir: &tempfile::TempDir) -> String {
    dir.path()
        .join("certs")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

fn ca(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("certs").join("ca.crt")
}

fn review_request(addr: SocketAddr, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(format!("https://localhost:{}/inject", addr.port()))
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

/// An HTTP/2 connection that has made one admission request; the handle ends when the server
/// closes the connection.
async fn h2_connection(client: &Client, addr: SocketAddr) -> JoinHandle<()> {
    let tls = client.connect_raw(addr).await.expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = serde_json::to_vec(&pod_review()).expect("json");
    let response = sender
        .send_request(review_request(addr, body))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.expect("body");
    // The sender is kept alive by the connection task; dropping it would close from our side.
    tokio::spawn(async move {
        let _keep = sender;
        std::future::pending::<()>().await;
    });
    task
}

/// An HTTP/1.1 keep-alive connection that has made one request; ends when the server closes it.
async fn h1_connection(client: &Client, addr: SocketAddr) -> JoinHandle<()> {
    let tls = client.connect_raw(addr).await.expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = serde_json::to_vec(&pod_review()).expect("json");
    let response = sender
        .send_request(review_request(addr, body))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.expect("body");
    tokio::spawn(async move {
        let _keep = sender;
        std::future::pending::<()>().await;
    });
    task
}

async fn all_closed_within(tasks: Vec<JoinHandle<()>>, limit: Duration) {
    let ended = tokio::time::timeout(limit, futures::future::join_all(tasks))
        .await
        .expect("the server closed every idle connection");
    for end in ended {
        end.expect("connection check passed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_http2_connections_are_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(&[
        "--self-signed-dir",
        &certs_arg(&dir),
        "--idle-timeout-seconds",
        "2",
    ]);
    let client = Client::trusting_h2(&ca(&dir));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let opened = Instant::now();
        let task = h2_connection(&client, injector.addr).await;
        tasks.push(tokio::spawn(async move {
            let _ = task.await;
            let lived = opened.elapsed();
            assert!(
                lived >= Duration::from_millis(1800),
                "closed after {lived:?}"
            );
        }));
    }
    all_closed_within(tasks, Duration::from_secs(20)).await;
    // A keep-alive HTTP/1.1 connection too.
    let client = Client::trusting(&ca(&dir));
    let h1 = h1_connection(&client, injector.addr).await;
    all_closed_within(vec![h1], Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_never_asks_is_closed_after_the_read_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(&[
        "--self-signed-dir",
        &certs_arg(&dir),
        "--read-timeout-seconds",
        "1",
        "--idle-timeout-seconds",
        "60",
    ]);
    let client = Client::trusting_h2(&ca(&dir));
    let tls = client.connect_raw(injector.addr).await.expect("TLS");
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), conn)
        .await
        .expect("closed by the server")
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    drop(sender);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_cuts_off_a_client_that_never_finishes_its_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(&[
        "--self-signed-dir",
        &certs_arg(&dir),
        "--read-timeout-seconds",
        "1",
    ]);
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(injector.metrics_addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), tcp.read_to_end(&mut rest))
        .await
        .expect("closed before the test's own timeout");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&rest).contains(" 200 "),
        "{rest:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
    // Real scrapes still work.
    assert!(injector.metrics().await.contains("# EOF"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(&[
        "--self-signed-dir",
        &certs_arg(&dir),
        "--max-connections",
        "2",
        "--idle-timeout-seconds",
        "60",
    ]);
    let client = Client::trusting(&ca(&dir));
    let mut first = client.connect(injector.addr).await.expect("first");
    let second = client.connect(injector.addr).await.expect("second");
    let review = pod_review();
    assert_eq!(first.post("/inject", &review).await.expect("served").0, 200);
    // The third is queued: TCP connects (the kernel's accept queue), TLS does not complete.
    let third = tokio::spawn({
        let client = Client::trusting(&ca(&dir));
        let addr = injector.addr;
        async move {
            let mut conn = client
                .connect(addr)
                .await
                .expect("third connects in the end");
            conn.post("/inject", &pod_review()).await.expect("served").0
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !third.is_finished(),
        "the third connection was served over the cap"
    );
    drop(second);
    let status = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot is free")
        .expect("task");
    assert_eq!(status, 200);
    assert_eq!(
        first
            .post("/inject", &review)
            .await
            .expect("still served")
            .0,
        200
    );
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_outrigger-injector"))
        .args(["--max-connections", "0", "--check-args"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--max-connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_idle_connections_returns_well_before_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut injector = Injector::start(&[
        "--self-signed-dir",
        &certs_arg(&dir),
        "--grace-period-seconds",
        "30",
        "--shutdown-delay-seconds",
        "0",
    ]);
    let h2 = Client::trusting_h2(&ca(&dir));
    let h1 = Client::trusting(&ca(&dir));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(h2_connection(&h2, injector.addr).await);
        tasks.push(h1_connection(&h1, injector.addr).await);
    }
    // And some that never finished a handshake or a request.
    let mut raw = Vec::new();
    for _ in 0..10 {
        raw.push(
            tokio::net::TcpStream::connect(injector.addr)
                .await
                .expect("tcp"),
        );
    }
    let started = Instant::now();
    injector.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let status = injector.wait_exit(Duration::from_secs(25));
        (status, injector)
    })
    .await
    .expect("join");
    let took = started.elapsed();
    assert_eq!(status.0.code(), Some(0));
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    status
        .1
        .wait_log("all connections drained", Duration::from_secs(1));
    all_closed_within(tasks, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_it_keeps_serving_not_ready_for_the_shutdown_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut injector = Injector::start(&[
        "--self-signed-dir",
        &certs_arg(&dir),
        "--shutdown-delay-seconds",
        "3",
    ]);
    let client = Client::trusting(&ca(&dir));
    let mut before = client.connect(injector.addr).await.expect("connect");
    let readyz =
        async |conn: &mut crate::process::Connection| conn.get("/readyz").await.expect("readyz");
    assert_eq!(readyz(&mut before).await, 200);
    let signalled = Instant::now();
    injector.terminate();
    injector.wait_log(
        "serving until the shutdown delay is over",
        Duration::from_secs(5),
    );
    assert_eq!(readyz(&mut before).await, 503, "not ready during the delay");
    // New connections and admission requests are still served meanwhile.
    let mut during = client
        .connect(injector.addr)
        .await
        .expect("still accepting");
    assert_eq!(
        during
            .post("/inject", &pod_review())
            .await
            .expect("served")
            .0,
        200
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the checks ran inside the delay"
    );
    injector.wait_log("stopped accepting", Duration::from_secs(10));
    assert!(signalled.elapsed() >= Duration::from_millis(2900));
    assert!(tokio::net::TcpStream::connect(injector.addr).await.is_err());
    let status = injector.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

/// A body over the 6 MiB limit, sent whole without waiting for `100 Continue`.
fn oversized() -> Vec<u8> {
    let mut body = serde_json::to_vec(&pod_review()).expect("json");
    body.truncate(body.len() - 1);
    body.extend_from_slice(b",\"padding\":\"");
    body.resize(7 * 1024 * 1024, b'x');
    body.extend_from_slice(b"\"}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_on_http1_and_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(&["--self-signed-dir", &certs_arg(&dir)]);
    for _ in 0..3 {
        // HTTP/1.1 with Content-Length.
        let tls = Client::trusting(&ca(&dir))
            .connect_raw(injector.addr)
            .await
            .expect("TLS");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1");
        tokio::spawn(conn);
        let response = sender
            .send_request(review_request(injector.addr, oversized()))
            .await
            .expect("HTTP/1.1: an answer, not a reset");
        assert_eq!(response.status(), 413);
        let text = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(String::from_utf8_lossy(&text).contains("exceeds the limit"));

        // HTTP/1.1 chunked (no length to refuse up front).
        let mut tls = Client::trusting(&ca(&dir))
            .connect_raw(injector.addr)
            .await
            .expect("TLS");
        let body = oversized();
        let mut request = b"POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for chunk in body.chunks(256 * 1024) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        tls.write_all(&request)
            .await
            .expect("whole request written");
        tls.flush().await.expect("flush");
        let mut head = vec![0u8; 64];
        let n = tls
            .read(&mut head)
            .await
            .expect("HTTP/1.1 chunked: an answer, not a reset");
        assert!(
            String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 413"),
            "{:?}",
            String::from_utf8_lossy(&head[..n])
        );

        // HTTP/2.
        let tls = Client::trusting_h2(&ca(&dir))
            .connect_raw(injector.addr)
            .await
            .expect("TLS");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("HTTP/2");
        tokio::spawn(conn);
        let response = sender
            .send_request(review_request(injector.addr, oversized()))
            .await
            .expect("HTTP/2: an answer, not a stream error");
        assert_eq!(response.status(), 413);
        let _ = response
            .into_body()
            .collect()
            .await
            .expect("HTTP/2 body, not a reset");
    }
    let metrics = injector.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("body_too_large") && l.trim_end().ends_with(" 9")),
        "{metrics}"
    );
}
