//! The shipped template in every mode: classic, native, CNI, interception modes, annotations,
//! re-injection.

use outrigger_api::capture::SIDECAR_ARGS;
use outrigger_api::names::{
    annotation::{
        DEFAULT_CONTAINER, DEFAULT_LOGS_CONTAINER, EXCLUDE_INBOUND_PORTS, EXCLUDE_INTERFACES,
        EXCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_PORTS, INCLUDE_INBOUND_PORTS,
        INCLUDE_OUTBOUND_IP_RANGES, INCLUDE_OUTBOUND_PORTS, INTERCEPTION_MODE, KUBEVIRT_INTERFACES,
        NATIVE_SIDECAR, PROXY_CONFIG, PROXY_CPU, PROXY_MEMORY_LIMIT, READINESS_FAILURE_THRESHOLD,
        READINESS_INITIAL_DELAY, READINESS_PERIOD, REROUTE_VIRTUAL_INTERFACES, REVISION, STATUS,
        STATUS_PORT, USER_VOLUME, USER_VOLUME_MOUNT,
    },
    env,
    label::{CANONICAL_NAME, CANONICAL_REVISION, TLS_MODE},
};
use serde_json::{Value, json};

use super::*;
use crate::*;

/// Commands of our proxy image the shipped template writes (`outrigger-proxy wait|drain`).
const PROXY_WAIT_COMMAND: [&str; 2] = ["outrigger-proxy", "wait"];
const PROXY_DRAIN_COMMAND: [&str; 2] = ["outrigger-proxy", "drain"];

