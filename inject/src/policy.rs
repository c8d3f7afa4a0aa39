//! The injection decision, in Istio's order: hostNetwork, ignored namespaces, the pod's
//! `sidecar.istio.io/inject` label (wins) or annotation, neverInjectSelector,
//! alwaysInjectSelector, then the configured policy.

use outrigger_api::names::{IGNORED_NAMESPACES, annotation::INJECT};
use outrigger_api::values;
use serde_json::Value;

use super::config::{InjectorConfig, Policy};
use super::selector;

/// A decision with its reason; `label` is the low-cardinality metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub inject: bool,
    pub label: &'static str,
    pub reason: String,
}

impl Decision {
    fn yes(label: &'static str, reason: String) -> Self {
        Decision {
            inject: true,
            label,
            reason,
        }
    }
    fn no(label: &'static str, reason: String) -> Self {
        Decision {
            inject: false,
            label,
            reason,
        }
    }
}

/// Decides whether `pod` (in `namespace`) gets a sidecar.
pub fn decide(pod: &Value, namespace: &str, config: &InjectorConfig) -> Decision {
    if pod["spec"]["hostNetwork"] == Value::Bool(true) {
        return Decision::no("host_network", "pod uses hostNetwork".to_owned());
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Decision::no(
            "ignored_namespace",
            format!("namespace '{namespace}' is never injected"),
        );
    }
    let labels = pod["metadata"]["labels"].as_object();
    if let Some(d) = explicit(pod) {
        return d;
    }
    for sel in &config.never_inject_selector {
        if !selector::is_empty(sel) && selector::matches(sel, labels) {
            return Decision::no(
                "never_inject_selector",
                "pod labels match a neverInjectSelector".to_owned(),
            );
        }
    }
    for sel in &config.always_inject_selector {
        if !selector::is_empty(sel) && selector::matches(sel, labels) {
            return Decision::yes(
                "always_inject_selector",
                "pod labels match an alwaysInjectSelector".to_owned(),
            );
        }
    }
    match config.policy {
        Policy::Enabled => Decision::yes(
            "policy_enabled",
            "injection policy is enabled and the pod does not opt out".to_owned(),
        ),
        Policy::Disabled => Decision::no(
            "policy_disabled",
            format!("injection policy is disabled and the pod does not set {INJECT}=\"true\""),
        ),
    }
}

