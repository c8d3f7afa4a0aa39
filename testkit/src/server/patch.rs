//! PATCH bodies as the API server applies them: JSON merge patch (RFC 7386), strategic merge
//! patch (lists merged by the built-in kinds' merge keys, `$patch`, `$retainKeys` and
//! `$deleteFromPrimitiveList` directives) and JSON patch (RFC 6902), chosen by `Content-Type`.

use serde_json::{Map, Value, json};

/// The patch formats the API server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
}

/// Why a PATCH was refused: the `Status` code, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

impl Refusal {
    fn bad_request(message: String) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message,
        }
    }
}

const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, \
                        application/apply-patch+yaml, application/strategic-merge-patch+json";

/// The patch type of a request's `Content-Type` (parameters such as `; charset=utf-8` ignored);
/// 415 for anything else, as the API server answers. Server-side apply is refused with a
/// message saying this fake does not serve it.
pub(super) fn patch_type(content_type: Option<&str>) -> Result<PatchType, Refusal> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/merge-patch+json") => Ok(PatchType::Merge),
        Some("application/strategic-merge-patch+json") => Ok(PatchType::Strategic),
        Some("application/json-patch+json") => Ok(PatchType::Json),
        Some("application/apply-patch+yaml") => Err(Refusal {
            code: 415,
            reason: "UnsupportedMediaType",
            message: "server-side apply (application/apply-patch+yaml) is not served by the \
                      fake API server"
                .to_owned(),
        }),
        other => Err(Refusal {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format ({}) - accepted media types \
                 include: {ACCEPTED}",
                other.unwrap_or("no Content-Type")
            ),
        }),
    }
}

/// API groups served by kube-apiserver itself: only their kinds take strategic merge patches
/// (a custom resource's PATCH of that type is answered 415, as the real server does).
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

/// Applies `patch` of type `kind_of_patch` to `object` (of `kind` in `group`).
pub(super) fn apply(
    kind_of_patch: PatchType,
    group: &str,
    kind: &str,
    object: &mut Value,
    patch: &Value,
) -> Result<(), Refusal> {
    match kind_of_patch {
        PatchType::Merge => {
            merge_patch(object, patch);
            Ok(())
        }
        PatchType::Strategic => {
            if !BUILT_IN_GROUPS.contains(&group) {
                return Err(Refusal {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!(
                        "the body of the request was in an unknown format - accepted media \
                         types include: application/json-patch+json, \
                         application/merge-patch+json, application/apply-patch+yaml \
                         (strategic merge patch is not supported for {kind} of {group}, a \
                         custom resource)"
                    ),
                });
            }
            strategic_merge(kind, object, patch).map_err(Refusal::bad_request)
        }
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| Refusal::bad_request(format!("JSON patch: {e}")))?;
            json_patch::patch(object, &operations).map_err(|e| Refusal {
                code: 422,
                reason: "Invalid",
                message: format!("the server rejected our request due to an error in our request: JSON patch: {e}"),
            })
        }
    }
}

/// RFC 7386 JSON merge patch: maps merge, `null` removes, everything else (lists too) replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(object) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// How a list field is merged by a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No `patchStrategy`: the patch's list replaces the object's.
    Replace,
    /// `patchStrategy: merge` with `patchMergeKey`: elements with the same key merge, others
    /// are appended.
    MergeByKey(&'static str),
    /// `patchStrategy: merge` on a list of scalars (`finalizers`): the union, in order.
    MergeScalars,
}

/// Where a kind keeps its pod spec (field path from the object's root).
fn pod_spec_path(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => &[],
    }
}

/// The merge strategy of the list at `path` (field names from the root, list positions left
/// out) in `kind`, from the `patchStrategy`/`patchMergeKey` tags of the Kubernetes types.
fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    use ListStrategy::{MergeByKey, MergeScalars, Replace};
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    match names.as_slice() {
        [.., "metadata", "ownerReferences"] => return MergeByKey("uid"),
        [.., "metadata", "finalizers"] => return MergeScalars,
        [.., "status", "conditions"] => return MergeByKey("type"),
        _ => {}
    }
    match (kind, names.as_slice()) {
        ("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration", ["webhooks"]) => {
            return MergeByKey("name");
        }
        ("Service", ["spec", "ports"]) => return MergeByKey("port"),
        ("Node", ["status", "addresses"]) => return MergeByKey("type"),
        _ => {}
    }
    let pod_spec = pod_spec_path(kind);
    if pod_spec.is_empty() || !names.starts_with(pod_spec) {
        return Replace;
    }
    match &names[pod_spec.len()..] {
        [
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "imagePullSecrets"
            | "resourceClaims"
            | "schedulingGates",
        ] => MergeByKey("name"),
        ["hostAliases"] => MergeByKey("ip"),
        [
            "containers" | "initContainers" | "ephemeralContainers",
            field,
        ] => match *field {
            "env" => MergeByKey("name"),
            "ports" => MergeByKey("containerPort"),
            "volumeMounts" => MergeByKey("mountPath"),
            "volumeDevices" => MergeByKey("devicePath"),
            "resizePolicy" => MergeByKey("resourceName"),
            _ => Replace,
        },
        _ => Replace,
    }
}

