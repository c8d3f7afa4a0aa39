//! Maps an injected pod to capture settings exactly like Istio's CNI plugin does.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;

use super::fields::{annotation, env_value, parse_bool, proxy_container};
use crate::names;

/// How redirected traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
}

/// A port list that may be the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    All,
    Ports(Vec<u16>),
}

/// An IP range list that may be the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSelection {
    All,
    Ranges(Vec<IpNet>),
}

/// Everything the rules depend on that comes from the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    pub interception_mode: InterceptionMode,
    pub include_outbound_ip_ranges: RangeSelection,
    pub exclude_outbound_ip_ranges: Vec<IpNet>,
    pub include_inbound_ports: PortSelection,
    pub exclude_inbound_ports: Vec<u16>,
    pub include_outbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub virtual_interfaces: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// `ISTIO_META_DNS_CAPTURE`: redirect DNS to the proxy and capture all DNS.
    pub dns_capture: bool,
    /// `INVALID_DROP`: drop packets conntrack considers invalid.
    pub drop_invalid: bool,
    /// `ISTIO_DUAL_STACK`.
    pub dual_stack: bool,
}

/// A pod setting we cannot turn into rules; `key` names the annotation or env variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key} value {value:?}: {reason}")]
pub struct PodSettingsError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> PodSettingsError {
    PodSettingsError {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

impl CaptureSettings {
    /// Reads the settings from a pod that passed the skip rules.
    pub fn from_pod(pod: &Pod) -> Result<Self, PodSettingsError> {
        let proxy = proxy_container(pod);
        let security = proxy.and_then(|c| c.security_context.as_ref());
        let proxy_uid = id_or_default(security.and_then(|s| s.run_as_user));
        let proxy_gid = id_or_default(security.and_then(|s| s.run_as_group));
        let env = |key: &'static str| -> Result<bool, PodSettingsError> {
            match proxy.and_then(|c| env_value(c, key)) {
                None => Ok(false),
                Some(text) => parse_bool(text).ok_or_else(|| invalid(key, text, "not a boolean")),
            }
        };

        let mut exclude_inbound_ports = port_list(pod, names::ANNOTATION_EXCLUDE_INBOUND_PORTS)?
            .unwrap_or_else(|| vec![names::STATUS_PORT]);
        exclude_inbound_ports.extend([
            names::STATUS_PORT,
            names::HEALTH_PORT,
            names::PROXY_METRICS_PORT,
        ]);

        let virtual_interfaces = match annotation(pod, names::ANNOTATION_REROUTE_VIRTUAL_INTERFACES)
        {
            Some(_) => interface_list(pod, names::ANNOTATION_REROUTE_VIRTUAL_INTERFACES)?,
            None => interface_list(pod, names::ANNOTATION_KUBEVIRT_INTERFACES)?,
        };

        Ok(Self {
            interception_mode: interception_mode(pod)?,
            include_outbound_ip_ranges: range_selection(
                pod,
                names::ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES,
            )?
            .unwrap_or(RangeSelection::All),
            exclude_outbound_ip_ranges: range_list(
                pod,
                names::ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES,
            )?,
            include_inbound_ports: port_selection(pod, names::ANNOTATION_INCLUDE_INBOUND_PORTS)?
                .unwrap_or(PortSelection::All),
            exclude_inbound_ports: dedup(exclude_inbound_ports),
            include_outbound_ports: port_list(pod, names::ANNOTATION_INCLUDE_OUTBOUND_PORTS)?
                .unwrap_or_default(),
            exclude_outbound_ports: dedup(
                port_list(pod, names::ANNOTATION_EXCLUDE_OUTBOUND_PORTS)?
                    .unwrap_or_else(|| vec![names::STATUS_PORT]),
            ),
            virtual_interfaces,
            exclude_interfaces: interface_list(pod, names::ANNOTATION_EXCLUDE_INTERFACES)?,
            proxy_uid,
            proxy_gid,
            dns_capture: env(names::ENV_DNS_CAPTURE)?,
            drop_invalid: env(names::ENV_INVALID_DROP)?,
            dual_stack: env(names::ENV_DUAL_STACK)?,
        })
    }
}

/// 0 (root) or unset means the default proxy identity.
fn id_or_default(id: Option<i64>) -> u32 {
    id.and_then(|id| u32::try_from(id).ok())
        .filter(|id| *id != 0)
        .unwrap_or(names::DEFAULT_PROXY_UID)
}

/// Keeps the first occurrence of each port, in order.
pub fn dedup(ports: Vec<u16>) -> Vec<u16> {
    let mut seen = std::collections::HashSet::new();
    ports.into_iter().filter(|p| seen.insert(*p)).collect()
}

fn interception_mode(pod: &Pod) -> Result<InterceptionMode, PodSettingsError> {
    let key = names::ANNOTATION_INTERCEPTION_MODE;
    match annotation(pod, key) {
        None | Some("REDIRECT") => Ok(InterceptionMode::Redirect),
        Some("TPROXY") => Ok(InterceptionMode::Tproxy),
        Some(other) => Err(invalid(key, other, "must be REDIRECT or TPROXY")),
    }
}

/// Comma-separated items with surrounding spaces and empty items dropped.
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_ports(key: &'static str, text: &str) -> Result<Vec<u16>, PodSettingsError> {
    items(text)
        .map(|item| match item.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(invalid(
                key,
                text,
                format!("{item:?} is not a port number (1-65535)"),
            )),
        })
        .collect()
}

