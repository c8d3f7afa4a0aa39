//! Engine tests over a realistic pod (as the API server sends it): every mode of the shipped
//! template, re-injection, pass-through of unknown fields, and the patch round trip.

use serde_json::{Value, json};

use super::*;

fn web() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/pod-web.json")).unwrap()
}

fn req() -> InjectRequest {
    InjectRequest {
        namespace: "shop".into(),
        ..Default::default()
    }
}

fn config(values: &str, mesh: &str) -> Config {
    Config::from_sources(DEFAULT_CONFIG_YAML, values, mesh).unwrap()
}

fn injected(pod: &Value, req: &InjectRequest, config: &Config) -> Value {
    match inject(pod, req, config).unwrap() {
        Outcome::Injected { pod, .. } => pod,
        other => panic!("expected injection, got {other:?}"),
    }
}

fn run(pod: &Value) -> Value {
    injected(pod, &req(), &Config::embedded().unwrap())
}

fn annotate(mut pod: Value, pairs: &[(&str, &str)]) -> Value {
    for (k, v) in pairs {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
    pod
}

fn names<'a>(pod: &'a Value, list: &str) -> Vec<&'a str> {
    pod["spec"][list]
        .as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

fn find<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

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
    assert_eq!(
        args(init),
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
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,15020"
        ]
    );
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
    assert_eq!(args(proxy), ["run", "--drain-duration", "45s"]);
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
    let ports: Value = serde_json::from_str(env(proxy, "ISTIO_META_POD_PORTS").unwrap()).unwrap();
    assert_eq!(ports.as_array().unwrap().len(), 2);
    let probers: Value = serde_json::from_str(env(proxy, ENV_APP_PROBERS).unwrap()).unwrap();
    assert_eq!(
        probers,
        json!({
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1},
        "/app-health/web/livez": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2}})
    );
    let prom: Value =
        serde_json::from_str(env(proxy, ENV_PROMETHEUS_ANNOTATIONS).unwrap()).unwrap();
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
        r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-data","istio-podinfo"],"imagePullSecrets":null,"revision":"default"}"#
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
            env(proxy, ENV_APP_PROBERS).is_some(),
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
        ["run", "--concurrency", "2", "--drain-duration", "45s"]
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
fn patch_applied_to_original_gives_injected() {
    let orig = annotate(web(), &[(NATIVE_SIDECAR, "true")]);
    let pod = run(&orig);
    let p = patch::json_patch(&orig, &pod);
    let mut doc = orig.clone();
    json_patch::patch(&mut doc, &p).unwrap();
    assert_eq!(doc, pod);
}

