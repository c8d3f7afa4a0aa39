//! Maps an injected pod straight to the shared capture settings
//! ([`outrigger_api::capture::CaptureConfig`]) the way Istio's CNI plugin does
//! (cni/pkg/plugin/redirect.go, `NewRedirect`): the sidecar defaults, the pod's
//! `traffic.sidecar.istio.io/*` annotations, and the proxy container's identity and env. Every
//! value is read with the one grammar of [`outrigger_api::values`]; a refusal names the
//! annotation or env variable.

use k8s_openapi::api::core::v1::{Container, Pod};
use outrigger_api::capture::{
    self, CaptureConfig, ConfigError, InboundPorts, InterceptionMode, OutboundRanges,
};
use outrigger_api::names::{DEFAULT_PROXY_UID, annotation as key, env, port};
use outrigger_api::values::{self, ValueError};

use super::fields::{annotation, env_value, proxy_container};

/// The capture configuration of a pod that passed the skip rules. What the pod does not set
/// keeps Istio's CNI defaults: capture every inbound port and every destination, exclude the
/// status port (15020) from inbound and outbound capture, and always exclude 15020, 15021 and
/// 15090 from inbound capture. DNS capture (`ISTIO_META_DNS_CAPTURE`) means redirect plus
/// capture-all, so no resolver configuration is read.
pub fn capture_config(pod: &Pod) -> Result<CaptureConfig, ConfigError> {
    let proxy = proxy_container(pod);
    let security = proxy.and_then(|c| c.security_context.as_ref());

    let mut inbound_ports_exclude = read(pod, key::EXCLUDE_INBOUND_PORTS, values::parse_port_list)?
        .unwrap_or_else(|| vec![port::STATUS]);
    inbound_ports_exclude.extend([port::STATUS, port::HEALTH, port::PROXY_METRICS]);

    // Istio: the newer `istio.io/reroute-virtual-interfaces` wins over `kubevirtInterfaces`.
    let virtual_interfaces_key = if annotation(pod, key::REROUTE_VIRTUAL_INTERFACES).is_some() {
        key::REROUTE_VIRTUAL_INTERFACES
    } else {
        key::KUBEVIRT_INTERFACES
    };
    let dns_capture = proxy_flag(proxy, env::DNS_CAPTURE)?;

    Ok(CaptureConfig {
        proxy_uids: vec![id_or_default(security.and_then(|s| s.run_as_user))],
        proxy_gids: vec![id_or_default(security.and_then(|s| s.run_as_group))],
        mode: interception_mode(pod)?,
        inbound_ports: read(
            pod,
            key::INCLUDE_INBOUND_PORTS,
            values::parse_port_selection,
        )?
        .unwrap_or(InboundPorts::All),
        inbound_ports_exclude: dedup(inbound_ports_exclude),
        outbound_ranges: read(
            pod,
            key::INCLUDE_OUTBOUND_IP_RANGES,
            values::parse_cidr_selection,
        )?
        .unwrap_or(OutboundRanges::All),
        outbound_ranges_exclude: read(
            pod,
            key::EXCLUDE_OUTBOUND_IP_RANGES,
            values::parse_cidr_list,
        )?
        .unwrap_or_default(),
        outbound_ports_include: read(pod, key::INCLUDE_OUTBOUND_PORTS, values::parse_port_list)?
            .unwrap_or_default(),
        outbound_ports_exclude: dedup(
            read(pod, key::EXCLUDE_OUTBOUND_PORTS, values::parse_port_list)?
                .unwrap_or_else(|| vec![port::STATUS]),
        ),
        reroute_virtual_interfaces: read(
            pod,
            virtual_interfaces_key,
            values::parse_interface_list,
        )?
        .unwrap_or_default(),
        exclude_interfaces: read(pod, key::EXCLUDE_INTERFACES, values::parse_interface_list)?
            .unwrap_or_default(),
        redirect_dns: dns_capture,
        capture_all_dns: dns_capture,
        drop_invalid: proxy_flag(proxy, env::INVALID_DROP)?,
        dual_stack: proxy_flag(proxy, env::DUAL_STACK)?,
        ..CaptureConfig::default()
    })
}

/// Parses annotation `key` when the pod sets it; a refusal names the annotation.
fn read<T>(
    pod: &Pod,
    key: &'static str,
    parse: impl Fn(&str) -> Result<T, ValueError>,
) -> Result<Option<T>, ConfigError> {
    annotation(pod, key)
        .map(|value| parse(value).map_err(|err| ConfigError::from_value(key, value, err)))
        .transpose()
}

