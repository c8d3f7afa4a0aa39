//! Writes as the API server answers them, against kube-rs: strategic merge patches of a
//! MutatingWebhookConfiguration's `webhooks[]` and a Secret's `data`, create answered 409
//! AlreadyExists, replace and patch with a stale `resourceVersion` answered 409 Conflict, the
//! request log with statuses, and a gate that holds requests until N have arrived.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use outrigger_testkit::FakeApiServer;
use serde_json::{Value, json};

const MWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

fn webhook_config() -> Value {
    let webhook = |name: &str| {
        json!({"name": name,
               "clientConfig": {"service": {"name": "injector", "namespace": "mesh", "path": "/inject"}},
               "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail"})
    };
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "injector"},
           "webhooks": [webhook("a.example.com"), webhook("b.example.com")]})
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "mesh"},
        "data": {"ca.crt": "Y2E=", "ca.key": "a2V5"}}))
    .expect("secret")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn strategic_merge_patches_one_webhook_by_name_and_secret_data_by_key() {
    let server = FakeApiServer::start().await.expect("start");
    server.create(webhook_config()).expect("fixture");
    let client = server.client().expect("client");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let patch = json!({
        "metadata": {"annotations": {"outrigger.io/ca-seen.0011": "1000"}},
        "webhooks": [{"name": "b.example.com", "clientConfig": {"caBundle": "Q0E="}}]
    });
    let patched = configs
        .patch(
            "injector",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("strategic merge patch");
    let webhooks = patched.webhooks.expect("webhooks");
    assert_eq!(webhooks.len(), 2, "merged by name, not replaced");
    assert_eq!(webhooks[0].client_config.ca_bundle, None);
    assert_eq!(
        webhooks[1]
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice()),
        Some(&b"CA"[..])
    );
    assert_eq!(
        webhooks[1]
            .client_config
            .service
            .as_ref()
            .and_then(|s| s.path.as_deref()),
        Some("/inject"),
        "the rest of clientConfig kept"
    );
    assert_eq!(webhooks[1].failure_policy.as_deref(), Some("Fail"));
    let stored = server
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "",
            "injector",
        )
        .expect("stored");
    assert_eq!(
        stored["metadata"]["annotations"]["outrigger.io/ca-seen.0011"],
        "1000"
    );
    // A merge patch of the same list replaces it, as the API server does.
    let replaced = configs
        .patch("injector", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch");
    assert_eq!(replaced.webhooks.expect("webhooks").len(), 1);

    let secrets: Api<Secret> = Api::namespaced(client, "mesh");
    secrets
        .create(&PostParams::default(), &secret("ca"))
        .await
        .expect("create");
    let patched = secrets
        .patch(
            "ca",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"ca.crt": "bmV3", "ca.key": null}})),
        )
        .await
        .expect("patch data");
    let data = patched.data.expect("data");
    assert_eq!(
        data.get("ca.crt").map(|b| b.0.as_slice()),
        Some(&b"new"[..])
    );
    assert!(!data.contains_key("ca.key"), "null removes the key");

    let log: Vec<(String, String, Option<String>, Option<u16>)> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.method, r.path, r.content_type, r.status))
        .collect();
    assert_eq!(
        log,
        [
            (
                "PATCH".to_owned(),
                format!("{MWC_PATH}/injector"),
                Some("application/strategic-merge-patch+json".to_owned()),
                Some(200)
            ),
            (
                "PATCH".to_owned(),
                format!("{MWC_PATH}/injector"),
                Some("application/merge-patch+json".to_owned()),
                Some(200)
            ),
            (
                "PATCH".to_owned(),
                "/api/v1/namespaces/mesh/secrets/ca".to_owned(),
                Some("application/strategic-merge-patch+json".to_owned()),
                Some(200)
            ),
        ]
    );
}

