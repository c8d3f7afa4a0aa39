//! Probe rewrite: HTTP, TCP and gRPC probes and httpGet/tcpSocket lifecycle hooks of the app
//! containers, and of the native sidecars the user declares (`initContainers`: Istio's
//! `allContainers`, every init container but `istio-proxy`; Kubernetes allows probes only on
//! those with `restartPolicy: Always`), are sent to the proxy's status port; the originals are recorded for the proxy in
//! `ISTIO_KUBE_APP_PROBERS`. Also the inverse, used when re-injecting an injected pod.

use outrigger_api::names::container;
use outrigger_api::names::path::{APP_HEALTH_PREFIX, APP_LIFECYCLE_PREFIX};
use serde_json::{Map, Value, json};

const PROBES: [(&str, &str); 3] = [
    ("readinessProbe", "readyz"),
    ("livenessProbe", "livez"),
    ("startupProbe", "startupz"),
];
const HOOKS: [(&str, &str); 2] = [("preStop", "prestopz"), ("postStart", "poststartz")];
const ACTIONS: [&str; 3] = ["httpGet", "tcpSocket", "grpc"];

/// Every container whose probes are the app's (all but `istio-proxy`): init containers first,
/// then containers, as Istio's `allContainers`.
fn app_containers(pod: &mut Value) -> Vec<&mut Value> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    let (mut init, mut main) = (None, None);
    for (key, list) in spec.iter_mut() {
        match key.as_str() {
            "initContainers" => init = Some(list),
            "containers" => main = Some(list),
            _ => {}
        }
    }
    init.into_iter()
        .chain(main)
        .filter_map(Value::as_array_mut)
        .flatten()
        .filter(|c| c.get("name").and_then(Value::as_str) != Some(container::PROXY))
        .collect()
}

/// Rewrites every app container's probes and hooks; returns the recorded originals by path.
pub(crate) fn rewrite(pod: &mut Value, status_port: u16) -> Result<Map<String, Value>, String> {
    let mut probers = Map::new();
    for c in app_containers(pod) {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ports = c.get("ports").cloned().unwrap_or(Value::Null);
        for (field, suffix) in PROBES {
            if let Some(probe) = c.get_mut(field) {
                let path = format!("{APP_HEALTH_PREFIX}/{name}/{suffix}");
                rewrite_one(probe, &path, &name, &ports, status_port, true, &mut probers)?;
            }
        }
        for (hook, suffix) in HOOKS {
            if let Some(handler) = c.pointer_mut(&format!("/lifecycle/{hook}")) {
                let path = format!("{APP_LIFECYCLE_PREFIX}/{name}/{suffix}");
                rewrite_one(
                    handler,
                    &path,
                    &name,
                    &ports,
                    status_port,
                    false,
                    &mut probers,
                )?;
            }
        }
    }
    Ok(probers)
}

fn rewrite_one(
    probe: &mut Value,
    path: &str,
    container: &str,
    ports: &Value,
    status_port: u16,
    keep_timeout: bool,
    probers: &mut Map<String, Value>,
) -> Result<(), String> {
    let Some(p) = probe.as_object_mut() else {
        return Ok(());
    };
    let Some(kind) = ACTIONS.into_iter().find(|a| p.contains_key(*a)) else {
        return Ok(()); // exec and sleep stay as they are
    };
    let mut action = p.get(kind).cloned().unwrap_or(Value::Null);
    let Some(port) = action.get("port") else {
        return Err(format!(
            "container '{container}': {kind} at {path} has no port"
        ));
    };
    let port = resolve_port(port, ports)
        .map_err(|e| format!("container '{container}': {kind} port {e}"))?;
    if kind == "httpGet" && port == u32::from(status_port) {
        return Ok(()); // already served by the status port
    }
    action["port"] = json!(port);
    let mut record = Map::new();
    record.insert(kind.to_owned(), action);
    if keep_timeout && let Some(t) = p.get("timeoutSeconds") {
        record.insert("timeoutSeconds".to_owned(), t.clone());
    }
    probers.insert(path.to_owned(), Value::Object(record));
    for a in ACTIONS {
        p.remove(a);
    }
    p.insert(
        "httpGet".to_owned(),
        json!({"path": path, "port": status_port, "scheme": "HTTP"}),
    );
    Ok(())
}

/// A numeric port, or a named one looked up in the container's ports.
fn resolve_port(port: &Value, ports: &Value) -> Result<u32, String> {
    match port {
        Value::Number(n) => n
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p as u32)
            .ok_or_else(|| format!("{n} is not a port number")),
        Value::String(s) => {
            if let Ok(n) = s.parse::<u32>() {
                return Ok(n);
            }
            ports
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s))
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_u64)
                .map(|p| p as u32)
                .ok_or_else(|| format!("'{s}' names no port of the container"))
        }
        other => Err(format!("{other} is not a port")),
    }
}