/// A boolean env variable of the proxy container (Go's `ParseBool`); unset means false.
fn proxy_flag(proxy: Option<&Container>, name: &'static str) -> Result<bool, ConfigError> {
    proxy
        .and_then(|c| env_value(c, name))
        .map(|value| values::parse_bool(value).map_err(|e| ConfigError::from_value(name, value, e)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// `sidecar.istio.io/interceptionMode`: REDIRECT (the default) or TPROXY.
fn interception_mode(pod: &Pod) -> Result<InterceptionMode, ConfigError> {
    match annotation(pod, key::INTERCEPTION_MODE) {
        None => Ok(InterceptionMode::Redirect),
        Some(value) => capture::parse_mode(value).map_err(|err| ConfigError {
            flag: key::INTERCEPTION_MODE,
            ..err
        }),
    }
}

/// 0 (root) or unset means the default proxy identity.
fn id_or_default(id: Option<i64>) -> u32 {
    id.and_then(|id| u32::try_from(id).ok())
        .filter(|id| *id != 0)
        .unwrap_or(DEFAULT_PROXY_UID)
}

/// Keeps the first occurrence of each port, in order.
pub fn dedup(ports: Vec<u16>) -> Vec<u16> {
    let mut seen = std::collections::HashSet::new();
    ports.into_iter().filter(|p| seen.insert(*p)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ipnet::IpNet;
    use serde_json::{Value, json};

    pub(crate) fn injected_pod() -> Pod {
        serde_json::from_str(include_str!("../../tests/fixtures/injected-pod.json"))
            .expect("fixture is a Pod")
    }

    fn with(annotations: Value, proxy_env: Value) -> Pod {
        let mut pod = serde_json::to_value(injected_pod()).unwrap();
        for (k, v) in annotations.as_object().unwrap() {
            pod["metadata"]["annotations"][k] = v.clone();
        }
        for e in proxy_env.as_array().unwrap() {
            pod["spec"]["containers"][1]["env"]
                .as_array_mut()
                .unwrap()
                .push(e.clone());
        }
        serde_json::from_value(pod).unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn defaults_match_istio_and_the_sidecar_defaults() {
        let config = capture_config(&injected_pod()).unwrap();
        let expected = CaptureConfig {
            inbound_ports_exclude: vec![15020, 15021, 15090],
            outbound_ports_exclude: vec![15020],
            ..CaptureConfig::sidecar_default()
        };
        assert_eq!(config, expected);
        assert_eq!(
            (config.proxy_uids, config.proxy_gids),
            (vec![1337], vec![1337])
        );
        expected.validate().unwrap();
    }

    #[test]
    fn annotation_mapping_table() {
        let pod = with(
            json!({
                "sidecar.istio.io/interceptionMode": "TPROXY",
                "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8, 172.16.0.0/12",
                "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.10/32,fd00::1/128",
                "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090",
                "traffic.sidecar.istio.io/excludeInboundPorts": "9100",
                "traffic.sidecar.istio.io/includeOutboundPorts": "443",
                "traffic.sidecar.istio.io/excludeOutboundPorts": "5432,5432,6379",
                "traffic.sidecar.istio.io/kubevirtInterfaces": "net1,net2",
                "traffic.sidecar.istio.io/excludeInterfaces": "eth1,veth+"
            }),
            json!([
                {"name": "ISTIO_META_DNS_CAPTURE", "value": "true"},
                {"name": "INVALID_DROP", "value": "1"},
                {"name": "ISTIO_DUAL_STACK", "value": "True"}
            ]),
        );
        let c = capture_config(&pod).unwrap();
        assert_eq!(c.mode, InterceptionMode::Tproxy);
        assert_eq!(
            c.outbound_ranges,
            OutboundRanges::Only(nets(&["10.0.0.0/8", "172.16.0.0/12"]))
        );
        assert_eq!(
            c.outbound_ranges_exclude,
            nets(&["10.96.0.10/32", "fd00::1/128"])
        );
        assert_eq!(c.inbound_ports, InboundPorts::Only(vec![8080, 9090]));
        assert_eq!(c.inbound_ports_exclude, vec![9100, 15020, 15021, 15090]);
        assert_eq!(c.outbound_ports_include, vec![443]);
        assert_eq!(c.outbound_ports_exclude, vec![5432, 6379]);
        assert_eq!(c.reroute_virtual_interfaces, vec!["net1", "net2"]);
        assert_eq!(c.exclude_interfaces, vec!["eth1", "veth+"]);
        assert!(c.redirect_dns && c.capture_all_dns && c.drop_invalid && c.dual_stack);
        assert_eq!(c.proxy_port, CaptureConfig::default().proxy_port);
        c.validate().unwrap();
    }

    #[test]
    fn exclude_inbound_ports_are_deduplicated_in_order() {
        let pod = with(
            json!({"traffic.sidecar.istio.io/excludeInboundPorts": "15090,8081,15020,8081"}),
            json!([]),
        );
        assert_eq!(
            capture_config(&pod).unwrap().inbound_ports_exclude,
            vec![15090, 8081, 15020, 15021]
        );
        assert_eq!(dedup(vec![3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }

    #[test]
    fn wildcards_and_empty_lists() {
        let pod = with(
            json!({
                "traffic.sidecar.istio.io/includeInboundPorts": "",
                "traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
                "traffic.sidecar.istio.io/excludeOutboundPorts": ""
            }),
            json!([]),
        );
        let c = capture_config(&pod).unwrap();
        assert_eq!(c.inbound_ports, InboundPorts::Only(vec![]));
        assert_eq!(c.outbound_ranges, OutboundRanges::All);
        assert_eq!(c.outbound_ports_exclude, Vec::<u16>::new());
    }

    #[test]
    fn reroute_virtual_interfaces_wins_over_kubevirt() {
        let pod = with(
            json!({"istio.io/reroute-virtual-interfaces": "tap0", "traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}),
            json!([]),
        );
        assert_eq!(
            capture_config(&pod).unwrap().reroute_virtual_interfaces,
            vec!["tap0"]
        );
    }

    #[test]
    fn proxy_identity_from_security_context() {
        let mut pod = serde_json::to_value(injected_pod()).unwrap();
        pod["spec"]["containers"][1]["securityContext"]["runAsUser"] = json!(2000);
        pod["spec"]["containers"][1]["securityContext"]["runAsGroup"] = json!(0);
        let c = capture_config(&serde_json::from_value(pod.clone()).unwrap()).unwrap();
        assert_eq!((c.proxy_uids, c.proxy_gids), (vec![2000], vec![1337]));
        pod["spec"]["containers"][1]["securityContext"]["runAsGroup"] = json!(3000);
        let c = capture_config(&serde_json::from_value(pod.clone()).unwrap()).unwrap();
        assert_eq!((c.proxy_uids, c.proxy_gids), (vec![2000], vec![3000]));
        pod["spec"]["containers"][1]
            .as_object_mut()
            .unwrap()
            .remove("securityContext");
        let c = capture_config(&serde_json::from_value(pod).unwrap()).unwrap();
        assert_eq!((c.proxy_uids, c.proxy_gids), (vec![1337], vec![1337]));
    }

    #[test]
    fn invalid_settings_name_the_annotation() {
        let cases = [
            (key::INTERCEPTION_MODE, "MAGIC"),
            (key::EXCLUDE_INBOUND_PORTS, "80,http"),
            (key::INCLUDE_INBOUND_PORTS, "70000"),
            (key::EXCLUDE_OUTBOUND_PORTS, "0"),
            (key::INCLUDE_OUTBOUND_PORTS, "*"),
            (key::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
            (key::EXCLUDE_OUTBOUND_IP_RANGES, "*"),
            (key::EXCLUDE_INTERFACES, "a/b"),
        ];
        for (key, value) in cases {
            let err = capture_config(&with(json!({ key: value }), json!([]))).unwrap_err();
            assert_eq!((err.flag, err.value.as_str()), (key, value));
            assert!(err.to_string().contains(key), "{err}");
        }
        let pod = with(
            json!({}),
            json!([{"name": "ISTIO_META_DNS_CAPTURE", "value": "yes"}]),
        );
        let err = capture_config(&pod).unwrap_err();
        assert_eq!(err.flag, env::DNS_CAPTURE);
        assert!(err.to_string().contains("ISTIO_META_DNS_CAPTURE"), "{err}");
    }

    #[test]
    fn grammar_changes_where_the_old_cni_rules_disagreed_with_istio() {
        // A bare address in an IP-range annotation: the CNI used to read `fd00::1` as
        // `fd00::1/128`; Istio (validateCIDRList, netip.ParsePrefix), the webhook and init
        // refuse it, so now the CNI does too, with the one message of outrigger_api::values.
        for value in ["fd00::1", "10.96.0.10"] {
            let pod = with(
                json!({"traffic.sidecar.istio.io/excludeOutboundIPRanges": value}),
                json!([]),
            );
            let err = capture_config(&pod).unwrap_err();
            assert_eq!(err.flag, key::EXCLUDE_OUTBOUND_IP_RANGES);
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid value {value:?} for traffic.sidecar.istio.io/excludeOutboundIPRanges: \
                     '{value}' is not a CIDR (e.g. 10.0.0.0/8)"
                )
            );
        }
        // Interface names follow the kernel (dev_valid_name): whitespace and a `+` that is not
        // last are refused; a trailing `+` (iptables wildcard) is accepted.
        for bad in ["a\tb", "e+th", "this-name-is-too-long"] {
            let pod = with(
                json!({"traffic.sidecar.istio.io/excludeInterfaces": bad}),
                json!([]),
            );
            assert_eq!(
                capture_config(&pod).unwrap_err().flag,
                key::EXCLUDE_INTERFACES,
                "{bad:?}"
            );
        }
    }
}
