//! The skip rules: which sandboxes the plugin passes through untouched, and why.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use outrigger_api::names::{annotation as key, container, env};
use outrigger_api::values::{parse_bool, parse_inject_switch};

use super::fields::{annotation, env_value, has_init_container, label, proxy_container};
use crate::cni::CniArgs;
use crate::config::PluginConfig;

/// Why a sandbox is passed through without rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// CNI_ARGS carry no K8S_POD_NAMESPACE/K8S_POD_NAME.
    NotKubernetes,
    ExcludedNamespace,
    /// The installer DaemonSet's own pod.
    InstallerPod,
    /// The pod has an `istio-init` container: it installs its own rules.
    HasInitContainer,
    /// No `istio-proxy` container.
    NoProxy,
    /// `DISABLE_ENVOY=true` on the proxy.
    EnvoyDisabled,
    /// `sidecar.istio.io/inject` says no (label, else annotation; Istio's injector grammar).
    InjectionDisabled,
    /// No `sidecar.istio.io/status` annotation: the injector did not process the pod.
    NotInjected,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotKubernetes => "not a Kubernetes pod",
            Self::ExcludedNamespace => "namespace excluded",
            Self::InstallerPod => "the node installer's own pod",
            Self::HasInitContainer => "pod has an istio-init container",
            Self::NoProxy => "pod has no istio-proxy container",
            Self::EnvoyDisabled => "DISABLE_ENVOY is set on istio-proxy",
            Self::InjectionDisabled => "injection disabled on the pod",
            Self::NotInjected => "pod has no sidecar.istio.io/status annotation",
        })
    }
}

/// The outcome of the checks that need no API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    Skip(SkipReason),
    /// Look the pod up: (namespace, name).
    Lookup(&'a str, &'a str),
}

/// Decides from CNI_ARGS and the configuration alone, before any API call.
pub fn before_lookup<'a>(args: &'a CniArgs, config: &PluginConfig) -> Decision<'a> {
    let Some((namespace, name)) = args.pod() else {
        return Decision::Skip(SkipReason::NotKubernetes);
    };
    if config.exclude_namespaces.iter().any(|ns| ns == namespace) {
        return Decision::Skip(SkipReason::ExcludedNamespace);
    }
    let installer = &config.installer_pods;
    if namespace == installer.namespace && name.starts_with(&installer.name_prefix) {
        return Decision::Skip(SkipReason::InstallerPod);
    }
    Decision::Lookup(namespace, name)
}

/// `sidecar.istio.io/inject` read as Istio's injector reads it (`injectRequired`,
/// pkg/kube/inject/webhook.go): the label, when present, wins over the annotation; `y`, `yes`,
/// `true`, `on` (any case) mean inject, any other non-empty value means do not, empty is unset.
fn injection_disabled(pod: &Pod) -> bool {
    label(pod, key::INJECT)
        .or_else(|| annotation(pod, key::INJECT))
        .and_then(parse_inject_switch)
        == Some(false)
}