fn port_list(pod: &Pod, key: &'static str) -> Result<Option<Vec<u16>>, PodSettingsError> {
    annotation(pod, key)
        .map(|text| parse_ports(key, text))
        .transpose()
}

fn port_selection(pod: &Pod, key: &'static str) -> Result<Option<PortSelection>, PodSettingsError> {
    annotation(pod, key)
        .map(|text| match text.trim() {
            "*" => Ok(PortSelection::All),
            _ => parse_ports(key, text).map(PortSelection::Ports),
        })
        .transpose()
}

fn parse_ranges(key: &'static str, text: &str) -> Result<Vec<IpNet>, PodSettingsError> {
    items(text)
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| invalid(key, text, format!("{item:?} is not a CIDR")))
        })
        .collect()
}

fn range_list(pod: &Pod, key: &'static str) -> Result<Vec<IpNet>, PodSettingsError> {
    Ok(annotation(pod, key)
        .map(|text| parse_ranges(key, text))
        .transpose()?
        .unwrap_or_default())
}

fn range_selection(
    pod: &Pod,
    key: &'static str,
) -> Result<Option<RangeSelection>, PodSettingsError> {
    annotation(pod, key)
        .map(|text| match text.trim() {
            "*" => Ok(RangeSelection::All),
            _ => parse_ranges(key, text).map(RangeSelection::Ranges),
        })
        .transpose()
}

