//! The pod's identity: workload name and owner, the canonical service labels, the tlsMode
//! label and kubectl's default-container annotations.

use outrigger_api::names::{
    annotation::{DEFAULT_CONTAINER, DEFAULT_LOGS_CONTAINER},
    container,
    label::{CANONICAL_NAME, CANONICAL_REVISION, POD_TEMPLATE_HASH, TLS_MODE},
};
use outrigger_api::workload_labels;
use serde_json::{Map, Value, json};

/// The workload a pod belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub name: String,
    /// `kubernetes://apis/<group-version>/namespaces/<ns>/<resource>/<name>`, or empty.
    pub owner: String,
}

/// Finds the workload: the request's name, else the controlling owner (a ReplicaSet's
/// pod-template-hash suffix stripped to its Deployment), else the pod's (generate)name.
pub(crate) fn workload(pod: &Value, namespace: &str, requested: Option<&str>) -> Workload {
    let meta = &pod["metadata"];
    let hash = meta["labels"][POD_TEMPLATE_HASH].as_str();
    let controller = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == json!(true))
        .or_else(|| meta["ownerReferences"].get(0));
    let owned = controller.and_then(|o| {
        let (kind, name) = (o["kind"].as_str()?, o["name"].as_str()?);
        let api = o["apiVersion"].as_str().unwrap_or("v1");
        Some(match (kind, hash) {
            ("ReplicaSet", Some(h)) if name.ends_with(&format!("-{h}")) => {
                let base = &name[..name.len() - h.len() - 1];
                (
                    base.to_owned(),
                    "apps/v1".to_owned(),
                    "deployments".to_owned(),
                )
            }
            _ => (
                name.to_owned(),
                api.to_owned(),
                format!("{}s", kind.to_ascii_lowercase()),
            ),
        })
    });
    let pod_name = meta["name"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            meta["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-').to_owned())
        })
        .unwrap_or_default();
    let name = requested
        .map(str::to_owned)
        .or_else(|| owned.as_ref().map(|o| o.0.clone()))
        .unwrap_or_else(|| pod_name.clone());
    let owner = match owned {
        Some((n, api, res)) => format!("kubernetes://apis/{api}/namespaces/{namespace}/{res}/{n}"),
        None if !pod_name.is_empty() => {
            format!("kubernetes://apis/v1/namespaces/{namespace}/pods/{pod_name}")
        }
        None => String::new(),
    };
    Workload { name, owner }
}

/// Adds tlsMode and the canonical name/revision labels (Istio's fallbacks,
/// [`workload_labels::canonical_service`]), keeping values already present.
pub(crate) fn add_labels(labels: &mut Map<String, Value>, workload_name: &str) {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let (name, revision) = workload_labels::canonical_service(label, workload_name);
    let (name, revision) = (label_value(name), label_value(revision));
    labels.entry(TLS_MODE).or_insert_with(|| json!("istio"));
    labels.insert(CANONICAL_NAME.to_owned(), json!(name));
    labels.insert(CANONICAL_REVISION.to_owned(), json!(revision));
}

/// At most 63 characters, no leading or trailing `-`, `_`, `.` (a valid label value).
fn label_value(v: &str) -> String {
    let cut: String = v.chars().take(63).collect();
    cut.trim_matches(['-', '_', '.']).to_owned()
}

/// The first container that is not the proxy.
pub(crate) fn first_app_container(pod: &Value) -> Option<String> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .find(|n| *n != container::PROXY)
        .map(str::to_owned)
}

/// Sets kubectl's default container annotations to `first` (the first app container), if absent.
pub(crate) fn add_default_container(anns: &mut Map<String, Value>, first: &str) {
    for key in [DEFAULT_CONTAINER, DEFAULT_LOGS_CONTAINER] {
        anns.entry(key).or_insert_with(|| json!(first));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_from_replicaset_owner() {
        let pod = json!({"metadata": {"generateName": "web-7d9f8-", "labels": {POD_TEMPLATE_HASH: "7d9f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8", "controller": true}]}});
        assert_eq!(
            workload(&pod, "shop", None),
            Workload {
                name: "web".into(),
                owner: "kubernetes://apis/apps/v1/namespaces/shop/deployments/web".into(),
            }
        );
        let job = json!({"metadata": {"name": "x", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly"}]}});
        assert_eq!(
            workload(&job, "ns", None).owner,
            "kubernetes://apis/batch/v1/namespaces/ns/jobs/nightly"
        );
        let bare = json!({"metadata": {"generateName": "debug-"}});
        assert_eq!(workload(&bare, "ns", None).name, "debug");
        assert_eq!(workload(&bare, "ns", Some("cart")).name, "cart");
    }

    #[test]
    fn canonical_labels_follow_the_fallback_chain() {
        let cases = [
            (json!({}), ("wl", "latest")),
            (json!({"app": "a", "version": "v1"}), ("a", "v1")),
            (
                json!({"app": "a", "app.kubernetes.io/name": "b", "app.kubernetes.io/version": "2"}),
                ("b", "2"),
            ),
            (
                json!({CANONICAL_NAME: "keep", "app": "a", CANONICAL_REVISION: "r"}),
                ("keep", "r"),
            ),
        ];
        for (labels, (name, rev)) in cases {
            let mut l = labels.as_object().unwrap().clone();
            add_labels(&mut l, "wl");
            assert_eq!(
                (
                    l[CANONICAL_NAME].as_str().unwrap(),
                    l[CANONICAL_REVISION].as_str().unwrap()
                ),
                (name, rev)
            );
            assert_eq!(l[TLS_MODE], "istio");
        }
        let mut l = json!({TLS_MODE: "disabled", "app": format!("-{}.", "x".repeat(70))})
            .as_object()
            .unwrap()
            .clone();
        add_labels(&mut l, "wl");
        assert_eq!(l[TLS_MODE], "disabled");
        assert_eq!(l[CANONICAL_NAME].as_str().unwrap(), "x".repeat(62));
    }

    #[test]
    fn default_container_only_if_absent() {
        let pod = json!({"spec": {"containers": [{"name": "istio-proxy"}, {"name": "web"}, {"name": "side"}]}});
        let first = first_app_container(&pod).unwrap();
        assert_eq!(first, "web");
        let mut a = Map::new();
        add_default_container(&mut a, &first);
        assert_eq!(
            Value::Object(a),
            json!({DEFAULT_CONTAINER: "web", DEFAULT_LOGS_CONTAINER: "web"})
        );
        let mut a = json!({DEFAULT_CONTAINER: "side"})
            .as_object()
            .unwrap()
            .clone();
        add_default_container(&mut a, &first);
        assert_eq!(a[DEFAULT_CONTAINER], "side");
        assert_eq!(a[DEFAULT_LOGS_CONTAINER], "web");
        assert_eq!(
            first_app_container(&json!({"spec": {"containers": [{"name": "istio-proxy"}]}})),
            None
        );
    }
}
