//! Prometheus annotation merge: the app's `prometheus.io/*` scrape settings move into the proxy's
//! `ISTIO_PROMETHEUS_ANNOTATIONS` env and the pod is pointed at the proxy's merged metrics
//! endpoint on the status port. Also the inverse, used when re-injecting an injected pod.

use outrigger_api::names::{
    annotation::{PROMETHEUS_MERGE, PROMETHEUS_PREFIX, PROMETHEUS_SCRAPE_TARGETS},
    path, port,
};
use outrigger_api::values;
use serde_json::{Map, Value, json};

use super::validate;

const FIELDS: [&str; 3] = ["scrape", "port", "path"];

fn canonical(field: &str) -> String {
    format!("{PROMETHEUS_PREFIX}/{field}")
}

/// Which of scrape/port/path an annotation key spells, if any (`prometheus.io/x`, `prometheus.io.x`,
/// any letter case).
fn field_of(key: &str) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    let rest = lower.strip_prefix(PROMETHEUS_PREFIX)?;
    let rest = rest.strip_prefix('/').or_else(|| rest.strip_prefix('.'))?;
    FIELDS.into_iter().find(|f| *f == rest)
}

/// Applies the merge; returns the env value for the proxy when the app had scrape settings.
pub(crate) fn merge(
    anns: &mut Map<String, Value>,
    status_port: u16,
    mesh_enabled: bool,
) -> Result<Option<String>, String> {
    let opted_out = anns
        .get(PROMETHEUS_MERGE)
        .and_then(Value::as_str)
        .is_some_and(|v| values::parse_bool(v) == Ok(false));
    if !mesh_enabled || opted_out {
        return Ok(None);
    }
    let mut user = Map::new();
    for (k, v) in anns.iter() {
        if let Some(f) = field_of(k) {
            user.insert(f.to_owned(), v.clone());
        }
    }
    if user.get("scrape").and_then(Value::as_str) == Some("false") {
        return Ok(None);
    }
    let port_key = anns.keys().find(|k| field_of(k) == Some("port"));
    if let (Some(key), Some(p)) = (port_key, user.get("port").and_then(Value::as_str)) {
        let invalid =
            |reason: String| format!("invalid value '{p}' for annotation '{key}': {reason}");
        let n = validate::port(p).map_err(invalid)?;
        if port::RESERVED.contains(&n) {
            return Err(invalid(
                "the port is reserved by the proxy; serve the app's metrics on another port"
                    .to_owned(),
            ));
        }
    }
    let mut env = user.clone();
    if let Some(t) = anns.get(PROMETHEUS_SCRAPE_TARGETS).and_then(Value::as_str) {
        let targets: Vec<Value> = values::split_list(t)
            .map(|item| {
                let (port, path) = item.split_once(':').unwrap_or((item, "/metrics"));
                json!({"port": port, "path": if path.is_empty() { "/metrics" } else { path }})
            })
            .collect();
        // As Istio's applyPrometheusMerge: the top-level port and path are the first target's,
        // so an agent that does not read `targets` still scrapes the primary endpoint.
        if let Some(first) = targets.first() {
            env.insert("port".to_owned(), first["port"].clone());
            env.insert("path".to_owned(), first["path"].clone());
        }
        env.insert("targets".to_owned(), Value::Array(targets));
    }
    anns.retain(|k, _| field_of(k).is_none());
    anns.insert(canonical("scrape"), json!("true"));
    anns.insert(canonical("port"), json!(status_port.to_string()));
    anns.insert(canonical("path"), json!(path::STATS));
    Ok((!env.is_empty()).then(|| Value::Object(env).to_string()))
}

