//! One grammar, one message: a bad traffic annotation is refused by the injector (webhook and
//! kube-inject share the engine), by the CNI plugin reading the same pod, and, written as the
//! flag it becomes, by outrigger-iptables — each with the message of `outrigger_api::values`.

use outrigger_api::values::{self, ValueError};
use outrigger_init::flags;
use outrigger_inject::{Config, InjectRequest, inject};
use serde_json::Value;

use crate::support::web_pod;

/// (annotation, flag of outrigger-iptables, bad value, the api parser that owns the rule)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    fn(&str) -> Result<(), ValueError>,
);

const CASES: &[Case] = &[
    (
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "-d",
        "8080,http",
        |v| values::parse_port_list(v).map(drop),
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundPorts",
        "-q",
        "443,70000",
        |v| values::parse_port_list(v).map(drop),
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "-i",
        "10.0.0.0/8,fd00::1",
        |v| values::parse_cidr_selection(v).map(drop),
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "-x",
        "10.0.0.0/33",
        |v| values::parse_cidr_list(v).map(drop),
    ),
    (
        "traffic.sidecar.istio.io/excludeInterfaces",
        "-c",
        "eth0/1",
        |v| values::parse_interface_list(v).map(drop),
    ),
    (
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        "-k",
        "a-name-longer-than-15",
        |v| values::parse_interface_list(v).map(drop),
    ),
];

fn injector_error(pod: &Value) -> String {
    let config = Config::embedded().expect("the shipped configuration loads");
    let request = InjectRequest {
        namespace: "shop".into(),
        ..Default::default()
    };
    match inject(pod, &request, &config) {
        Err(e) => format!("{e:#}"),
        Ok(outcome) => panic!("the injector accepted a bad annotation: {outcome:?}"),
    }
}

fn cni_error(pod: &Value) -> String {
    let typed: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(pod.clone()).expect("a valid Pod");
    match outrigger_cni::pod::capture_config(&typed) {
        Err(e) => e.to_string(),
        Ok(config) => panic!("the CNI plugin accepted a bad annotation: {config:?}"),
    }
}

fn init_error(flag: &str, value: &str) -> String {
    let argv = [
        "outrigger-iptables",
        "-p",
        "15001",
        "-u",
        "1337",
        flag,
        value,
    ];
    match flags::parse(argv, &Default::default()) {
        Err(e) => format!("{e}"),
        Ok(invocation) => panic!("outrigger-iptables accepted {flag} {value}: {invocation:?}"),
    }
}

#[test]
fn a_bad_value_gets_the_same_message_from_the_injector_the_cni_and_init() {
    for (annotation, flag, value, rule) in CASES {
        let reason = rule(value)
            .expect_err("the case's value is bad by the api grammar")
            .to_string();
        let pod = web_pod(&[(annotation, value)]);
        let injector = injector_error(&pod);
        let cni = cni_error(&pod);
        let init = init_error(flag, value);
        for (who, message) in [("injector", &injector), ("CNI", &cni), ("init", &init)] {
            assert!(
                message.contains(&reason),
                "{annotation}={value}: the {who} says {message:?}, not the api's {reason:?}"
            );
            assert!(
                message.contains(value),
                "{annotation}={value}: the {who} does not name the value: {message:?}"
            );
        }
        for (who, message) in [("injector", &injector), ("CNI", &cni)] {
            assert!(
                message.contains(annotation),
                "{who} does not name the annotation {annotation}: {message:?}"
            );
        }
    }
}
