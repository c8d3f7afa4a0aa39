//! The injection engine: decides whether a pod gets a sidecar and, if so, returns the injected pod.
//!
//! Pure: no HTTP, no files, no global state. The webhook and kube-inject both call [`inject`].
//! (Skeleton: the entry points below are the agreed contract; the implementation lands with issue 2.)

use serde_json::Value;

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
    /// Anything else the engine refuses, with its reason.
    #[error("{0}")]
    Other(String),
}

impl InjectError {
    /// Low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            InjectError::InvalidAnnotations(_) => "invalid_annotation",
            InjectError::Other(_) => "other",
        }
    }
}

/// The loaded, validated configuration (config.yaml + values.yaml + mesh.yaml, templates compiled).
#[derive(Debug, Clone)]
pub struct Config {
    _private: (),
}

/// Errors while loading configuration; each names the file, key and problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The configuration embedded in the binary.
    pub fn embedded() -> Result<Config, ConfigError> {
        Ok(Config { _private: () })
    }

    /// Parse from the three file contents (pure; the caller reads the files).
    pub fn from_sources(
        _config_yaml: &str,
        _values_yaml: &str,
        _mesh_yaml: &str,
    ) -> Result<Config, ConfigError> {
        Ok(Config { _private: () })
    }
}

/// Decide and, if needed, inject. Same function for webhook and kube-inject.
pub fn inject(
    _pod: &Value,
    _req: &InjectRequest,
    _config: &Config,
) -> Result<Outcome, InjectError> {
    Err(InjectError::Other(
        "injection engine not implemented yet".into(),
    ))
}
