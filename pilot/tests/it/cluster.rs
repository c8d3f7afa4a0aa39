//! The reflectors against the fake API server: readiness after every first list, the stores as
//! a mesh Snapshot, pods kept as the model's `PodInfo`, and changes during the test signalled and reflected.

use outrigger_pilot::cluster::{self, Change};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{api_server, eventually};

#[tokio::test]
async fn reflectors_sync_and_follow_changes() {
    let server = api_server().await;
    let (tx, mut changes) = mpsc::unbounded_channel();
    let stores = cluster::start(server.client().expect("client"), tx);
    eventually("every reflector synced", || stores.synced()).await;
    assert!(stores.unsynced().is_empty());

    let (snapshot, errors) = stores.snapshot();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(snapshot.endpoint_slices.len(), 1);
    assert_eq!(snapshot.pods.len(), 3);
    assert_eq!(snapshot.namespaces.len(), 1);
    assert_eq!(
        snapshot.virtual_services.len(),
        1,
        "v1beta1 fixture served at v1"
    );
    assert_eq!(snapshot.destination_rules.len(), 1);
    let pod = snapshot
        .pods
        .iter()
        .find(|p| p.name == "catalog-v1-6d8f7c9b5-abcde")
        .expect("pod");
    assert_eq!(pod.namespace, "shop");
    assert_eq!(pod.service_account, "catalog");
    assert_eq!(
        pod.workload, "catalog-v1",
        "the Deployment of its ReplicaSet"
    );
    assert_eq!(pod.ip.as_deref(), Some("10.244.1.11"));
    assert_eq!(pod.named_ports, [("http".to_owned(), 8080)]);
    assert_eq!(pod.labels.get("version").map(String::as_str), Some("v1"));

    // A pod's change reaches the Services of the slices that name it; a slice's its own.
    let catalog = [("shop".to_owned(), "catalog".to_owned())].into();
    let pod = Change::Pod {
        namespace: "shop".into(),
        name: "catalog-v1-6d8f7c9b5-abcde".into(),
    };
    assert_eq!(stores.services_of(std::slice::from_ref(&pod)), catalog);
    let stranger = Change::Pod {
        namespace: "shop".into(),
        name: "not-in-any-slice".into(),
    };
    assert!(stores.services_of(&[stranger]).is_empty());
    let unlabelled = Change::Slice {
        namespace: "shop".into(),
        service: None,
    };
    assert!(stores.services_of(&[unlabelled, Change::Config]).is_empty());

    while changes.try_recv().is_ok() {}
    server
        .modify(
            "networking.istio.io/v1",
            "VirtualService",
            "shop",
            "catalog",
            |vs| vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = json!("v2"),
        )
        .expect("edit the VirtualService");
    let change = tokio::time::timeout(std::time::Duration::from_secs(5), changes.recv())
        .await
        .expect("a change in time");
    assert_eq!(
        change,
        Some(Change::VirtualService {
            namespace: "shop".into(),
            name: "catalog".into()
        }),
        "a VirtualService's change names it"
    );
    eventually("the edit in the store", || {
        stores.snapshot().0.virtual_services[0].spec.http[1].route[0]
            .destination
            .subset
            .as_deref()
            == Some("v2")
    })
    .await;

    server
        .delete(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "shop",
            "catalog-7xk2p",
        )
        .expect("delete the slice");
    let change = tokio::time::timeout(std::time::Duration::from_secs(5), changes.recv())
        .await
        .expect("a change in time");
    assert_eq!(
        change,
        Some(Change::Slice {
            namespace: "shop".into(),
            service: Some("catalog".into())
        }),
        "a slice's change names its Service"
    );
    eventually("the slice gone", || {
        stores.snapshot().0.endpoint_slices.is_empty()
    })
    .await;

    // A VirtualService the model cannot read is left out with a line, not a crash.
    server
        .create(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "bad", "namespace": "shop"},
                       "spec": {"hosts": "not-a-list"}}),
        )
        .expect("create");
    eventually("the bad one reported", || {
        stores.snapshot().1.iter().any(|e| e.contains("shop/bad"))
    })
    .await;
}

#[tokio::test]
async fn not_ready_until_every_reflector_listed() {
    // No API server listening: nothing syncs, and readiness names every reflector.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let (tx, _changes) = mpsc::unbounded_channel();
    let stores = cluster::start(client, tx);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!stores.synced());
    assert_eq!(stores.unsynced().len(), 9);
}
