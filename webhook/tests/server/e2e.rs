//! End to end over real TLS: the real binary with generated certificates, a client that trusts
//! only the generated CA, AdmissionReviews shaped like kube-apiserver's, and the returned patch
//! applied to the request's pod.

use serde_json::json;

use crate::common::{apply_patch, container_names, pod_review};
use crate::process::{Client, Injector};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_over_tls_with_generated_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let injector = Injector::start(&["--self-signed-dir", certs.to_str().expect("utf-8 path")]);
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(certs.join(file).is_file(), "{file} generated");
    }
    let client = Client::trusting(&certs.join("ca.crt"));
    let mut conn = client
        .connect(injector.addr)
        .await
        .expect("TLS handshake with the CA");

    for (version, dry_run) in [
        ("admission.k8s.io/v1", false),
        ("admission.k8s.io/v1beta1", true),
    ] {
        let mut review = pod_review();
        review["apiVersion"] = json!(version);
        review["request"]["dryRun"] = json!(dry_run);
        let (status, v) = conn.post("/inject", &review).await.expect("response");
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["apiVersion"], version);
        assert_eq!(v["response"]["uid"], review["request"]["uid"]);
        assert_eq!(v["response"]["allowed"], true);
        let original = &review["request"]["object"];
        let pod = apply_patch(original, &v["response"]);
        assert_eq!(
            container_names(&pod, "containers"),
            ["cart", "metrics-exporter", "istio-proxy"]
        );
        assert_eq!(container_names(&pod, "initContainers"), ["istio-init"]);
        let proxy = &pod["spec"]["containers"][2];
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        // API-server defaults and unknown fields survive.
        for field in ["dnsPolicy", "schedulerName", "restartPolicy", "tolerations"] {
            assert_eq!(pod["spec"][field], original["spec"][field], "{field}");
        }
        assert!(
            pod["spec"]["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .any(|v| v["name"] == "kube-api-access-x7k2p"),
            "service account token volume kept"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        // Probes of the app are rewritten to the proxy's status port.
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
            15020
        );
        assert_eq!(
            pod["metadata"]["labels"]["security.istio.io/tlsMode"],
            "istio"
        );
        assert_eq!(
            pod["metadata"]["ownerReferences"],
            original["metadata"]["ownerReferences"]
        );
    }

    let (status, v) = conn
        .post(
            "/inject",
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        )
        .await
        .expect("response");
    assert_eq!(status, 200);
    assert_eq!(v["response"]["allowed"], false);

    let metrics = injector.metrics().await;
    for line in [
        "sidecar_injection_requests_total 3",
        "sidecar_injection_success_total 2",
        "sidecar_injection_failure_total{reason=\"decode\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_certificates_are_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let arg = certs.to_str().expect("utf-8 path");
    let first = {
        let _injector = Injector::start(&["--self-signed-dir", arg]);
        std::fs::read(certs.join("tls.crt")).expect("cert")
    };
    let injector = Injector::start(&["--self-signed-dir", arg]);
    assert_eq!(std::fs::read(certs.join("tls.crt")).expect("cert"), first);
    Client::trusting(&certs.join("ca.crt"))
        .connect(injector.addr)
        .await
        .expect("old CA still trusted");
}

/// kube-apiserver talks HTTP/2 to webhooks when ALPN offers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2_negotiated_by_alpn() {
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let injector = Injector::start(&["--self-signed-dir", certs.to_str().expect("utf-8 path")]);
    let client = Client::trusting_h2(&certs.join("ca.crt"));
    let tls = client
        .connect_raw(injector.addr)
        .await
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "server picked h2"
    );
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let review = pod_review();
    let mut pending = Vec::new();
    // Several streams at once on the one connection.
    for _ in 0..4 {
        let request =
            hyper::Request::post(format!("https://localhost:{}/inject", injector.addr.port()))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&review).expect("json"),
                )))
                .expect("request");
        pending.push(sender.send_request(request));
    }
    for response in futures::future::join_all(pending).await {
        let response = response.expect("response");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let pod = apply_patch(&review["request"]["object"], &v["response"]);
        assert!(container_names(&pod, "containers").contains(&"istio-proxy".to_owned()));
    }
}