fn interface_list(pod: &Pod, key: &'static str) -> Result<Vec<String>, PodSettingsError> {
    let Some(text) = annotation(pod, key) else {
        return Ok(Vec::new());
    };
    items(text)
        .map(|name| {
            let valid =
                name.len() < 16 && !name.contains(['/', ' ', ':']) && name != "." && name != "..";
            if valid {
                Ok(name.to_string())
            } else {
                Err(invalid(
                    key,
                    text,
                    format!("{name:?} is not an interface name"),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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

    #[test]
    fn defaults_match_istio() {
        let settings = CaptureSettings::from_pod(&injected_pod()).unwrap();
        assert_eq!(
            settings,
            CaptureSettings {
                interception_mode: InterceptionMode::Redirect,
                include_outbound_ip_ranges: RangeSelection::All,
                exclude_outbound_ip_ranges: vec![],
                include_inbound_ports: PortSelection::All,
                exclude_inbound_ports: vec![15020, 15021, 15090],
                include_outbound_ports: vec![],
                exclude_outbound_ports: vec![15020],
                virtual_interfaces: vec![],
                exclude_interfaces: vec![],
                proxy_uid: 1337,
                proxy_gid: 1337,
                dns_capture: false,
                drop_invalid: false,
                dual_stack: false,
            }
        );
    }

    #[test]
    fn annotation_mapping_table() {
        let pod = with(
            json!({
                "sidecar.istio.io/interceptionMode": "TPROXY",
                "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8, 172.16.0.0/12",
                "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.10/32,fd00::1",
                "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090",
                "traffic.sidecar.istio.io/excludeInboundPorts": "9100",
                "traffic.sidecar.istio.io/includeOutboundPorts": "443",
                "traffic.sidecar.istio.io/excludeOutboundPorts": "5432,5432,6379",
                "traffic.sidecar.istio.io/kubevirtInterfaces": "net1,net2",
                "traffic.sidecar.istio.io/excludeInterfaces": "eth1"
            }),
            json!([
                {"name": "ISTIO_META_DNS_CAPTURE", "value": "true"},
                {"name": "INVALID_DROP", "value": "1"},
                {"name": "ISTIO_DUAL_STACK", "value": "True"}
            ]),
        );
        let s = CaptureSettings::from_pod(&pod).unwrap();
        assert_eq!(s.interception_mode, InterceptionMode::Tproxy);
        assert_eq!(
            s.include_outbound_ip_ranges,
            RangeSelection::Ranges(vec![
                "10.0.0.0/8".parse().unwrap(),
                "172.16.0.0/12".parse().unwrap()
            ])
        );
        assert_eq!(
            s.exclude_outbound_ip_ranges,
            vec![
                "10.96.0.10/32".parse::<IpNet>().unwrap(),
                "fd00::1/128".parse().unwrap()
            ]
        );
        assert_eq!(
            s.include_inbound_ports,
            PortSelection::Ports(vec![8080, 9090])
        );
        assert_eq!(s.exclude_inbound_ports, vec![9100, 15020, 15021, 15090]);
        assert_eq!(s.include_outbound_ports, vec![443]);
        assert_eq!(s.exclude_outbound_ports, vec![5432, 6379]);
        assert_eq!(s.virtual_interfaces, vec!["net1", "net2"]);
        assert_eq!(s.exclude_interfaces, vec!["eth1"]);
        assert!(s.dns_capture && s.drop_invalid && s.dual_stack);
    }

    #[test]
    fn exclude_inbound_ports_are_deduplicated_in_order() {
        let pod = with(
            json!({"traffic.sidecar.istio.io/excludeInboundPorts": "15090,8081,15020,8081"}),
            json!([]),
        );
        assert_eq!(
            CaptureSettings::from_pod(&pod)
                .unwrap()
                .exclude_inbound_ports,
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
        let s = CaptureSettings::from_pod(&pod).unwrap();
        assert_eq!(s.include_inbound_ports, PortSelection::Ports(vec![]));
        assert_eq!(s.include_outbound_ip_ranges, RangeSelection::All);
        assert_eq!(s.exclude_outbound_ports, Vec::<u16>::new());
    }

    #[test]
    fn reroute_virtual_interfaces_wins_over_kubevirt() {
        let pod = with(
            json!({"istio.io/reroute-virtual-interfaces": "tap0", "traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}),
            json!([]),
        );
        assert_eq!(
            CaptureSettings::from_pod(&pod).unwrap().virtual_interfaces,
            vec!["tap0"]
        );
    }

    #[test]
    fn proxy_identity_from_security_context() {
        let mut pod = serde_json::to_value(injected_pod()).unwrap();
        pod["spec"]["containers"][1]["securityContext"]["runAsUser"] = json!(2000);
        pod["spec"]["containers"][1]["securityContext"]["runAsGroup"] = json!(0);
        let s = CaptureSettings::from_pod(&serde_json::from_value(pod.clone()).unwrap()).unwrap();
        assert_eq!((s.proxy_uid, s.proxy_gid), (2000, 1337));
        pod["spec"]["containers"][1]
            .as_object_mut()
            .unwrap()
            .remove("securityContext");
        let s = CaptureSettings::from_pod(&serde_json::from_value(pod).unwrap()).unwrap();
        assert_eq!((s.proxy_uid, s.proxy_gid), (1337, 1337));
    }

    #[test]
    fn invalid_settings_name_the_annotation() {
        let cases = [
            (
                json!({"sidecar.istio.io/interceptionMode": "MAGIC"}),
                json!([]),
                names::ANNOTATION_INTERCEPTION_MODE,
            ),
            (
                json!({"traffic.sidecar.istio.io/excludeInboundPorts": "80,http"}),
                json!([]),
                names::ANNOTATION_EXCLUDE_INBOUND_PORTS,
            ),
            (
                json!({"traffic.sidecar.istio.io/includeInboundPorts": "70000"}),
                json!([]),
                names::ANNOTATION_INCLUDE_INBOUND_PORTS,
            ),
            (
                json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "0"}),
                json!([]),
                names::ANNOTATION_EXCLUDE_OUTBOUND_PORTS,
            ),
            (
                json!({"traffic.sidecar.istio.io/includeOutboundPorts": "*"}),
                json!([]),
                names::ANNOTATION_INCLUDE_OUTBOUND_PORTS,
            ),
            (
                json!({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/33"}),
                json!([]),
                names::ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES,
            ),
            (
                json!({"traffic.sidecar.istio.io/excludeOutboundIPRanges": "*"}),
                json!([]),
                names::ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES,
            ),
            (
                json!({"traffic.sidecar.istio.io/excludeInterfaces": "a/b"}),
                json!([]),
                names::ANNOTATION_EXCLUDE_INTERFACES,
            ),
            (
                json!({}),
                json!([{"name": "ISTIO_META_DNS_CAPTURE", "value": "yes"}]),
                names::ENV_DNS_CAPTURE,
            ),
        ];
        for (annotations, env, key) in cases {
            let err = CaptureSettings::from_pod(&with(annotations.clone(), env)).unwrap_err();
            assert_eq!(err.key, key, "{annotations}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
