//! The injector side: the shipped configuration, a realistic pod, and readers of the result.

use std::collections::HashMap;

use outrigger_inject::{Config, InjectRequest, Outcome, inject};
use serde_json::{Value, json};

/// A pod as the API server sends it (the engine's own fixture: two containers, probes).
pub fn web_pod(annotations: &[(&str, &str)]) -> Value {
    let mut pod: Value =
        serde_json::from_str(include_str!("../../../inject/tests/fixtures/pod-web.json"))
            .expect("the engine's fixture is JSON");
    for (key, value) in annotations {
        pod["metadata"]["annotations"][*key] = json!(value);
    }
    pod
}

/// The traffic annotations an operator sets, all at once.
pub const TRAFFIC: &[(&str, &str)] = &[
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "10.0.0.0/8,fd00::/8",
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "10.96.0.10/32",
    ),
    ("traffic.sidecar.istio.io/includeInboundPorts", "8080,9090"),
    ("traffic.sidecar.istio.io/excludeInboundPorts", "9100"),
    ("traffic.sidecar.istio.io/includeOutboundPorts", "443"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432,6379"),
    ("traffic.sidecar.istio.io/kubevirtInterfaces", "net1,net2"),
    ("traffic.sidecar.istio.io/excludeInterfaces", "eth1"),
];

/// Injects `pod` with the shipped template and `values` (a values.yaml override).
pub fn inject_with(pod: &Value, values: &str, native: Option<bool>) -> Value {
    let config = Config::from_sources(outrigger_inject::DEFAULT_CONFIG_YAML, values, "")
        .expect("the shipped configuration with the override loads");
    let request = InjectRequest {
        namespace: "shop".into(),
        native_sidecars: native,
        ..Default::default()
    };
    match inject(pod, &request, &config).expect("injection succeeds") {
        Outcome::Injected { pod, .. } => pod,
        other => panic!("expected an injection, got {other:?}"),
    }
}

/// The container `name` from `containers` or `initContainers`.
pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|list| pod["spec"][*list].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the injected pod has no container {name}"))
}

/// The command line of a container as the kubelet runs it: command then args.
pub fn argv(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .filter_map(|key| container[*key].as_array())
        .flatten()
        .map(|a| a.as_str().expect("argv entries are strings").to_owned())
        .collect()
}

/// The literal env of a container.
pub fn env(container: &Value) -> HashMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}
