//! The proxy side: the `istio-proxy` container the injector wrote, its argv through
//! outrigger-proxy's own command line and its env through the proxy's configuration loader
//! (`ISTIO_KUBE_APP_PROBERS`, `ISTIO_PROMETHEUS_ANNOTATIONS`, the capture ports). Every probe the
//! injector rewrote must reach a prober the proxy knows, aimed at the app's original port; the
//! scrape the injector moved to the proxy must be the app's; the ports the proxy listens on must
//! be the ones outrigger-iptables redirects to and the kubelet probes.

use std::collections::HashMap;

use clap::Parser;
use outrigger_api::names::port;
use outrigger_init::flags;
use outrigger_proxy::cli::{Cli, Command};
use outrigger_proxy::config::{EnvSource, ProxyConfig};
use outrigger_proxy::status::probes::ProbeAction;
use serde_json::Value;

use crate::support::{argv, container, env, inject_with, web_pod};

/// The env as the kubelet hands it to the process: literal values plus the downward API ones
/// (which the template writes as `valueFrom`) filled in as a scheduled pod would have them.
fn kubelet_env(proxy: &Value) -> HashMap<String, String> {
    let mut vars = env(proxy);
    for entry in proxy["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().expect("env names are strings");
        if entry.get("valueFrom").is_some() {
            let value = match name {
                "POD_NAME" => "web-5c8d7f9b6d-abcde",
                "POD_NAMESPACE" => "shop",
                "INSTANCE_IP" | "HOST_IP" => "10.1.2.3",
                _ => "from-the-downward-api",
            };
            vars.insert(name.to_owned(), value.to_owned());
        }
    }
    vars
}

/// outrigger-proxy's command line and loader on the injected `istio-proxy` container.
fn proxy_config(pod: &Value) -> ProxyConfig {
    let proxy = container(pod, "istio-proxy");
    let args = argv(proxy);
    assert_eq!(args[0], "outrigger-proxy", "{args:?}");
    let cli = Cli::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("outrigger-proxy refuses the injected args {args:?}: {e}"));
    let Command::Run(run) = cli.command else {
        panic!("the injected istio-proxy does not run the proxy: {args:?}");
    };
    let vars = EnvSource::from_map(kubelet_env(proxy));
    ProxyConfig::resolve(&run, &vars)
        .unwrap_or_else(|e| panic!("outrigger-proxy refuses the injected env: {e}"))
}

/// The HTTP probe the kubelet runs against the rewritten container: (port, path).
fn rewritten_probe(pod: &Value, container_name: &str, probe: &str) -> (u64, String) {
    let get = &container(pod, container_name)[probe]["httpGet"];
    let port = get["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("{container_name} {probe} is not rewritten to a port: {get}"));
    (port, get["path"].as_str().expect("a path").to_owned())
}

#[test]
fn the_proxy_reads_the_injected_args_and_env_and_serves_every_rewritten_probe() {
    for (case, native) in [("classic", Some(false)), ("native sidecar", Some(true))] {
        let pod = inject_with(&web_pod(&[]), "", native);
        let config = proxy_config(&pod);

        // The kubelet probes the status port the proxy serves.
        let rewritten = [
            ("web", "readinessProbe"),
            ("web", "livenessProbe"),
            ("log-shipper", "livenessProbe"),
        ];
        let mut expected = Vec::new();
        for (name, probe) in rewritten {
            if container(&pod, name)[probe]["exec"].is_object() {
                continue; // exec probes stay with the kubelet, as in Istio
            }
            let (port, path) = rewritten_probe(&pod, name, probe);
            assert_eq!(
                port,
                u64::from(config.ports.status),
                "{case}: {name} {probe} goes to the proxy's status port"
            );
            expected.push(path);
        }
        assert_eq!(expected.len(), 2, "{case}: web's two probes are rewritten");
        assert_eq!(
            config.probers.len(),
            expected.len(),
            "{case}: one prober per rewritten probe"
        );

        // Each prober aims at the app's original target (the named port resolved).
        let ready = config
            .probers
            .get(&expected[0])
            .unwrap_or_else(|| panic!("{case}: no prober for {}", expected[0]));
        match &ready.action {
            ProbeAction::Http {
                port, path, https, ..
            } => {
                assert_eq!(
                    (*port, path.as_str(), *https),
                    (8080, "/ready", false),
                    "{case}"
                );
            }
            other => panic!("{case}: readiness became {other:?}"),
        }
        let live = config
            .probers
            .get(&expected[1])
            .unwrap_or_else(|| panic!("{case}: no prober for {}", expected[1]));
        assert!(
            matches!(live.action, ProbeAction::Tcp { port: 8080, .. }),
            "{case}: liveness became {:?}",
            live.action
        );
        assert_eq!(
            live.timeout.as_secs(),
            2,
            "{case}: the probe's timeoutSeconds"
        );
    }
}

#[test]
fn the_scrape_moved_to_the_proxy_is_the_apps() {
    let pod = inject_with(&web_pod(&[]), "", None);
    let config = proxy_config(&pod);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"],
        config.ports.status.to_string(),
        "Prometheus is sent to the proxy's status port: {annotations}"
    );
    let scrape = config
        .scrape
        .expect("the app's prometheus.io annotations reach the proxy");
    let targets: Vec<(u16, &str)> = scrape
        .targets
        .iter()
        .map(|t| (t.port, t.path.as_str()))
        .collect();
    assert_eq!(targets, [(9102, "/metrics")]);
}

#[test]
fn the_proxy_listens_where_outrigger_iptables_redirects() {
    let pod = inject_with(&web_pod(&[]), "", None);
    let config = proxy_config(&pod);
    let init = container(&pod, "istio-init");
    let invocation = flags::parse(argv(init).iter().map(String::as_str), &env(init))
        .expect("outrigger-iptables reads the injected istio-init args");
    assert_eq!(config.ports.outbound, invocation.capture.proxy_port, "-p");
    assert_eq!(
        config.ports.inbound, invocation.capture.inbound_capture_port,
        "-z"
    );
    assert_eq!(config.ports.status, port::STATUS);
    assert!(
        invocation
            .capture
            .inbound_ports_exclude
            .contains(&config.ports.status),
        "the status port is not captured (the kubelet reaches it directly): {:?}",
        invocation.capture.inbound_ports_exclude
    );
}

#[test]
fn proxy_config_annotation_settings_reach_the_proxy() {
    let mut pod = web_pod(&[(
        "proxy.istio.io/config",
        "concurrency: 1\nterminationDrainDuration: 7s\ndrainDuration: 45s\n",
    )]);
    pod["spec"]["terminationGracePeriodSeconds"] = serde_json::json!(45);
    let pod = inject_with(&pod, "", None);
    let config = proxy_config(&pod);
    assert_eq!(config.concurrency, 1);
    // The shutdown drain is terminationDrainDuration; drainDuration (hot restart) is not used.
    assert_eq!(config.drain_duration.as_secs(), 7);
    assert_eq!(
        config.termination_grace.as_secs(),
        45,
        "the pod's terminationGracePeriodSeconds reaches the proxy"
    );
}
