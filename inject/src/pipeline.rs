//! The injection pipeline for one pod: undo an earlier injection, resolve per-pod settings,
//! render and merge the templates, then post-process in Rust (probes, prometheus, labels,
//! annotations, status, container order).

use std::borrow::Cow;

use outrigger_api::names::{
    annotation::{
        INTERCEPTION_MODE, NATIVE_SIDECAR, PROXY_CONFIG, REVISION, REWRITE_PROBES, STATUS,
        STATUS_PORT,
    },
    container, env, port,
};
use outrigger_api::values;
use serde_json::{Map, Value, json};

use super::config::{Config, ProxyConfig};
use super::status::{self, Status};
use super::{
    InjectError, InjectRequest, annotation, annotations_mut, labels, merge, probes, prometheus,
    template,
};

/// Per-pod settings resolved from annotations, proxy config, values and the request.
struct Settings<'c> {
    /// The mesh's `defaultConfig` (loaded once), or merged with the pod's annotation.
    proxy_config: Cow<'c, Value>,
    typed: Cow<'c, ProxyConfig>,
    interception_mode: String,
    status_port: u16,
    native: bool,
    hold: bool,
}

fn settings<'c>(
    pod: &Value,
    req: &InjectRequest,
    config: &'c Config,
) -> Result<Settings<'c>, InjectError> {
    let c = &config.inner;
    let defaults = match c.mesh_raw.get("defaultConfig") {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(json!({})),
    };
    let (proxy_config, typed) = match annotation(pod, PROXY_CONFIG) {
        // `mesh.default_config` is `defaultConfig` typed at load.
        None => (defaults, Cow::Borrowed(&c.mesh.default_config)),
        Some(text) => {
            let bad = |e: String| {
                InjectError::InvalidAnnotations(vec![format!(
                    "invalid value '{text}' for annotation '{PROXY_CONFIG}': {e}"
                )])
            };
            let mut merged = defaults.into_owned();
            let over: Value = serde_yaml_ng::from_str(text).map_err(|e| bad(e.to_string()))?;
            if !over.is_null() {
                merge::deep_merge(&mut merged, over);
            }
            let typed: ProxyConfig =
                serde_json::from_value(merged.clone()).map_err(|e| bad(e.to_string()))?;
            (Cow::Owned(merged), Cow::Owned(typed))
        }
    };
    let interception_mode = annotation(pod, INTERCEPTION_MODE)
        .map(str::to_owned)
        .or_else(|| typed.interception_mode.clone())
        .unwrap_or_else(|| "REDIRECT".to_owned());
    let status_port = annotation(pod, STATUS_PORT)
        .and_then(|p| p.parse().ok())
        .or(typed.status_port)
        .or(Some(c.values.global.proxy.status_port).filter(|p| *p != 0))
        .unwrap_or(port::STATUS);
    let native = req
        .native_sidecars
        .or_else(|| annotation(pod, NATIVE_SIDECAR).map(|v| v == "true"))
        .unwrap_or(c.values.global.native_sidecars);
    let hold = typed
        .hold_application_until_proxy_starts
        .unwrap_or(c.values.global.proxy.hold_application_until_proxy_starts);
    Ok(Settings {
        proxy_config,
        typed,
        interception_mode,
        status_port,
        native,
        hold,
    })
}

