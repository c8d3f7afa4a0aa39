//! Strategic merge of a template overlay onto a core/v1 Pod: maps merge recursively, lists of
//! named things merge by their key (new items first), other lists are replaced, and the
//! `$patch: replace|delete` directives are honoured. Also the plain deep merge of configuration
//! values ([`deep_merge`]).

use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";

/// The merge key of a Pod list field, by field name (unique within core/v1 Pod).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "readinessGates" => "conditionType",
        _ => return None,
    })
}

/// Merges `overlay` into `base` in place.
pub(crate) fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => merge_map(b, o),
        (b, o) => *b = strip_directives(o),
    }
}

fn merge_map(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    if overlay.get(DIRECTIVE).and_then(Value::as_str) == Some("replace") {
        *base = strip_map(overlay);
        return;
    }
    for (k, ov) in overlay {
        if k == DIRECTIVE {
            continue;
        }
        if ov.is_null() || directive(ov) == Some("delete") {
            base.remove(k);
            continue;
        }
        match (base.get_mut(k), ov) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_map(b, o),
            (Some(Value::Array(b)), Value::Array(o)) => match merge_key(k) {
                Some(key) => merge_list(b, o, key),
                None => *b = strip_list(o),
            },
            (_, ov) => {
                base.insert(k.clone(), strip_directives(ov));
            }
        }
    }
}

fn merge_list(base: &mut Vec<Value>, overlay: &[Value], key: &str) {
    if overlay.iter().any(|i| directive(i) == Some("replace")) {
        *base = strip_list(overlay);
        return;
    }
    let mut fresh = Vec::new();
    for item in overlay {
        let Some(id) = item.get(key) else {
            fresh.push(strip_directives(item));
            continue;
        };
        let pos = base.iter().position(|b| b.get(key) == Some(id));
        match (pos, directive(item)) {
            (Some(i), Some("delete")) => {
                base.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => merge(&mut base[i], item),
            (None, _) => fresh.push(strip_directives(item)),
        }
    }
    fresh.append(base);
    *base = fresh;
}

fn has_directive(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key(DIRECTIVE) || m.values().any(has_directive),
        Value::Array(l) => l.iter().any(has_directive),
        _ => false,
    }
}

fn directive(v: &Value) -> Option<&str> {
    v.get(DIRECTIVE).and_then(Value::as_str)
}

fn strip_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| *k != DIRECTIVE)
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

fn strip_list(l: &[Value]) -> Vec<Value> {
    l.iter()
        .filter(|i| !matches!(directive(i), Some("replace" | "delete")))
        .map(strip_directives)
        .collect()
}

/// The overlay value with every `$patch` key removed (new content is inserted verbatim).
fn strip_directives(v: &Value) -> Value {
    if !has_directive(v) {
        return v.clone(); // the common case, and a plain clone is much cheaper than a rebuild
    }
    match v {
        Value::Object(m) => Value::Object(strip_map(m)),
        Value::Array(l) => Value::Array(l.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Deep merge of plain values (no strategic keys): maps recursively, everything else replaced;
/// for user files over the embedded defaults and the pod's proxy config over the mesh's.
pub(crate) fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_lists_merge_by_key_new_items_first() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a", "env": [{"name": "A", "value": "1"}],
             "ports": [{"containerPort": 80}], "volumeMounts": [{"mountPath": "/x", "name": "x"}]}
        ], "volumes": [{"name": "x", "emptyDir": {}}], "tolerations": [{"key": "k"}]}});
        let overlay = json!({"spec": {"containers": [
            {"name": "istio-proxy", "image": "p"},
            {"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}],
             "ports": [{"containerPort": 80, "name": "http"}],
             "volumeMounts": [{"mountPath": "/y", "name": "y"}], "args": ["x"]}
        ], "volumes": [{"name": "y", "emptyDir": {}}], "tolerations": [{"key": "t"}]}});
        merge(&mut pod, &overlay);
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
            {"name": "istio-proxy", "image": "p"},
            {"name": "app", "image": "a",
             "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}],
             "ports": [{"containerPort": 80, "name": "http"}],
             "volumeMounts": [{"mountPath": "/y", "name": "y"}, {"mountPath": "/x", "name": "x"}],
             "args": ["x"]}
        ], "volumes": [{"name": "y", "emptyDir": {}}, {"name": "x", "emptyDir": {}}],
           "tolerations": [{"key": "t"}]}})
        );
    }

    #[test]
    fn patch_directives_and_null_deletion() {
        let mut pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "1"}},
            "spec": {"containers": [{"name": "app"}, {"name": "old"}],
                     "volumes": [{"name": "v"}],
                     "securityContext": {"runAsUser": 1, "fsGroup": 2}}});
        let overlay = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}, "annotations": {"x": null}},
            "spec": {"containers": [{"name": "old", "$patch": "delete"}, {"name": "gone", "$patch": "delete"}],
                     "volumes": [{"$patch": "replace"}, {"name": "w"}],
                     "securityContext": {"$patch": "delete"}}});
        merge(&mut pod, &overlay);
        assert_eq!(
            pod,
            json!({"metadata": {"labels": {"c": "3"}, "annotations": {}},
            "spec": {"containers": [{"name": "app"}], "volumes": [{"name": "w"}]}})
        );
    }

    #[test]
    fn absent_fields_are_created_and_unknown_fields_kept() {
        let mut pod = json!({"spec": {"futureField": {"deep": [1, 2]}}});
        merge(
            &mut pod,
            &json!({"spec": {"initContainers": [{"name": "istio-init", "$patch": "merge"}]}}),
        );
        assert_eq!(
            pod,
            json!({"spec": {"futureField": {"deep": [1, 2]},
            "initContainers": [{"name": "istio-init"}]}})
        );
    }
}
