//! Turns one decoded admission request into a response by calling the injection engine.
//!
//! No HTTP here: the caller hands in the request, the configuration and the path's proxy env.

use serde_json::Value;

use super::admission::{AdmissionRequest, AdmissionResponse};
use crate::inject::patch::json_patch;
use crate::inject::{Config, InjectRequest, Outcome, inject};

/// HTTP-like code put in `status.code` when a pod is refused.
const DENY_CODE: u16 = 400;

/// What was decided, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a pod CREATE: allowed untouched.
    Ignored,
    /// Engine chose not to inject (reason label).
    Skipped(&'static str),
    /// Injected with a patch.
    Injected,
    /// Refused (reason label).
    Failed(&'static str),
}

impl Decision {
    /// Short word for the request span.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Ignored => "ignored",
            Decision::Skipped(_) => "skipped",
            Decision::Injected => "injected",
            Decision::Failed(_) => "failed",
        }
    }
}

/// Pod name for logs: `metadata.name`, else `generateName`, else the request's name.
pub fn pod_name<'r>(request: &'r AdmissionRequest<'_>, pod: Option<&'r Value>) -> &'r str {
    let meta = pod.and_then(|o| o.get("metadata"));
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    field("name")
        .or_else(|| field("generateName"))
        .or(request.name.as_deref())
        .unwrap_or_default()
}

/// The pod's namespace: from the object, else from the request.
pub fn pod_namespace<'r>(request: &'r AdmissionRequest<'_>, pod: Option<&'r Value>) -> &'r str {
    pod.and_then(|o| o.pointer("/metadata/namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .or(request.namespace.as_deref())
        .unwrap_or_default()
}

/// Decide the response for one request.
pub fn respond(
    request: &AdmissionRequest<'_>,
    pod: Option<&Value>,
    proxy_env: Vec<(String, String)>,
    config: &Config,
) -> (AdmissionResponse, Decision) {
    let uid = request.uid.as_ref();
    if !request.is_pod_create() {
        return (AdmissionResponse::allow(uid), Decision::Ignored);
    }
    let Some(pod) = pod.filter(|o| o.is_object()) else {
        let msg = "pod CREATE request carries no pod object";
        return (
            AdmissionResponse::deny(uid, DENY_CODE, msg),
            Decision::Failed("no_object"),
        );
    };
    let inject_request = InjectRequest {
        namespace: pod_namespace(request, Some(pod)).to_owned(),
        proxy_env,
        ..InjectRequest::default()
    };
    match inject(pod, &inject_request, config) {
        Ok(Outcome::Skipped(reason)) => {
            tracing::debug!(reason = reason.label, message = %reason.message, "not injected");
            (
                AdmissionResponse::allow(uid),
                Decision::Skipped(reason.label),
            )
        }
        Ok(Outcome::Injected {
            pod: injected,
            templates,
        }) => {
            tracing::debug!(?templates, "injected");
            let patch = json_patch(pod, &injected);
            match AdmissionResponse::patch(uid, &patch) {
                Ok(response) => (response, Decision::Injected),
                Err(e) => (
                    AdmissionResponse::deny(
                        uid,
                        DENY_CODE,
                        format!("cannot encode the injection patch: {e}"),
                    ),
                    Decision::Failed("encode_patch"),
                ),
            }
        }
        Err(error) => (
            AdmissionResponse::deny(uid, DENY_CODE, format!("sidecar injection failed: {error}")),
            Decision::Failed(error.label()),
        ),
    }
}
