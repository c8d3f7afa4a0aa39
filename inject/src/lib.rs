//! The injection engine: decides whether a pod gets a sidecar and, if so, returns the injected pod.
//!
//! Pure: no HTTP, no async, no global state; only [`config_source`] reads files (the
//! configuration directory). The webhook (`outrigger-webhook`) and kube-inject both call [`inject`].
//! Steps: validate annotations, decide (policy), undo an earlier injection, render the templates
//! and strategic-merge them onto the pod, then post-process in Rust (probes, prometheus, labels,
//! status annotation, container order).

mod config;
pub mod config_source;
mod labels;
mod load;
pub mod manifest;
mod merge;
pub mod patch;
mod pipeline;
mod policy;
mod probes;
mod prometheus;
mod render_memo;
mod selector;
mod status;
mod template;
#[cfg(test)]
mod tests;
mod validate;
pub mod yaml;

use outrigger_api::names::annotation::TEMPLATES;
use outrigger_api::values;
use serde_json::{Map, Value};

pub use config::{
    CONFIG_FILE, Config, DEFAULT_CONFIG_YAML, DEFAULT_MESH_YAML, DEFAULT_VALUES_YAML, MESH_FILE,
    VALUES_FILE,
};
pub use policy::Decision;

/// Why a pod was left alone; `label()` is the low-cardinality metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipReason {
    /// Short machine label, e.g. `host_network`, `ignored_namespace`, `policy_disabled`.
    pub label: &'static str,
    /// Human sentence explaining the decision.
    pub message: String,
}

/// What the engine decided for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not injected, with the reason.
    Skipped(SkipReason),
    /// The injected pod (the full object, unknown fields preserved) and the templates applied.
    Injected { pod: Value, templates: Vec<String> },
}

/// Per-request inputs beyond the pod itself.
#[derive(Debug, Clone, Default)]
pub struct InjectRequest {
    /// The pod's namespace (from the object, else from the admission request).
    pub namespace: String,
    /// Name of the workload that owns the pod, if known (Deployment name etc.).
    pub workload_name: Option<String>,
    /// Extra proxy env from the webhook path (`/inject/cluster/c1/net/n1` ...), already decoded.
    pub proxy_env: Vec<(String, String)>,
    /// Revision requested (kube-inject `--revision`); `None` means the configured default.
    pub revision: Option<String>,
    /// Force native-sidecar mode on or off (kube-inject `--native-sidecars`).
    pub native_sidecars: Option<bool>,
}

/// A precise, user-readable failure.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// One or more annotations failed validation; each message is complete.
    #[error("{}", .0.join("; "))]
    InvalidAnnotations(Vec<String>),
    /// `inject.istio.io/templates` names a template the configuration does not have.
    #[error("unknown template '{name}' in annotation '{TEMPLATES}' (known: {})", .known.join(", "))]
    UnknownTemplate { name: String, known: Vec<String> },
    /// A template failed to render or rendered something that is not a pod overlay.
    #[error("template '{name}': {reason}")]
    Template { name: String, reason: String },
    /// Anything else the engine refuses, with its reason.
    #[error("{0}")]
    Other(String),
}

impl InjectError {
    /// Low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            InjectError::InvalidAnnotations(_) => "invalid_annotation",
            InjectError::UnknownTemplate { .. } => "unknown_template",
            InjectError::Template { .. } => "template",
            InjectError::Other(_) => "other",
        }
    }
}

/// Errors while loading configuration; each names the file, key and problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Decide and, if needed, inject. Same function for webhook and kube-inject.
pub fn inject(pod: &Value, req: &InjectRequest, config: &Config) -> Result<Outcome, InjectError> {
    let errors = validate::annotations(annotations(pod));
    if !errors.is_empty() {
        return Err(InjectError::InvalidAnnotations(errors));
    }
    let decision = decide(pod, req, config);
    if !decision.inject {
        return Ok(Outcome::Skipped(SkipReason {
            label: decision.label,
            message: decision.reason,
        }));
    }
    let names = templates_for(pod, config)?;
    let injected = pipeline::apply(pod, req, config, &names)?;
    Ok(Outcome::Injected {
        pod: injected,
        templates: names,
    })
}

/// The policy decision alone (what `kube-inject check` reports).
pub fn decide(pod: &Value, req: &InjectRequest, config: &Config) -> Decision {
    policy::decide(pod, &req.namespace, &config.inner.injector)
}

/// The templates a pod asks for (`inject.istio.io/templates`, else the defaults), aliases expanded.
pub fn templates_for(pod: &Value, config: &Config) -> Result<Vec<String>, InjectError> {
    let injector = &config.inner.injector;
    let requested: Vec<String> = match annotation(pod, TEMPLATES) {
        Some(list) => values::split_list(list).map(str::to_owned).collect(),
        None => injector.default_templates.clone(),
    };
    let mut out = Vec::new();
    for name in requested {
        let expanded = injector.aliases.get(&name).cloned().unwrap_or(vec![name]);
        for n in expanded {
            if !config.inner.templates.contains(&n) {
                let mut known = config.template_names();
                known.extend(injector.aliases.keys().cloned());
                known.sort();
                return Err(InjectError::UnknownTemplate { name: n, known });
            }
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

pub(crate) fn annotations(pod: &Value) -> Option<&Map<String, Value>> {
    pod.get("metadata")?.get("annotations")?.as_object()
}

pub(crate) fn annotations_mut(pod: &mut Value) -> Option<&mut Map<String, Value>> {
    pod.pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
}

pub(crate) fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    annotations(pod)
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}
