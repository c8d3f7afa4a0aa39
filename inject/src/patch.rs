//! The JSONPatch (RFC 6902) from the original pod to the injected pod, for the admission response.
//!
//! A structural diff written for what injection does to a pod: it adds keys and prepends or
//! appends array items (`istio-init` before the user's init containers, the sidecar volumes before
//! the pod's own). Arrays are compared after skipping their common prefix and suffix, so a
//! prepended item is one `add` at its index and the pod's own items (such as the per-replica
//! `kube-api-access-xxxxx` token volume) are never copied into the patch. Replicas of one
//! workload therefore get the same patch, and the patch stays small.

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value};

/// The patch turning `original` into `injected`. Pointer tokens are escaped (`/` in annotation
/// keys becomes `~1`) and a missing parent is added whole, before anything below it.
///
/// Objects: a key only in `injected` is an `add`, a key only in `original` a `remove`, a key in
/// both with different values is compared further (a scalar or a change of type is a `replace`).
/// Arrays: the common prefix and suffix of equal items are skipped; the rest is paired index by
/// index and compared, then the extra `injected` items are inserted at their index, or the extra
/// `original` items removed, highest index first.
pub fn json_patch(original: &Value, injected: &Value) -> Patch {
    let mut diff = Diff::default();
    diff.value(original, injected);
    Patch(diff.ops)
}

/// One step of the path from the document root down to the values being compared.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl Step<'_> {
    /// Appends `/` and the step, escaped as RFC 6901 says (`~` is `~0`, `/` is `~1`).
    fn push_onto(self, pointer: &mut String) {
        pointer.push('/');
        match self {
            Step::Key(key) if !key.contains(['~', '/']) => pointer.push_str(key),
            Step::Key(key) => pointer.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Step::Index(index) => pointer.push_str(&index.to_string()),
        }
    }
}

/// The walk: the escaped pointer to the values being compared and the operations found so far.
///
/// The pointer is one buffer, extended on the way down and truncated on the way back up, and
/// copied into a `PointerBuf` only when an operation is emitted (`PointerBuf::pop_back` would
/// allocate the popped token). Equal subtrees are never entered.
#[derive(Default)]
struct Diff {
    pointer: String,
    ops: Vec<PatchOperation>,
}

impl Diff {
    fn value(&mut self, original: &Value, injected: &Value) {
        match (original, injected) {
            (Value::Object(original), Value::Object(injected)) => self.object(original, injected),
            (Value::Array(original), Value::Array(injected)) => self.array(original, injected),
            _ if original == injected => {}
            _ => {
                let path = self.path(None);
                self.ops.push(PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: injected.clone(),
                }));
            }
        }
    }

    fn object(&mut self, original: &Map<String, Value>, injected: &Map<String, Value>) {
        for (key, new) in injected {
            match original.get(key) {
                Some(old) => self.child(Step::Key(key), old, new),
                None => self.add(Step::Key(key), new),
            }
        }
        for key in original.keys() {
            if !injected.contains_key(key) {
                self.remove(Step::Key(key));
            }
        }
    }

    fn array(&mut self, original: &[Value], injected: &[Value]) {
        let prefix = common_len(original.iter(), injected.iter());
        let (original, injected) = (&original[prefix..], &injected[prefix..]);
        let suffix = common_len(original.iter().rev(), injected.iter().rev());
        let original = &original[..original.len() - suffix];
        let injected = &injected[..injected.len() - suffix];

        for (offset, (old, new)) in original.iter().zip(injected).enumerate() {
            self.child(Step::Index(prefix + offset), old, new);
        }
        let paired = original.len().min(injected.len());
        // Ascending: each `add` inserts before the skipped suffix, after the items added so far.
        for (offset, new) in injected.iter().enumerate().skip(paired) {
            self.add(Step::Index(prefix + offset), new);
        }
        // Descending: removing an item shifts only the ones after it, already removed.
        for offset in (paired..original.len()).rev() {
            self.remove(Step::Index(prefix + offset));
        }
    }

    /// Compares the values under `step`, entering them only when they differ.
    fn child(&mut self, step: Step<'_>, original: &Value, injected: &Value) {
        if original != injected {
            let parent_len = self.pointer.len();
            step.push_onto(&mut self.pointer);
            self.value(original, injected);
            self.pointer.truncate(parent_len);
        }
    }

    fn add(&mut self, step: Step<'_>, value: &Value) {
        let path = self.path(Some(step));
        self.ops.push(PatchOperation::Add(AddOperation {
            path,
            value: value.clone(),
        }));
    }

    fn remove(&mut self, step: Step<'_>) {
        let path = self.path(Some(step));
        self.ops
            .push(PatchOperation::Remove(RemoveOperation { path }));
    }

    /// The current pointer, followed by `last` when given.
    fn path(&self, last: Option<Step<'_>>) -> PointerBuf {
        let mut pointer = String::with_capacity(self.pointer.len() + 32);
        pointer.push_str(&self.pointer);
        if let Some(step) = last {
            step.push_onto(&mut pointer);
        }
        PointerBuf::parse(pointer).expect("every step is escaped by Step::push_onto")
    }
}

