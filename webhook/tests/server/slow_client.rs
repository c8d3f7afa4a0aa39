//! Read timeouts: a client that stalls during the handshake, the headers or the body loses its
//! connection (or gets 408) after `--read-timeout-seconds`, and the server keeps serving others.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::pod_review;
use crate::process::{Client, Injector};

const TIMEOUT_ARG: &str = "1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let injector = Injector::start(&[
        "--self-signed-dir",
        certs.to_str().expect("utf-8 path"),
        "--read-timeout-seconds",
        TIMEOUT_ARG,
    ]);
    let client = Client::trusting(&certs.join("ca.crt"));

    // No TLS handshake at all: the server closes the TCP connection.
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(injector.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed before the test's own timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "server sent data to a client that never said hello");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // Half the headers, then silence: the connection is closed.
    let started = Instant::now();
    let mut tls = client.connect_raw(injector.addr).await.expect("connect");
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .expect("write");
    tls.flush().await.expect("flush");
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response))
        .await
        .expect("closed before the test's own timeout");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&response).contains(" 200 "),
        "{response:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // Headers, half the body, then silence: 408 names the problem.
    let body = serde_json::to_vec(&pod_review()).expect("json");
    let mut tls = client.connect_raw(injector.addr).await.expect("connect");
    let head = format!(
        "POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(&body[..body.len() / 2]).await.expect("write");
    tls.flush().await.expect("flush");
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut response))
        .await
        .expect("answered before the test's own timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("could not read the request body"), "{text}");

    // Others were served all along.
    let mut conn = client.connect(injector.addr).await.expect("connect");
    let (status, _) = conn.post("/inject", &pod_review()).await.expect("response");
    assert_eq!(status, 200);
}
