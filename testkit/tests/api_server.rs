//! The fake API server against kube-rs: typed LIST/GET with selectors and paging, a raw WATCH
//! (ADDED, MODIFIED, DELETED, BOOKMARK, 410), and a kube-runtime reflector that follows test
//! mutations and relists after 410 Gone.

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use outrigger_testkit::FakeApiServer;
use serde_json::json;

const FIXTURES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, version: v1}}
spec: {containers: [{name: web, image: web:1}], serviceAccountName: web}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web, version: v2}}
spec: {containers: [{name: web, image: web:2}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: data, labels: {app: db}}
spec: {containers: [{name: db, image: db:1}]}
status: {phase: Running, podIP: 10.0.0.9}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec: {ports: [{name: http, port: 80}], selector: {app: web}}
"#;

fn pod(name: &str, namespace: &str, app: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}})
}

async fn server() -> FakeApiServer {
    let server = FakeApiServer::start().await.expect("start fake API server");
    server.load_yaml(FIXTURES).expect("fixtures");
    server
}

fn names(pods: &[Pod]) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn list_get_selectors_and_paging() {
    let server = server().await;
    let client = server.client().expect("client");
    let all: Api<Pod> = Api::all(client.clone());
    let list = all.list(&ListParams::default()).await.expect("list");
    assert_eq!(names(&list.items), ["db-1", "web-1", "web-2"]);
    let rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("list resourceVersion");
    assert_eq!(rv, server.resource_version());

    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let v1 = shop
        .list(&ListParams::default().labels("app=web,version in (v1)"))
        .await
        .expect("label selector");
    assert_eq!(names(&v1.items), ["web-1"]);
    let running = all
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .expect("field selector");
    assert_eq!(names(&running.items), ["db-1", "web-1"]);

    let page = all
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page");
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("second page");
    assert_eq!(rest.items.len(), 1);
    assert!(rest.metadata.continue_.is_none());
    server.create(pod("late", "shop", "web")).expect("create");
    server.compact();
    let err = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect_err("expired continue");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 410),
        "{err}"
    );

    let web = shop.get("web-1").await.expect("get");
    assert_eq!(
        web.spec.and_then(|s| s.service_account_name).as_deref(),
        Some("web")
    );
    let missing = shop.get("nope").await.expect_err("404");
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404),
        "{missing}"
    );
    let services: Api<Service> = Api::namespaced(client, "shop");
    assert_eq!(
        services
            .list(&ListParams::default())
            .await
            .expect("services")
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn http_create_replace_delete_reach_the_store() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "shop");
    let created: Pod = serde_json::from_value(pod("api-1", "shop", "api")).expect("pod");
    let created = pods
        .create(&Default::default(), &created)
        .await
        .expect("create over HTTP");
    assert!(created.metadata.resource_version.is_some());
    assert!(server.get("v1", "Pod", "shop", "api-1").is_some());
    let again = pods
        .create(&Default::default(), &created)
        .await
        .expect_err("409");
    assert!(
        matches!(&again, kube::Error::Api(s) if s.code == 409),
        "{again}"
    );
    let mut changed = created.clone();
    changed.metadata.labels = Some([("app".to_owned(), "api2".to_owned())].into());
    pods.replace("api-1", &Default::default(), &changed)
        .await
        .expect("replace");
    assert_eq!(
        server.get("v1", "Pod", "shop", "api-1").expect("stored")["metadata"]["labels"]["app"],
        "api2"
    );
    pods.delete("api-1", &Default::default())
        .await
        .expect("delete");
    assert!(server.get("v1", "Pod", "shop", "api-1").is_none());
}

#[tokio::test]
async fn raw_watch_events_bookmarks_and_gone() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "shop");
    let rv = server.resource_version().to_string();
    let mut stream = pods
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .expect("watch")
        .boxed();

    server.create(pod("web-3", "shop", "web")).expect("create");
    server
        .create(pod("other", "shop", "other"))
        .expect("create, not selected");
    server
        .modify("v1", "Pod", "shop", "web-3", |p| {
            p["metadata"]["labels"]["tier"] = json!("front")
        })
        .expect("modify");
    // Leaving the selector is a DELETED for this watch.
    server
        .modify("v1", "Pod", "shop", "web-2", |p| {
            p["metadata"]["labels"]["app"] = json!("gone")
        })
        .expect("relabel");
    server.delete("v1", "Pod", "shop", "web-3").expect("delete");
    server.bookmark();

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event in time")
            .expect("watch stream")
            .expect("stream open");
        seen.push(match event {
            WatchEvent::Added(p) => format!("ADDED {}", p.metadata.name.unwrap_or_default()),
            WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.unwrap_or_default()),
            WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.unwrap_or_default()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata.resource_version,
                    server.resource_version().to_string()
                );
                "BOOKMARK".to_owned()
            }
            WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "ADDED web-3",
            "MODIFIED web-3",
            "DELETED web-2",
            "DELETED web-3",
            "BOOKMARK"
        ]
    );

    // Replay from an old resourceVersion, then 410 once compacted.
    let replay: Vec<_> = pods
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("replay watch")
        .try_collect()
        .await
        .expect("replay");
    let changes = replay
        .iter()
        .filter(|e| !matches!(e, WatchEvent::Bookmark(_)))
        .count();
    assert_eq!(changes, 5, "every shop pod event after {rv}");
    server.compact();
    let mut gone = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    match gone.try_next().await.expect("stream").expect("one event") {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

/// Waits until `check` holds for the reflector's store.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn reflector_follows_mutations_and_relists_after_gone() {
    let server = server().await;
    let pods: Api<Pod> = Api::all(server.client().expect("client"));
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector(
        writer,
        watcher(pods, watcher::Config::default().page_size(2)),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    tokio::time::timeout(Duration::from_secs(5), reader.wait_until_ready())
        .await
        .expect("synced in time")
        .expect("store ready");
    assert_eq!(
        names(
            &reader
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect::<Vec<_>>()
        ),
        ["db-1", "web-1", "web-2"]
    );

    server.create(pod("web-3", "shop", "web")).expect("create");
    server.delete("v1", "Pod", "data", "db-1").expect("delete");
    eventually("web-3 added and db-1 removed", || {
        let state = reader.state();
        state.len() == 3
            && state
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some("web-3"))
    })
    .await;

    // Every watch ends and its resourceVersion is compacted away: the next watch is 410 Gone
    // and the reflector lists again.
    let lists = |server: &FakeApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.query.contains("watch=true"))
            .count()
    };
    let lists_before = lists(&server);
    server.expire_watches();
    eventually("a relist after 410", || lists(&server) > lists_before).await;
    server
        .create(pod("web-4", "shop", "web"))
        .expect("create after the relist");
    eventually("web-4 seen after the relist", || {
        reader
            .state()
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("web-4"))
    })
    .await;
    task.abort();
}