/// How many items at the front of the two sequences are equal.
fn common_len<'v>(a: impl Iterator<Item = &'v Value>, b: impl Iterator<Item = &'v Value>) -> usize {
    a.zip(b).take_while(|(a, b)| a == b).count()
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

    /// The patch as the JSON the API server receives.
    fn ops(p: &json_patch::Patch) -> Value {
        serde_json::to_value(p).unwrap()
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

    fn token_volume(suffix: &str) -> Value {
        json!({"name": format!("kube-api-access-{suffix}"),
               "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {
                   "expirationSeconds": 3607, "path": "token"}}]}})
    }

    fn sidecar_volumes() -> [Value; 3] {
        [
            json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
            json!({"name": "istio-data", "emptyDir": {}}),
            json!({"name": "istio-podinfo", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}),
        ]
    }

    fn pod_with_volumes(volumes: Vec<Value>) -> Value {
        json!({"spec": {"containers": [{"name": "app"}], "volumes": volumes}})
    }

    #[test]
    fn prepended_volumes_are_adds_at_the_front_and_never_mention_the_pod_s_own() {
        let [envoy, data, podinfo] = sidecar_volumes();
        let p = round_trip(
            pod_with_volumes(vec![token_volume("x7k2q")]),
            pod_with_volumes(vec![
                envoy.clone(),
                data.clone(),
                podinfo.clone(),
                token_volume("x7k2q"),
            ]),
        );
        assert_eq!(
            ops(&p),
            json!([
                {"op": "add", "path": "/spec/volumes/0", "value": envoy},
                {"op": "add", "path": "/spec/volumes/1", "value": data},
                {"op": "add", "path": "/spec/volumes/2", "value": podinfo},
            ])
        );
    }

    #[test]
    fn replicas_with_different_token_volumes_get_the_same_patch() {
        let patch_for = |token: &str| {
            let mut volumes = sidecar_volumes().to_vec();
            volumes.push(token_volume(token));
            ops(&round_trip(
                pod_with_volumes(vec![token_volume(token)]),
                pod_with_volumes(volumes),
            ))
        };
        assert_eq!(patch_for("x7k2q"), patch_for("b9zzm"));
    }

    #[test]
    fn appended_items_are_adds_after_the_common_prefix() {
        let p = round_trip(
            json!({"containers": [{"name": "app"}]}),
            json!({"containers": [{"name": "app"}, {"name": "istio-proxy"}, {"name": "x"}]}),
        );
        assert_eq!(
            ops(&p),
            json!([
                {"op": "add", "path": "/containers/1", "value": {"name": "istio-proxy"}},
                {"op": "add", "path": "/containers/2", "value": {"name": "x"}},
            ])
        );
    }

    #[test]
    fn removed_items_go_highest_index_first() {
        let middle = round_trip(json!([1, 2, 3, 4, 5]), json!([1, 5]));
        assert_eq!(
            ops(&middle),
            json!([
                {"op": "remove", "path": "/3"},
                {"op": "remove", "path": "/2"},
                {"op": "remove", "path": "/1"},
            ])
        );
        let end = round_trip(json!({"a": [1, 2, 3]}), json!({"a": [1]}));
        assert_eq!(
            ops(&end),
            json!([{"op": "remove", "path": "/a/2"}, {"op": "remove", "path": "/a/1"}])
        );
    }

    #[test]
    fn changed_middle_items_are_compared_in_place() {
        let p = round_trip(
            json!([{"name": "a"}, {"name": "app", "image": "v1", "ports": [80]}, {"name": "z"}]),
            json!([{"name": "a"}, {"name": "app", "image": "v2", "ports": [80, 15090]},
                   {"name": "new"}, {"name": "z"}]),
        );
        assert_eq!(
            ops(&p),
            json!([
                {"op": "replace", "path": "/1/image", "value": "v2"},
                {"op": "add", "path": "/1/ports/1", "value": 15090},
                {"op": "add", "path": "/2", "value": {"name": "new"}},
            ])
        );
    }

    #[test]
    fn nested_changes_touch_only_what_differs() {
        let p = round_trip(
            json!({"metadata": {"labels": {"app": "web", "old": "x"}, "name": "p"},
                   "spec": {"containers": [{"readinessProbe": {"httpGet": {"path": "/r", "port": 8080}}}]}}),
            json!({"metadata": {"labels": {"app": "web", "new": "y"}, "name": "p"},
                   "spec": {"containers": [{"readinessProbe": {"httpGet": {"path": "/app-health/web/readyz", "port": 15020}}}]}}),
        );
        assert_eq!(
            ops(&p),
            json!([
                {"op": "add", "path": "/metadata/labels/new", "value": "y"},
                {"op": "remove", "path": "/metadata/labels/old"},
                {"op": "replace", "path": "/spec/containers/0/readinessProbe/httpGet/path",
                 "value": "/app-health/web/readyz"},
                {"op": "replace", "path": "/spec/containers/0/readinessProbe/httpGet/port",
                 "value": 15020},
            ])
        );
    }

    #[test]
    fn keys_with_tilde_and_slash_are_escaped_everywhere() {
        let p = round_trip(
            json!({"a/b": {"~": 1, "gone/~x": true}, "~1": [0]}),
            json!({"a/b": {"~": 2}, "~1": [0, 1], "": "empty key"}),
        );
        assert_eq!(
            ops(&p),
            json!([
                {"op": "add", "path": "/", "value": "empty key"},
                {"op": "replace", "path": "/a~1b/~0", "value": 2},
                {"op": "remove", "path": "/a~1b/gone~1~0x"},
                {"op": "add", "path": "/~01/1", "value": 1},
            ])
        );
    }

    #[test]
    fn type_changes_and_null_are_replaced_whole() {
        let p = round_trip(
            json!({"a": [1, 2], "b": {"c": 1}, "n": null, "s": "1", "f": 1.0, "keep": null}),
            json!({"a": {"0": 1}, "b": [1], "n": false, "s": 1, "f": 1, "keep": null}),
        );
        assert_eq!(
            ops(&p),
            json!([
                {"op": "replace", "path": "/a", "value": {"0": 1}},
                {"op": "replace", "path": "/b", "value": [1]},
                {"op": "replace", "path": "/f", "value": 1},
                {"op": "replace", "path": "/n", "value": false},
                {"op": "replace", "path": "/s", "value": 1},
            ])
        );
        let root = round_trip(json!([1]), json!(null));
        assert_eq!(
            ops(&root),
            json!([{"op": "replace", "path": "", "value": null}])
        );
    }

    #[test]
    fn empty_containers_round_trip() {
        round_trip(
            json!({"a": [], "o": {}}),
            json!({"a": [{}], "o": {"k": []}}),
        );
        round_trip(
            json!({"a": [{}], "o": {"k": []}}),
            json!({"a": [], "o": {}}),
        );
        round_trip(json!([]), json!([[], {}]));
        round_trip(json!({}), json!({"x": {}}));
        let to_empty = round_trip(json!({"a": [1], "b": {"c": 1}}), json!({"a": [], "b": {}}));
        assert_eq!(
            ops(&to_empty),
            json!([{"op": "remove", "path": "/a/0"}, {"op": "remove", "path": "/b/c"}])
        );
    }

    #[test]
    fn identical_documents_give_an_empty_patch() {
        for doc in [
            json!(null),
            json!([]),
            json!({}),
            json!({"spec": {"volumes": [token_volume("x7k2q")], "a": [1, [2, {"b": null}]]}}),
        ] {
            assert!(round_trip(doc.clone(), doc).0.is_empty());
        }
    }
}
