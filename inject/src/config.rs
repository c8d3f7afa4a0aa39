//! The injector configuration: `config.yaml`, `values.yaml` and `mesh.yaml` parsed into typed
//! structs, user files deep-merged over the embedded defaults, templates compiled (the test
//! render at load time is `load.rs`, which runs the pipeline).
//!
//! Choices beyond DESIGN.md: `values.yaml` and `mesh.yaml` are deep-merged over the embedded
//! defaults (maps merge, anything else replaces), so a file only needs the keys it changes;
//! `config.yaml` is taken as written (unknown keys are refused) and, without a `templates` key,
//! uses the shipped templates. Values added to Istio's names: `global.proxy.uid`/`gid` (1337),
//! `global.nativeSidecars`, `global.proxy.includeOutboundPorts`. The status port comes from the
//! pod annotation, else mesh `defaultConfig.statusPort`, else `global.proxy.statusPort`;
//! holdApplicationUntilProxyStarts from the proxy config (mesh + pod annotation), else values.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ConfigError;
use super::merge;
use super::template::Templates;

/// The embedded default files, used when a file is absent.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../config/config.yaml");
pub const DEFAULT_VALUES_YAML: &str = include_str!("../config/values.yaml");
pub const DEFAULT_MESH_YAML: &str = include_str!("../config/mesh.yaml");
/// The shipped templates, used when `config.yaml` has no `templates` key.
pub const SHIPPED_TEMPLATES: [(&str, &str); 1] =
    [("sidecar", include_str!("../config/templates/sidecar.yaml"))];

/// File names, used in error messages and by the directory loader.
pub const CONFIG_FILE: &str = "config.yaml";
pub const VALUES_FILE: &str = "values.yaml";
pub const MESH_FILE: &str = "mesh.yaml";

/// `policy:` in config.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Enabled,
    Disabled,
}

/// `config.yaml`: who gets injected and with which templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectorConfig {
    #[serde(default = "default_policy")]
    pub policy: Policy,
    #[serde(default)]
    pub always_inject_selector: Vec<LabelSelector>,
    #[serde(default)]
    pub never_inject_selector: Vec<LabelSelector>,
    #[serde(default = "default_templates")]
    pub default_templates: Vec<String>,
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub injected_annotations: BTreeMap<String, String>,
    /// Revision written to `istio.io/rev` when the request names none.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Template texts by name; absent means the shipped templates.
    #[serde(default)]
    pub templates: Option<BTreeMap<String, String>>,
}

fn default_policy() -> Policy {
    Policy::Enabled
}
fn default_templates() -> Vec<String> {
    vec!["sidecar".to_owned()]
}
fn default_revision() -> String {
    "default".to_owned()
}

/// The parts of `values.yaml` the Rust code reads (templates see the whole file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Values {
    pub global: GlobalValues,
    pub pilot: PilotValues,
    pub sidecar_injector_webhook: InjectorWebhookValues,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GlobalValues {
    pub hub: String,
    pub tag: String,
    pub native_sidecars: bool,
    pub proxy: ProxyValues,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyValues {
    pub image: String,
    pub status_port: u16,
    pub uid: u32,
    pub gid: u32,
    pub hold_application_until_proxy_starts: bool,
    #[serde(rename = "includeIPRanges")]
    pub include_ip_ranges: String,
    #[serde(rename = "excludeIPRanges")]
    pub exclude_ip_ranges: String,
    pub include_inbound_ports: String,
    pub exclude_inbound_ports: String,
    pub exclude_outbound_ports: String,
    pub privileged: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PilotValues {
    pub cni: CniValues,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CniValues {
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InjectorWebhookValues {
    #[serde(rename = "rewriteAppHTTPProbe")]
    pub rewrite_app_http_probe: bool,
}

/// `mesh.yaml`: mesh-wide switches and the default proxy config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Mesh {
    pub default_config: ProxyConfig,
    pub enable_prometheus_merge: bool,
}

/// Mesh `defaultConfig`, merged per pod with the `proxy.istio.io/config` annotation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub interception_mode: Option<String>,
    pub proxy_metadata: BTreeMap<String, String>,
    pub hold_application_until_proxy_starts: Option<bool>,
    /// How long the proxy keeps serving, not ready, after SIGTERM (Istio's shutdown drain;
    /// `drainDuration` is Istio's hot-restart drain, which Outrigger has no use for and ignores).
    #[serde(deserialize_with = "termination_drain_duration")]
    pub termination_drain_duration: Option<String>,
    pub status_port: Option<u16>,
    pub concurrency: Option<u32>,
}

/// `terminationDrainDuration` must be a duration the proxy's `--drain-duration` takes
/// (protobuf JSON's `5s`, `0.5s`, and Go's `1m30s` alike); kept as written.
fn termination_drain_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    if let Some(text) = &text {
        outrigger_api::duration::parse_duration(text).map_err(|e| {
            serde::de::Error::custom(format!("terminationDrainDuration '{text}': {e}"))
        })?;
    }
    Ok(text)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The loaded, validated configuration (config.yaml + values.yaml + mesh.yaml, templates compiled).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) inner: Arc<Loaded>,
}