#[test]
fn classic_injection_has_istio_shape() {
    let orig = web();
    let pod = run(&orig);
    assert_eq!(names(&pod, "initContainers"), ["istio-init", "migrate"]);
    assert_eq!(
        names(&pod, "containers"),
        ["web", "log-shipper", "istio-proxy"]
    );
    let init = find(&pod, "initContainers", "istio-init");
    assert_eq!(
        init["image"],
        "ghcr.io/outrigger-mesh/outrigger-proxy:0.1.0"
    );
    assert_eq!(init["command"], json!(["outrigger-iptables"]));
    // The one list outrigger-iptables' tests and the e2e topology use too.
    assert_eq!(args(init), SIDECAR_ARGS);
    assert_eq!(
        init["securityContext"]["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);

    let proxy = find(&pod, "containers", "istio-proxy");
    assert_eq!(
        proxy["image"],
        "ghcr.io/outrigger-mesh/outrigger-proxy:0.1.0"
    );
    assert_eq!(proxy["command"], json!(["outrigger-proxy"]));
    // Istio's shutdown drain (mesh terminationDrainDuration, 5s) and the pod's grace.
    assert_eq!(
        args(proxy),
        [
            "run",
            "--drain-duration",
            "5s",
            "--termination-grace",
            "30s"
        ]
    );
    assert_eq!(
        proxy["ports"],
        json!([{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}])
    );
    assert_eq!(
        proxy["readinessProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    assert_eq!(
        proxy["securityContext"],
        json!({"allowPrivilegeEscalation": false, "privileged": false,
        "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true, "runAsGroup": 1337,
        "runAsNonRoot": true, "runAsUser": 1337})
    );
    assert_eq!(
        proxy["resources"]["requests"],
        json!({"cpu": "100m", "memory": "128Mi"})
    );
    let downward = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("valueFrom").is_some())
        .filter_map(|e| e["name"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        downward,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "INSTANCE_IP",
            "SERVICE_ACCOUNT",
            "HOST_IP"
        ]
    );
    assert_eq!(
        env(proxy, "ISTIO_META_APP_CONTAINERS"),
        Some("web,log-shipper")
    );
    assert_eq!(env(proxy, "ISTIO_META_WORKLOAD_NAME"), Some("web"));
    assert_eq!(env(proxy, "ISTIO_META_INTERCEPTION_MODE"), Some("REDIRECT"));
    assert_eq!(
        env(proxy, "ISTIO_META_OWNER"),
        Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/web")
    );
    // Istio's defaults: the metadata exchange sends them to the proxy's peers.
    assert_eq!(env(proxy, env::CLUSTER_ID), Some("Kubernetes"));
    assert_eq!(env(proxy, env::MESH_ID), Some("cluster.local"));
    let ports: Value = serde_json::from_str(env(proxy, "ISTIO_META_POD_PORTS").unwrap()).unwrap();
    assert_eq!(ports.as_array().unwrap().len(), 2);
    let probers: Value = serde_json::from_str(env(proxy, env::APP_PROBERS).unwrap()).unwrap();
    assert_eq!(
        probers,
        json!({
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1},
        "/app-health/web/livez": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2}})
    );
    let prom: Value =
        serde_json::from_str(env(proxy, env::PROMETHEUS_ANNOTATIONS).unwrap()).unwrap();
    assert_eq!(prom, json!({"scrape": "true", "port": "9102"}));

    let app = find(&pod, "containers", "web");
    assert_eq!(
        app["readinessProbe"]["httpGet"],
        json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
    );
    assert_eq!(app["env"], orig["spec"]["containers"][0]["env"]);
    assert_eq!(
        find(&pod, "containers", "log-shipper"),
        &orig["spec"]["containers"][1]
    );

    assert_eq!(
        names(&pod, "volumes"),
        [
            "istio-envoy",
            "istio-data",
            "istio-podinfo",
            "istio-token",
            "istiod-ca-cert",
            "kube-api-access-x7k2p"
        ]
    );
    let labels = &pod["metadata"]["labels"];
    assert_eq!(
        (
            &labels[TLS_MODE],
            &labels[CANONICAL_NAME],
            &labels[CANONICAL_REVISION]
        ),
        (&json!("istio"), &json!("web"), &json!("v2"))
    );
    let anns = &pod["metadata"]["annotations"];
    assert_eq!(anns[DEFAULT_CONTAINER], "web");
    assert_eq!(anns[DEFAULT_LOGS_CONTAINER], "web");
    assert_eq!(anns[REVISION], "default");
    assert_eq!(anns["prometheus.io/port"], "15020");
    assert_eq!(anns["prometheus.io/path"], "/stats/prometheus");
    assert_eq!(anns["example.com/owner"], "team-a");
    assert_eq!(
        anns[STATUS],
        r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#
    );
    // Fields the engine does not know pass through untouched.
    assert_eq!(
        pod["spec"]["futureSchedulingHint"],
        orig["spec"]["futureSchedulingHint"]
    );
    assert_eq!(pod["status"], orig["status"]);
    assert_eq!(pod["spec"]["tolerations"], orig["spec"]["tolerations"]);
    assert_eq!(
        pod["metadata"]["ownerReferences"],
        orig["metadata"]["ownerReferences"]
    );
}

#[test]
fn native_sidecar_from_request_annotation_or_values() {
    let by_request = injected(
        &web(),
        &InjectRequest {
            native_sidecars: Some(true),
            ..req()
        },
        &Config::embedded().unwrap(),
    );
    let by_annotation = run(&annotate(web(), &[(NATIVE_SIDECAR, "true")]));
    let by_values = injected(
        &web(),
        &req(),
        &config("global:\n  nativeSidecars: true\n", ""),
    );
    for pod in [&by_request, &by_annotation, &by_values] {
        assert_eq!(
            names(pod, "initContainers"),
            ["istio-init", "istio-proxy", "migrate"]
        );
        assert_eq!(names(pod, "containers"), ["web", "log-shipper"]);
        let proxy = find(pod, "initContainers", "istio-proxy");
        assert_eq!(proxy["restartPolicy"], "Always");
        assert_eq!(
            proxy["lifecycle"]["preStop"]["exec"]["command"],
            json!(PROXY_DRAIN_COMMAND)
        );
        assert!(
            env(proxy, env::APP_PROBERS).is_some(),
            "probers land on the native proxy too"
        );
    }
    // The request's choice beats the annotation.
    let classic = injected(
        &annotate(web(), &[(NATIVE_SIDECAR, "true")]),
        &InjectRequest {
            native_sidecars: Some(false),
            ..req()
        },
        &Config::embedded().unwrap(),
    );
    assert_eq!(names(&classic, "containers").last(), Some(&"istio-proxy"));
}

