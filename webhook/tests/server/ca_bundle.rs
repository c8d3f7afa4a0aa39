//! The caBundle keeper against an in-test API server that speaks the API server's JSON for
//! GET, LIST, WATCH and strategic-merge PATCH of one MutatingWebhookConfiguration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use outrigger_webhook::server::ca_bundle::CaBundleKeeper;
use serde_json::{Value, json};
use tokio::sync::broadcast;

const NAME: &str = "outrigger-injector";
const PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

#[derive(Clone)]
struct FakeApi {
    object: Arc<Mutex<Value>>,
    events: broadcast::Sender<Value>,
    patches: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeApi {
    fn new() -> FakeApi {
        let webhook = |name: &str, bundle: Option<&str>| {
            let mut client = json!({"service": {"name": "outrigger-injector", "namespace": "outrigger-system", "path": "/inject", "port": 443}});
            if let Some(b) = bundle {
                client["caBundle"] = json!(b);
            }
            json!({
                "name": name, "clientConfig": client,
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "*"}],
                "failurePolicy": "Fail", "matchPolicy": "Equivalent", "sideEffects": "None",
                "timeoutSeconds": 10, "admissionReviewVersions": ["v1", "v1beta1"], "reinvocationPolicy": "Never"
            })
        };
        let object = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": NAME, "uid": "6a1d0e3c-1111-4a2b-9c3d-000000000001", "resourceVersion": "100", "generation": 1},
            "webhooks": [
                webhook("namespace.sidecar-injector.istio.io", Some("b2xk")),
                webhook("object.sidecar-injector.istio.io", None),
            ]
        });
        FakeApi {
            object: Arc::new(Mutex::new(object)),
            events: broadcast::channel(64).0,
            patches: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn router(&self) -> Router {
        Router::new()
            .route(PATH, get(list_or_watch))
            .route(&format!("{PATH}/{{name}}"), get(get_one).patch(patch_one))
            .with_state(self.clone())
    }

    /// Change the object as another client would, and tell the watchers.
    fn modify(&self, change: impl FnOnce(&mut Value)) {
        let object = {
            let mut object = self.object.lock().expect("lock");
            change(&mut object);
            bump(&mut object);
            object.clone()
        };
        let _ = self
            .events
            .send(json!({"type": "MODIFIED", "object": object}));
    }

    fn bundles(&self) -> Vec<Option<String>> {
        self.object.lock().expect("lock")["webhooks"]
            .as_array()
            .expect("webhooks")
            .iter()
            .map(|w| w["clientConfig"]["caBundle"].as_str().map(str::to_owned))
            .collect()
    }
}

fn bump(object: &mut Value) {
    let rv: u64 = object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("rv");
    object["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
}

async fn list_or_watch(
    State(api): State<FakeApi>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(
        q.get("fieldSelector").map(String::as_str),
        Some("metadata.name=outrigger-injector")
    );
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let events = tokio_stream_of(api.events.subscribe());
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(events))
            .expect("response");
    }
    let object = api.object.lock().expect("lock").clone();
    axum::Json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfigurationList",
        "metadata": {"resourceVersion": object["metadata"]["resourceVersion"]},
        "items": [object]
    }))
    .into_response()
}

fn tokio_stream_of(
    rx: broadcast::Receiver<Value>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let mut line = serde_json::to_vec(&event).expect("json");
                    line.push(b'\n');
                    return Some((Ok(line), rx));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn get_one(State(api): State<FakeApi>, Path(name): Path<String>) -> Response {
    if name != NAME {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}))).into_response();
    }
    axum::Json(api.object.lock().expect("lock").clone()).into_response()
}

/// Strategic merge of `webhooks` by `name` (the only list the keeper patches).
async fn patch_one(
    State(api): State<FakeApi>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    assert_eq!(name, NAME);
    let content_type = headers["content-type"].to_str().expect("ascii").to_owned();
    let patch: Value = serde_json::from_slice(&body).expect("patch is JSON");
    api.patches
        .lock()
        .expect("lock")
        .push((content_type.clone(), patch.clone()));
    assert_eq!(content_type, "application/strategic-merge-patch+json");
    let object = {
        let mut object = api.object.lock().expect("lock");
        for change in patch["webhooks"].as_array().expect("webhooks in patch") {
            let target = object["webhooks"]
                .as_array_mut()
                .expect("webhooks")
                .iter_mut()
                .find(|w| w["name"] == change["name"])
                .expect("patched webhook exists");
            target["clientConfig"]["caBundle"] = change["clientConfig"]["caBundle"].clone();
        }
        bump(&mut object);
        object.clone()
    };
    let _ = api
        .events
        .send(json!({"type": "MODIFIED", "object": object}));
    axum::Json(object).into_response()
}

async fn wait_for(api: &FakeApi, want: &[u8], what: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(want);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let bundles = api.bundles();
        if bundles
            .iter()
            .all(|b| b.as_deref() == Some(encoded.as_str()))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: caBundles are {bundles:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_every_ca_bundle_equal_to_the_serving_ca() {
    let api = FakeApi::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(axum::serve(listener, api.router()).into_future());

    let config = kube::Config::new(url.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let ca1 = b"-----BEGIN CERTIFICATE-----\nCA-ONE\n-----END CERTIFICATE-----\n".to_vec();
    let (tx, rx) = tokio::sync::watch::channel(ca1.clone());
    let keeper = tokio::spawn(CaBundleKeeper::new(client, NAME, rx).run());

    wait_for(&api, &ca1, "patched at start").await;
    let object = api.object.lock().expect("lock").clone();
    assert_eq!(
        object["webhooks"][0]["sideEffects"], "None",
        "other fields untouched"
    );
    assert_eq!(
        object["webhooks"][1]["clientConfig"]["service"]["path"],
        "/inject"
    );
    let first_patch = api.patches.lock().expect("lock")[0].1.clone();
    assert_eq!(first_patch["webhooks"].as_array().expect("list").len(), 2);

    // Someone else overwrites a bundle: the watch sees it and the keeper puts it back.
    api.modify(|o| o["webhooks"][1]["clientConfig"]["caBundle"] = json!("dGFtcGVyZWQ="));
    wait_for(&api, &ca1, "restored after an outside change").await;
    let last = api
        .patches
        .lock()
        .expect("lock")
        .last()
        .expect("a patch")
        .1
        .clone();
    assert_eq!(
        last["webhooks"],
        json!([{"name": "object.sidecar-injector.istio.io", "clientConfig": {"caBundle": base64::engine::general_purpose::STANDARD.encode(&ca1)}}]),
        "only the changed webhook is patched"
    );

    // The CA changes: every bundle follows.
    let ca2 = b"-----BEGIN CERTIFICATE-----\nCA-TWO\n-----END CERTIFICATE-----\n".to_vec();
    tx.send(ca2.clone()).expect("keeper listens");
    wait_for(&api, &ca2, "updated after a CA change").await;

    // Nothing to do when everything matches: no further patches.
    let count = api.patches.lock().expect("lock").len();
    api.modify(|o| o["metadata"]["labels"] = json!({"unrelated": "change"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.patches.lock().expect("lock").len(), count);
    keeper.abort();
}
