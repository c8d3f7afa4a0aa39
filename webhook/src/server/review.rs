//! Turns one decoded admission request into a response by calling the injection engine.
//!
//! No HTTP here: the caller hands in the request, the configuration and the path's proxy env.

use serde_json::Value;

use super::admission::{AdmissionRequest, AdmissionResponse};
use super::replica_memo;
use outrigger_inject::patch::json_patch;
use outrigger_inject::{Config, InjectRequest, Outcome, inject};

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

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub response: AdmissionResponse,
    pub decision: Decision,
    /// Whether every replica of this pod may be given the same answer (see
    /// [`replica_memo`]): it is about a pod and does not name its token volume.
    pub replica_safe: bool,
}

impl Answer {
    fn new(response: AdmissionResponse, decision: Decision, replica_safe: bool) -> Self {
        Answer {
            response,
            decision,
            replica_safe,
        }
    }

    fn deny(uid: &str, message: String, reason: &'static str) -> Self {
        let replica_safe = !replica_memo::names_token_volume(message.as_bytes());
        let response = AdmissionResponse::deny(uid, DENY_CODE, message);
        Answer::new(response, Decision::Failed(reason), replica_safe)
    }
}

/// Decide the response for one request.
pub fn respond(
    request: &AdmissionRequest<'_>,
    pod: Option<&Value>,
    proxy_env: Vec<(String, String)>,
    config: &Config,
) -> Answer {
    let uid = request.uid.as_ref();
    if !request.is_pod_create() {
        return Answer::new(AdmissionResponse::allow(uid), Decision::Ignored, false);
    }
    let Some(pod) = pod.filter(|o| o.is_object()) else {
        let msg = "pod CREATE request carries no pod object";
        return Answer::deny(uid, msg.to_owned(), "no_object");
    };
    let inject_request = InjectRequest {
        namespace: pod_namespace(request, Some(pod)).to_owned(),
        proxy_env,
        ..InjectRequest::default()
    };
    match inject(pod, &inject_request, config) {
        Ok(Outcome::Skipped(reason)) => {
            tracing::debug!(reason = reason.label, message = %reason.message, "not injected");
            let response = AdmissionResponse::allow(uid);
            Answer::new(response, Decision::Skipped(reason.label), true)
        }
        Ok(Outcome::Injected {
            pod: injected,
            templates,
        }) => {
            tracing::debug!(?templates, "injected");
            match serde_json::to_vec(&json_patch(pod, &injected)) {
                Ok(patch) => Answer::new(
                    AdmissionResponse::patch_json(uid, &patch),
                    Decision::Injected,
                    !replica_memo::names_token_volume(&patch),
                ),
                Err(e) => Answer::deny(
                    uid,
                    format!("cannot encode the injection patch: {e}"),
                    "encode_patch",
                ),
            }
        }
        Err(error) => Answer::deny(
            uid,
            format!("sidecar injection failed: {error}"),
            error.label(),
        ),
    }
}
