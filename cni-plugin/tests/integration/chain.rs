//! The real chain (root): Debian's bridge + host-local, then outrigger-cni, through a conflist,
//! invoked as a container runtime invokes them, against the fake API server.

use serde_json::{Value, json};

use crate::support::api::FakeApiServer;
use crate::support::netns::{HostLink, NetNs};
use crate::support::runtime::{self, Sandbox};
use crate::support::{injected_pod, unique};

/// One sandbox with its namespace, conflist and the host bridge the chain creates.
struct Chain {
    list: Value,
    ns: NetNs,
    netns_path: std::path::PathBuf,
    container_id: String,
    _bridge: HostLink,
    dir: tempfile::TempDir,
}

impl Chain {
    fn new(api: &FakeApiServer, version: &str) -> Self {
        let ns = NetNs::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("outrigger-cni-kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        let bridge = unique("orb");
        let subnet = unique_subnet();
        let list = json!({
            "cniVersion": version,
            "name": format!("net-{bridge}"),
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": dir.path().join("ipam")}},
                {"type": "outrigger-cni", "kubeconfig": kubeconfig, "exclude_namespaces": ["kube-system"],
                 "log_level": "debug", "log_file": dir.path().join("outrigger-cni.log"), "api_timeout_seconds": 10}
            ]
        });
        let netns_path = ns.path();
        Self {
            list,
            ns,
            netns_path,
            container_id: unique("ctr"),
            _bridge: HostLink { name: bridge },
            dir,
        }
    }

    /// Gives the bridge an IPv6 range too, so the pod gets both families.
    fn dual_stack(mut self) -> Self {
        let v4 = self.list["plugins"][0]["ipam"]["ranges"][0].clone();
        let n = unique_subnet()
            .split('.')
            .nth(2)
            .expect("octet")
            .to_string();
        let v6 = json!([{"subnet": format!("fd00:{:x}:{n}::/64", std::process::id() % 0xffff)}]);
        self.list["plugins"][0]["ipam"]["ranges"] = json!([v4, v6]);
        self
    }

    fn sandbox(&self, cni_args: &str) -> Sandbox<'_> {
        Sandbox {
            container_id: self.container_id.clone(),
            netns: &self.netns_path,
            ifname: "eth0",
            cni_args: cni_args.to_string(),
            cni_path: runtime::cni_path(),
        }
    }
}

/// A /24 no other test of this process uses.
fn unique_subnet() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("10.{}.{}.0/24", 100 + std::process::id() % 100, n % 250)
}

fn pod_args(pod: &Value) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID=abc",
        pod["metadata"]["namespace"].as_str().expect("namespace"),
        pod["metadata"]["name"].as_str().expect("name")
    )
}

fn unique_pod(mutate: impl FnOnce(&mut Value)) -> Value {
    let mut pod = injected_pod();
    pod["metadata"]["name"] = json!(unique("web-"));
    mutate(&mut pod);
    pod
}

fn assert_captured(ns: &NetNs) {
    let rules = ns.iptables_rules();
    for expected in [
        ":ISTIO_OUTPUT",
        ":ISTIO_INBOUND",
        ":ISTIO_REDIRECT",
        ":ISTIO_IN_REDIRECT",
        "--to-ports 15001",
        "--to-ports 15006",
        "--uid-owner 1337",
    ] {
        assert!(
            rules.contains(expected),
            "missing {expected:?} in the pod namespace:\n{rules}"
        );
    }
}