#[derive(Debug)]
pub(crate) struct Loaded {
    /// Unique among the configurations this process loaded (see [`Config::id`]).
    pub id: u64,
    pub injector: InjectorConfig,
    pub values: Values,
    pub mesh: Mesh,
    pub mesh_raw: Value,
    pub templates: Templates,
}

impl Config {
    /// Parses the three file contents and compiles the templates, without rendering them
    /// ([`Config::from_sources`] in `load.rs` also test-renders). `values.yaml` and `mesh.yaml`
    /// are deep-merged over the embedded defaults, so partial files are fine.
    pub(crate) fn parse(
        config_yaml: &str,
        values_yaml: &str,
        mesh_yaml: &str,
    ) -> Result<Config, ConfigError> {
        let injector: InjectorConfig = parse_typed(CONFIG_FILE, config_yaml)?;
        check_injector(&injector)?;
        let values_raw = merged(VALUES_FILE, DEFAULT_VALUES_YAML, values_yaml)?;
        let values: Values = from_merged(VALUES_FILE, &values_raw)?;
        let mut mesh_raw = merged(MESH_FILE, DEFAULT_MESH_YAML, mesh_yaml)?;
        default_discovery_address(&mut mesh_raw);
        let mesh: Mesh = from_merged(MESH_FILE, &mesh_raw)?;
        let sources: Vec<(String, String)> = match &injector.templates {
            Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => SHIPPED_TEMPLATES
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let templates = Templates::compile(sources, &values_raw, &mesh_raw)?;
        for name in injector
            .default_templates
            .iter()
            .chain(injector.aliases.values().flatten())
        {
            if !templates.contains(name) {
                return Err(ConfigError(format!(
                    "{CONFIG_FILE}: template '{name}' is referenced but not defined (known: {})",
                    templates.names().join(", ")
                )));
            }
        }
        Ok(Config {
            inner: Arc::new(Loaded {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                injector,
                values,
                mesh,
                mesh_raw,
                templates,
            }),
        })
    }

    /// A number no other configuration loaded by this process has: a cache of answers keyed
    /// on it is never served by a configuration it was not computed with.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Names of all templates, sorted.
    pub fn template_names(&self) -> Vec<String> {
        self.inner.templates.names()
    }
}

fn check_injector(c: &InjectorConfig) -> Result<(), ConfigError> {
    for (i, sel) in c
        .always_inject_selector
        .iter()
        .chain(&c.never_inject_selector)
        .enumerate()
    {
        super::selector::check(sel)
            .map_err(|e| ConfigError(format!("{CONFIG_FILE}: selector #{}: {e}", i + 1)))?;
    }
    Ok(())
}

fn parse_typed<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError(format!("{file}: {e}")))
}

/// Checks the user file's types (errors name key and line), then deep-merges it over the default.
fn merged(file: &str, default: &str, user: &str) -> Result<Value, ConfigError> {
    let mut base: Value = parse_typed(file, default)?;
    let over: Value = parse_typed(file, user)?;
    if !over.is_object() {
        return Err(ConfigError(format!(
            "{file}: the top level must be a mapping"
        )));
    }
    // Type-check the user's own text so the error carries its line and key path.
    match file {
        VALUES_FILE => parse_typed::<Values>(file, user).map(drop)?,
        MESH_FILE => parse_typed::<Mesh>(file, user).map(drop)?,
        _ => {}
    }
    merge::deep_merge(&mut base, over);
    Ok(base)
}

/// Mesh `defaultConfig.discoveryAddress` defaults to pilot's TLS port in `outrigger-system`
/// (Istio's to istiod's `istiod.istio-system.svc:15012`), so every pod's merged proxy config,
/// and its `PROXY_CONFIG`, names the control plane unless the mesh or the pod says otherwise.
fn default_discovery_address(mesh: &mut Value) {
    let Value::Object(mesh) = mesh else { return };
    let defaults = mesh
        .entry("defaultConfig")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(defaults) = defaults {
        defaults
            .entry("discoveryAddress")
            .or_insert_with(|| Value::from(outrigger_api::names::discovery::DEFAULT_ADDRESS));
    }
}

fn from_merged<T: DeserializeOwned>(file: &str, v: &Value) -> Result<T, ConfigError> {
    serde_json::from_value(v.clone()).map_err(|e| ConfigError(format!("{file}: {e}")))
}
