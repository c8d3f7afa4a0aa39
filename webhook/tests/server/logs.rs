//! The per-request log line of the real binary (JSON, `info`): one line per admission request
//! whose span names the uid, namespace, pod (or generateName) and the decision.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::pod_review;
use crate::process::{Client, Injector};

/// The JSON log line whose message is `message` and whose span has `uid`.
fn line_for(injector: &Injector, message: &str, uid: &str) -> Value {
    let needle = format!(r#""uid":"{uid}""#);
    let line = injector.wait_log(&needle, Duration::from_secs(10));
    let v: Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["fields"]["message"], message, "{line}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_logs_namespace_pod_and_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let injector = Injector::start(&["--self-signed-dir", certs.to_str().expect("utf-8 path")]);
    let client = Client::trusting(&certs.join("ca.crt"));
    let mut conn = client.connect(injector.addr).await.expect("connect");

    let mut injected = pod_review();
    injected["request"]["uid"] = json!("log-injected");
    let (_, v) = conn.post("/inject", &injected).await.expect("response");
    assert_eq!(v["response"]["patchType"], "JSONPatch", "{v}");
    let line = line_for(&injector, "injected", "log-injected");
    assert_eq!(line["level"], "INFO");
    assert_eq!(
        line["span"],
        json!({"name": "admission", "uid": "log-injected", "namespace": "shop",
               "pod": "cart-7d9f8b6c5d-", "decision": "injected"}),
        "{line}"
    );
    assert_eq!(line["fields"]["dry_run"], false);

    let mut skipped = pod_review();
    skipped["request"]["uid"] = json!("log-skipped");
    skipped["request"]["object"]["metadata"]["name"] = json!("cart-0");
    skipped["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    conn.post("/inject", &skipped).await.expect("response");
    let line = line_for(&injector, "allowed without injection", "log-skipped");
    assert_eq!(
        line["span"]["pod"], "cart-0",
        "the name wins over generateName"
    );
    assert_eq!(line["span"]["decision"], "skipped");
    assert_eq!(line["fields"]["reason"], "host_network");

    let mut broken = pod_review();
    broken["request"]["uid"] = json!("log-broken");
    broken["request"]["operation"] = json!(7);
    conn.post("/inject", &broken).await.expect("response");
    let line = line_for(&injector, "not an AdmissionReview", "log-broken");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["span"]["decision"], "failed");
    let error = line["fields"]["error"].as_str().expect("error field");
    assert!(error.contains("operation"), "{error}");
}

/// The value of `name{labels}` in a Prometheus text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_counted_and_logged_at_warn_once_per_peer_and_reason() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let injector = Injector::start(&["--self-signed-dir", certs.to_str().expect("utf-8 path")]);
    // A port scanner: connect and close, 50 times.
    for _ in 0..50 {
        let tcp = tokio::net::TcpStream::connect(injector.addr)
            .await
            .expect("connect");
        drop(tcp);
    }
    // Not TLS at all, 20 times.
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(injector.addr)
            .await
            .expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = injector.metrics().await;
        let closed = sample(
            &metrics,
            r#"outrigger_injector_tls_handshake_failures_total{reason="closed"}"#,
        );
        let tls = sample(
            &metrics,
            r#"outrigger_injector_tls_handshake_failures_total{reason="tls"}"#,
        );
        if closed >= 50.0 && tls >= 20.0 || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sample(
            &metrics,
            r#"outrigger_injector_tls_handshake_failures_total{reason="closed"}"#
        ),
        50.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"outrigger_injector_tls_handshake_failures_total{reason="tls"}"#
        ),
        20.0,
        "{metrics}"
    );
    let tls_line = injector.wait_log(r#""class":"tls""#, Duration::from_secs(5));
    let line: Value = serde_json::from_str(&tls_line).expect("JSON log line");
    assert_eq!(line["level"], "WARN", "{tls_line}");
    assert!(
        line["fields"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{tls_line}"
    );
    assert!(
        line["fields"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{tls_line}"
    );
    injector.wait_log(r#""class":"closed""#, Duration::from_secs(5));
    // 70 failures from one address, two reasons: two lines.
    assert_eq!(injector.count_logs("TLS handshake failed"), 2);
}
