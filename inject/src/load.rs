//! Loading a configuration: parse the three files and compile the templates (`config.rs`),
//! then render every template over a sample pod through the whole pipeline (`pipeline.rs`), so
//! a broken template fails at load, not on the first pod. Kept apart so that the configuration
//! does not depend on the pipeline that reads it.

use serde_json::Value;

use super::config::{
    CONFIG_FILE, Config, DEFAULT_CONFIG_YAML, DEFAULT_MESH_YAML, DEFAULT_VALUES_YAML,
};
use super::{ConfigError, InjectError, InjectRequest, pipeline};

impl Config {
    /// The configuration embedded in the binary.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::from_sources(DEFAULT_CONFIG_YAML, DEFAULT_VALUES_YAML, DEFAULT_MESH_YAML)
    }

    /// Parse from the three file contents (pure; the caller reads the files). `values.yaml` and
    /// `mesh.yaml` are deep-merged over the embedded defaults, so partial files are fine. Every
    /// template is test-rendered before the configuration is returned.
    pub fn from_sources(
        config_yaml: &str,
        values_yaml: &str,
        mesh_yaml: &str,
    ) -> Result<Config, ConfigError> {
        let config = Config::parse(config_yaml, values_yaml, mesh_yaml)?;
        config.test_render()?;
        Ok(config)
    }

    /// Renders every template against a sample pod so a broken template fails at load.
    fn test_render(&self) -> Result<(), ConfigError> {
        let pod: Value = serde_json::from_str(SAMPLE_POD)
            .map_err(|e| ConfigError(format!("embedded sample pod is not valid JSON: {e}")))?;
        for name in self.inner.templates.names() {
            render_for_test(&pod, self, &name).map_err(|e| {
                ConfigError(format!(
                    "{CONFIG_FILE}: templates.{name}: test render failed: {e}"
                ))
            })?;
        }
        Ok(())
    }
}

/// Runs one template over the sample pod with everything after it (used at config load).
fn render_for_test(pod: &Value, config: &Config, name: &str) -> Result<Value, InjectError> {
    let req = InjectRequest {
        namespace: "default".to_owned(),
        ..Default::default()
    };
    pipeline::apply(pod, &req, config, &[name.to_owned()])
}

/// A realistic pod used to test-render templates at load time.
const SAMPLE_POD: &str = r#"{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "sample", "namespace": "default", "labels": {"app": "sample"},
               "annotations": {}},
  "spec": {"containers": [{"name": "app", "image": "nginx",
            "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}],
           "serviceAccountName": "default"}
}"#;