/// A strategic merge patch of `object` (of `kind`): maps merge and `null` removes, as a merge
/// patch; lists merge by the merge key of the Kubernetes type or are replaced (see
/// [`list_strategy`]). Directives: `$patch: replace|delete|merge` in maps and list elements,
/// `$retainKeys`, `$deleteFromPrimitiveList/<field>`; `$setElementOrder/<field>` is accepted
/// and the merged list keeps the object's order with new elements appended.
pub(super) fn strategic_merge(kind: &str, object: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".to_owned());
    };
    if !object.is_object() {
        *object = json!({});
    }
    let Value::Object(target) = object else {
        return Ok(());
    };
    match merge_map(kind, &mut Vec::new(), target, patch)? {
        MapOutcome::Kept => Ok(()),
        MapOutcome::Delete => Err("$patch: delete of the whole object".to_owned()),
    }
}

enum MapOutcome {
    Kept,
    /// The patch said `$patch: delete`: the caller removes this map.
    Delete,
}

fn at(path: &[String]) -> String {
    if path.is_empty() {
        "the object".to_owned()
    } else {
        path.join(".")
    }
}

fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<MapOutcome, String> {
    match patch.get("$patch").map(|d| d.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("delete")) => return Ok(MapOutcome::Delete),
        Some(Some("replace")) => {
            let mut replacement = Map::new();
            let mut without = patch.clone();
            without.remove("$patch");
            merge_map(kind, path, &mut replacement, &without)?;
            *target = replacement;
            return Ok(MapOutcome::Kept);
        }
        Some(other) => {
            return Err(format!(
                "{}: unknown $patch directive {}",
                at(path),
                other.map_or_else(|| patch["$patch"].to_string(), str::to_owned)
            ));
        }
    }
    let mut retain: Option<Vec<String>> = None;
    for (key, value) in patch {
        if key == "$patch" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if key == "$retainKeys" {
            let keys = value
                .as_array()
                .and_then(|keys| {
                    keys.iter()
                        .map(|k| k.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| format!("{}: $retainKeys must be a list of strings", at(path)))?;
            retain = Some(keys);
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value
                .as_array()
                .ok_or_else(|| format!("{}: {key} must be a list", at(path)))?;
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(format!("{}: unknown directive {key}", at(path)));
        }
        path.push(key.clone());
        let result = merge_field(kind, path, target, key, value);
        path.pop();
        result?;
    }
    if let Some(keys) = retain {
        target.retain(|key, _| keys.contains(key));
    }
    Ok(MapOutcome::Kept)
}

fn merge_field(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Map<String, Value>,
    key: &str,
    value: &Value,
) -> Result<(), String> {
    match value {
        Value::Null => {
            target.remove(key);
        }
        Value::Object(patch) => {
            let slot = target.entry(key.to_owned()).or_insert_with(|| json!({}));
            if !slot.is_object() {
                *slot = json!({});
            }
            let Value::Object(map) = slot else {
                return Ok(());
            };
            if let MapOutcome::Delete = merge_map(kind, path, map, patch)? {
                target.remove(key);
            }
        }
        Value::Array(patch) => {
            let mut list = match target.remove(key) {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            merge_list(kind, path, &mut list, patch)?;
            target.insert(key.to_owned(), Value::Array(list));
        }
        scalar => {
            target.insert(key.to_owned(), scalar.clone());
        }
    }
    Ok(())
}

fn is_directive(element: &Value, directive: &str) -> bool {
    element.get("$patch").and_then(Value::as_str) == Some(directive)
}

/// A new element or a replacing one: its directives applied onto nothing (drops `null`s).
fn fresh(kind: &str, path: &mut Vec<String>, element: &Value) -> Result<Value, String> {
    match element {
        Value::Object(patch) => {
            let mut map = Map::new();
            merge_map(kind, path, &mut map, patch)?;
            Ok(Value::Object(map))
        }
        other => Ok(other.clone()),
    }
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Vec<Value>,
    patch: &[Value],
) -> Result<(), String> {
    let strategy = list_strategy(kind, path);
    let replace_all = patch.iter().any(|e| is_directive(e, "replace"));
    if strategy == ListStrategy::Replace || replace_all {
        let mut replacement = Vec::new();
        for element in patch.iter().filter(|e| !is_directive(e, "replace")) {
            replacement.push(fresh(kind, path, element)?);
        }
        *target = replacement;
        return Ok(());
    }
    let ListStrategy::MergeByKey(merge_key) = strategy else {
        for element in patch {
            if !target.contains(element) {
                target.push(element.clone());
            }
        }
        return Ok(());
    };
    for element in patch {
        let Some(fields) = element.as_object() else {
            return Err(format!(
                "{}: elements of a list merged by {merge_key} must be objects, not {element}",
                at(path)
            ));
        };
        let Some(key_value) = fields.get(merge_key) else {
            return Err(format!(
                "{}: an element does not contain the declared merge key {merge_key}: {element}",
                at(path)
            ));
        };
        let position = target
            .iter()
            .position(|e| e.get(merge_key) == Some(key_value));
        if is_directive(element, "delete") {
            target.retain(|e| e.get(merge_key) != Some(key_value));
            continue;
        }
        match position {
            Some(i) => {
                let Value::Object(existing) = &mut target[i] else {
                    target[i] = fresh(kind, path, element)?;
                    continue;
                };
                if let MapOutcome::Delete = merge_map(kind, path, existing, fields)? {
                    target.remove(i);
                }
            }
            None => target.push(fresh(kind, path, element)?),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_as_rfc_7386() {
        let mut object = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "x": "y"});
        merge_patch(
            &mut object,
            &json!({"a": {"b": null, "d": 3}, "l": [3], "n": {"m": 1}}),
        );
        assert_eq!(
            object,
            json!({"a": {"c": 2, "d": 3}, "l": [3], "x": "y", "n": {"m": 1}})
        );
    }

    fn webhook_config() -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "injector", "annotations": {"keep": "1", "drop": "2"}},
            "webhooks": [
                {"name": "a.example.com", "clientConfig": {"service": {"name": "s"}, "caBundle": "b2xk"}, "sideEffects": "None"},
                {"name": "b.example.com", "clientConfig": {"service": {"name": "s"}}, "sideEffects": "None"}
            ]
        })
    }

    #[test]
    fn strategic_merge_of_webhooks_by_name_touches_only_the_named_fields() {
        let mut object = webhook_config();
        strategic_merge(
            "MutatingWebhookConfiguration",
            &mut object,
            &json!({"metadata": {"annotations": {"drop": null, "new": "3"}},
                    "webhooks": [{"name": "b.example.com", "clientConfig": {"caBundle": "Y2E="}}]}),
        )
        .expect("patch applies");
        assert_eq!(
            object["metadata"]["annotations"],
            json!({"keep": "1", "new": "3"})
        );
        assert_eq!(object["webhooks"][0], webhook_config()["webhooks"][0]);
        assert_eq!(
            object["webhooks"][1],
            json!({"name": "b.example.com", "clientConfig": {"service": {"name": "s"}, "caBundle": "Y2E="}, "sideEffects": "None"})
        );
        // The same body as a merge patch replaces the whole list.
        let mut merged = webhook_config();
        merge_patch(
            &mut merged,
            &json!({"webhooks": [{"name": "b.example.com", "clientConfig": {"caBundle": "Y2E="}}]}),
        );
        assert_eq!(
            merged["webhooks"],
            json!([{"name": "b.example.com", "clientConfig": {"caBundle": "Y2E="}}])
        );
    }

    #[test]
    fn strategic_merge_appends_unknown_keys_deletes_and_replaces_on_directive() {
        let mut object = webhook_config();
        strategic_merge(
            "MutatingWebhookConfiguration",
            &mut object,
            &json!({"webhooks": [
                {"name": "a.example.com", "$patch": "delete"},
                {"name": "c.example.com", "sideEffects": "None", "timeoutSeconds": null}
            ]}),
        )
        .expect("patch applies");
        let names: Vec<&str> = object["webhooks"]
            .as_array()
            .expect("list")
            .iter()
            .map(|w| w["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["b.example.com", "c.example.com"]);
        assert_eq!(
            object["webhooks"][1],
            json!({"name": "c.example.com", "sideEffects": "None"})
        );

        strategic_merge(
            "MutatingWebhookConfiguration",
            &mut object,
            &json!({"webhooks": [{"$patch": "replace"}, {"name": "only.example.com"}],
                    "metadata": {"annotations": {"$patch": "replace", "fresh": "yes"}}}),
        )
        .expect("patch applies");
        assert_eq!(object["webhooks"], json!([{"name": "only.example.com"}]));
        assert_eq!(object["metadata"]["annotations"], json!({"fresh": "yes"}));
    }

    #[test]
    fn secret_data_merges_key_by_key() {
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ca"},
                                "data": {"ca.crt": "b2xk", "ca.key": "a2V5"}, "type": "Opaque"});
        strategic_merge(
            "Secret",
            &mut secret,
            &json!({"data": {"ca.crt": "bmV3", "ca.key": null, "extra": "eA=="}}),
        )
        .expect("patch applies");
        assert_eq!(secret["data"], json!({"ca.crt": "bmV3", "extra": "eA=="}));
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn pod_lists_merge_by_their_kubernetes_keys_at_every_depth() {
        let mut deployment = json!({"kind": "Deployment", "metadata": {"finalizers": ["a"]},
            "spec": {"template": {"spec": {
                "containers": [{"name": "app", "image": "app:1",
                                "env": [{"name": "A", "value": "1"}],
                                "ports": [{"containerPort": 8080, "name": "http"}],
                                "args": ["--x"]}],
                "tolerations": [{"key": "t1"}]}}}});
        strategic_merge(
            "Deployment",
            &mut deployment,
            &json!({"metadata": {"finalizers": ["b", "a"]},
                "spec": {"template": {"spec": {
                "containers": [
                    {"name": "app", "env": [{"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 8080, "protocol": "TCP"}], "args": ["--y"]},
                    {"name": "istio-proxy", "image": "proxy:1"}],
                "tolerations": [{"key": "t2"}]}}}}),
        )
        .expect("patch applies");
        let spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            spec["containers"][0]["ports"],
            json!([{"containerPort": 8080, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(
            spec["containers"][0]["args"],
            json!(["--y"]),
            "args replace"
        );
        assert_eq!(spec["containers"][0]["image"], "app:1");
        assert_eq!(spec["containers"][1]["name"], "istio-proxy");
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "t2"}]),
            "no merge key: replaced"
        );
        assert_eq!(deployment["metadata"]["finalizers"], json!(["a", "b"]));

        strategic_merge(
            "Deployment",
            &mut deployment,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
                    "spec": {"template": {"spec": {"containers": [
                        {"name": "app", "$retainKeys": ["name", "image"], "image": "app:2"}]}}}}),
        )
        .expect("patch applies");
        assert_eq!(deployment["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "app", "image": "app:2"})
        );
    }

    #[test]
    fn bad_strategic_patches_name_the_field_and_the_problem() {
        let mut object = webhook_config();
        let error = strategic_merge(
            "MutatingWebhookConfiguration",
            &mut object,
            &json!({"webhooks": [{"clientConfig": {}}]}),
        )
        .expect_err("no merge key");
        assert!(
            error.contains("webhooks") && error.contains("merge key name"),
            "{error}"
        );
        let error = strategic_merge(
            "MutatingWebhookConfiguration",
            &mut object,
            &json!({"metadata": {"$patch": "explode"}}),
        )
        .expect_err("bad directive");
        assert!(
            error.contains("metadata") && error.contains("explode"),
            "{error}"
        );
        let error = strategic_merge("Secret", &mut object, &json!({"metadata": {"$what": 1}}))
            .expect_err("unknown directive");
        assert_eq!(error, "metadata: unknown directive $what");
    }

    #[test]
    fn patch_types_by_content_type_and_custom_resources_refuse_strategic() {
        assert_eq!(
            patch_type(Some(
                "application/strategic-merge-patch+json; charset=utf-8"
            )),
            Ok(PatchType::Strategic)
        );
        assert_eq!(
            patch_type(Some("application/merge-patch+json")),
            Ok(PatchType::Merge)
        );
        assert_eq!(
            patch_type(Some("application/json-patch+json")),
            Ok(PatchType::Json)
        );
        for refused in [
            None,
            Some("application/json"),
            Some("application/apply-patch+yaml"),
        ] {
            let refusal = patch_type(refused).expect_err("refused");
            assert_eq!(
                (refusal.code, refusal.reason),
                (415, "UnsupportedMediaType")
            );
        }
        let mut vs = json!({"spec": {"hosts": ["a"]}});
        let refusal = apply(
            PatchType::Strategic,
            "networking.istio.io",
            "VirtualService",
            &mut vs,
            &json!({"spec": {"hosts": ["b"]}}),
        )
        .expect_err("415");
        assert_eq!(refusal.code, 415);
        assert!(
            refusal.message.contains("VirtualService"),
            "{}",
            refusal.message
        );
        apply(
            PatchType::Json,
            "networking.istio.io",
            "VirtualService",
            &mut vs,
            &json!([{"op": "add", "path": "/spec/hosts/-", "value": "b"}]),
        )
        .expect("JSON patch");
        assert_eq!(vs["spec"]["hosts"], json!(["a", "b"]));
        let failed = apply(
            PatchType::Json,
            "networking.istio.io",
            "VirtualService",
            &mut vs,
            &json!([{"op": "test", "path": "/spec/hosts/0", "value": "z"}]),
        )
        .expect_err("test op fails");
        assert_eq!((failed.code, failed.reason), (422, "Invalid"));
    }
}
