//! The JSONPatch (RFC 6902) from the original pod to the injected pod, for the admission response.

use serde_json::Value;

/// The patch turning `original` into `injected`. Pointer tokens are escaped (`/` in annotation
/// keys becomes `~1`) and a missing parent is added whole, before anything below it.
pub fn json_patch(original: &Value, injected: &Value) -> json_patch::Patch {
    json_patch::diff(original, injected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(original: Value, injected: Value) -> json_patch::Patch {
        let p = json_patch(&original, &injected);
        let mut doc = original;
        json_patch::patch(&mut doc, &p).unwrap();
        assert_eq!(doc, injected);
        p
    }

    #[test]
    fn escaped_keys_and_missing_parents() {
        let p = round_trip(
            json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}]}}),
            json!({"metadata": {"name": "a", "annotations": {"sidecar.istio.io/status": "{}"}},
                   "spec": {"initContainers": [{"name": "istio-init"}],
                            "containers": [{"name": "app"}, {"name": "istio-proxy"}]}}),
        );
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""path":"/metadata/annotations""#), "{text}");
        let mut escaped = round_trip(
            json!({"metadata": {"annotations": {}}}),
            json!({"metadata": {"annotations": {"a/b~c": "1"}}}),
        );
        let op = serde_json::to_value(escaped.0.remove(0)).unwrap();
        assert_eq!(op["path"], "/metadata/annotations/a~1b~0c");
    }

    #[test]
    fn prepend_and_reorder_round_trip() {
        round_trip(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "volumes": [{"name": "v"}]}}),
            json!({"spec": {"containers": [{"name": "istio-proxy"}, {"name": "a"}, {"name": "b"}],
                            "volumes": [{"name": "w"}, {"name": "v"}]}}),
        );
        round_trip(
            json!({"spec": {"x": [1, 2, 3]}}),
            json!({"spec": {"x": [3]}}),
        );
    }
}