#[tokio::test]
async fn second_create_is_already_exists_and_a_stale_resource_version_is_a_conflict() {
    let server = FakeApiServer::start().await.expect("start");
    let secrets: Api<Secret> = Api::namespaced(server.client().expect("client"), "mesh");
    let created = secrets
        .create(&PostParams::default(), &secret("ca"))
        .await
        .expect("first create");
    let exists = api_error(secrets.create(&PostParams::default(), &secret("ca")).await);
    assert_eq!(
        (exists.code, exists.reason.as_str(), exists.message.as_str()),
        (409, "AlreadyExists", "secrets \"ca\" already exists")
    );

    // Replace with the current resourceVersion: accepted, and the version moves on.
    let mut current = created.clone();
    current
        .data
        .get_or_insert_default()
        .insert("extra".into(), k8s_openapi::ByteString(b"x".to_vec()));
    let replaced = secrets
        .replace("ca", &PostParams::default(), &current)
        .await
        .expect("replace at the current version");
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // With the version it was created at, now stale: 409 Conflict, and nothing changes.
    let mut stale = created.clone();
    stale.data = None;
    let conflict = api_error(secrets.replace("ca", &PostParams::default(), &stale).await);
    assert_eq!(
        (
            conflict.code,
            conflict.reason.as_str(),
            conflict.message.as_str()
        ),
        (
            409,
            "Conflict",
            "Operation cannot be fulfilled on secrets \"ca\": the object has been modified; please apply your changes to the latest version and try again"
        )
    );
    let stored = server.get("v1", "Secret", "mesh", "ca").expect("stored");
    assert_eq!(stored["data"]["extra"], "eA==");
    // A patch that names a stale resourceVersion is refused the same way; the current passes.
    let stale_rv = created.metadata.resource_version.clone().expect("rv");
    let refused = api_error(
        secrets
            .patch(
                "ca",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"resourceVersion": stale_rv}, "data": null})),
            )
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));
    let current_rv = replaced.metadata.resource_version.clone().expect("rv");
    secrets
        .patch(
            "ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": current_rv}, "type": "Opaque"})),
        )
        .await
        .expect("patch at the current version");
    // The test's own update obeys the same rule.
    let mut old = server.get("v1", "Secret", "mesh", "ca").expect("stored");
    old["metadata"]["resourceVersion"] = json!(stale_rv);
    let error = server.update(old).expect_err("stale update from the test");
    assert!(error.to_string().contains("Conflict"), "{error}");

    let statuses: Vec<String> = server.requests().iter().map(ToString::to_string).collect();
    assert_eq!(
        statuses,
        [
            "POST /api/v1/namespaces/mesh/secrets -> 201",
            "POST /api/v1/namespaces/mesh/secrets -> 409",
            "PUT /api/v1/namespaces/mesh/secrets/ca -> 200",
            "PUT /api/v1/namespaces/mesh/secrets/ca -> 409",
            "PATCH /api/v1/namespaces/mesh/secrets/ca -> 409",
            "PATCH /api/v1/namespaces/mesh/secrets/ca -> 200",
        ]
    );
}

#[tokio::test]
async fn bad_writes_get_the_api_servers_refusals() {
    let server = FakeApiServer::start().await.expect("start");
    server
        .create(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "reviews", "namespace": "shop"},
                       "spec": {"hosts": ["reviews"]}}),
        )
        .expect("fixture");
    let client = server.client().expect("client");
    let vs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &kube::api::ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "VirtualService".into(),
            plural: "virtualservices".into(),
        },
    );
    let refused = api_error(
        vs.patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"hosts": ["x"]}})),
        )
        .await,
    );
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (415, "UnsupportedMediaType"),
        "strategic merge of a custom resource"
    );
    let json_patched = vs
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/spec/hosts/-", "value": "ratings"}]),
                )
                .expect("JSON patch"),
            ),
        )
        .await
        .expect("JSON patch of a custom resource");
    assert_eq!(
        json_patched.data["spec"]["hosts"],
        json!(["reviews", "ratings"])
    );

    let secrets: Api<Secret> = Api::namespaced(client, "mesh");
    let mut elsewhere = secret("ca");
    elsewhere.metadata.namespace = Some("other".into());
    let refused = api_error(secrets.create(&PostParams::default(), &elsewhere).await);
    assert_eq!((refused.code, refused.reason.as_str()), (400, "BadRequest"));
    assert!(
        refused.message.contains("(other)") && refused.message.contains("(mesh)"),
        "{}",
        refused.message
    );
    let missing = api_error(
        secrets
            .patch(
                "nope",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {}})),
            )
            .await,
    );
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "secrets \"nope\" not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_holds_requests_until_n_have_arrived() {
    let server = FakeApiServer::start().await.expect("start");
    server
        .create(serde_json::to_value(secret("ca")).expect("json"))
        .expect("fixture");
    let path = "/api/v1/namespaces/mesh/secrets/ca";
    let gate = server.hold("GET", path, 2, Duration::from_secs(60));
    let secrets: Api<Secret> = Api::namespaced(server.client().expect("client"), "mesh");

    let first = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.get("ca").await }
    });
    // The first GET reaches the gate and is held there (60 s): it has no answer yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gate.arrived() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first GET never reached the gate"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Other requests are not held.
    secrets
        .list(&Default::default())
        .await
        .expect("list passes");
    assert!(!first.is_finished(), "released before the second arrived");
    assert_eq!(
        server.requests_to("GET", path)[0].status,
        None,
        "held, unanswered"
    );
    assert!(!gate.opened());

    let second = secrets.get("ca").await.expect("second GET");
    let first = first.await.expect("task").expect("first GET");
    assert_eq!(first.metadata.name, second.metadata.name);
    assert!(gate.opened() && !gate.timed_out());
    // The third passes at once.
    tokio::time::timeout(Duration::from_secs(10), secrets.get("ca"))
        .await
        .expect("not held")
        .expect("third GET");
    let statuses: Vec<Option<u16>> = server
        .requests_to("GET", path)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [Some(200), Some(200), Some(200)]);

    // A gate whose second request never comes lets the first go after its timeout.
    let lonely = server.hold("GET", path, 2, Duration::from_millis(200));
    let started = std::time::Instant::now();
    secrets.get("ca").await.expect("released by the timeout");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(lonely.timed_out() && !lonely.opened());
    assert_eq!(lonely.arrived(), 1);
}
