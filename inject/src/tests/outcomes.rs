//! Patch round trip, errors, skips, switches, templates and configuration errors.

use outrigger_api::names::{
    annotation::{
        EXCLUDE_INBOUND_PORTS, INJECT, INTERCEPTION_MODE, NATIVE_SIDECAR, REVISION, REWRITE_PROBES,
        STATUS, TEMPLATES,
    },
    env,
};
use serde_json::json;

use super::*;
use crate::*;

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
    assert_eq!(e.label(), "invalid_annotation");
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

/// `sidecar.istio.io/inject` as Istio reads it (issue 14 #5): y/yes/true/on in any case inject,
/// anything else does not, and the label, when present, wins over the annotation.
#[test]
fn the_inject_switch_reads_istio_spellings_and_the_label_wins() {
    let disabled = Config::from_sources("policy: disabled\n", "", "").unwrap();
    let enabled = Config::embedded().unwrap();
    let with = |label: Option<&str>, ann: Option<&str>| {
        let mut pod = web();
        if let Some(v) = label {
            pod["metadata"]["labels"][INJECT] = json!(v);
        }
        if let Some(v) = ann {
            pod["metadata"]["annotations"][INJECT] = json!(v);
        }
        pod
    };
    /// (configuration, label, annotation, injected?, decision label)
    type Case<'a> = (&'a Config, Option<&'a str>, Option<&'a str>, bool, &'a str);
    let cases: &[Case] = &[
        (&disabled, Some("Yes"), None, true, "pod_enabled"),
        (&disabled, None, Some("ON"), true, "pod_enabled"),
        (&disabled, None, Some("y"), true, "pod_enabled"),
        (&disabled, Some("true"), Some("false"), true, "pod_enabled"),
        (&enabled, Some("false"), Some("true"), false, "pod_disabled"),
        (&enabled, None, Some("enabled"), false, "pod_disabled"),
        (&enabled, Some("NO"), None, false, "pod_disabled"),
        (&enabled, Some(""), Some("false"), true, "policy_enabled"),
        (&disabled, None, Some(""), false, "policy_disabled"),
    ];
    for (config, label, ann, want, why) in cases {
        let got = inject(&with(*label, *ann), &req(), config).unwrap();
        match (&got, want) {
            (Outcome::Injected { .. }, true) => {
                assert_eq!(decide(&with(*label, *ann), &req(), config).label, *why)
            }
            (Outcome::Skipped(r), false) => assert_eq!(r.label, *why, "{label:?} {ann:?}"),
            _ => panic!("label {label:?}, annotation {ann:?}: {got:?}"),
        }
    }
    let Outcome::Skipped(r) = inject(&with(None, Some("enabled")), &req(), &enabled).unwrap()
    else {
        panic!("expected skip")
    };
    assert_eq!(
        r.message,
        "pod annotation sidecar.istio.io/inject=\"enabled\" (only y, yes, true or on, in any case, inject)"
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
        env(find(&pod, "containers", "istio-proxy"), env::APP_PROBERS),
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

#[test]
fn every_loaded_configuration_has_its_own_id() {
    let a = Config::embedded().unwrap();
    let b = Config::embedded().unwrap();
    assert_ne!(a.id(), b.id(), "same sources, still another configuration");
    assert_eq!(a.clone().id(), a.id(), "a clone is the same configuration");
}
