//! SIGTERM with requests in flight: every started request is answered, then the process exits 0.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::pod_review;
use crate::process::{Client, Injector};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let mut injector = Injector::start(&[
        "--self-signed-dir",
        certs.to_str().expect("utf-8 path"),
        "--grace-period-seconds",
        "20",
        "--shutdown-delay-seconds",
        "0",
    ]);
    let client = Client::trusting(&certs.join("ca.crt"));
    let body = serde_json::to_vec(&pod_review()).expect("json");
    let (head, tail) = body.split_at(body.len() / 2);

    // Start requests that are still sending their body when the signal arrives.
    let mut streams = Vec::new();
    for _ in 0..6 {
        let mut tls = client.connect_raw(injector.addr).await.expect("connect");
        let headers = format!(
            "POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(headers.as_bytes())
            .await
            .expect("write headers");
        tls.write_all(head).await.expect("write first half");
        tls.flush().await.expect("flush");
        streams.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    injector.terminate();
    injector.wait_log("draining connections", Duration::from_secs(10));

    // New connections are refused once the listener is closed.
    let refused = tokio::net::TcpStream::connect(injector.addr).await;
    assert!(refused.is_err(), "listener still accepting after SIGTERM");

    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut tls in streams {
        tls.write_all(tail).await.expect("write second half");
        tls.flush().await.expect("flush");
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.expect("read response");
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"kind\":\"AdmissionReview\""), "{text}");
    }
    let status = injector.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    injector.wait_log("all connections drained", Duration::from_secs(1));
}