/// Renders and merges `names` onto the pod, then post-processes.
pub(super) fn apply(
    original: &Value,
    req: &InjectRequest,
    config: &Config,
    names: &[String],
) -> Result<Value, InjectError> {
    let c = &config.inner;
    let mut pod = original.clone();
    let previous = status::strip_previous(&mut pod).map_err(InjectError::Other)?;
    let s = settings(&pod, req, config)?;
    if let Some(p) = &previous.probers
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(p)
    {
        probes::restore(&mut pod, &map);
    }
    if let Some(anns) = annotations_mut(&mut pod) {
        prometheus::restore(anns, previous.prometheus.as_deref(), s.status_port);
    }

    let workload = labels::workload(&pod, &req.namespace, req.workload_name.as_deref());
    let apps: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] != container::PROXY)
        .collect();
    let app_containers = apps
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect::<Vec<_>>()
        .join(",");
    let pod_ports = Value::Array(
        apps.iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .collect(),
    )
    .to_string();
    let revision = req
        .revision
        .clone()
        .unwrap_or_else(|| c.injector.revision.clone());
    // Serializing a JSON value cannot fail.
    let proxy_config_json = serde_json::to_string(s.proxy_config.as_ref()).unwrap_or_default();
    let overlays = {
        let ctx = template::Context {
            pod: &pod,
            proxy_config: &s.proxy_config,
            revision: &revision,
            namespace: &req.namespace,
            proxy_uid: c.values.global.proxy.uid,
            proxy_gid: c.values.global.proxy.gid,
            native_sidecar: s.native,
            interception_mode: &s.interception_mode,
            status_port: s.status_port,
            cni_enabled: c.values.pilot.cni.enabled,
            workload_name: &workload.name,
            owner: &workload.owner,
            app_containers: &app_containers,
            pod_ports: &pod_ports,
            concurrency: s.typed.concurrency,
            termination_drain_duration: s.typed.termination_drain_duration.as_deref(),
            termination_grace_seconds: pod["spec"]["terminationGracePeriodSeconds"].as_i64(),
            hold_application: s.hold,
            proxy_status_port: (s.status_port != 0 && s.status_port != port::STATUS)
                .then_some(s.status_port),
            proxy_config_json: &proxy_config_json,
            istio_token: template::IstioToken::NAMES,
            root_cert: template::RootCert::NAMES,
        };
        names
            .iter()
            .map(|n| {
                c.templates
                    .render(n, &ctx)
                    .map_err(|reason| InjectError::Template {
                        name: n.clone(),
                        reason,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut record = Status {
        revision: revision.clone(),
        ..Default::default()
    };
    for overlay in &overlays {
        record.record(overlay, &pod);
        merge::merge(&mut pod, overlay);
    }
    post_process(&mut pod, req, config, &s, &workload.name, &record)?;
    Ok(pod)
}

fn post_process(
    pod: &mut Value,
    req: &InjectRequest,
    config: &Config,
    s: &Settings,
    workload_name: &str,
    record: &Status,
) -> Result<(), InjectError> {
    let c = &config.inner;
    let has_proxy = proxy(pod).is_some();
    let mut env: Vec<(String, String)> = Vec::new();
    // Go's ParseBool, as Istio's ShouldRewriteAppHTTPProbers (validated before).
    let rewrite = annotation(pod, REWRITE_PROBES)
        .and_then(|v| values::parse_bool(v).ok())
        .unwrap_or(c.values.sidecar_injector_webhook.rewrite_app_http_probe);
    // Status port 0 is "no status port": no probe is sent to it and no metrics are merged
    // there (Istio would point the probes at port 0, which the API server refuses).
    let status_port = (s.status_port != 0).then_some(s.status_port);
    if rewrite
        && has_proxy
        && let Some(status_port) = status_port
    {
        let probers = probes::rewrite(pod, status_port).map_err(InjectError::Other)?;
        if !probers.is_empty() {
            env.push((
                env::APP_PROBERS.to_owned(),
                Value::Object(probers).to_string(),
            ));
        }
    }
    let meta = pod
        .as_object_mut()
        .ok_or_else(|| InjectError::Other("the pod is not a JSON object".to_owned()))?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| InjectError::Other("metadata is not an object".to_owned()))?;
    let anns = object_entry(meta, "annotations")?;
    if has_proxy
        && let Some(status_port) = status_port
        && let Some(v) = prometheus::merge(anns, status_port, c.mesh.enable_prometheus_merge)
            .map_err(|e| InjectError::InvalidAnnotations(vec![e]))?
    {
        env.push((env::PROMETHEUS_ANNOTATIONS.to_owned(), v));
    }
    for (k, v) in &c.injector.injected_annotations {
        anns.insert(k.clone(), json!(v));
    }
    anns.insert(REVISION.to_owned(), json!(record.revision));
    anns.insert(STATUS.to_owned(), json!(record.to_json()));
    let labels = object_entry(meta, "labels")?;
    labels::add_labels(labels, workload_name);
    if let Some(first) = labels::first_app_container(pod)
        && let Some(anns) = annotations_mut(pod)
    {
        labels::add_default_container(anns, &first);
    }
    env.extend(req.proxy_env.iter().cloned());
    if let Some(list) = proxy_env(pod) {
        for (name, value) in env {
            match list.iter_mut().find(|e| e["name"] == name.as_str()) {
                Some(e) => *e = json!({"name": name, "value": value}),
                None => list.push(json!({"name": name, "value": value})),
            }
        }
    }
    status::order(pod, s.hold && !s.native);
    Ok(())
}

fn object_entry<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    let v = m.entry(key).or_insert_with(|| json!({}));
    if v.is_null() {
        *v = json!({});
    }
    v.as_object_mut()
        .ok_or_else(|| InjectError::Other(format!("metadata.{key} is not an object")))
}

/// The injected proxy container, in containers or (native) initContainers.
fn proxy(pod: &Value) -> Option<&Value> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| pod["spec"][list].as_array())
        .flatten()
        .find(|c| c["name"] == container::PROXY)
}

/// The proxy container's env list (created if the container has none).
fn proxy_env(pod: &mut Value) -> Option<&mut Vec<Value>> {
    let spec = pod.get_mut("spec")?.as_object_mut()?;
    let proxy = spec
        .iter_mut()
        .filter(|(k, _)| *k == "containers" || *k == "initContainers")
        .filter_map(|(_, v)| v.as_array_mut())
        .flatten()
        .find(|c| c["name"] == container::PROXY)?
        .as_object_mut()?;
    let env = proxy.entry("env").or_insert_with(|| json!([]));
    if env.is_null() {
        *env = json!([]);
    }
    env.as_array_mut()
}