#[test]
fn cni_mode_uses_validation_container_and_writes_traffic_annotations() {
    let pod = injected(
        &annotate(web(), &[(EXCLUDE_OUTBOUND_PORTS, "3306")]),
        &req(),
        &config("pilot:\n  cni:\n    enabled: true\n", ""),
    );
    assert_eq!(
        names(&pod, "initContainers"),
        ["istio-validation", "migrate"]
    );
    let v = find(&pod, "initContainers", "istio-validation");
    let a = args(v);
    assert_eq!(
        &a[a.len() - 4..],
        ["-o", "3306", "--run-validation", "--skip-rule-apply"]
    );
    assert_eq!(
        v["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_eq!(v["securityContext"]["runAsUser"], 1337);
    let anns = &pod["metadata"]["annotations"];
    assert_eq!(anns[INTERCEPTION_MODE], "REDIRECT");
    assert_eq!(anns[INCLUDE_OUTBOUND_IP_RANGES], "*");
    assert_eq!(anns[EXCLUDE_INBOUND_PORTS], "15020");
    assert_eq!(anns[EXCLUDE_OUTBOUND_PORTS], "3306");
}

#[test]
fn interception_none_and_tproxy() {
    let none = run(&annotate(web(), &[(INTERCEPTION_MODE, "NONE")]));
    assert_eq!(names(&none, "initContainers"), ["migrate"]);
    assert_eq!(
        env(
            find(&none, "containers", "istio-proxy"),
            "ISTIO_META_INTERCEPTION_MODE"
        ),
        Some("NONE")
    );
    let tproxy = run(&annotate(web(), &[(INTERCEPTION_MODE, "TPROXY")]));
    assert!(
        args(find(&tproxy, "initContainers", "istio-init"))
            .windows(2)
            .any(|w| w == ["-m", "TPROXY"])
    );
    let sc = &find(&tproxy, "containers", "istio-proxy")["securityContext"];
    assert_eq!(
        sc["capabilities"],
        json!({"add": ["NET_ADMIN"], "drop": ["ALL"]})
    );
    assert_eq!(
        (&sc["runAsUser"], &sc["runAsNonRoot"]),
        (&json!(0), &json!(false))
    );
    // The mesh default applies when the pod says nothing.
    let mesh = injected(
        &web(),
        &req(),
        &config("", "defaultConfig:\n  interceptionMode: TPROXY\n"),
    );
    assert_eq!(
        env(
            find(&mesh, "containers", "istio-proxy"),
            "ISTIO_META_INTERCEPTION_MODE"
        ),
        Some("TPROXY")
    );
}

#[test]
fn traffic_annotations_become_init_arguments() {
    let pod = run(&annotate(
        web(),
        &[
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.96.0.1/32"),
            (INCLUDE_INBOUND_PORTS, "8080"),
            (EXCLUDE_INBOUND_PORTS, "9102"),
            (INCLUDE_OUTBOUND_PORTS, "443"),
            (EXCLUDE_OUTBOUND_PORTS, "5432"),
            (KUBEVIRT_INTERFACES, "net1"),
            (REROUTE_VIRTUAL_INTERFACES, "net2"),
            (EXCLUDE_INTERFACES, "eth1"),
            (STATUS_PORT, "15999"),
        ],
    ));
    assert_eq!(
        args(find(&pod, "initContainers", "istio-init")),
        [
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "10.0.0.0/8",
            "-x",
            "10.96.0.1/32",
            "-b",
            "8080",
            "-d",
            "15090,15021,15999,9102",
            "-q",
            "443",
            "-o",
            "5432",
            "-k",
            "net2",
            "-c",
            "eth1"
        ]
    );
    let app = find(&pod, "containers", "web");
    assert_eq!(app["readinessProbe"]["httpGet"]["port"], 15999);
}

#[test]
fn resources_and_readiness_from_annotations() {
    let pod = run(&annotate(
        web(),
        &[
            (PROXY_CPU, "50m"),
            (PROXY_MEMORY_LIMIT, "256Mi"),
            (READINESS_INITIAL_DELAY, "5"),
            (READINESS_PERIOD, "3"),
            (READINESS_FAILURE_THRESHOLD, "30"),
        ],
    ));
    let proxy = find(&pod, "containers", "istio-proxy");
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}})
    );
    assert_eq!(
        proxy["readinessProbe"],
        json!({"httpGet": {"path": "/healthz/ready", "port": 15021},
        "initialDelaySeconds": 5, "periodSeconds": 3, "timeoutSeconds": 3, "failureThreshold": 30})
    );
}