fn assert_untouched(ns: &NetNs) {
    let rules = ns.iptables_rules();
    assert!(!rules.contains("ISTIO"), "rules were installed:\n{rules}");
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn add_installs_rules_and_passes_the_result_through_for_every_version() {
    let api = FakeApiServer::start();
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let pod = unique_pod(|_| {});
        api.add_pod(pod.clone());
        let chain = Chain::new(&api, version);
        let sandbox = chain.sandbox(&pod_args(&pod));
        let results =
            runtime::add(&chain.list, &sandbox).unwrap_or_else(|f| panic!("ADD failed: {f:?}"));
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[1], results[0],
            "outrigger-cni must pass the bridge result through unchanged"
        );
        assert_eq!(results[1]["cniVersion"], version);
        let address = results[1]["ips"][0]["address"]
            .as_str()
            .expect("bridge assigned an address");
        let ip = address.split('/').next().expect("CIDR has an address");
        assert!(
            chain
                .ns
                .exec(&["ip", "-o", "addr", "show", "eth0"])
                .contains(ip)
        );
        assert_captured(&chain.ns);
        let log = std::fs::read_to_string(chain.dir.path().join("outrigger-cni.log"))
            .expect("plugin log file");
        assert!(
            log.contains("capture rules installed"),
            "log file lacks the ADD record:\n{log}"
        );
        // CHECK (0.4.0+) and DEL, twice, succeed.
        if version != "0.3.1" {
            runtime::invoke(&sandbox, "CHECK", "outrigger-cni", &{
                let mut conf = chain.list["plugins"][1].clone();
                conf["cniVersion"] = json!(version);
                conf["name"] = chain.list["name"].clone();
                conf["prevResult"] = results[1].clone();
                conf
            })
            .unwrap_or_else(|f| panic!("CHECK failed: {f:?}"));
        }
        runtime::del(&chain.list, &sandbox, Some(&results[1]))
            .unwrap_or_else(|f| panic!("first DEL failed: {f:?}"));
        runtime::del(&chain.list, &sandbox, Some(&results[1]))
            .unwrap_or_else(|f| panic!("second DEL failed: {f:?}"));
    }
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn every_skip_case_leaves_the_namespace_without_rules() {
    let api = FakeApiServer::start();
    let annotations_removed = |p: &mut Value| {
        p["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove("sidecar.istio.io/status");
    };
    let cases: Vec<(&str, Value, Option<String>)> = vec![
        (
            "no status annotation",
            unique_pod(annotations_removed),
            None,
        ),
        (
            "istio-init present",
            unique_pod(|p| p["spec"]["initContainers"][0]["name"] = json!("istio-init")),
            None,
        ),
        (
            "no istio-proxy",
            unique_pod(|p| p["spec"]["containers"][1]["name"] = json!("envoy")),
            None,
        ),
        (
            "DISABLE_ENVOY",
            unique_pod(|p| {
                p["spec"]["containers"][1]["env"]
                    .as_array_mut()
                    .expect("env")
                    .push(json!({"name": "DISABLE_ENVOY", "value": "true"}))
            }),
            None,
        ),
        (
            "inject label false",
            unique_pod(|p| p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")),
            None,
        ),
        (
            "excluded namespace",
            unique_pod(|p| p["metadata"]["namespace"] = json!("kube-system")),
            None,
        ),
        (
            "not a Kubernetes pod",
            unique_pod(|_| {}),
            Some("IgnoreUnknown=1".to_string()),
        ),
        (
            "installer's own pod",
            unique_pod(|p| {
                p["metadata"]["namespace"] = json!("outrigger-system");
                p["metadata"]["name"] = json!(unique("outrigger-cni-node-"));
            }),
            None,
        ),
    ];
    for (case, pod, args) in cases {
        api.add_pod(pod.clone());
        let chain = Chain::new(&api, "1.0.0");
        let sandbox = chain.sandbox(&args.unwrap_or_else(|| pod_args(&pod)));
        let results = runtime::add(&chain.list, &sandbox)
            .unwrap_or_else(|f| panic!("{case}: ADD failed: {f:?}"));
        assert_eq!(results[1], results[0], "{case}: result changed");
        assert_untouched(&chain.ns);
        runtime::del(&chain.list, &sandbox, Some(&results[1]))
            .unwrap_or_else(|f| panic!("{case}: DEL failed: {f:?}"));
    }
    let lookups: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r.contains("/namespaces/outrigger-system/") || r.contains("/namespaces/kube-system/")
        })
        .collect();
    assert!(
        lookups.is_empty(),
        "excluded and installer pods must not be looked up: {lookups:?}"
    );
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn api_server_errors_are_retried_until_it_answers() {
    let api = FakeApiServer::start();
    let pod = unique_pod(|_| {});
    api.add_pod(pod.clone());
    api.fail_next(&[500, 503]);
    let chain = Chain::new(&api, "1.0.0");
    let sandbox = chain.sandbox(&pod_args(&pod));
    let results =
        runtime::add(&chain.list, &sandbox).unwrap_or_else(|f| panic!("ADD failed: {f:?}"));
    assert_eq!(results[1], results[0]);
    let gets = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/shop/pods/"))
        .count();
    assert_eq!(
        gets,
        3,
        "two failures and one success: {:?}",
        api.requests()
    );
    assert_captured(&chain.ns);
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn dual_stack_pod_gets_ipv6_rules_detected_inside_its_namespace() {
    let api = FakeApiServer::start();
    let pod = unique_pod(|p| {
        p["spec"]["containers"][1]["env"]
            .as_array_mut()
            .expect("env")
            .push(json!({"name": "ISTIO_DUAL_STACK", "value": "true"}))
    });
    api.add_pod(pod.clone());
    let chain = Chain::new(&api, "1.0.0").dual_stack();
    let sandbox = chain.sandbox(&pod_args(&pod));
    let results =
        runtime::add(&chain.list, &sandbox).unwrap_or_else(|f| panic!("ADD failed: {f:?}"));
    assert_eq!(results[1], results[0]);
    assert_eq!(
        results[1]["ips"].as_array().expect("ips").len(),
        2,
        "{}",
        results[1]
    );
    let v6_rules: String = ["ip6tables-nft-save", "ip6tables-legacy-save"]
        .iter()
        .map(|tool| chain.ns.exec(&[tool]))
        .collect();
    assert!(
        v6_rules.contains(":ISTIO_OUTPUT") && v6_rules.contains("--to-ports 15001"),
        "no IPv6 rules:\n{v6_rules}"
    );
    assert_captured(&chain.ns);
    runtime::del(&chain.list, &sandbox, Some(&results[1]))
        .unwrap_or_else(|f| panic!("DEL failed: {f:?}"));
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn ipv4_only_pod_gets_no_ipv6_rules() {
    let api = FakeApiServer::start();
    let pod = unique_pod(|_| {});
    api.add_pod(pod.clone());
    let chain = Chain::new(&api, "1.0.0");
    let sandbox = chain.sandbox(&pod_args(&pod));
    runtime::add(&chain.list, &sandbox).unwrap_or_else(|f| panic!("ADD failed: {f:?}"));
    let v6_rules: String = ["ip6tables-nft-save", "ip6tables-legacy-save"]
        .iter()
        .map(|tool| chain.ns.exec(&[tool]))
        .collect();
    assert!(
        !v6_rules.contains("ISTIO"),
        "IPv6 rules in an IPv4-only pod:\n{v6_rules}"
    );
    assert_captured(&chain.ns);
}
