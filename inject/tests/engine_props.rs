//! Property tests over generated pods: injecting twice equals injecting once, and the JSONPatch
//! from the original pod, applied to it, gives exactly the injected pod.

use outrigger_inject::{Config, InjectRequest, Outcome, inject, patch::json_patch};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn probe() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (1u16..65535, "/[a-z]{0,8}")
            .prop_map(|(p, path)| Some(json!({"httpGet": {"path": path, "port": p}}))),
        Just(Some(
            json!({"httpGet": {"path": "/", "port": "http", "scheme": "HTTPS"}, "timeoutSeconds": 2})
        )),
        (1u16..65535).prop_map(|p| Some(json!({"tcpSocket": {"port": p}, "periodSeconds": 3}))),
        Just(Some(json!({"grpc": {"port": "http"}}))),
        Just(Some(json!({"exec": {"command": ["true"]}}))),
    ]
}

fn container(i: usize) -> impl Strategy<Value = Value> {
    (probe(), probe(), probe(), any::<bool>(), 1u16..10000).prop_map(
        move |(r, l, s, hook, port)| {
            let mut c = json!({
                "name": format!("c{i}"),
                "image": "registry.example/app:1",
                "ports": [{"name": "http", "containerPort": port}],
                "env": [{"name": "A", "value": "1"}],
                "x-future-field": {"kept": [i]},
            });
            for (k, p) in [
                ("readinessProbe", r),
                ("livenessProbe", l),
                ("startupProbe", s),
            ] {
                if let Some(p) = p {
                    c[k] = p;
                }
            }
            if hook {
                c["lifecycle"] = json!({"preStop": {"httpGet": {"path": "/stop", "port": "http"}}});
            }
            c
        },
    )
}

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    let choices: Vec<(&str, Vec<&str>)> = vec![
        (
            "sidecar.istio.io/interceptionMode",
            vec!["REDIRECT", "TPROXY", "NONE"],
        ),
        ("sidecar.istio.io/nativeSidecar", vec!["true", "false"]),
        (
            "traffic.sidecar.istio.io/excludeInboundPorts",
            vec!["9090", "15020,81"],
        ),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            vec!["*", "10.0.0.0/8"],
        ),
        ("prometheus.io/scrape", vec!["true", "false"]),
        ("prometheus.io/port", vec!["9102"]),
        ("prometheus.io.path", vec!["/metrics"]),
        (
            "proxy.istio.io/config",
            vec!["holdApplicationUntilProxyStarts: true", "concurrency: 3"],
        ),
        ("sidecar.istio.io/proxyCPU", vec!["50m"]),
        (
            "sidecar.istio.io/userVolume",
            vec![r#"{"extra":{"emptyDir":{}}}"#],
        ),
        ("sidecar.istio.io/rewriteAppHTTPProbers", vec!["false"]),
        ("kubectl.kubernetes.io/default-container", vec!["c0"]),
    ];
    let picks: Vec<_> = choices
        .into_iter()
        .map(|(k, vs)| {
            proptest::option::of(proptest::sample::select(vs)).prop_map(move |v| v.map(|v| (k, v)))
        })
        .collect();
    picks.prop_map(|kvs| {
        kvs.into_iter()
            .flatten()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect()
    })
}

fn pod() -> impl Strategy<Value = Value> {
    let containers = (1usize..4).prop_flat_map(|n| (0..n).map(container).collect::<Vec<_>>());
    (containers, annotations(), any::<bool>(), any::<bool>()).prop_map(
        |(cs, anns, init, labels)| {
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "annotations": anns},
                "spec": {"containers": cs, "volumes": [{"name": "data", "emptyDir": {}}]},
                "status": {"phase": "Pending"},
            });
            if init {
                pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
            }
            if labels {
                pod["metadata"]["labels"] = json!({"app": "shop", "version": "v1"});
            }
            pod
        },
    )
}

fn injected(pod: &Value, config: &Config) -> Value {
    let req = InjectRequest {
        namespace: "ns".into(),
        ..Default::default()
    };
    match inject(pod, &req, config).expect("generated pods are valid") {
        Outcome::Injected { pod, .. } => pod,
        Outcome::Skipped(r) => panic!("generated pods are injected, got skip: {}", r.message),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn inject_is_idempotent_and_patch_round_trips(pod in pod()) {
        let config = Config::embedded().expect("embedded config loads");
        let once = injected(&pod, &config);
        let twice = injected(&once, &config);
        prop_assert_eq!(&twice, &once);
        let patch = json_patch(&pod, &once);
        let mut doc = pod.clone();
        json_patch::patch(&mut doc, &patch).expect("patch applies to the original");
        prop_assert_eq!(&doc, &once);
        // Unknown fields pass through.
        prop_assert_eq!(&once["status"], &pod["status"]);
        let c0 = once["spec"]["containers"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == "c0"))
            .expect("app container c0 kept");
        prop_assert_eq!(&c0["x-future-field"], &pod["spec"]["containers"][0]["x-future-field"]);
    }

    /// The render memo is invisible: pods injected one after another with one configuration
    /// (later ones may reuse earlier renders) come out exactly as with a fresh configuration each.
    #[test]
    fn render_memo_never_changes_the_result(pods in proptest::collection::vec(pod(), 2..6)) {
        let shared = Config::embedded().expect("embedded config loads");
        for (i, pod) in pods.iter().enumerate() {
            let fresh = Config::embedded().expect("embedded config loads");
            prop_assert_eq!(injected(pod, &shared), injected(pod, &fresh));
            // A replica differs in the token volume's random name: a memo hit, same result.
            let mut replica = pod.clone();
            replica["spec"]["volumes"][0]["name"] = json!(format!("kube-api-access-{i}x7k2"));
            let fresh = Config::embedded().expect("embedded config loads");
            prop_assert_eq!(injected(&replica, &shared), injected(&replica, &fresh));
        }
    }

    #[test]
    fn arbitrary_annotation_values_never_panic(key in proptest::sample::select(vec![
        "traffic.sidecar.istio.io/includeOutboundIPRanges", "traffic.sidecar.istio.io/excludeInboundPorts",
        "sidecar.istio.io/interceptionMode", "status.sidecar.istio.io/port", "proxy.istio.io/config",
        "sidecar.istio.io/userVolume", "sidecar.istio.io/proxyMemory", "inject.istio.io/templates",
        "prometheus.io/port", "sidecar.istio.io/status",
    ]), value in ".{0,40}") {
        let config = Config::embedded().expect("embedded config loads");
        let mut pod = json!({"metadata": {"name": "p", "annotations": {}}, "spec": {"containers": [{"name": "a"}]}});
        pod["metadata"]["annotations"][key] = json!(value);
        let req = InjectRequest { namespace: "ns".into(), ..Default::default() };
        match inject(&pod, &req, &config) {
            Ok(Outcome::Injected { pod: out, .. }) => {
                let mut doc = pod.clone();
                json_patch::patch(&mut doc, &json_patch(&pod, &out)).expect("patch applies");
                prop_assert_eq!(doc, out);
            }
            Ok(Outcome::Skipped(_)) => prop_assert!(false, "nothing here asks for a skip"),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
