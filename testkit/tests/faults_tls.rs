//! Fault injection, PATCH, DELETE preconditions, `generateName`, HTTPS and the background
//! server, against kube-rs (what the CNI plugin's tests need from the fake API server).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use outrigger_testkit::{FakeApiServer, Fault};
use serde_json::json;

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}})
}

#[tokio::test]
async fn scripted_statuses_bodies_and_delays_come_first_then_normal_service() {
    let server = FakeApiServer::start().await.expect("start");
    server.create(pod("web-1")).expect("pod");
    let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "shop");
    server.fail_next(&[503, 404]);
    let error = pods.get("web-1").await.expect_err("503 first");
    assert!(error.to_string().contains("scripted failure"), "{error}");
    match pods.get("web-1").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"))
        }
        other => panic!("expected the scripted 404, got {other:?}"),
    }
    server.answer_next_raw(vec![b"<html>proxy error</html>".to_vec()]);
    assert!(pods.get("web-1").await.is_err(), "garbage is not a Pod");
    server.inject([Fault::Delay(std::time::Duration::from_millis(300))]);
    let started = std::time::Instant::now();
    assert_eq!(
        pods.get("web-1")
            .await
            .expect("served")
            .metadata
            .name
            .as_deref(),
        Some("web-1")
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let recorded = server.requests();
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert!(
        recorded
            .iter()
            .all(|r| r.method == "GET" && r.path == "/api/v1/namespaces/shop/pods/web-1")
    );
}

#[tokio::test]
async fn patch_merges_and_delete_checks_the_uid_precondition() {
    let server = FakeApiServer::start().await.expect("start");
    server.create(pod("web-1")).expect("pod");
    let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "shop");
    let patch =
        json!({"metadata": {"labels": {"cni.istio.io/uninitialized": "true", "app": null}}});
    let patched = pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch");
    let labels = patched.metadata.labels.expect("labels");
    assert_eq!(
        labels.get("cni.istio.io/uninitialized").map(String::as_str),
        Some("true")
    );
    assert!(!labels.contains_key("app"), "null removes");
    let recorded = server.requests();
    let body: serde_json::Value =
        serde_json::from_slice(&recorded.last().expect("request").body).expect("body recorded");
    assert_eq!(body, patch);

    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete("web-1", &wrong).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("uid-web-1".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    pods.delete("web-1", &right).await.expect("deleted");
    assert!(server.get("v1", "Pod", "shop", "web-1").is_none());

    let mut generated = pod("");
    generated["metadata"]["generateName"] = json!("web-");
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(generated).expect("pod"),
        )
        .await
        .expect("generateName");
    assert!(created.metadata.name.expect("name").starts_with("web-"));
}

#[test]
fn https_on_a_background_thread_serves_synchronous_tests() {
    let server = FakeApiServer::start_in_background(true).expect("start");
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    assert!(server.ca_pem().expect("CA").contains("BEGIN CERTIFICATE"));
    server.create(pod("web-1")).expect("pod");
    // A runtime of the test's own, ended before the server is used again.
    for _ in 0..2 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let name = runtime.block_on(async {
            let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "shop");
            pods.get("web-1").await.expect("over TLS").metadata.name
        });
        assert_eq!(name.as_deref(), Some("web-1"));
    }
    assert!(
        FakeApiServer::start_in_background(false)
            .expect("plain")
            .url()
            .starts_with("http://")
    );
}
