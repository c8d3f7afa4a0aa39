//! The caBundle keeper and the shared CA against an in-test API server that speaks the API
//! server's JSON for GET, LIST, WATCH and strategic-merge PATCH of one
//! MutatingWebhookConfiguration, and GET/POST of Secrets (409 AlreadyExists on a second
//! create), plain or over HTTPS.

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
    secrets: Arc<Mutex<HashMap<(String, String), Value>>>,
    /// Outcome of every Secret create: 201 or 409.
    creates: Arc<Mutex<Vec<u16>>>,
    /// The first two Secret GETs wait here for each other (up to 30 s, a loaded machine's TLS
    /// handshakes included), so two replicas starting at once race to create; later GETs pass.
    get_gate: Arc<tokio::sync::Barrier>,
    gets: Arc<std::sync::atomic::AtomicUsize>,
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
            secrets: Arc::new(Mutex::new(HashMap::new())),
            creates: Arc::new(Mutex::new(Vec::new())),
            get_gate: Arc::new(tokio::sync::Barrier::new(2)),
            gets: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn router(&self) -> Router {
        Router::new()
            .route(PATH, get(list_or_watch))
            .route(&format!("{PATH}/{{name}}"), get(get_one).patch(patch_one))
            .route(
                "/api/v1/namespaces/{namespace}/secrets",
                axum::routing::post(create_secret),
            )
            .route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                get(get_secret),
            )
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
        for (key, value) in patch["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if value.is_null() {
                if let Some(annotations) = object["metadata"]["annotations"].as_object_mut() {
                    annotations.remove(key);
                }
            } else {
                object["metadata"]["annotations"][key] = value.clone();
            }
        }
        for change in patch["webhooks"].as_array().into_iter().flatten() {
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

fn status(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).expect("status code"),
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code}),
        ),
    )
        .into_response()
}

async fn get_secret(
    State(api): State<FakeApi>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if api.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
        let _ = tokio::time::timeout(Duration::from_secs(30), api.get_gate.wait()).await;
    }
    match api
        .secrets
        .lock()
        .expect("lock")
        .get(&(namespace, name.clone()))
    {
        Some(secret) => axum::Json(secret.clone()).into_response(),
        None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    }
}

