//! Template rendering: minijinja text that renders to a YAML pod overlay, with the context
//! (pod, values, proxy config, revision, ...) and the helper functions templates may call.

use std::sync::{Arc, Mutex};

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value as JValue};
use outrigger_api::values;
use serde::Serialize;
use serde_json::Value;

use super::ConfigError;
use super::render_memo::{Memo, Reads, TrackedPod};
use outrigger_runtime::error_chain;

/// The compiled templates of one configuration.
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
    names: Vec<String>,
    values: JValue,
    mesh: JValue,
    /// Parsed overlays of earlier renders (see [`super::render_memo`]): the replicas of a workload
    /// skip rendering and parsing. Purely a memo: the result is the same with or without it.
    memo: Memo,
}

/// Everything a template can read besides `values` and `mesh` (fixed per configuration).
/// Field names are the template's variable names.
#[derive(Debug, Serialize)]
pub(crate) struct Context<'a> {
    /// Given to the template as a [`TrackedPod`], so it is not part of the memo key.
    #[serde(skip)]
    pub pod: &'a Value,
    pub proxy_config: &'a Value,
    pub revision: &'a str,
    pub namespace: &'a str,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub native_sidecar: bool,
    pub interception_mode: &'a str,
    pub status_port: u16,
    pub cni_enabled: bool,
    pub workload_name: &'a str,
    pub owner: &'a str,
    pub app_containers: &'a str,
    pub pod_ports: &'a str,
    pub concurrency: Option<u32>,
    /// Mesh/annotation `terminationDrainDuration`, given to the proxy as `--drain-duration`.
    pub termination_drain_duration: Option<&'a str>,
    /// The pod's `terminationGracePeriodSeconds`, given to the proxy as `--termination-grace`.
    pub termination_grace_seconds: Option<i64>,
    pub hold_application: bool,
    /// The status port to pass to the proxy (`--status-port`), when it is not its default
    /// (15020) and not 0 ("no status port": the proxy keeps 15020 for `/drain`).
    pub proxy_status_port: Option<u16>,
    /// `proxy_config` as compact JSON: the proxy's `PROXY_CONFIG` env.
    pub proxy_config_json: &'a str,
    /// The `istio-token` projected volume (names from `outrigger_api::names::discovery`).
    pub istio_token: IstioToken,
    /// The mesh root certificate volume (Istio's `istiod-ca-cert`), given as `root_cert.*`.
    pub root_cert: RootCert,
}

/// The names of the `istio-token` volume, given to templates as `istio_token.*`.
#[derive(Debug, Serialize)]
pub(crate) struct IstioToken {
    pub volume: &'static str,
    pub mount_path: &'static str,
    pub audience: &'static str,
    pub expiration_seconds: u32,
}

impl IstioToken {
    pub const NAMES: IstioToken = IstioToken {
        volume: outrigger_api::names::discovery::TOKEN_VOLUME,
        mount_path: outrigger_api::names::discovery::TOKEN_MOUNT_PATH,
        audience: outrigger_api::names::TOKEN_AUDIENCE,
        expiration_seconds: outrigger_api::names::discovery::TOKEN_EXPIRATION_SECONDS,
    };
}

/// The names of the root-certificate volume (the ConfigMap `istio-ca-root-cert` in the pod's
/// namespace), given to templates as `root_cert.*`.
#[derive(Debug, Serialize)]
pub(crate) struct RootCert {
    pub volume: &'static str,
    pub config_map: &'static str,
    pub mount_path: &'static str,
}

impl RootCert {
    pub const NAMES: RootCert = RootCert {
        volume: outrigger_api::names::discovery::ROOT_CERT_VOLUME,
        config_map: outrigger_api::names::discovery::ROOT_CERT_CONFIGMAP,
        mount_path: outrigger_api::names::discovery::ROOT_CERT_MOUNT_PATH,
    };
}