/// Decides from the pod object: `None` means its traffic is to be captured.
pub fn skip_reason(pod: &Pod) -> Option<SkipReason> {
    if has_init_container(pod, container::INIT) {
        return Some(SkipReason::HasInitContainer);
    }
    let Some(proxy) = proxy_container(pod) else {
        return Some(SkipReason::NoProxy);
    };
    if env_value(proxy, env::DISABLE_ENVOY).and_then(|v| parse_bool(v).ok()) == Some(true) {
        return Some(SkipReason::EnvoyDisabled);
    }
    if injection_disabled(pod) {
        return Some(SkipReason::InjectionDisabled);
    }
    if annotation(pod, key::STATUS).is_none() {
        return Some(SkipReason::NotInjected);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::capture::tests::injected_pod;
    use serde_json::json;

    fn config(excluded: &[&str]) -> PluginConfig {
        let mut conf = PluginConfig::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap();
        conf.exclude_namespaces = excluded.iter().map(|s| s.to_string()).collect();
        conf
    }

    fn edit(f: impl FnOnce(&mut serde_json::Value)) -> Pod {
        let mut value = serde_json::to_value(injected_pod()).unwrap();
        f(&mut value);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pre_lookup_rules() {
        let conf = config(&["kube-system"]);
        let cases = [
            ("", Decision::Skip(SkipReason::NotKubernetes)),
            (
                "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1",
                Decision::Skip(SkipReason::ExcludedNamespace),
            ),
            (
                "K8S_POD_NAMESPACE=outrigger-system;K8S_POD_NAME=outrigger-cni-node-x7k2p",
                Decision::Skip(SkipReason::InstallerPod),
            ),
            (
                "K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istiod-5f7c",
                Decision::Lookup("istio-system", "istiod-5f7c"),
            ),
            (
                "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=outrigger-cni-node-x",
                Decision::Lookup("shop", "outrigger-cni-node-x"),
            ),
        ];
        for (args, expected) in cases {
            let args = CniArgs::parse(args).unwrap();
            assert_eq!(before_lookup(&args, &conf), expected, "{args:?}");
        }
    }

    #[test]
    fn injected_pod_is_captured() {
        assert_eq!(skip_reason(&injected_pod()), None);
    }

    #[test]
    fn native_sidecar_proxy_counts_as_proxy() {
        let pod = edit(|p| {
            let proxy = p["spec"]["containers"][1].take();
            p["spec"]["containers"].as_array_mut().unwrap().remove(1);
            let mut proxy = proxy;
            proxy["restartPolicy"] = json!("Always");
            p["spec"]["initContainers"]
                .as_array_mut()
                .unwrap()
                .push(proxy);
        });
        assert_eq!(skip_reason(&pod), None);
    }

    #[test]
    fn every_pod_skip_rule() {
        let cases: Vec<(Pod, SkipReason)> = vec![
            (
                edit(|p| p["spec"]["initContainers"][0]["name"] = json!("istio-init")),
                SkipReason::HasInitContainer,
            ),
            (
                edit(|p| p["spec"]["containers"][1]["name"] = json!("envoy")),
                SkipReason::NoProxy,
            ),
            (
                edit(|p| {
                    p["spec"]["containers"][1]["env"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "DISABLE_ENVOY", "value": "true"}))
                }),
                SkipReason::EnvoyDisabled,
            ),
            (
                edit(|p| p["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("false")),
                SkipReason::InjectionDisabled,
            ),
            (
                edit(|p| p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")),
                SkipReason::InjectionDisabled,
            ),
            (
                edit(|p| {
                    p["metadata"]["annotations"]
                        .as_object_mut()
                        .unwrap()
                        .remove("sidecar.istio.io/status");
                }),
                SkipReason::NotInjected,
            ),
        ];
        for (pod, reason) in cases {
            assert_eq!(skip_reason(&pod), Some(reason));
        }
    }

    #[test]
    fn inject_label_wins_over_annotation() {
        let pod = edit(|p| {
            p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
            p["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("false");
        });
        assert_eq!(skip_reason(&pod), None);
        let pod = edit(|p| {
            p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
            p["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("true");
        });
        assert_eq!(skip_reason(&pod), Some(SkipReason::InjectionDisabled));
    }

    #[test]
    fn disable_envoy_false_does_not_skip() {
        let pod = edit(|p| {
            p["spec"]["containers"][1]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "DISABLE_ENVOY", "value": "false"}))
        });
        assert_eq!(skip_reason(&pod), None);
    }

    #[test]
    fn inject_values_follow_istios_injector() {
        // Istio (`injectRequired`): only y/yes/true/on, in any case, mean inject; every other
        // non-empty value means "do not". Before, the CNI read Go booleans: "no" and "off" did
        // not skip, "0" did; now all three skip, and so does "1" (not an Istio "yes").
        for (value, skipped) in [
            ("true", false),
            ("Yes", false),
            ("y", false),
            ("ON", false),
            ("", false),
            ("false", true),
            ("no", true),
            ("off", true),
            ("0", true),
            ("1", true),
            ("enabled", true),
        ] {
            for place in ["labels", "annotations"] {
                let pod = edit(|p| p["metadata"][place]["sidecar.istio.io/inject"] = json!(value));
                let expected = skipped.then_some(SkipReason::InjectionDisabled);
                assert_eq!(skip_reason(&pod), expected, "{place}: {value:?}");
            }
        }
        // A present label wins even when the annotation says otherwise, as in Istio.
        let pod = edit(|p| {
            p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("no");
            p["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("yes");
        });
        assert_eq!(skip_reason(&pod), Some(SkipReason::InjectionDisabled));
    }
}
