//! The `sidecar.istio.io/status` annotation: what an injection added, written on the pod so a
//! later injection can remove it first (idempotent re-injection); and the final container order.

use outrigger_api::names::{annotation::STATUS, container, env};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one injection added. Serialised compactly in this field order (DESIGN.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    #[serde(default)]
    pub init_containers: Vec<String>,
    #[serde(default)]
    pub containers: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<String>>,
    #[serde(default)]
    pub revision: String,
}

/// What an earlier injection recorded on its proxy, needed to undo it.
#[derive(Debug, Default)]
pub(crate) struct Previous {
    pub probers: Option<String>,
    pub prometheus: Option<String>,
}

/// Names of the overlay's items under `spec.<field>` that the pod does not have yet.
fn added(overlay: &Value, pod: &Value, field: &str) -> Vec<String> {
    let existing: Vec<&str> = pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .collect();
    overlay["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i.get("$patch").is_none())
        .filter_map(|i| i["name"].as_str())
        .filter(|n| !existing.contains(n))
        .map(str::to_owned)
        .collect()
}

impl Status {
    /// The status for `overlay` merged onto `pod` (before the merge), accumulated over templates.
    pub fn record(&mut self, overlay: &Value, pod: &Value) {
        self.init_containers
            .extend(added(overlay, pod, "initContainers"));
        self.containers.extend(added(overlay, pod, "containers"));
        self.volumes.extend(added(overlay, pod, "volumes"));
        let secrets = added(overlay, pod, "imagePullSecrets");
        if !secrets.is_empty() {
            self.image_pull_secrets
                .get_or_insert_with(Vec::new)
                .extend(secrets);
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Removes what an earlier injection added (per its status annotation) and returns the proxy's
/// recorded probe and prometheus settings. A pod without the annotation is left as it is.
pub(crate) fn strip_previous(pod: &mut Value) -> Result<Previous, String> {
    let Some(raw) = pod.pointer(&format!(
        "/metadata/annotations/{}",
        STATUS.replace('/', "~1")
    )) else {
        return Ok(Previous::default());
    };
    let status: Status = raw
        .as_str()
        .ok_or_else(|| "is not a string".to_owned())
        .and_then(|s| serde_json::from_str(s).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!("annotation {STATUS} (written by an earlier injection) is unreadable: {e}")
        })?;
    let mut prev = Previous::default();
    for field in ["containers", "initContainers"] {
        for c in pod["spec"][field].as_array().into_iter().flatten() {
            if c["name"] != container::PROXY {
                continue;
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let v = e["value"].as_str().map(str::to_owned);
                match e["name"].as_str() {
                    Some(env::APP_PROBERS) => prev.probers = v,
                    Some(env::PROMETHEUS_ANNOTATIONS) => prev.prometheus = v,
                    _ => {}
                }
            }
        }
    }
    let injected: Vec<&String> = status
        .containers
        .iter()
        .chain(&status.init_containers)
        .collect();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(prev);
    };
    let lists: [(&str, Vec<&String>); 4] = [
        ("containers", injected.clone()),
        ("initContainers", injected),
        ("volumes", status.volumes.iter().collect()),
        (
            "imagePullSecrets",
            status.image_pull_secrets.iter().flatten().collect(),
        ),
    ];
    for (field, names) in lists {
        let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        list.retain(|i| !names.iter().any(|n| i["name"].as_str() == Some(n.as_str())));
        if list.is_empty() {
            spec.remove(field);
        }
    }
    Ok(prev)
}

/// Puts the proxy where it belongs: last among containers (first when the app must wait for
/// it), or, as a native sidecar, in initContainers right after the capture init container.
pub(crate) fn order(pod: &mut Value, hold_application: bool) {
    if let Some(list) = pod["spec"]["containers"].as_array_mut()
        && let Some(i) = list.iter().position(|c| c["name"] == container::PROXY)
    {
        let proxy = list.remove(i);
        if hold_application {
            list.insert(0, proxy);
        } else {
            list.push(proxy);
        }
    }
    if let Some(list) = pod["spec"]["initContainers"].as_array_mut()
        && let Some(i) = list.iter().position(|c| c["name"] == container::PROXY)
    {
        let proxy = list.remove(i);
        let after = list
            .iter()
            .rposition(|c| c["name"] == container::INIT || c["name"] == container::VALIDATION)
            .map_or(0, |p| p + 1);
        list.insert(after, proxy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_format_is_compact_and_ordered() {
        let overlay = json!({"spec": {"initContainers": [{"name": "istio-init"}],
            "containers": [{"name": "istio-proxy"}, {"name": "app", "env": []}],
            "volumes": [{"name": "istio-envoy"}, {"name": "gone", "$patch": "delete"}]}});
        let pod = json!({"spec": {"containers": [{"name": "app"}]}});
        let mut s = Status {
            revision: "default".into(),
            ..Default::default()
        };
        s.record(&overlay, &pod);
        assert_eq!(
            s.to_json(),
            r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#
        );
    }

    #[test]
    fn strip_previous_removes_listed_items_and_returns_env() {
        let mut pod = json!({"metadata": {"annotations": {STATUS:
            r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#}},
            "spec": {"initContainers": [{"name": "istio-init"}],
                     "containers": [{"name": "app"}, {"name": "istio-proxy", "env": [
                         {"name": env::APP_PROBERS, "value": "{}"}]}],
                     "volumes": [{"name": "istio-envoy"}, {"name": "data"}]}});
        let prev = strip_previous(&mut pod).unwrap();
        assert_eq!(prev.probers.as_deref(), Some("{}"));
        assert_eq!(
            pod["spec"],
            json!({"containers": [{"name": "app"}], "volumes": [{"name": "data"}]})
        );
        let mut bad = json!({"metadata": {"annotations": {STATUS: "{"}}});
        assert!(
            strip_previous(&mut bad)
                .unwrap_err()
                .contains("is unreadable")
        );
    }

    #[test]
    fn proxy_order() {
        let mut pod = json!({"spec": {"containers": [{"name": "istio-proxy"}, {"name": "a"}]}});
        order(&mut pod, false);
        assert_eq!(pod["spec"]["containers"][1]["name"], "istio-proxy");
        order(&mut pod, true);
        assert_eq!(pod["spec"]["containers"][0]["name"], "istio-proxy");
        let mut native = json!({"spec": {"initContainers": [{"name": "istio-proxy"}, {"name": "istio-init"}, {"name": "u"}]}});
        order(&mut native, false);
        let names: Vec<_> = native["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["istio-init", "istio-proxy", "u"]);
    }
}