impl Templates {
    /// Compiles every template; a syntax error names the template and line.
    pub fn compile(
        sources: Vec<(String, String)>,
        values: &Value,
        mesh: &Value,
    ) -> Result<Self, ConfigError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_function("annotation", annotation);
        env.add_function("label", label);
        env.add_function("exclude_inbound_ports", exclude_inbound_ports);
        env.add_filter("fromjson", fromjson);
        let mut names = Vec::with_capacity(sources.len());
        for (name, text) in sources {
            env.add_template_owned(name.clone(), text).map_err(|e| {
                ConfigError(format!(
                    "config.yaml: templates.{name}: {}",
                    error_chain(&e)
                ))
            })?;
            names.push(name);
        }
        names.sort();
        Ok(Templates {
            env,
            names,
            values: JValue::from(Serde(values)),
            mesh: JValue::from(Serde(mesh)),
            memo: Memo::default(),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Renders one template and parses its output as a YAML mapping, or takes the overlay of
    /// an earlier render that read the same things.
    pub fn render(&self, name: &str, ctx: &Context<'_>) -> Result<Arc<Value>, String> {
        let key = serde_json::to_string(ctx)
            .map(|c| format!("{name}\n{c}"))
            .map_err(|e| format!("context is not serialisable: {e}"))?;
        if let Some(hit) = self.memo.get(&key, ctx.pod) {
            return Ok(hit);
        }
        let tmpl = self.env.get_template(name).map_err(|e| error_chain(&e))?;
        let reads = Arc::new(Mutex::new(Reads::default()));
        let pod = TrackedPod::root(Arc::new(ctx.pod.clone()), reads.clone());
        // `values` and `mesh` are converted once at load; merge them in without re-serialising.
        let full = minijinja::context! {
            pod, values => self.values.clone(), mesh => self.mesh.clone(), ..JValue::from(Serde(ctx))
        };
        let text = tmpl.render(full).map_err(|e| error_chain(&e))?;
        let overlay: Value =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("output is not valid YAML: {e}"))?;
        let overlay = Arc::new(match overlay {
            Value::Object(_) => overlay,
            Value::Null => Value::Object(Default::default()),
            _ => return Err("output is not a YAML mapping".to_owned()),
        });
        // Every clone of the tracked pod died with the render; if not, skip the memo.
        if let Ok(reads) = Arc::try_unwrap(reads) {
            let reads = reads.into_inner().unwrap_or_else(|p| p.into_inner());
            self.memo.insert(&key, reads, overlay.clone());
        }
        Ok(overlay)
    }
}

fn lookup(meta: &JValue, field: &str, key: &str, default: JValue) -> JValue {
    match meta
        .get_attr(field)
        .and_then(|m| m.get_item(&JValue::from(key)))
    {
        Ok(v) if !v.is_undefined() && !v.is_none() => v,
        _ => default,
    }
}

/// `annotation(pod.metadata, "key", default)`: the annotation's value, else the default.
fn annotation(meta: JValue, key: &str, default: Option<JValue>) -> JValue {
    lookup(
        &meta,
        "annotations",
        key,
        default.unwrap_or(JValue::from("")),
    )
}

/// `label(pod.metadata, "key", default)`: the label's value, else the default.
fn label(meta: JValue, key: &str, default: Option<JValue>) -> JValue {
    lookup(&meta, "labels", key, default.unwrap_or(JValue::from("")))
}

/// `text | fromjson`: parses JSON (annotations such as `sidecar.istio.io/userVolume`).
fn fromjson(text: &str) -> Result<JValue, minijinja::Error> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("fromjson: {e}"),
        )
    })?;
    Ok(JValue::from(Serde(&v)))
}

/// Istio's `excludeInboundPort`: prepends the status port to a comma list of ports.
fn exclude_inbound_ports(status_port: JValue, ports: Option<String>) -> String {
    let mut out: Vec<String> = Vec::new();
    let sp = status_port.to_string();
    if !sp.is_empty() && sp != "0" {
        out.push(sp);
    }
    for p in values::split_list(&ports.unwrap_or_default()) {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_owned());
        }
    }
    out.join(",")
}