#[test]
fn proxy_config_annotation_hold_concurrency_and_metadata() {
    let pod = run(&annotate(
        web(),
        &[(
            PROXY_CONFIG,
            "holdApplicationUntilProxyStarts: true\nconcurrency: 2\nproxyMetadata:\n  DNS_CAPTURE: \"true\"\n",
        )],
    ));
    assert_eq!(
        names(&pod, "containers"),
        ["istio-proxy", "web", "log-shipper"]
    );
    let proxy = find(&pod, "containers", "istio-proxy");
    assert_eq!(
        args(proxy),
        [
            "run",
            "--concurrency",
            "2",
            "--drain-duration",
            "5s",
            "--termination-grace",
            "30s"
        ]
    );
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!(PROXY_WAIT_COMMAND)
    );
    assert_eq!(env(proxy, "DNS_CAPTURE"), Some("true"));
    let bad = annotate(web(), &[(PROXY_CONFIG, "concurrency: lots")]);
    let e = inject(&bad, &req(), &Config::embedded().unwrap()).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "invalid value 'concurrency: lots' for annotation 'proxy.istio.io/config': "
        ),
        "{e}"
    );
}

#[test]
fn the_proxys_drain_is_terminationdrainduration_not_the_hot_restart_drain() {
    // Istio's names: terminationDrainDuration is the shutdown drain; drainDuration (the
    // hot-restart drain) does not reach the proxy.
    let mut pod = annotate(
        web(),
        &[(
            PROXY_CONFIG,
            "terminationDrainDuration: 12s\ndrainDuration: 45s\n",
        )],
    );
    pod["spec"]["terminationGracePeriodSeconds"] = json!(60);
    let injected = run(&pod);
    let proxy = find(&injected, "containers", "istio-proxy");
    assert_eq!(
        args(proxy),
        [
            "run",
            "--drain-duration",
            "12s",
            "--termination-grace",
            "60s"
        ]
    );
    // Without the field (kube-inject on a bare manifest) the proxy keeps its 30s default.
    let mut bare = web();
    if let Some(spec) = bare["spec"].as_object_mut() {
        spec.remove("terminationGracePeriodSeconds");
    }
    let proxy_args = args(find(&run(&bare), "containers", "istio-proxy")).join(" ");
    assert_eq!(proxy_args, "run --drain-duration 5s");
    // A value the proxy could not parse is refused here, naming the annotation and the field.
    let bad = annotate(web(), &[(PROXY_CONFIG, "terminationDrainDuration: 5sec")]);
    let e = inject(&bad, &req(), &Config::embedded().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "invalid value 'terminationDrainDuration: 5sec' for annotation 'proxy.istio.io/config': terminationDrainDuration '5sec': "
        ),
        "{e}"
    );
    let mesh = Config::parse("", "", "defaultConfig:\n  terminationDrainDuration: soon\n")
        .unwrap_err()
        .to_string();
    assert!(
        mesh.contains("mesh.yaml") && mesh.contains("terminationDrainDuration 'soon'"),
        "{mesh}"
    );
}