/// Undoes an earlier merge: `recorded` is the old `ISTIO_PROMETHEUS_ANNOTATIONS`, if any.
pub(crate) fn restore(anns: &mut Map<String, Value>, recorded: Option<&str>, status_port: u16) {
    let ours = [
        ("scrape", "true".to_owned()),
        ("port", status_port.to_string()),
        ("path", path::STATS.to_owned()),
    ];
    let injected = ours
        .iter()
        .all(|(f, v)| anns.get(&canonical(f)).and_then(Value::as_str) == Some(v.as_str()));
    if !injected {
        return;
    }
    for (f, _) in &ours {
        anns.remove(&canonical(f));
    }
    let Some(Value::Object(old)) = recorded.and_then(|r| serde_json::from_str(r).ok()) else {
        return;
    };
    for f in FIELDS {
        if let Some(v) = old.get(f) {
            anns.insert(canonical(f), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anns(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn user_settings_move_into_the_env() {
        let mut a = anns(
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
            "Prometheus.io.Path": "/metrics", "other": "x"}),
        );
        let env = merge(&mut a, 15020, true).unwrap().unwrap();
        let env: Value = serde_json::from_str(&env).unwrap();
        assert_eq!(
            env,
            json!({"scrape": "true", "port": "8080", "path": "/metrics"})
        );
        assert_eq!(
            Value::Object(a),
            json!({"prometheus.io/scrape": "true",
            "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus", "other": "x"})
        );
    }

    #[test]
    fn no_user_settings_still_points_at_merged_metrics() {
        let mut a = anns(json!({}));
        assert_eq!(merge(&mut a, 15020, true).unwrap(), None);
        assert_eq!(a[&canonical("port")], "15020");
    }

    #[test]
    fn scrape_targets_are_listed() {
        let mut a = anns(json!({"prometheus.io/scrape": "true",
            PROMETHEUS_SCRAPE_TARGETS: "8080:/metrics,9100:/custom-metrics"}));
        let env: Value =
            serde_json::from_str(&merge(&mut a, 15020, true).unwrap().unwrap()).unwrap();
        assert_eq!(
            env,
            json!({"scrape": "true", "port": "8080", "path": "/metrics", "targets": [
                {"port": "8080", "path": "/metrics"}, {"port": "9100", "path": "/custom-metrics"}]})
        );
        // The first target's port and path win over the pod's own prometheus.io/port and path,
        // as in Istio; the proxy's reader takes the whole value.
        let mut a = anns(
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "7070",
            "prometheus.io/path": "/old", PROMETHEUS_SCRAPE_TARGETS: "9100:/custom"}),
        );
        let text = merge(&mut a, 15020, true).unwrap().unwrap();
        let env: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (&env["port"], &env["path"]),
            (&json!("9100"), &json!("/custom"))
        );
        let read = outrigger_api::proxy_env::PrometheusScrape::from_json(&text).unwrap();
        assert_eq!(read.port, Some(9100));
        assert_eq!(read.path.as_deref(), Some("/custom"));
    }

    #[test]
    fn opt_outs_leave_annotations_alone() {
        for (a, mesh) in [
            (
                json!({"prometheus.io/scrape": "false", "prometheus.io/port": "8080"}),
                true,
            ),
            (
                json!({PROMETHEUS_MERGE: "false", "prometheus.io/port": "8080"}),
                true,
            ),
            (json!({"prometheus.io/port": "8080"}), false),
        ] {
            let mut m = anns(a.clone());
            assert_eq!(merge(&mut m, 15020, mesh).unwrap(), None);
            assert_eq!(Value::Object(m), a);
        }
    }

    #[test]
    fn reserved_port_is_an_error() {
        let mut a = anns(json!({"prometheus.io/port": "15090"}));
        let e = merge(&mut a, 15020, true).unwrap_err();
        assert_eq!(
            e,
            "invalid value '15090' for annotation 'prometheus.io/port': the port is reserved by the proxy; serve the app's metrics on another port"
        );
        let mut a = anns(json!({"prometheus.io.port": "http"}));
        let e = merge(&mut a, 15020, true).unwrap_err();
        assert_eq!(
            e,
            "invalid value 'http' for annotation 'prometheus.io.port': 'http' is not a port number (1-65535)"
        );
        assert_eq!(a.len(), 1, "nothing changed on error");
    }

    #[test]
    fn restore_then_merge_is_stable() {
        let orig = anns(json!({"prometheus.io.scrape": "true", "prometheus.io/port": "8080"}));
        let mut a = orig.clone();
        let env = merge(&mut a, 15020, true).unwrap();
        let once = a.clone();
        restore(&mut a, env.as_deref(), 15020);
        assert_eq!(
            Value::Object(a.clone()),
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "8080"})
        );
        let env2 = merge(&mut a, 15020, true).unwrap();
        assert_eq!((a, env2), (once, env));
    }
}