/// The pod's own choice, read as Istio's `injectRequired` (pkg/kube/inject/webhook.go) reads
/// it: the label, when present, wins over the annotation (even when the label says less);
/// `y`, `yes`, `true`, `on` in any case inject, any other value does not, empty leaves the
/// decision to the selectors and the policy.
fn explicit(pod: &Value) -> Option<Decision> {
    let meta = pod.get("metadata");
    let switch = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(|m| m.get(INJECT))
            .and_then(Value::as_str)
    };
    let (kind, text) = match switch("labels") {
        Some(text) => ("label", text),
        None => ("annotation", switch("annotations")?),
    };
    match values::parse_inject_switch(text)? {
        true => Some(Decision::yes(
            "pod_enabled",
            format!("pod {kind} {INJECT}=\"{text}\""),
        )),
        false => {
            let says_no = matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "n" | "no" | "false" | "off"
            );
            let note = if says_no {
                ""
            } else {
                " (only y, yes, true or on, in any case, inject)"
            };
            Some(Decision::no(
                "pod_disabled",
                format!("pod {kind} {INJECT}=\"{text}\"{note}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(policy: &str, never: Value, always: Value) -> InjectorConfig {
        serde_yaml_ng::from_str(
            &json!({"policy": policy, "neverInjectSelector": never, "alwaysInjectSelector": always})
                .to_string(),
        )
        .unwrap()
    }
    fn pod(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"labels": labels, "annotations": annotations}, "spec": {"containers": []}})
    }

    /// The whole truth table: (policy, label, annotation, never matches, always matches) → (inject, label).
    #[test]
    fn truth_table() {
        let never = json!([{"matchLabels": {"never": "x"}}]);
        let always = json!([{"matchLabels": {"always": "x"}}]);
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            bool,
            bool,
            bool,
            &'a str,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // (policy, label, annotation, never matches, always matches, inject, decision label)
            ("enabled", None, None, false, false, true, "policy_enabled"),
            ("disabled", None, None, false, false, false, "policy_disabled"),
            ("disabled", Some("true"), None, false, false, true, "pod_enabled"),
            ("enabled", Some("false"), None, false, false, false, "pod_disabled"),
            ("disabled", None, Some("true"), false, false, true, "pod_enabled"),
            ("enabled", None, Some("false"), false, false, false, "pod_disabled"),
            // label wins over annotation
            ("enabled", Some("false"), Some("true"), false, false, false, "pod_disabled"),
            ("disabled", Some("true"), Some("false"), false, false, true, "pod_enabled"),
            // Istio's spellings (issue 14 #5): y/yes/true/on in any case inject, anything else
            // does not; the label, when present, hides the annotation
            ("disabled", Some("Yes"), None, false, false, true, "pod_enabled"),
            ("disabled", None, Some("ON"), false, false, true, "pod_enabled"),
            ("disabled", None, Some("TRUE"), false, false, true, "pod_enabled"),
            ("disabled", Some("y"), Some("false"), false, false, true, "pod_enabled"),
            ("enabled", Some("enabled"), Some("true"), false, true, false, "pod_disabled"),
            ("enabled", None, Some("enabled"), false, true, false, "pod_disabled"),
            ("enabled", None, Some("1"), false, false, false, "pod_disabled"),
            // empty: the selectors and the policy decide
            ("disabled", Some(""), Some("true"), false, false, false, "policy_disabled"),
            ("enabled", None, Some(""), true, false, false, "never_inject_selector"),
            // selectors only when the pod says nothing; never before always
            ("enabled", None, None, true, false, false, "never_inject_selector"),
            ("disabled", None, None, false, true, true, "always_inject_selector"),
            ("disabled", None, None, true, true, false, "never_inject_selector"),
            ("enabled", Some("true"), None, true, false, true, "pod_enabled"),
            ("disabled", None, Some("false"), false, true, false, "pod_disabled"),
        ];
        for (i, (policy, label, ann, n, a, want, want_label)) in cases.iter().enumerate() {
            let mut labels = json!({});
            let mut anns = json!({});
            if let Some(l) = label {
                labels[INJECT] = json!(l);
            }
            if let Some(v) = ann {
                anns[INJECT] = json!(v);
            }
            if *n {
                labels["never"] = json!("x");
            }
            if *a {
                labels["always"] = json!("x");
            }
            let d = decide(
                &pod(labels, anns),
                "shop",
                &cfg(policy, never.clone(), always.clone()),
            );
            assert_eq!((d.inject, d.label), (*want, *want_label), "case {i}: {d:?}");
            assert!(!d.reason.is_empty());
        }
    }

    #[test]
    fn host_network_and_ignored_namespaces_come_first() {
        let c = cfg("enabled", json!([]), json!([]));
        let mut p = pod(json!({INJECT: "true"}), json!({}));
        p["spec"]["hostNetwork"] = json!(true);
        assert_eq!(decide(&p, "shop", &c).label, "host_network");
        let p = pod(json!({INJECT: "true"}), json!({}));
        for ns in IGNORED_NAMESPACES {
            let d = decide(&p, ns, &c);
            assert_eq!((d.inject, d.label), (false, "ignored_namespace"));
            assert!(d.reason.contains(ns));
        }
    }

    #[test]
    fn empty_selector_matches_nothing() {
        let c = cfg("disabled", json!([]), json!([{}]));
        assert_eq!(
            decide(&pod(json!({}), json!({})), "shop", &c).label,
            "policy_disabled"
        );
    }
}