#[test]
fn user_volumes_and_mounts() {
    let pod = run(&annotate(
        web(),
        &[
            (
                USER_VOLUME,
                r#"{"certs":{"secret":{"secretName":"web-certs"}}}"#,
            ),
            (
                USER_VOLUME_MOUNT,
                r#"{"certs":{"mountPath":"/etc/certs","readOnly":true}}"#,
            ),
        ],
    ));
    assert_eq!(
        find(&pod, "volumes", "certs"),
        &json!({"name": "certs", "secret": {"secretName": "web-certs"}})
    );
    let mounts = &find(&pod, "containers", "istio-proxy")["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .unwrap()
            .contains(&json!({"name": "certs", "mountPath": "/etc/certs", "readOnly": true}))
    );
    assert!(
        pod["metadata"]["annotations"][STATUS]
            .as_str()
            .unwrap()
            .contains("\"certs\"")
    );
}

#[test]
fn reinjection_changes_nothing() {
    let variants = [
        web(),
        annotate(web(), &[(NATIVE_SIDECAR, "true")]),
        annotate(
            web(),
            &[
                (PROXY_CONFIG, "holdApplicationUntilProxyStarts: true"),
                ("prometheus.io.path", "/m"),
            ],
        ),
        annotate(
            web(),
            &[
                (USER_VOLUME, r#"{"v":{"emptyDir":{}}}"#),
                (INTERCEPTION_MODE, "NONE"),
            ],
        ),
    ];
    for p in variants {
        let once = run(&p);
        assert_eq!(run(&once), once);
    }
    let cni = config("pilot:\n  cni:\n    enabled: true\n", "");
    let once = injected(&web(), &req(), &cni);
    assert_eq!(injected(&once, &req(), &cni), once);
    // Switching mode on re-injection replaces the old sidecar instead of adding a second one.
    let native = injected(
        &once,
        &InjectRequest {
            native_sidecars: Some(true),
            ..req()
        },
        &cni,
    );
    assert_eq!(
        names(&native, "initContainers"),
        ["istio-validation", "istio-proxy", "migrate"]
    );
    assert_eq!(names(&native, "containers"), ["web", "log-shipper"]);
}

#[test]
fn status_port_zero_means_no_status_port() {
    // Istio: `status.sidecar.istio.io/port: "0"` is accepted; the proxy gets no readiness or
    // startup probe, the port is not excluded from capture, and nothing is sent to it.
    let pod = annotate(web(), &[("status.sidecar.istio.io/port", "0")]);
    let out = run(&pod);
    let proxy = find(&out, "containers", "istio-proxy");
    assert!(proxy.get("readinessProbe").is_none(), "{proxy}");
    assert!(proxy.get("startupProbe").is_none(), "{proxy}");
    assert_eq!(env(proxy, "ISTIO_KUBE_APP_PROBERS"), None);
    assert_eq!(env(proxy, "ISTIO_PROMETHEUS_ANNOTATIONS"), None);
    let app = find(&out, "containers", "web");
    let original = find(&pod, "containers", "web");
    assert_eq!(app["readinessProbe"], original["readinessProbe"]);
    assert_eq!(app["livenessProbe"], original["livenessProbe"]);
    let anns = &out["metadata"]["annotations"];
    assert_eq!(anns["prometheus.io/port"], "9102", "{anns}");
    let init = find(&out, "initContainers", "istio-init");
    let excluded = args(init)
        .windows(2)
        .find(|w| w[0] == "-d")
        .map(|w| w[1].to_owned())
        .expect("-d");
    assert_eq!(excluded, "15090,15021");
    // The default still gets all of it.
    let out = run(&web());
    let proxy = find(&out, "containers", "istio-proxy");
    assert!(proxy.get("readinessProbe").is_some());
    assert!(env(proxy, "ISTIO_KUBE_APP_PROBERS").is_some());
}

/// The `istio-proxy` container's env value `name`, parsed as JSON.
fn env_json(proxy: &Value, name: &str) -> Value {
    let text = env(proxy, name).unwrap_or_else(|| panic!("no {name} in {proxy}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text}"))
}

#[test]
fn a_non_default_status_port_reaches_the_proxy_and_every_user_of_it() {
    let pod = annotate(web(), &[(STATUS_PORT, "15030")]);
    let out = run(&pod);
    let proxy = find(&out, "containers", "istio-proxy");
    let proxy_args = args(proxy);
    let at = proxy_args
        .iter()
        .position(|a| *a == "--status-port")
        .unwrap_or_else(|| panic!("no --status-port in {proxy_args:?}"));
    assert_eq!(proxy_args[at + 1], "15030");
    // The app's probes go to the proxy's status port, the scrape points there, and the port is
    // kept out of inbound capture; the proxy's own readiness stays on the health port (15021),
    // as in Istio's template.
    let app = find(&out, "containers", "web");
    assert_eq!(app["readinessProbe"]["httpGet"]["port"], 15030, "{app}");
    assert_eq!(
        out["metadata"]["annotations"]["prometheus.io/port"],
        "15030"
    );
    let init = find(&out, "initContainers", "istio-init");
    let excluded = args(init)
        .windows(2)
        .find(|w| w[0] == "-d")
        .map(|w| w[1].to_owned())
        .expect("-d");
    assert_eq!(excluded, "15090,15021,15030");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    // The native sidecar's preStop drain asks the same port.
    let native = run(&annotate(
        web(),
        &[(STATUS_PORT, "15030"), (NATIVE_SIDECAR, "true")],
    ));
    let proxy = find(&native, "initContainers", "istio-proxy");
    assert_eq!(
        proxy["lifecycle"]["preStop"]["exec"]["command"],
        json!(["outrigger-proxy", "drain", "--status-port", "15030"])
    );
    // The default and "0" (no status port) pass nothing: the proxy keeps 15020.
    for pod in [web(), annotate(web(), &[(STATUS_PORT, "0")])] {
        let out = run(&pod);
        let proxy = find(&out, "containers", "istio-proxy");
        assert!(!args(proxy).contains(&"--status-port"), "{:?}", args(proxy));
    }
}

#[test]
fn the_proxy_gets_the_istio_token_volume_and_its_proxy_config() {
    use outrigger_api::names::{TOKEN_AUDIENCE, discovery};
    let out = run(&web());
    let volume = find(&out, "volumes", discovery::TOKEN_VOLUME);
    assert_eq!(
        volume,
        &json!({"name": discovery::TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": discovery::TOKEN_EXPIRATION_SECONDS,
            "path": discovery::TOKEN_VOLUME}}]}})
    );
    let proxy = find(&out, "containers", "istio-proxy");
    let mount = proxy["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == discovery::TOKEN_VOLUME)
        .expect("istio-token mount");
    assert_eq!(
        mount,
        &json!({"name": discovery::TOKEN_VOLUME, "mountPath": discovery::TOKEN_MOUNT_PATH, "readOnly": true})
    );
    assert_eq!(
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap(),
            volume["projected"]["sources"][0]["serviceAccountToken"]["path"]
                .as_str()
                .unwrap()
        ),
        discovery::TOKEN_PATH
    );
    // The xDS node id's parts.
    for name in [
        env::POD_NAME,
        env::POD_NAMESPACE,
        env::INSTANCE_IP,
        env::SERVICE_ACCOUNT,
    ] {
        assert!(
            proxy["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == name),
            "no {name}"
        );
    }
    // Mesh defaultConfig, with the default discovery address.
    let config = env_json(proxy, env::PROXY_CONFIG);
    assert_eq!(
        config,
        json!({"interceptionMode": "REDIRECT", "terminationDrainDuration": "5s",
               "proxyMetadata": {}, "discoveryAddress": discovery::DEFAULT_ADDRESS})
    );
    // The pod's annotation is deep-merged over it, and may name another control plane.
    let pod = annotate(
        web(),
        &[(
            PROXY_CONFIG,
            "discoveryAddress: pilot.mesh-b.svc:15012\nconcurrency: 2\nproxyMetadata: {A: b}",
        )],
    );
    let out = run(&pod);
    let config = env_json(find(&out, "containers", "istio-proxy"), env::PROXY_CONFIG);
    assert_eq!(config["discoveryAddress"], "pilot.mesh-b.svc:15012");
    assert_eq!(config["concurrency"], 2);
    assert_eq!(config["proxyMetadata"], json!({"A": "b"}));
    assert_eq!(config["terminationDrainDuration"], "5s");
}