/// Puts back the probes and hooks recorded by an earlier injection.
pub(crate) fn restore(pod: &mut Value, probers: &Map<String, Value>) {
    for c in app_containers(pod) {
        let mut slots: Vec<&mut Value> = Vec::new();
        let Some(obj) = c.as_object_mut() else {
            continue;
        };
        for (k, v) in obj.iter_mut() {
            if PROBES.iter().any(|(f, _)| f == k) {
                slots.push(v);
            } else if k == "lifecycle"
                && let Some(l) = v.as_object_mut()
            {
                slots.extend(l.values_mut());
            }
        }
        for slot in slots {
            let path = slot.pointer("/httpGet/path").and_then(Value::as_str);
            let Some(Value::Object(record)) = path.and_then(|p| probers.get(p)) else {
                continue;
            };
            let Some(s) = slot.as_object_mut() else {
                continue;
            };
            s.remove("httpGet");
            for (k, v) in record {
                if k != "timeoutSeconds" {
                    s.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {"containers": [{
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "grpc", "containerPort": 9000}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTPS"},
                               "timeoutSeconds": 1, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"grpc": {"port": "grpc", "service": "health"}, "failureThreshold": 30},
            "lifecycle": {"preStop": {"httpGet": {"port": 91, "path": "/stop"}},
                          "postStart": {"exec": {"command": ["true"]}}}
        }, {
            "name": "sh", "livenessProbe": {"exec": {"command": ["cat", "/ok"]}}
        }, {
            "name": "istio-proxy", "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}
        }]}})
    }

    #[test]
    fn every_probe_kind_goes_to_the_status_port() {
        let mut p = pod();
        let probers = rewrite(&mut p, 15020).unwrap();
        let web = &p["spec"]["containers"][0];
        assert_eq!(
            web["readinessProbe"],
            json!({"httpGet": {"path": "/app-health/web/readyz",
            "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 5})
        );
        assert_eq!(
            web["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/web/livez",
            "port": 15020, "scheme": "HTTP"}})
        );
        assert_eq!(
            web["startupProbe"]["httpGet"]["path"],
            "/app-health/web/startupz"
        );
        assert_eq!(web["startupProbe"]["failureThreshold"], 30);
        assert!(web["startupProbe"].get("grpc").is_none());
        assert_eq!(
            web["lifecycle"]["preStop"],
            json!({"httpGet": {"path": "/app-lifecycle/web/prestopz",
            "port": 15020, "scheme": "HTTP"}})
        );
        assert_eq!(
            web["lifecycle"]["postStart"],
            json!({"exec": {"command": ["true"]}})
        );
        assert_eq!(
            p["spec"]["containers"][1]["livenessProbe"],
            json!({"exec": {"command": ["cat", "/ok"]}})
        );
        assert_eq!(p["spec"]["containers"][2], pod()["spec"]["containers"][2]);
        assert_eq!(
            Value::Object(probers),
            json!({
                "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTPS"}, "timeoutSeconds": 1},
                "/app-health/web/livez": {"tcpSocket": {"port": 8080}},
                "/app-health/web/startupz": {"grpc": {"port": 9000, "service": "health"}},
                "/app-lifecycle/web/prestopz": {"httpGet": {"port": 91, "path": "/stop"}},
            })
        );
    }

    #[test]
    fn unknown_named_port_is_an_error() {
        let mut p = json!({"spec": {"containers": [{"name": "a",
            "readinessProbe": {"httpGet": {"port": "nope"}}}]}});
        let e = rewrite(&mut p, 15020).unwrap_err();
        assert_eq!(
            e,
            "container 'a': httpGet port 'nope' names no port of the container"
        );
    }

    #[test]
    fn restore_undoes_rewrite_up_to_port_resolution() {
        let mut p = pod();
        let probers = rewrite(&mut p, 15020).unwrap();
        restore(&mut p, &probers);
        let web = &p["spec"]["containers"][0];
        assert_eq!(
            web["readinessProbe"]["httpGet"],
            json!({"path": "/ready", "port": 8080, "scheme": "HTTPS"})
        );
        assert_eq!(web["livenessProbe"], json!({"tcpSocket": {"port": 8080}}));
        assert_eq!(
            web["lifecycle"]["preStop"],
            json!({"httpGet": {"port": 91, "path": "/stop"}})
        );
        // and rewriting again gives the same result as the first time
        let mut again = p.clone();
        let probers2 = rewrite(&mut again, 15020).unwrap();
        let mut first = pod();
        let _ = rewrite(&mut first, 15020).unwrap();
        assert_eq!(again, first);
        assert_eq!(probers2, probers);
    }

    #[test]
    fn native_sidecars_the_user_declares_are_rewritten_like_app_containers() {
        // Issue 14: Istio rewrites the probes of every container but istio-proxy, init
        // containers included (Kubernetes allows probes only on restartPolicy: Always ones).
        let mut p = json!({"spec": {
            "initContainers": [
                {"name": "log-agent", "restartPolicy": "Always",
                 "ports": [{"name": "health", "containerPort": 9901}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "health"}},
                 "startupProbe": {"tcpSocket": {"port": 9901}}},
                {"name": "istio-proxy", "restartPolicy": "Always",
                 "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}}
            ],
            "containers": [{"name": "web", "livenessProbe": {"tcpSocket": {"port": 8080}}}]
        }});
        let original = p.clone();
        let probers = rewrite(&mut p, 15020).unwrap();
        let agent = &p["spec"]["initContainers"][0];
        assert_eq!(
            agent["readinessProbe"],
            json!({"httpGet": {"path": "/app-health/log-agent/readyz", "port": 15020, "scheme": "HTTP"}})
        );
        assert_eq!(
            agent["startupProbe"]["httpGet"]["path"],
            "/app-health/log-agent/startupz"
        );
        assert_eq!(
            probers["/app-health/log-agent/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 9901}})
        );
        assert_eq!(
            probers["/app-health/log-agent/startupz"],
            json!({"tcpSocket": {"port": 9901}})
        );
        assert!(probers.contains_key("/app-health/web/livez"));
        assert_eq!(
            p["spec"]["initContainers"][1],
            original["spec"]["initContainers"][1]
        );
        restore(&mut p, &probers);
        let agent = &p["spec"]["initContainers"][0];
        assert_eq!(
            agent["startupProbe"],
            original["spec"]["initContainers"][0]["startupProbe"]
        );
        assert_eq!(
            agent["readinessProbe"],
            json!({"httpGet": {"path": "/ready", "port": 9901}})
        );
        assert_eq!(p["spec"]["containers"], original["spec"]["containers"]);
    }
}
