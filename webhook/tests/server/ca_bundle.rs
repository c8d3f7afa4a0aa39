//! The caBundle keeper and the shared CA against the workspace's fake API server
//! (`outrigger-testkit`): one MutatingWebhookConfiguration patched with strategic merge
//! patches, Secrets created (409 AlreadyExists on a second create), plain or over HTTPS, with
//! a gate that makes two replicas' Secret GETs race.

use std::time::Duration;

use base64::Engine as _;
use outrigger_testkit::{FakeApiServer, Recorded};
use outrigger_webhook::server::ca_bundle::CaBundleKeeper;
use serde_json::{Value, json};

const NAME: &str = "outrigger-injector";
const MWC_API: &str = "admissionregistration.k8s.io/v1";
const MWC_KIND: &str = "MutatingWebhookConfiguration";
const MWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
const SECRETS_PATH: &str = "/api/v1/namespaces/outrigger-system/secrets";
/// How long a test waits for a condition the keeper brings about (a loaded machine included).
const DEADLINE: Duration = Duration::from_secs(15);

/// The webhook configuration as the manifests ship it: two webhooks, one with a caBundle that
/// is not a certificate, one with none.
fn webhook_config() -> Value {
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
    json!({
        "apiVersion": MWC_API,
        "kind": MWC_KIND,
        "metadata": {"name": NAME, "uid": "6a1d0e3c-1111-4a2b-9c3d-000000000001", "generation": 1},
        "webhooks": [
            webhook("namespace.sidecar-injector.istio.io", Some("b2xk")),
            webhook("object.sidecar-injector.istio.io", None),
        ]
    })
}

/// The fake API server (HTTPS with its own CA when `tls`) holding [`webhook_config`].
async fn api(tls: bool) -> FakeApiServer {
    let server = if tls {
        FakeApiServer::start_tls().await
    } else {
        FakeApiServer::start().await
    }
    .expect("fake API server starts");
    server
        .create(webhook_config())
        .expect("webhook configuration");
    server
}

fn stored(server: &FakeApiServer) -> Value {
    server
        .get(MWC_API, MWC_KIND, "", NAME)
        .expect("webhook configuration stored")
}

fn bundles(server: &FakeApiServer) -> Vec<Option<String>> {
    stored(server)["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| w["clientConfig"]["caBundle"].as_str().map(str::to_owned))
        .collect()
}

/// The PATCHes of the webhook configuration so far, in arrival order.
fn patches(server: &FakeApiServer) -> Vec<Recorded> {
    server.requests_to("PATCH", &format!("{MWC_PATH}/{NAME}"))
}

/// What the keeper asked of the API server is what it must ask: strategic merge patches of
/// the one configuration, each accepted, and LIST/WATCH narrowed to it by name.
fn assert_keeper_requests(server: &FakeApiServer) {
    for patch in patches(server) {
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/strategic-merge-patch+json"),
            "{patch}"
        );
        assert!(
            matches!(patch.status, Some(200) | None),
            "patch refused: {patch}"
        );
    }
    let collection = server.requests_to("GET", MWC_PATH);
    assert!(!collection.is_empty(), "the keeper lists and watches");
    for request in collection {
        assert!(
            request
                .query
                .split('&')
                .any(|p| p == "fieldSelector=metadata.name%3Doutrigger-injector"),
            "LIST/WATCH not narrowed to the one configuration: {request}"
        );
    }
}

fn encoded(ca: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca)
}

/// Waits (at most [`DEADLINE`]) until every webhook's caBundle is exactly `want`.
async fn wait_for(server: &FakeApiServer, want: &[u8], what: &str) {
    let want = encoded(want);
    eventually(what, || {
        bundles(server)
            .iter()
            .all(|b| b.as_deref() == Some(want.as_str()))
    })
    .await
    .unwrap_or_else(|()| panic!("{what}: caBundles are {:?}", bundles(server)));
}