#[test]
fn the_proxy_gets_the_mesh_root_certificate_where_its_discovery_client_reads_it() {
    use outrigger_api::names::discovery;
    let out = run(&web());
    assert_eq!(
        find(&out, "volumes", discovery::ROOT_CERT_VOLUME),
        &json!({"name": discovery::ROOT_CERT_VOLUME, "configMap": {
            "name": discovery::ROOT_CERT_CONFIGMAP, "optional": true}})
    );
    let proxy = find(&out, "containers", "istio-proxy");
    let mount = proxy["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == discovery::ROOT_CERT_VOLUME)
        .expect("istiod-ca-cert mount");
    assert_eq!(
        mount,
        &json!({"name": discovery::ROOT_CERT_VOLUME,
                "mountPath": discovery::ROOT_CERT_MOUNT_PATH, "readOnly": true})
    );
    // The file the proxy's discovery client opens by default is the ConfigMap's key there.
    assert_eq!(
        format!(
            "{}/{}",
            discovery::ROOT_CERT_MOUNT_PATH,
            discovery::ROOT_CERT_KEY
        ),
        discovery::ROOT_CERT_PATH
    );
}

#[test]
fn the_mesh_may_set_the_discovery_address_for_every_pod() {
    use outrigger_api::names::discovery;
    let config = config(
        "{}",
        "defaultConfig:\n  discoveryAddress: pilot.other.svc:15012\n",
    );
    let out = injected(&web(), &req(), &config);
    let proxy_config = env_json(find(&out, "containers", "istio-proxy"), env::PROXY_CONFIG);
    assert_eq!(proxy_config["discoveryAddress"], "pilot.other.svc:15012");
    assert_ne!(proxy_config["discoveryAddress"], discovery::DEFAULT_ADDRESS);
}

#[test]
fn cluster_and_mesh_ids_come_from_the_values_and_proxy_metadata_wins() {
    let values = "global:\n  multiCluster: {clusterName: east}\n  meshID: mesh-a\n";
    let pod = injected(&web(), &req(), &config(values, ""));
    let proxy = find(&pod, "containers", "istio-proxy");
    assert_eq!(env(proxy, env::CLUSTER_ID), Some("east"));
    assert_eq!(env(proxy, env::MESH_ID), Some("mesh-a"));
    // No meshID: the trust domain.
    let pod = injected(
        &web(),
        &req(),
        &config("global:\n  trustDomain: example.org\n", ""),
    );
    let proxy = find(&pod, "containers", "istio-proxy");
    assert_eq!(env(proxy, env::MESH_ID), Some("example.org"));
    // A pod's proxyMetadata sets them instead, once.
    let pod = run(&annotate(
        web(),
        &[(
            PROXY_CONFIG,
            "proxyMetadata:\n  ISTIO_META_CLUSTER_ID: west\n",
        )],
    ));
    let proxy = find(&pod, "containers", "istio-proxy");
    let named = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == env::CLUSTER_ID)
        .count();
    assert_eq!(named, 1);
    assert_eq!(env(proxy, env::CLUSTER_ID), Some("west"));
}
