//! The capture settings: what outrigger-iptables parses from the injected `istio-init` arguments
//! and what the CNI plugin reads from the same pod injected in CNI mode are one configuration.

use std::collections::BTreeSet;

use outrigger_api::capture::{CaptureConfig, InterceptionMode};
use outrigger_init::flags;
use serde_json::Value;

use crate::support::{TRAFFIC, argv, container, env, inject_with, web_pod};

const CNI: &str = "pilot:\n  cni:\n    enabled: true\n";

/// outrigger-iptables' parser on the init container the injector wrote.
fn init_capture(pod: &Value, name: &str) -> flags::Invocation {
    let init = container(pod, name);
    let args = argv(init);
    assert_eq!(args[0], "outrigger-iptables", "{args:?}");
    flags::parse(args.iter().map(String::as_str), &env(init)).unwrap_or_else(|e| {
        panic!("outrigger-iptables refuses the injected {name} args {args:?}: {e:?}")
    })
}

/// The CNI plugin's mapping of the injected pod.
fn cni_capture(pod: &Value) -> CaptureConfig {
    let typed: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(pod.clone()).expect("the injected pod is a valid Pod");
    outrigger_cni::pod::capture_config(&typed)
        .unwrap_or_else(|e| panic!("the CNI plugin refuses the injected pod: {e}"))
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

/// Every field the rules depend on, compared (port lists as sets: order does not change rules).
fn assert_same_capture(init: &CaptureConfig, cni: &CaptureConfig, case: &str) {
    assert_eq!(init.mode, cni.mode, "{case}: interception mode");
    assert_eq!(init.proxy_port, cni.proxy_port, "{case}: -p");
    assert_eq!(
        init.inbound_capture_port, cni.inbound_capture_port,
        "{case}: -z"
    );
    assert_eq!(
        init.inbound_tunnel_port, cni.inbound_tunnel_port,
        "{case}: -e"
    );
    assert_eq!(init.proxy_uids, cni.proxy_uids, "{case}: -u");
    assert_eq!(init.proxy_gids, cni.proxy_gids, "{case}: -g");
    assert_eq!(init.inbound_ports, cni.inbound_ports, "{case}: -b");
    assert_eq!(
        set(&init.inbound_ports_exclude),
        set(&cni.inbound_ports_exclude),
        "{case}: -d"
    );
    assert_eq!(init.outbound_ranges, cni.outbound_ranges, "{case}: -i");
    assert_eq!(
        set(&init.outbound_ranges_exclude),
        set(&cni.outbound_ranges_exclude),
        "{case}: -x"
    );
    assert_eq!(
        set(&init.outbound_ports_include),
        set(&cni.outbound_ports_include),
        "{case}: -q"
    );
    // The one difference Istio itself has: its CNI plugin defaults excludeOutboundPorts to the
    // status port (`defaultRedirectExcludePort` = "15020", cni/pkg/plugin/redirect.go) where
    // istio-init has no default. Kept as Istio does; any other difference fails.
    let mut init_out = set(&init.outbound_ports_exclude);
    init_out.insert(outrigger_api::names::port::STATUS);
    let mut cni_out = set(&cni.outbound_ports_exclude);
    cni_out.insert(outrigger_api::names::port::STATUS);
    assert_eq!(init_out, cni_out, "{case}: -o");
    assert_eq!(
        init.reroute_virtual_interfaces, cni.reroute_virtual_interfaces,
        "{case}: -k"
    );
    assert_eq!(
        init.exclude_interfaces, cni.exclude_interfaces,
        "{case}: -c"
    );
    assert_eq!(init.redirect_dns, cni.redirect_dns, "{case}: DNS");
    assert_eq!(init.drop_invalid, cni.drop_invalid, "{case}: INVALID drop");
    assert_eq!(init.dual_stack, cni.dual_stack, "{case}: dual stack");
}

#[test]
fn init_and_cni_read_the_same_capture_from_the_default_template() {
    for (case, annotations) in [("defaults", &[][..]), ("traffic annotations", TRAFFIC)] {
        let pod = web_pod(annotations);
        let classic = inject_with(&pod, "", None);
        let init = init_capture(&classic, "istio-init");
        init.capture
            .validate()
            .expect("the parsed capture validates");
        let cni = cni_capture(&inject_with(&pod, CNI, None));
        assert_same_capture(&init.capture, &cni, case);
    }
}

#[test]
fn the_traffic_annotations_arrive_as_written() {
    let pod = inject_with(&web_pod(TRAFFIC), "", None);
    let capture = init_capture(&pod, "istio-init").capture;
    let nets = |list: &[ipnet::IpNet]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    match &capture.outbound_ranges {
        outrigger_api::values::Selection::Only(ranges) => {
            assert_eq!(nets(ranges), ["10.0.0.0/8", "fd00::/8"]);
        }
        other => panic!("-i: {other:?}"),
    }
    assert_eq!(nets(&capture.outbound_ranges_exclude), ["10.96.0.10/32"]);
    assert_eq!(
        capture.inbound_ports,
        outrigger_api::values::Selection::Only(vec![8080, 9090])
    );
    assert!(set(&capture.outbound_ports_exclude).is_superset(&set(&[5432, 6379])));
    assert_eq!(capture.outbound_ports_include, [443]);
    assert_eq!(capture.reroute_virtual_interfaces, ["net1", "net2"]);
    assert_eq!(capture.exclude_interfaces, ["eth1"]);
}

#[test]
fn tproxy_and_native_sidecars_agree_too() {
    let tproxy = web_pod(&[("sidecar.istio.io/interceptionMode", "TPROXY")]);
    let init = init_capture(&inject_with(&tproxy, "", None), "istio-init");
    assert_eq!(init.capture.mode, InterceptionMode::Tproxy);
    let cni = cni_capture(&inject_with(&tproxy, CNI, None));
    assert_same_capture(&init.capture, &cni, "TPROXY");

    let pod = web_pod(TRAFFIC);
    let native = inject_with(&pod, "", Some(true));
    assert!(
        native["spec"]["initContainers"]
            .as_array()
            .is_some_and(|inits| inits.iter().any(|c| c["name"] == "istio-proxy")),
        "native sidecar: istio-proxy is an init container"
    );
    let init = init_capture(&native, "istio-init");
    let cni = cni_capture(&inject_with(&pod, CNI, Some(true)));
    assert_same_capture(&init.capture, &cni, "native sidecar");
}

#[test]
fn the_validation_container_of_cni_mode_parses_as_validation_only() {
    let pod = inject_with(&web_pod(TRAFFIC), CNI, None);
    let validation = init_capture(&pod, "istio-validation");
    assert!(validation.run_validation, "--run-validation");
    assert!(validation.skip_rule_apply, "--skip-rule-apply");
    assert_same_capture(&validation.capture, &cni_capture(&pod), "istio-validation");
}
