//! Memory under many large pods in flight (issue 14 #2): the budget of request bodies in flight
//! keeps the injector's peak RSS under the Deployment's 128 Mi limit, and a request that does
//! not fit waits its turn, then is answered 503 past its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use outrigger_webhook::server::app;
use outrigger_webhook::server::body_budget::BodyBudget;
use serde_json::Value;

use crate::common::{pod_review, router, send};
use crate::process::{Client, Injector};

/// The injector's memory limit in `manifests/webhook/base/deployment.yaml`.
const MEMORY_LIMIT_MIB: f64 = 128.0;

/// A distinct pod CREATE review of about `bytes` (a random annotation as ballast), as one
/// tenant would send to push the injector over its limit.
fn large_review(seed: u64, bytes: usize) -> Vec<u8> {
    let mut review = pod_review();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let ballast: String = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    review["request"]["uid"] = Value::String(format!("00000000-0000-4000-8000-{seed:012}"));
    let metadata = &mut review["request"]["object"]["metadata"];
    metadata["annotations"]["bench.outrigger.io/ballast"] = Value::String(ballast);
    metadata["labels"]["pod-template-hash"] = Value::String(format!("h{seed}"));
    serde_json::to_vec(&review).expect("json")
}

fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "heavy (24 pods of 3-5 MiB at once through the real binary); CI runs it with --include-ignored"]
async fn many_large_pods_in_flight_stay_under_the_memory_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let injector = Injector::start(&["--self-signed-dir", certs.to_str().expect("utf-8")]);
    let client = Client::trusting(&certs.join("ca.crt"));
    let at_rest = vm_hwm_mib(injector.pid());
    let connections = 24u64;
    // Every body and connection ready first, then all requests at once.
    let bodies: Vec<Vec<u8>> = (0..connections)
        .map(|seed| large_review(seed, (3 << 20) + (seed as usize % 9) * (256 << 10)))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let mut tasks = Vec::new();
    for body in bodies {
        let mut connection = client.connect(injector.addr).await.expect("TLS connection");
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let (status, answer) = connection
                .post_bytes("/inject", body)
                .await
                .expect("answer");
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
            assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await.expect("request task");
    }
    let peak = vm_hwm_mib(injector.pid());
    eprintln!(
        "{connections} large pods in flight: {:.1} s, injector RSS at rest {at_rest:.1} MiB, peak {peak:.1} MiB",
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak < MEMORY_LIMIT_MIB,
        "peak RSS {peak:.1} MiB is over the {MEMORY_LIMIT_MIB} MiB limit"
    );
}

fn review_request(body: Vec<u8>) -> Request<Body> {
    Request::post("/inject")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn a_request_waits_for_its_share_of_the_body_budget_then_is_answered() {
    let (_, mut state) = router();
    state.bodies = BodyBudget::new(64 * 1024);
    let router = app::app(state.clone());
    let body = serde_json::to_vec(&pod_review()).expect("json");
    let held = state
        .bodies
        .reserve(64 * 1024, Duration::from_secs(1))
        .await
        .expect("whole budget");
    let request = tokio::spawn({
        let router = router.clone();
        let body = body.clone();
        async move { send(&router, review_request(body)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !request.is_finished(),
        "the request waits while the budget is taken"
    );
    drop(held);
    let (status, answer) = request.await.expect("task");
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(state.bodies.free(), 64 * 1024, "the share was given back");
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("outrigger_injector_body_budget_waits_total 1\n"),
        "the wait is counted: {metrics}"
    );
}

#[tokio::test]
async fn a_request_that_waits_past_the_read_timeout_gets_503_naming_the_budget() {
    let (_, mut state) = router();
    state.bodies = BodyBudget::new(64 * 1024);
    state.body_timeout = Duration::from_millis(300);
    let router = app::app(state.clone());
    let _held = state
        .bodies
        .reserve(64 * 1024, Duration::from_secs(1))
        .await
        .expect("whole budget");
    let body = serde_json::to_vec(&pod_review()).expect("json");
    let (status, answer) = send(&router, review_request(body)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer.contains("sidecar injector busy")
            && answer.contains("--max-inflight-body-bytes")
            && answer.contains("65536 bytes"),
        "{answer}"
    );
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("reason=\"busy\""),
        "the refusal is counted: {metrics}"
    );
}

#[test]
fn large_reviews_are_distinct_and_sized() {
    let a = large_review(1, 1 << 20);
    let b = large_review(2, 1 << 20);
    assert_ne!(a, b);
    assert!(a.len() > 1 << 20);
}
