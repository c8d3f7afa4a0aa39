//! Shared fixtures: AdmissionReviews shaped like kube-apiserver's, and router helpers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use outrigger_inject::Config;
use outrigger_webhook::server::app::{self, AppState};
use outrigger_webhook::server::config_reload::ConfigStore;
use outrigger_webhook::server::metrics::Metrics;
use outrigger_webhook::server::replica_memo::Limits;
use serde_json::Value;
use tower::ServiceExt as _;

/// A pod CREATE review as the API server sends it (two containers, probes, defaults filled in).
pub fn pod_review() -> Value {
    serde_json::from_str(include_str!("fixtures/pod-review.json")).expect("fixture is valid JSON")
}

/// Router + state on the embedded configuration, marked ready.
pub fn router() -> (Router, AppState) {
    router_with_memo(Limits::default())
}

/// [`router`] with the replica memo's limits set.
pub fn router_with_memo(memo: Limits) -> (Router, AppState) {
    let metrics = Arc::new(Metrics::new());
    let config = Config::embedded().expect("embedded configuration loads");
    let state = AppState::with_replica_memo(
        Arc::new(ConfigStore::fixed(config, metrics.clone())),
        metrics,
        memo,
    );
    state.ready.store(true, Ordering::Release);
    (app::app(state.clone()), state)
}

/// POST a JSON body to `path` through the router.
pub async fn post_json(router: &Router, path: &str, body: &Value) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("serializable")))
        .expect("valid request");
    let (status, bytes) = send(router, request).await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

/// Send any request through the router; returns status and body bytes.
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("router is infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body collects")
        .to_bytes()
        .to_vec();
    (status, bytes)
}
/// Decode the base64 JSONPatch of a response and apply it to `pod`.
pub fn apply_patch(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "response: {response}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch is a string"))
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("patch is a JSONPatch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("patch applies to the request's object");
    out
}

/// Names of the containers in `spec.<field>`.
pub fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
