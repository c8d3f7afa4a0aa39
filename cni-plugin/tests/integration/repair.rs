//! The repair loop against the fake API server: a pod whose istio-validation exited 126 is
//! deleted with its UID as precondition (or labelled), an Event is recorded, the metric counts it.

use std::time::Duration;

use outrigger_cni::metrics::Metrics;
use outrigger_cni::repair::{RepairMode, controller};
use serde_json::{Value, json};

use crate::support::api::{FakeApiServer, Recorded};
use crate::support::{injected_pod, unique};

fn broken_pod() -> Value {
    let mut pod = injected_pod();
    pod["metadata"]["name"] = json!(unique("web-"));
    pod["metadata"]["uid"] = json!(unique("uid-"));
    pod["status"]["initContainerStatuses"] = json!([{
        "name": "istio-validation", "image": "outrigger-iptables:0.1.0", "imageID": "", "ready": false,
        "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 126, "reason": "Error"}}
    }]);
    pod
}

async fn wait_for_request(
    api: &FakeApiServer,
    what: &str,
    pred: impl Fn(&Recorded) -> bool,
) -> Recorded {
    for _ in 0..200 {
        if let Some(found) = api.recorded().into_iter().find(|r| pred(r)) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {what} request; saw {:?}", api.requests());
}

/// A running repair loop against a server holding one broken and one healthy pod.
struct Repairing {
    api: FakeApiServer,
    broken: Value,
    healthy: Value,
    metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(mode: RepairMode) -> Repairing {
    let api = FakeApiServer::start();
    let mut broken = broken_pod();
    let mut healthy = injected_pod();
    healthy["metadata"]["name"] = json!(unique("ok-"));
    // The loop lists this node's pods (`spec.nodeName=node-a`), and the API server applies
    // the selector.
    for pod in [&mut broken, &mut healthy] {
        pod["spec"]["nodeName"] = json!("node-a");
    }
    api.add_pod(broken.clone());
    api.add_pod(healthy.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let client = outrigger_cni::k8s::client_from_kubeconfig(&kubeconfig)
        .await
        .expect("client");
    let metrics = Metrics::new();
    let task = tokio::spawn(controller::run(
        client,
        "node-a",
        mode,
        metrics.clone(),
        Some("test".into()),
    ));
    Repairing {
        api,
        broken,
        healthy,
        metrics,
        task,
        _dir: dir,
    }
}

#[tokio::test]
async fn broken_pod_is_deleted_with_a_uid_precondition() {
    let Repairing {
        api,
        broken,
        healthy,
        metrics,
        task,
        _dir,
    } = start(RepairMode::Delete).await;
    let name = broken["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let delete = wait_for_request(&api, "DELETE", |r| r.method == "DELETE").await;
    assert_eq!(delete.path, format!("/api/v1/namespaces/shop/pods/{name}"));
    let options: Value = serde_json::from_slice(&delete.body).expect("DeleteOptions body");
    assert_eq!(options["preconditions"]["uid"], broken["metadata"]["uid"]);
    let event = wait_for_request(&api, "Event", |r| {
        r.method == "POST" && r.path.ends_with("/events")
    })
    .await;
    let event: Value = serde_json::from_slice(&event.body).expect("Event body");
    assert_eq!(event["reason"], "CNIRaceRepair");
    assert_eq!(event["regarding"]["name"], name.as_str());
    let list = wait_for_request(&api, "list", |r| {
        r.method == "GET" && r.path == "/api/v1/pods"
    })
    .await;
    assert!(
        list.query.contains("spec.nodeName%3Dnode-a")
            || list.query.contains("spec.nodeName=node-a"),
        "{}",
        list.query
    );
    assert!(
        metrics
            .encode()
            .contains(r#"outrigger_cni_pod_repairs_total{action="delete",result="ok"} 1"#),
        "{}",
        metrics.encode()
    );
    let healthy_name = healthy["metadata"]["name"].as_str().expect("name");
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.starts_with("DELETE") && r.ends_with(healthy_name)),
        "healthy pod touched"
    );
    task.abort();
}

#[tokio::test]
async fn broken_pod_is_labelled_in_label_mode() {
    let Repairing {
        api,
        broken,
        metrics,
        task,
        _dir,
        ..
    } = start(RepairMode::Label).await;
    let name = broken["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let patch = wait_for_request(&api, "PATCH", |r| r.method == "PATCH").await;
    assert_eq!(patch.path, format!("/api/v1/namespaces/shop/pods/{name}"));
    let body: Value = serde_json::from_slice(&patch.body).expect("patch body");
    assert_eq!(
        body["metadata"]["labels"]["cni.istio.io/uninitialized"],
        "true"
    );
    assert_eq!(body["metadata"]["uid"], broken["metadata"]["uid"]);
    wait_for_request(&api, "Event", |r| r.method == "POST").await;
    assert!(
        metrics
            .encode()
            .contains(r#"outrigger_cni_pod_repairs_total{action="label",result="ok"} 1"#),
        "{}",
        metrics.encode()
    );
    assert!(!api.requests().iter().any(|r| r.starts_with("DELETE")));
    task.abort();
}