async fn create_secret(
    State(api): State<FakeApi>,
    Path(namespace): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut secret: Value = serde_json::from_slice(&body).expect("secret is JSON");
    let name = secret["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    assert_eq!(secret["metadata"]["namespace"], namespace);
    let mut secrets = api.secrets.lock().expect("lock");
    let key = (namespace, name.clone());
    if secrets.contains_key(&key) {
        api.creates.lock().expect("lock").push(409);
        return status(
            409,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    secret["metadata"]["uid"] = json!("0b7c5a52-2222-4a2b-9c3d-000000000002");
    secret["metadata"]["resourceVersion"] = json!("7");
    secrets.insert(key, secret.clone());
    api.creates.lock().expect("lock").push(201);
    (StatusCode::CREATED, axum::Json(secret)).into_response()
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
    let keeper = tokio::spawn(
        CaBundleKeeper::new(client, NAME, rx)
            .with_live_for(Duration::from_secs(3))
            .run(),
    );

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

    // The CA changes: every bundle holds both at once (other replicas may still serve with the
    // old one), then the new one alone once nobody has said it serves with the old for 3 s.
    let ca2 = b"-----BEGIN CERTIFICATE-----\nCA-TWO\n-----END CERTIFICATE-----\n".to_vec();
    tx.send(ca2.clone()).expect("keeper listens");
    let both = [ca1.clone(), ca2.clone()].concat();
    wait_for(&api, &both, "both CAs right after the change").await;
    wait_for(&api, &ca2, "the new CA alone once the old is stale").await;

    // Nothing to do when everything matches: no bundle patches (only the keeper's own note).
    let count = api.patches.lock().expect("lock").len();
    api.modify(|o| o["metadata"]["labels"] = json!({"unrelated": "change"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        api.patches.lock().expect("lock")[count..]
            .iter()
            .all(|(_, p)| p.get("webhooks").is_none())
    );
    keeper.abort();
}

/// The fake API over HTTPS (as kube-apiserver), with a client that trusts only its CA.
async fn https_api(api: &FakeApi, dir: &std::path::Path) -> kube::Client {
    use outrigger_webhook::server::{selfsigned, serve, tls};
    use rustls::pki_types::pem::PemObject as _;
    let (files, _) =
        selfsigned::ensure(dir, &selfsigned::ServiceNames::default()).expect("API server cert");
    let resolver = Arc::new(tls::ReloadingResolver::load(files.serving.clone()).expect("load"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(serve::serve_tls(
        listener,
        tls::server_config(resolver).expect("TLS config"),
        api.router(),
        std::future::pending::<()>(),
        serve::Limits {
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 64,
            grace: Duration::from_secs(1),
        },
        outrigger_webhook::server::handshake_log::HandshakeLog::new(Arc::new(
            outrigger_webhook::server::metrics::Metrics::new(),
        )),
    ));
    let ca = rustls::pki_types::CertificateDer::from_pem_file(&files.ca).expect("CA PEM");
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.root_cert = Some(vec![ca.to_vec()]);
    kube::Client::try_from(config).expect("client")
}

fn certs_in(bundle: &[u8]) -> usize {
    String::from_utf8_lossy(bundle)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

fn decoded_bundles(api: &FakeApi) -> Vec<Vec<u8>> {
    api.bundles()
        .iter()
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.as_deref().unwrap_or_default())
                .expect("base64")
        })
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_self_managed_replicas_share_one_ca_and_a_ca_change_keeps_both_until_one_is_gone() {
    use outrigger_webhook::server::selfsigned::{self, ServiceNames};
    use outrigger_webhook::server::shared_ca::{CaSecret, Obtained};
    let dir = tempfile::tempdir().expect("tempdir");
    let api = FakeApi::new();
    let client = https_api(&api, &dir.path().join("apiserver")).await;
    let secret = CaSecret {
        namespace: "outrigger-system".into(),
        name: "outrigger-injector-ca".into(),
    };
    let names = ServiceNames::default();

    // Two replicas start at once: both find no Secret, both create, one gets 409 and reads.
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = tokio::join!(
        secret.ensure_dir(client.clone(), &a_dir, &names),
        secret.ensure_dir(client.clone(), &b_dir, &names),
    );
    let ((a_files, a_how), (b_files, b_how)) = (a.expect("replica a"), b.expect("replica b"));
    let mut hows = [a_how, b_how];
    hows.sort_by_key(|h| *h == Obtained::LostRace);
    assert_eq!(hows, [Obtained::Created, Obtained::LostRace]);
    assert_eq!(*api.creates.lock().expect("lock"), [201, 409]);
    let ca = std::fs::read(&a_files.ca).expect("ca");
    assert_eq!(ca, std::fs::read(&b_files.ca).expect("ca"), "one CA");
    assert_ne!(
        std::fs::read(&a_files.serving.cert).expect("cert"),
        std::fs::read(&b_files.serving.cert).expect("cert"),
        "each replica has its own serving certificate"
    );
    // A third replica later reads the Secret.
    let (_, how) = secret.create_or_read(client.clone()).await.expect("read");
    assert_eq!(how, Obtained::Read);

    // Both keepers agree on the bundle: one CA, and no patch war.
    let live_for = Duration::from_secs(3);
    let keeper = |ca: Vec<u8>| {
        let (tx, rx) = tokio::sync::watch::channel(ca);
        let task = tokio::spawn(
            CaBundleKeeper::new(client.clone(), NAME, rx)
                .with_live_for(live_for)
                .run(),
        );
        (tx, task)
    };
    let (_a_tx, a_task) = keeper(ca.clone());
    let (_b_tx, b_task) = keeper(ca.clone());
    wait_for(&api, &ca, "both webhooks carry the shared CA").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = api.patches.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        api.patches.lock().expect("lock").len() <= settled + 2,
        "replicas sharing a CA do not fight over the bundle"
    );

    // A rollout after the CA changed: a new replica with another CA while the old ones run.
    let new_ca = selfsigned::generate_ca().expect("ca").cert_pem.into_bytes();
    let (_c_tx, c_task) = keeper(new_ca.clone());
    eventually("the bundle holds both live CAs", || {
        decoded_bundles(&api).iter().all(|b| {
            certs_in(b) == 2
                && String::from_utf8_lossy(b).contains(String::from_utf8_lossy(&ca).trim())
                && String::from_utf8_lossy(b).contains(String::from_utf8_lossy(&new_ca).trim())
        })
    })
    .await;
    // It stays that way while both kinds of replica run (no one removes the other's CA).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(decoded_bundles(&api).iter().all(|b| certs_in(b) == 2));

    // The old replicas are gone: their CA leaves the bundle once its note is stale.
    a_task.abort();
    b_task.abort();
    wait_for(&api, &new_ca, "only the live CA is left").await;
    c_task.abort();
}
