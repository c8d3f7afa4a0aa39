//! A workload's names in Istio's telemetry, read from its pod labels, defined once for every
//! part: the app and version (`source_app`, `destination_version`, ...) and the canonical
//! service and revision (`*_canonical_service`, `*_canonical_revision`, and the labels the
//! injector adds), each with Istio's own fallbacks.
//!
//! Istio keeps the two apart. Its stats filter (istio/proxy `istio_stats`) labels `*_app` with
//! the `app` label and `*_version` with the `version` label, `unknown` without them; its
//! canonical service is `service.istio.io/canonical-name`, else `app.kubernetes.io/name`,
//! else `app`, else the workload's name, and the revision
//! `service.istio.io/canonical-revision`, else `app.kubernetes.io/version`, else `version`,
//! else `latest` (istio/istio `pkg/kube/labels` `CanonicalService`).
//!
//! Each function takes a lookup (label key to value) so that every label shape reads the same
//! way: a `BTreeMap`, a pod's JSON labels, a peer's `google.protobuf.Struct`. A present label
//! wins even when its value is empty, as Istio's lookup does.

use crate::names::label;

/// The labels the canonical service name is read from, in order.
pub const CANONICAL_NAME_LABELS: [&str; 3] =
    [label::CANONICAL_NAME, label::K8S_APP_NAME, label::APP];
/// The labels the canonical revision is read from, in order.
pub const CANONICAL_REVISION_LABELS: [&str; 3] = [
    label::CANONICAL_REVISION,
    label::K8S_APP_VERSION,
    label::VERSION,
];
/// The canonical revision of a workload that has none of [`CANONICAL_REVISION_LABELS`].
pub const DEFAULT_CANONICAL_REVISION: &str = "latest";

/// The workload's app (`source_app`, `destination_app`): its `app` label, or `None`
/// (Istio's `unknown`).
pub fn app<V>(label: impl Fn(&str) -> Option<V>) -> Option<V> {
    label(label::APP)
}

/// The workload's version (`source_version`, `destination_version`): its `version` label,
/// or `None` (Istio's `unknown`).
pub fn version<V>(label: impl Fn(&str) -> Option<V>) -> Option<V> {
    label(label::VERSION)
}

/// The first of [`CANONICAL_NAME_LABELS`] the workload has; the caller falls back to the
/// workload's name ([`canonical_service`] does).
pub fn canonical_name<V>(label: impl Fn(&str) -> Option<V>) -> Option<V> {
    CANONICAL_NAME_LABELS.into_iter().find_map(label)
}

/// The first of [`CANONICAL_REVISION_LABELS`] the workload has; the caller falls back to
/// [`DEFAULT_CANONICAL_REVISION`] ([`canonical_service`] does).
pub fn canonical_revision<V>(label: impl Fn(&str) -> Option<V>) -> Option<V> {
    CANONICAL_REVISION_LABELS.into_iter().find_map(label)
}

/// Istio's canonical service and revision of a workload named `workload_name`, with every
/// fallback (istio/istio `CanonicalService`).
pub fn canonical_service<'a>(
    label: impl Fn(&str) -> Option<&'a str>,
    workload_name: &'a str,
) -> (&'a str, &'a str) {
    (
        canonical_name(&label).unwrap_or(workload_name),
        canonical_revision(&label).unwrap_or(DEFAULT_CANONICAL_REVISION),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn lookup<'a>(labels: &'a BTreeMap<String, String>) -> impl Fn(&str) -> Option<&'a str> {
        |key| labels.get(key).map(String::as_str)
    }

    /// Every label a pod may carry, each with a value naming it.
    const ALL: [(&str, &str); 6] = [
        (label::CANONICAL_NAME, "canonical-name"),
        (label::CANONICAL_REVISION, "canonical-revision"),
        (label::K8S_APP_NAME, "k8s-name"),
        (label::K8S_APP_VERSION, "k8s-version"),
        (label::APP, "app"),
        (label::VERSION, "version"),
    ];

    #[test]
    fn app_and_version_are_the_app_and_version_labels_whatever_else_is_set() {
        let all = labels(&ALL);
        assert_eq!(app(lookup(&all)), Some("app"));
        assert_eq!(version(lookup(&all)), Some("version"));
        // No fallback to the canonical or app.kubernetes.io labels: Istio says `unknown`.
        let without = labels(&ALL[..4]);
        assert_eq!(app(lookup(&without)), None);
        assert_eq!(version(lookup(&without)), None);
    }

    #[test]
    fn canonical_name_falls_back_to_app_kubernetes_io_name_then_app_then_the_workload() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&ALL, "canonical-name"),
            (&ALL[2..], "k8s-name"),
            (&ALL[4..], "app"),
            (&[], "reviews-v1"),
        ];
        for (pod, want) in cases {
            let pod = labels(pod);
            assert_eq!(
                canonical_service(lookup(&pod), "reviews-v1").0,
                want,
                "{pod:?}"
            );
        }
    }

    #[test]
    fn canonical_revision_falls_back_to_app_kubernetes_io_version_then_version_then_latest() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&ALL, "canonical-revision"),
            (&ALL[2..], "k8s-version"),
            (&ALL[4..], "version"),
            (&[], "latest"),
        ];
        for (pod, want) in cases {
            let pod = labels(pod);
            assert_eq!(canonical_service(lookup(&pod), "w").1, want, "{pod:?}");
        }
    }

    #[test]
    fn a_present_label_wins_even_when_empty() {
        let pod = labels(&[(label::CANONICAL_NAME, ""), (label::APP, "app")]);
        assert_eq!(canonical_name(lookup(&pod)), Some(""));
    }

    #[test]
    fn the_lookup_may_return_any_value_type() {
        let pod: BTreeMap<&str, u8> = [(label::APP, 1), (label::K8S_APP_VERSION, 2)].into();
        let get = |key: &str| pod.get(key).copied();
        assert_eq!((app(get), canonical_revision(get)), (Some(1), Some(2)));
    }
}
