//! Router tests that go through the real engine: inject, skip and refuse, each with its
//! response shape and metric.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{apply_patch, container_names, pod_review, post_json, router};

fn proxy_env(pod: &Value) -> Vec<(String, String)> {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "istio-proxy"))
        .and_then(|c| c["env"].as_array())
        .map(|env| {
            env.iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_owned(),
                        e["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn injects_with_a_json_patch_in_both_review_versions() {
    let (app, state) = router();
    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let mut review = pod_review();
        review["apiVersion"] = json!(version);
        let (status, v) = post_json(&app, "/inject", &review).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["apiVersion"], version);
        assert_eq!(v["kind"], "AdmissionReview");
        let response = &v["response"];
        assert_eq!(response["uid"], review["request"]["uid"]);
        assert_eq!(response["allowed"], true);
        let pod = apply_patch(&review["request"]["object"], response);
        assert_eq!(
            container_names(&pod, "containers"),
            ["cart", "metrics-exporter", "istio-proxy"]
        );
        assert_eq!(container_names(&pod, "initContainers"), ["istio-init"]);
        assert!(pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
        // Fields the engine does not own are untouched.
        assert_eq!(
            pod["spec"]["tolerations"],
            review["request"]["object"]["spec"]["tolerations"]
        );
    }
    assert!(
        state
            .metrics
            .render()
            .contains("sidecar_injection_success_total 2")
    );
}

#[tokio::test]
async fn dry_run_is_answered_the_same_way() {
    let (app, _) = router();
    let review = pod_review();
    let mut dry = review.clone();
    dry["request"]["dryRun"] = json!(true);
    let (_, wet) = post_json(&app, "/inject", &review).await;
    let (_, dry) = post_json(&app, "/inject", &dry).await;
    assert_eq!(wet, dry);
}

#[tokio::test]
async fn path_parameters_become_proxy_env() {
    let (app, _) = router();
    let review = pod_review();
    let (_, v) = post_json(
        &app,
        "/inject/cluster/east--slash--1/net/n1/extra_key/x",
        &review,
    )
    .await;
    let pod = apply_patch(&review["request"]["object"], &v["response"]);
    let env = proxy_env(&pod);
    for (k, want) in [
        ("ISTIO_META_CLUSTER_ID", "east/1"),
        ("ISTIO_META_NETWORK", "n1"),
        ("EXTRA_KEY", "x"),
    ] {
        assert!(
            env.iter().any(|(name, value)| name == k && value == want),
            "{k}={want} missing from {env:?}"
        );
    }
}

#[tokio::test]
async fn skipped_pods_are_allowed_without_a_patch() {
    let (app, state) = router();
    let mut review = pod_review();
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let (status, v) = post_json(&app, "/inject", &review).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["response"],
        json!({"uid": review["request"]["uid"], "allowed": true})
    );
    assert!(
        state
            .metrics
            .render()
            .contains("sidecar_injection_skip_total{reason=\"host_network\"} 1")
    );
}

#[tokio::test]
async fn namespace_comes_from_the_object_else_the_request() {
    let (app, _) = router();
    // The object has no namespace (as on CREATE): the request's one decides.
    let mut review = pod_review();
    review["request"]["namespace"] = json!("kube-system");
    let (_, v) = post_json(&app, "/inject", &review).await;
    assert!(
        v["response"]["patch"].is_null(),
        "kube-system is never injected: {v}"
    );
    // A namespace on the object wins.
    let mut review = pod_review();
    review["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    let (_, v) = post_json(&app, "/inject", &review).await;
    assert!(v["response"]["patch"].is_null(), "{v}");
    // Control: the fixture's own namespace is injected.
    let (_, v) = post_json(&app, "/inject", &pod_review()).await;
    assert_eq!(v["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn engine_errors_are_denied_with_the_precise_message() {
    let (app, state) = router();
    let mut review = pod_review();
    review["request"]["object"]["metadata"]["annotations"]["traffic.sidecar.istio.io/includeInboundPorts"] =
        json!("80,99999");
    let (status, v) = post_json(&app, "/inject", &review).await;
    assert_eq!(status, StatusCode::OK);
    let response = &v["response"];
    assert_eq!(response["allowed"], false);
    assert!(response["patch"].is_null());
    assert_eq!(response["status"]["code"], 400);
    let msg = response["status"]["message"].as_str().expect("message");
    assert!(
        msg.contains("'99999'") || msg.contains("99999"),
        "message names the bad value: {msg}"
    );
    assert!(
        msg.contains("traffic.sidecar.istio.io/includeInboundPorts"),
        "message names the annotation: {msg}"
    );
    assert!(
        state
            .metrics
            .render()
            .contains("sidecar_injection_failure_total{reason=\"invalid_annotation\"} 1")
    );
}

#[tokio::test]
async fn the_patch_adds_the_istio_token_volume_and_proxy_config_for_the_discovery_client() {
    use outrigger_api::names::{TOKEN_AUDIENCE, discovery, env};
    let (app, _) = router();
    let review = pod_review();
    let (status, v) = post_json(&app, "/inject", &review).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let pod = apply_patch(&review["request"]["object"], &v["response"]);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == discovery::TOKEN_VOLUME))
        .expect("istio-token volume");
    let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], TOKEN_AUDIENCE);
    assert_eq!(
        token["expirationSeconds"],
        discovery::TOKEN_EXPIRATION_SECONDS
    );
    // The API server's own token volume is still there, untouched.
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-")))),
        "{pod}"
    );
    let config = proxy_env(&pod)
        .into_iter()
        .find(|(name, _)| name == env::PROXY_CONFIG)
        .map(|(_, value)| value)
        .expect("PROXY_CONFIG");
    let config: Value = serde_json::from_str(&config).expect("PROXY_CONFIG is JSON");
    assert_eq!(config["discoveryAddress"], discovery::DEFAULT_ADDRESS);
}