/// Polls `check` every 20 ms until it holds; `Err` once [`DEADLINE`] has passed.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            eprintln!("gave up waiting: {what}");
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_every_ca_bundle_equal_to_the_serving_ca() {
    let server = api(false).await;
    let client = server.client().expect("client");
    let ca1 = b"-----BEGIN CERTIFICATE-----\nCA-ONE\n-----END CERTIFICATE-----\n".to_vec();
    let (tx, rx) = tokio::sync::watch::channel(ca1.clone());
    let keeper = tokio::spawn(
        CaBundleKeeper::new(client, NAME, rx)
            .with_live_for(Duration::from_secs(3))
            .run(),
    );

    wait_for(&server, &ca1, "patched at start").await;
    let object = stored(&server);
    assert_eq!(
        object["webhooks"][0]["sideEffects"], "None",
        "other fields untouched"
    );
    assert_eq!(
        object["webhooks"][1]["clientConfig"]["service"]["path"],
        "/inject"
    );
    let first_patch = patches(&server)[0].json();
    assert_eq!(first_patch["webhooks"].as_array().expect("list").len(), 2);

    // Someone else overwrites a bundle: the watch sees it and the keeper puts it back, patching
    // only that webhook. Its start can still be in flight here: the keeper may have read the
    // unpatched configuration twice (its first heartbeat's GET and the watcher's LIST), and the
    // patch computed from the second read, both webhooks again, can land after this change (it
    // did, 2 runs in 30 on a loaded machine, when the test took the last patch as the answer).
    // So the test waits for the patch that answers the change, not for the last one.
    let before = patches(&server).len();
    server
        .modify(MWC_API, MWC_KIND, "", NAME, |o| {
            o["webhooks"][1]["clientConfig"]["caBundle"] = json!("dGFtcGVyZWQ=")
        })
        .expect("outside change");
    let restore = json!([{"name": "object.sidecar-injector.istio.io", "clientConfig": {"caBundle": encoded(&ca1)}}]);
    let answered = eventually("a patch of only the changed webhook", || {
        patches(&server)[before..]
            .iter()
            .any(|p| p.json()["webhooks"] == restore)
    })
    .await;
    let after: Vec<Value> = patches(&server)[before..]
        .iter()
        .map(|p| p.json()["webhooks"].clone())
        .filter(|w| !w.is_null())
        .collect();
    assert!(
        answered.is_ok(),
        "only the changed webhook is patched; bundle patches since the change: {after:?}"
    );
    for webhooks in &after {
        assert!(
            *webhooks == restore || *webhooks == first_patch["webhooks"],
            "a bundle patch since the change is neither the answer to it nor a repeat of the \
             start's: {webhooks}"
        );
    }
    wait_for(&server, &ca1, "restored after an outside change").await;

    // The CA changes: every bundle holds both at once (other replicas may still serve with the
    // old one), then the new one alone once nobody has said it serves with the old for 3 s.
    let ca2 = b"-----BEGIN CERTIFICATE-----\nCA-TWO\n-----END CERTIFICATE-----\n".to_vec();
    tx.send(ca2.clone()).expect("keeper listens");
    let both = [ca1.clone(), ca2.clone()].concat();
    wait_for(&server, &both, "both CAs right after the change").await;
    wait_for(&server, &ca2, "the new CA alone once the old is stale").await;

    // Nothing to do when everything matches: no bundle patches (only the keeper's own note).
    // Instead of a fixed sleep, wait until the keeper has read the configuration twice more
    // (its heartbeat reads it every second), so it has had the change in hand.
    let count = patches(&server).len();
    let reads = server
        .requests_to("GET", &format!("{MWC_PATH}/{NAME}"))
        .len();
    server
        .modify(MWC_API, MWC_KIND, "", NAME, |o| {
            o["metadata"]["labels"] = json!({"unrelated": "change"})
        })
        .expect("unrelated change");
    eventually("two heartbeat reads after the unrelated change", || {
        let gets = server.requests_to("GET", &format!("{MWC_PATH}/{NAME}"));
        gets.len() >= reads + 2 && gets.iter().all(|g| g.status.is_some())
    })
    .await
    .expect("the keeper keeps reading its configuration");
    let later: Vec<Value> = patches(&server)[count..]
        .iter()
        .map(Recorded::json)
        .collect();
    assert!(
        later.iter().all(|p| p.get("webhooks").is_none()),
        "bundle patches after an unrelated change: {later:?}"
    );
    assert_keeper_requests(&server);
    keeper.abort();
}

fn certs_in(bundle: &[u8]) -> usize {
    String::from_utf8_lossy(bundle)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

fn decoded_bundles(server: &FakeApiServer) -> Vec<Vec<u8>> {
    bundles(server)
        .iter()
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.as_deref().unwrap_or_default())
                .expect("base64")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_self_managed_replicas_share_one_ca_and_a_ca_change_keeps_both_until_one_is_gone() {
    use outrigger_webhook::server::selfsigned::{self, ServiceNames};
    use outrigger_webhook::server::shared_ca::{CaSecret, Obtained};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = api(true).await;
    let client = server
        .client()
        .expect("client trusting the API server's CA");
    // The first two Secret GETs wait for each other (up to 30 s, a loaded machine's TLS
    // handshakes included), so two replicas starting at once race to create; later GETs pass.
    let gate = server.hold(
        "GET",
        &format!("{SECRETS_PATH}/outrigger-injector-ca"),
        2,
        Duration::from_secs(30),
    );
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
    assert!(
        gate.opened(),
        "both replicas read before either created (arrived: {})",
        gate.arrived()
    );
    assert_eq!(hows, [Obtained::Created, Obtained::LostRace]);
    // One create won and one lost, in either arrival order (the one to arrive first need not be
    // the one the store took first).
    let mut creates: Vec<Option<u16>> = server
        .requests_to("POST", SECRETS_PATH)
        .iter()
        .map(|r| r.status)
        .collect();
    creates.sort();
    assert_eq!(creates, [Some(201), Some(409)]);
    let stored_secret = server
        .get("v1", "Secret", "outrigger-system", "outrigger-injector-ca")
        .expect("the Secret is stored");
    assert_eq!(stored_secret["metadata"]["namespace"], "outrigger-system");
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
    wait_for(&server, &ca, "both webhooks carry the shared CA").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = patches(&server).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        patches(&server).len() <= settled + 2,
        "replicas sharing a CA do not fight over the bundle"
    );

    // A rollout after the CA changed: a new replica with another CA while the old ones run.
    let new_ca = selfsigned::generate_ca().expect("ca").cert_pem.into_bytes();
    let (_c_tx, c_task) = keeper(new_ca.clone());
    eventually("the bundle holds both live CAs", || {
        decoded_bundles(&server).iter().all(|b| {
            certs_in(b) == 2
                && String::from_utf8_lossy(b).contains(String::from_utf8_lossy(&ca).trim())
                && String::from_utf8_lossy(b).contains(String::from_utf8_lossy(&new_ca).trim())
        })
    })
    .await
    .unwrap_or_else(|()| panic!("the bundle holds both live CAs: {:?}", bundles(&server)));
    // It stays that way while both kinds of replica run (no one removes the other's CA).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(decoded_bundles(&server).iter().all(|b| certs_in(b) == 2));

    // The old replicas are gone: their CA leaves the bundle once its note is stale.
    a_task.abort();
    b_task.abort();
    wait_for(&server, &new_ca, "only the live CA is left").await;
    assert_keeper_requests(&server);
    c_task.abort();
}