#[test]
fn invalid_annotations_are_reported_together() {
    let bad = annotate(
        web(),
        &[
            (INTERCEPTION_MODE, "MAGIC"),
            (EXCLUDE_INBOUND_PORTS, "80,99999"),
        ],
    );
    let e = inject(&bad, &req(), &Config::embedded().unwrap()).unwrap_err();
    assert_eq!(e.label(), "invalid_annotation");
    assert_eq!(
        e.to_string(),
        "invalid value '80,99999' for annotation 'traffic.sidecar.istio.io/excludeInboundPorts': \
        '99999' is not a port number (1-65535); invalid value 'MAGIC' for annotation 'sidecar.istio.io/interceptionMode': \
        expected REDIRECT, TPROXY or NONE"
    );
    let reserved = annotate(web(), &[("prometheus.io/port", "15020")]);
    let e = inject(&reserved, &req(), &Config::embedded().unwrap()).unwrap_err();
    assert!(e.to_string().contains("reserved by the proxy"), "{e}");
    let probe = {
        let mut p = web();
        p["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = json!("nope");
        p
    };
    let e = inject(&probe, &req(), &Config::embedded().unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "container 'web': httpGet port 'nope' names no port of the container"
    );
}

#[test]
fn skips_carry_their_reason() {
    let mut p = web();
    p["spec"]["hostNetwork"] = json!(true);
    let out = inject(&p, &req(), &Config::embedded().unwrap()).unwrap();
    assert!(matches!(
        out,
        Outcome::Skipped(SkipReason {
            label: "host_network",
            ..
        })
    ));
    let off = annotate(web(), &[(INJECT, "false")]);
    let Outcome::Skipped(r) = inject(&off, &req(), &Config::embedded().unwrap()).unwrap() else {
        panic!("expected skip")
    };
    assert_eq!(
        (r.label, r.message.as_str()),
        (
            "pod_disabled",
            "pod annotation sidecar.istio.io/inject=\"false\""
        )
    );
}

#[test]
fn probe_rewrite_can_be_switched_off() {
    let pod = run(&annotate(web(), &[(REWRITE_PROBES, "false")]));
    assert_eq!(
        find(&pod, "containers", "web")["readinessProbe"],
        web()["spec"]["containers"][0]["readinessProbe"]
    );
    assert_eq!(
        env(find(&pod, "containers", "istio-proxy"), ENV_APP_PROBERS),
        None
    );
    let off = injected(
        &web(),
        &req(),
        &config(
            "sidecarInjectorWebhook:\n  rewriteAppHTTPProbe: false\n",
            "",
        ),
    );
    assert_eq!(
        find(&off, "containers", "web")["livenessProbe"],
        web()["spec"]["containers"][0]["livenessProbe"]
    );
}

#[test]
fn revision_request_env_and_injected_annotations() {
    let cfg = Config::from_sources(
        "injectedAnnotations:\n  example.com/injected: \"yes\"\n",
        "",
        "",
    )
    .unwrap();
    let r = InjectRequest {
        revision: Some("canary".into()),
        proxy_env: vec![("ISTIO_META_CLUSTER_ID".into(), "c1".into())],
        ..req()
    };
    let pod = injected(&web(), &r, &cfg);
    assert_eq!(pod["metadata"]["annotations"][REVISION], "canary");
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/injected"],
        "yes"
    );
    assert!(
        pod["metadata"]["annotations"][STATUS]
            .as_str()
            .unwrap()
            .ends_with(r#""revision":"canary"}"#)
    );
    assert_eq!(
        env(
            find(&pod, "containers", "istio-proxy"),
            "ISTIO_META_CLUSTER_ID"
        ),
        Some("c1")
    );
}

const EXTRA: &str = "templates:\n  sidecar: |\n    spec:\n      containers:\n      - name: istio-proxy\n        image: p\n  \
    debug: |\n    metadata:\n      labels:\n        debug: \"{{ namespace }}\"\n\
    aliases:\n  full: [sidecar, debug]\n";

#[test]
fn templates_selected_by_annotation_and_aliases() {
    let cfg = Config::from_sources(EXTRA, "", "").unwrap();
    let pod = annotate(web(), &[(TEMPLATES, "full")]);
    let Outcome::Injected { pod, templates } = inject(&pod, &req(), &cfg).unwrap() else {
        panic!()
    };
    assert_eq!(templates, ["sidecar", "debug"]);
    assert_eq!(pod["metadata"]["labels"]["debug"], "shop");
    let e = inject(
        &annotate(web(), &[(TEMPLATES, "sidecar,nope")]),
        &req(),
        &cfg,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown template 'nope' in annotation 'inject.istio.io/templates' (known: debug, full, sidecar)"
    );
}

#[test]
fn config_errors_name_file_key_and_problem() {
    let cases = [
        (
            ("policy: sometimes", "", ""),
            "config.yaml: policy: unknown variant `sometimes`",
        ),
        (
            ("polcy: enabled", "", ""),
            "config.yaml: unknown field `polcy`",
        ),
        (
            ("", "global:\n  proxy:\n    statusPort: high\n", ""),
            "values.yaml: global.proxy.statusPort: invalid type",
        ),
        (
            ("", "", "defaultConfig:\n  concurrency: [1]\n"),
            "mesh.yaml: defaultConfig.concurrency: invalid type",
        ),
        (
            ("", "- a\n", ""),
            "values.yaml: the top level must be a mapping",
        ),
        (
            ("defaultTemplates: [gone]", "", ""),
            "config.yaml: template 'gone' is referenced but not defined (known: sidecar)",
        ),
        (
            ("templates:\n  x: \"{% if %}\"\n", "", ""),
            "config.yaml: templates.x: syntax error",
        ),
        (
            (
                "templates:\n  x: \"{{ nope() }}\"\ndefaultTemplates: [x]\n",
                "",
                "",
            ),
            "config.yaml: templates.x: test render failed: template 'x': unknown function",
        ),
        (
            (
                "templates:\n  x: \"- a list\"\ndefaultTemplates: [x]\n",
                "",
                "",
            ),
            "test render failed: template 'x': output is not a YAML mapping",
        ),
        (
            (
                "neverInjectSelector: [{matchExpressions: [{key: a, operator: Is}]}]",
                "",
                "",
            ),
            "config.yaml: selector #1: matchExpressions key 'a': unknown operator 'Is'",
        ),
    ];
    for ((c, v, m), want) in cases {
        let e = Config::from_sources(c, v, m).unwrap_err().to_string();
        assert!(e.contains(want), "want {want:?} in {e:?}");
    }
}
