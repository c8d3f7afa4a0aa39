//! The pod GET against the in-test API server: an answer that is not a Pod, or one larger than
//! the bound, is reported as what it is and never retried (issue 14 #14).

use std::time::Duration;

use outrigger_cni::k8s::{self, FetchError, MAX_POD_RESPONSE_BYTES};
use serde_json::json;

use crate::support::api::FakeApiServer;
use crate::support::injected_pod;

async fn client(api: &FakeApiServer) -> (kube::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path);
    let client = k8s::client_from_kubeconfig(&path).await.expect("client");
    (client, dir)
}

fn gets(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/"))
        .count()
}

#[tokio::test]
async fn an_undecodable_answer_is_reported_as_such_and_not_retried() {
    let api = FakeApiServer::start();
    let (client, _dir) = client(&api).await;
    api.answer_next_raw(vec![b"<html>proxy error</html>".to_vec()]);
    let err = k8s::fetch_pod(&client, "shop", "web", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Undecodable(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "API server's answer to GET pod is not a Pod object (not retried)"
    );
    assert_eq!(gets(&api), 1, "{:?}", api.requests());
    // JSON of the wrong shape is undecodable too.
    api.answer_next_raw(vec![
        br#"{"kind":"Pod","spec":{"containers":"x"}}"#.to_vec(),
    ]);
    let err = k8s::fetch_pod(&client, "shop", "web", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Undecodable(_)), "{err:?}");
    assert_eq!(gets(&api), 2);
}

#[tokio::test]
async fn an_answer_over_the_bound_is_refused_without_reading_it_all_or_retrying() {
    let api = FakeApiServer::start();
    let (client, _dir) = client(&api).await;
    let mut pod = injected_pod();
    pod["metadata"]["annotations"]["filler"] = json!("x".repeat(MAX_POD_RESPONSE_BYTES));
    api.answer_next_raw(vec![pod.to_string().into_bytes()]);
    let err = k8s::fetch_pod(&client, "shop", "web", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit } if limit == MAX_POD_RESPONSE_BYTES),
        "{err:?}"
    );
    assert_eq!(gets(&api), 1);
}

#[tokio::test]
async fn the_bound_is_exact_one_byte_over_is_refused_a_pod_at_it_is_read() {
    let api = FakeApiServer::start();
    let (client, _dir) = client(&api).await;
    let pod = injected_pod();
    let text = pod.to_string();
    api.answer_next_raw(vec![text.clone().into_bytes(), text.clone().into_bytes()]);
    let err = k8s::get_pod(&client, "shop", "web", text.len() - 1)
        .await
        .unwrap_err();
    assert!(matches!(err, k8s::AttemptError::TooLarge { .. }), "{err:?}");
    let read = k8s::get_pod(&client, "shop", "web", text.len())
        .await
        .expect("a pod at the limit is read");
    assert_eq!(
        read.metadata.name.as_deref(),
        pod["metadata"]["name"].as_str()
    );
}

#[tokio::test]
async fn error_answers_keep_their_status() {
    let api = FakeApiServer::start();
    let (client, _dir) = client(&api).await;
    let err = k8s::fetch_pod(&client, "shop", "missing", Duration::from_secs(10))
        .await
        .unwrap_err();
    let FetchError::Refused(kube::Error::Api(status)) = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(status.code, 404);
    api.fail_next(&[503]);
    api.add_pod(injected_pod());
    let name = injected_pod()["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let ns = injected_pod()["metadata"]["namespace"]
        .as_str()
        .expect("ns")
        .to_owned();
    k8s::fetch_pod(&client, &ns, &name, Duration::from_secs(10))
        .await
        .expect("a 503 is retried");
}
