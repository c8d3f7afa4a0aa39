//! PATCH, DELETE preconditions, `generateName`, HTTPS and the background server, against
//! kube-rs (what the CNI plugin's tests need from the fake API server; its fault injection is
//! exercised by the CNI plugin's integration tests).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use outrigger_testkit::FakeApiServer;
use serde_json::json;

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}})
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
