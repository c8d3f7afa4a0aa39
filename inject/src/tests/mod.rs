//! Engine tests over a realistic pod (as the API server sends it), with shared helpers.

mod modes;
mod outcomes;

use serde_json::{Value, json};

use super::*;

pub(super) fn web() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/pod-web.json")).unwrap()
}

pub(super) fn req() -> InjectRequest {
    InjectRequest {
        namespace: "shop".into(),
        ..Default::default()
    }
}

pub(super) fn config(values: &str, mesh: &str) -> Config {
    Config::from_sources(DEFAULT_CONFIG_YAML, values, mesh).unwrap()
}

pub(super) fn injected(pod: &Value, req: &InjectRequest, config: &Config) -> Value {
    match inject(pod, req, config).unwrap() {
        Outcome::Injected { pod, .. } => pod,
        other => panic!("expected injection, got {other:?}"),
    }
}

pub(super) fn run(pod: &Value) -> Value {
    injected(pod, &req(), &Config::embedded().unwrap())
}

pub(super) fn annotate(mut pod: Value, pairs: &[(&str, &str)]) -> Value {
    for (k, v) in pairs {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
    pod
}

pub(super) fn names<'a>(pod: &'a Value, list: &str) -> Vec<&'a str> {
    pod["spec"][list]
        .as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

pub(super) fn find<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

pub(super) fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

pub(super) fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}
