//! The repair loop: pods whose `istio-validation` init container found no rules (exit 126) raced
//! the plugin's installation; they are deleted (so their owner recreates them) or labelled.

pub mod controller;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{DeleteParams, Preconditions};
use serde_json::{Value, json};

use outrigger_api::names::{VALIDATION_FAILED_EXIT_CODE, container, label};

/// What to do with a broken pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Delete it, guarded by its UID so a replacement with the same name is never touched.
    Delete,
    /// Label it `cni.istio.io/uninitialized=true` for an operator or another controller.
    Label,
}

impl RepairMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Label => "label",
        }
    }
}

/// A pod to repair: its identity, as needed for the guarded action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

fn exited_with_validation_failure(status: &ContainerStatus) -> bool {
    let code = |state: Option<&k8s_openapi::api::core::v1::ContainerState>| {
        state
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    [
        code(status.state.as_ref()),
        code(status.last_state.as_ref()),
    ]
    .contains(&Some(i32::from(VALIDATION_FAILED_EXIT_CODE)))
}

/// Decides whether `pod` needs repair under `mode`; `None` for healthy, deleted or already
/// labelled pods.
pub fn broken_pod(pod: &Pod, mode: RepairMode) -> Option<BrokenPod> {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    if mode == RepairMode::Label
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(label::CNI_UNINITIALIZED))
            .map(String::as_str)
            == Some("true")
    {
        return None;
    }
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    statuses
        .iter()
        .filter(|s| s.name == container::VALIDATION)
        .any(exited_with_validation_failure)
        .then(|| BrokenPod {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        })
        .filter(|p| !p.name.is_empty() && !p.uid.is_empty())
}

/// Delete parameters that only match this exact pod (UID precondition).
pub fn guarded_delete(pod: &BrokenPod) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// JSON merge patch labelling the pod, with the UID as a precondition the server checks.
pub fn label_patch(pod: &BrokenPod) -> Value {
    json!({"metadata": {"uid": pod.uid, "labels": {label::CNI_UNINITIALIZED: "true"}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::capture::tests::injected_pod;

    fn with_validation_status(status: Value) -> Pod {
        let mut pod = serde_json::to_value(injected_pod()).unwrap();
        pod["status"]["initContainerStatuses"] = json!([status]);
        serde_json::from_value(pod).unwrap()
    }

    fn validation(state: Value, last_state: Value) -> Value {
        json!({
            "name": "istio-validation", "image": "outrigger-iptables:0.1.0", "imageID": "",
            "ready": false, "restartCount": 2, "state": state, "lastState": last_state
        })
    }

    fn terminated(code: i32) -> Value {
        json!({"terminated": {"exitCode": code, "reason": "Error", "startedAt": "2026-11-21T20:14:05Z", "finishedAt": "2026-11-21T20:14:07Z"}})
    }

    const WAITING: &str = r#"{"waiting": {"reason": "CrashLoopBackOff"}}"#;

    #[test]
    fn crashlooping_validation_with_126_is_broken() {
        let pod = with_validation_status(validation(
            serde_json::from_str(WAITING).unwrap(),
            terminated(126),
        ));
        assert_eq!(
            broken_pod(&pod, RepairMode::Delete),
            Some(BrokenPod {
                namespace: "shop".into(),
                name: "web-7d9c5b6f4-x2kqp".into(),
                uid: "5f0c2d1e-8a4b-4c7e-9f3a-2b1d6e8c0a11".into()
            })
        );
        let pod = with_validation_status(validation(terminated(126), json!({})));
        assert!(broken_pod(&pod, RepairMode::Delete).is_some());
    }

    #[test]
    fn healthy_or_other_failures_are_left_alone() {
        for status in [
            validation(terminated(0), json!({})),
            validation(serde_json::from_str(WAITING).unwrap(), terminated(1)),
            validation(
                json!({"running": {"startedAt": "2026-11-21T20:14:05Z"}}),
                json!({}),
            ),
        ] {
            assert_eq!(
                broken_pod(&with_validation_status(status), RepairMode::Delete),
                None
            );
        }
        // Another init container exiting 126 is not ours to judge.
        let mut other = validation(terminated(126), json!({}));
        other["name"] = json!("db-migrate");
        assert_eq!(
            broken_pod(&with_validation_status(other), RepairMode::Delete),
            None
        );
        // No status at all yet.
        assert_eq!(broken_pod(&injected_pod(), RepairMode::Delete), None);
    }

    #[test]
    fn terminating_and_already_labelled_pods_are_skipped() {
        let mut pod = with_validation_status(validation(terminated(126), json!({})));
        pod.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(label::CNI_UNINITIALIZED.into(), "true".into());
        assert_eq!(broken_pod(&pod, RepairMode::Label), None);
        assert!(broken_pod(&pod, RepairMode::Delete).is_some());
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-21T20:15:00Z".parse().unwrap(),
            ));
        assert_eq!(broken_pod(&pod, RepairMode::Delete), None);
    }

    #[test]
    fn actions_are_guarded_by_uid() {
        let pod = BrokenPod {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let params = guarded_delete(&pod);
        assert_eq!(params.preconditions.unwrap().uid.as_deref(), Some("u-1"));
        assert_eq!(
            label_patch(&pod),
            json!({"metadata": {"uid": "u-1", "labels": {"cni.istio.io/uninitialized": "true"}}})
        );
    }
}
