//! Decoding and encoding of `AdmissionReview` objects (`admission.k8s.io/v1` and `v1beta1`).
//!
//! Only the request fields the webhook reads are typed; the response mirrors the request's
//! `apiVersion` and `uid` as the API server requires.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `kind` of every review.
pub const REVIEW_KIND: &str = "AdmissionReview";
/// `admission.k8s.io/v1`.
pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
/// `admission.k8s.io/v1beta1`.
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The review API version the response must mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewVersion {
    V1,
    V1Beta1,
}

impl ReviewVersion {
    fn parse(api_version: &str) -> Option<Self> {
        match api_version {
            API_VERSION_V1 => Some(ReviewVersion::V1),
            API_VERSION_V1BETA1 => Some(ReviewVersion::V1Beta1),
            _ => None,
        }
    }

    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => API_VERSION_V1,
            ReviewVersion::V1Beta1 => API_VERSION_V1BETA1,
        }
    }
}

/// Group/version/kind (and group/version/resource) as the API server sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// Group/version/resource of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct GroupVersionResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// The part of `request` the webhook uses. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest {
    /// True for CREATE of a core/v1 Pod (not a subresource): the only request we inject.
    pub fn is_pod_create(&self) -> bool {
        self.kind.group.is_empty()
            && self.kind.version == "v1"
            && self.kind.kind == "Pod"
            && self.operation == "CREATE"
            && self.sub_resource.as_deref().unwrap_or("").is_empty()
    }
}

/// Why a body is not a usable AdmissionReview. The message goes back to the user.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request body is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("expected kind {REVIEW_KIND:?}, got {0:?}")]
    Kind(String),
    #[error(
        "unsupported apiVersion {0:?}; this webhook accepts {API_VERSION_V1:?} and {API_VERSION_V1BETA1:?}"
    )]
    ApiVersion(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("invalid AdmissionReview request: {0}")]
    Request(serde_path_to_error::Error<serde_json::Error>),
}

/// A decoded review, or the failure plus whatever identity could be salvaged for the reply.
#[derive(Debug)]
pub struct Decoded {
    pub version: ReviewVersion,
    pub request: AdmissionRequest,
}

/// A decode failure with the version and uid to answer with (best effort).
#[derive(Debug)]
pub struct DecodeFailure {
    pub version: ReviewVersion,
    pub uid: String,
    pub error: DecodeError,
}

/// Parse a request body into a review.
pub fn decode(body: &[u8]) -> Result<Decoded, DecodeFailure> {
    let fail = |version, uid, error| DecodeFailure {
        version,
        uid,
        error,
    };
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| fail(ReviewVersion::V1, String::new(), DecodeError::Json(e)))?;
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(version) = ReviewVersion::parse(api_version) else {
        let error = DecodeError::ApiVersion(api_version.to_owned());
        return Err(fail(ReviewVersion::V1, uid, error));
    };
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != REVIEW_KIND {
        return Err(fail(version, uid, DecodeError::Kind(kind.to_owned())));
    }
    let request = match value.get_mut("request").map(Value::take) {
        None | Some(Value::Null) => return Err(fail(version, uid, DecodeError::MissingRequest)),
        Some(request) => request,
    };
    let request: AdmissionRequest = serde_path_to_error::deserialize(request)
        .map_err(|e| fail(version, uid.clone(), DecodeError::Request(e)))?;
    Ok(Decoded { version, request })
}

/// `status` of a denied response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

/// The `response` half of the review.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSONPatch document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl AdmissionResponse {
    /// Allowed without changes.
    pub fn allow(uid: impl Into<String>) -> Self {
        AdmissionResponse {
            uid: uid.into(),
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
        }
    }

    /// Allowed with a JSONPatch.
    pub fn patch(
        uid: impl Into<String>,
        patch: &json_patch::Patch,
    ) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(patch)?;
        Ok(AdmissionResponse {
            patch_type: Some("JSONPatch"),
            patch: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ..AdmissionResponse::allow(uid)
        })
    }

    /// Refused, with a message the user sees in `kubectl`'s error.
    pub fn deny(uid: impl Into<String>, code: u16, message: impl Into<String>) -> Self {
        AdmissionResponse {
            allowed: false,
            status: Some(Status {
                code,
                message: message.into(),
            }),
            ..AdmissionResponse::allow(uid)
        }
    }
}

/// The full review to send back.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: AdmissionResponse,
}

impl AdmissionReviewResponse {
    /// Wrap a response in the review of the given version.
    pub fn new(version: ReviewVersion, response: AdmissionResponse) -> Self {
        AdmissionReviewResponse {
            api_version: version.api_version(),
            kind: REVIEW_KIND,
            response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(api_version: &str) -> Value {
        json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": {"metadata": {"name": "p"}},
                "futureField": {"x": 1}
            }
        })
    }

    #[test]
    fn decodes_both_versions() {
        for (v, want) in [
            (API_VERSION_V1, ReviewVersion::V1),
            (API_VERSION_V1BETA1, ReviewVersion::V1Beta1),
        ] {
            let body = serde_json::to_vec(&review(v)).unwrap();
            let decoded = decode(&body).unwrap();
            assert_eq!(decoded.version, want);
            assert_eq!(decoded.request.uid, "u-1");
            assert_eq!(decoded.request.namespace.as_deref(), Some("shop"));
            assert!(decoded.request.is_pod_create());
        }
    }

    #[test]
    fn failures_keep_version_and_uid() {
        let mut r = review(API_VERSION_V1BETA1);
        r["request"]["operation"] = json!(7);
        let err = decode(&serde_json::to_vec(&r).unwrap()).unwrap_err();
        assert_eq!(err.version, ReviewVersion::V1Beta1);
        assert_eq!(err.uid, "u-1");
        assert!(err.error.to_string().contains("operation"), "{}", err.error);

        let err = decode(br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#)
            .unwrap_err();
        assert!(matches!(err.error, DecodeError::ApiVersion(ref v) if v == "admission.k8s.io/v2"));

        let err = decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#).unwrap_err();
        assert!(matches!(err.error, DecodeError::Kind(ref k) if k == "Pod"));

        let err = decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
            .unwrap_err();
        assert!(matches!(err.error, DecodeError::MissingRequest));

        let err = decode(b"{not json").unwrap_err();
        assert!(matches!(err.error, DecodeError::Json(_)));
    }

    #[test]
    fn other_kinds_and_operations_are_not_pod_creates() {
        let mut r = review(API_VERSION_V1);
        r["request"]["operation"] = json!("UPDATE");
        assert!(
            !decode(&serde_json::to_vec(&r).unwrap())
                .unwrap()
                .request
                .is_pod_create()
        );
        let mut r = review(API_VERSION_V1);
        r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        assert!(
            !decode(&serde_json::to_vec(&r).unwrap())
                .unwrap()
                .request
                .is_pod_create()
        );
        let mut r = review(API_VERSION_V1);
        r["request"]["subResource"] = json!("ephemeralcontainers");
        assert!(
            !decode(&serde_json::to_vec(&r).unwrap())
                .unwrap()
                .request
                .is_pod_create()
        );
    }

    #[test]
    fn response_shapes() {
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/a", "value": 1}])).unwrap();
        let r = AdmissionReviewResponse::new(
            ReviewVersion::V1Beta1,
            AdmissionResponse::patch("u", &patch).unwrap(),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION_V1BETA1);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
        let v = serde_json::to_value(AdmissionResponse::deny("u", 400, "no")).unwrap();
        assert_eq!(
            v,
            json!({"uid": "u", "allowed": false, "status": {"code": 400, "message": "no"}})
        );
    }
}
