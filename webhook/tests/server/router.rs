//! Router tests with `oneshot`: every status code and response shape, no socket.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::common::{pod_review, post_json, router, send};

#[tokio::test]
async fn health_and_readiness() {
    let (app, state) = router();
    let get = |p: &str| Request::get(p).body(Body::empty()).expect("request");
    assert_eq!(send(&app, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(send(&app, get("/readyz")).await.0, StatusCode::OK);
    state.ready.store(false, Ordering::Release);
    let (status, body) = send(&app, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, b"not ready");
    assert_eq!(send(&app, get("/healthz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_method_and_unknown_path() {
    let (app, _) = router();
    let (status, _) = send(
        &app,
        Request::get("/inject")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = send(
        &app,
        Request::post("/mutate")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn content_type_must_be_json() {
    let (app, state) = router();
    for content_type in [Some("text/plain"), Some("application/yaml"), None] {
        let mut request = Request::post("/inject");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let body = serde_json::to_vec(&pod_review()).expect("json");
        let (status, body) = send(&app, request.body(Body::from(body)).expect("request")).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let text = String::from_utf8(body).expect("utf-8");
        assert!(
            text.contains("Content-Type must be application/json"),
            "{text}"
        );
    }
    // Parameters after the media type are fine.
    let request = Request::post("/inject")
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(r#"{"kind":"AdmissionReview"}"#))
        .expect("request");
    assert_eq!(send(&app, request).await.0, StatusCode::OK);
    assert!(
        state
            .metrics
            .render()
            .contains("sidecar_injection_failure_total{reason=\"unsupported_media_type\"} 3")
    );
}

#[tokio::test]
async fn oversized_body_is_413_with_the_limit() {
    let (app, _) = router();
    let big = vec![b' '; outrigger_webhook::server::app::MAX_BODY_BYTES + 1];
    // Declared length over the limit.
    let request = Request::post("/inject")
        .header("content-type", "application/json")
        .header("content-length", big.len().to_string())
        .body(Body::from(big.clone()))
        .expect("request");
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(text.contains("6291456 bytes"), "{text}");
    // Streamed body without a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let request = Request::post("/inject")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("request");
    assert_eq!(send(&app, request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn empty_body_is_400() {
    let (app, _) = router();
    let request = Request::post("/inject")
        .header("content-type", "application/json")
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("request body is empty"));
}

#[tokio::test]
async fn not_an_admission_review_is_denied_readably() {
    let (app, _) = router();
    let request = Request::post("/inject")
        .header("content-type", "application/json")
        .body(Body::from("{broken"))
        .expect("request");
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["allowed"], false);
    let msg = v["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(msg.contains("not valid JSON"), "{msg}");

    // Right envelope, broken request: uid and version are mirrored, the field is named.
    let mut review = pod_review();
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    review["request"]["operation"] = json!(["CREATE"]);
    let (status, v) = post_json(&app, "/inject", &review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(v["response"]["uid"], review["request"]["uid"]);
    assert_eq!(v["response"]["allowed"], false);
    let msg = v["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(msg.contains("operation"), "{msg}");

    let (_, v) = post_json(&app, "/inject", &json!({"apiVersion": "v1", "kind": "Pod"})).await;
    let msg = v["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(msg.contains("unsupported apiVersion \"v1\""), "{msg}");
}

#[tokio::test]
async fn other_kinds_and_operations_pass_unchanged() {
    let (app, state) = router();
    let mut update = pod_review();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = update["request"]["object"].clone();
    let mut deployment = pod_review();
    deployment["apiVersion"] = json!("admission.k8s.io/v1beta1");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    let mut exec = pod_review();
    exec["request"]["subResource"] = json!("ephemeralcontainers");
    for review in [update, deployment, exec] {
        let (status, v) = post_json(&app, "/inject", &review).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["apiVersion"], review["apiVersion"]);
        assert_eq!(
            v["response"],
            json!({"uid": review["request"]["uid"], "allowed": true}),
            "no patch, no status"
        );
    }
    assert!(
        state
            .metrics
            .render()
            .contains("sidecar_injection_requests_total 3")
    );
}

#[tokio::test]
async fn pod_create_without_object_is_denied() {
    let (app, _) = router();
    let mut review = pod_review();
    review["request"]["object"] = json!(null);
    let (_, v) = post_json(&app, "/inject", &review).await;
    assert_eq!(v["response"]["allowed"], false);
    let msg = v["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(msg.contains("no pod object"), "{msg}");
}

#[tokio::test]
async fn metrics_router_serves_prometheus_text() {
    let (app, state) = router();
    post_json(&app, "/inject", &json!({"kind": "x"})).await;
    let metrics = outrigger_webhook::server::app::metrics_app(state.metrics.clone());
    let (status, body) = send(
        &metrics,
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.contains("sidecar_injection_requests_total 1"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_injection_failure_total{reason=\"decode\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_injection_time_seconds_bucket"),
        "{text}"
    );
}
