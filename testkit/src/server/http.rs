//! Routing: a request's path and query turned into a target (group, version, plural,
//! namespace, name) and a selector filter, dispatched to GET, LIST, WATCH, POST, PUT or DELETE;
//! the API server's `Status` answers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::{self, Fault};
use super::list::list;
use super::store::{Inner, Write};
use super::watch::watch;
use super::{Recorded, lock, meta_str};
use crate::selector::{FieldSelector, LabelSelector};

pub(super) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

pub(super) fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let status_code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status_code,
        [(header::CONTENT_TYPE, "application/json")],
        status(code, reason, message).to_string(),
    )
        .into_response()
}

pub(super) fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What a request path names.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
}

pub(super) fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (String::new(), *version, rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), *version, rest),
        _ => return None,
    };
    let (plural, namespace, name) = match rest {
        [plural] => (*plural, None, None),
        ["namespaces", ns, plural] => (*plural, Some(*ns), None),
        ["namespaces", ns, plural, name] => (*plural, Some(*ns), Some(*name)),
        // `/api/v1/namespaces/{name}`: the Namespace object itself.
        [plural, name] => (*plural, None, Some(*name)),
        _ => return None,
    };
    Some(Target {
        group,
        version: version.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The object as served at the requested version (the API server converts; our kinds share
/// one schema across versions).
pub(super) fn served(object: &Value, group: &str, version: &str) -> Value {
    let mut object = object.clone();
    object["apiVersion"] = json!(if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    });
    object
}

pub(super) struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn from_query(
        target: &Target,
        query: &HashMap<String, String>,
    ) -> Result<Self, crate::selector::SelectorError> {
        Ok(Self {
            namespace: target.namespace.clone(),
            labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
            fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?,
        })
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta_str(object, "namespace") == ns)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

pub(super) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    lock(&inner.requests).push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        body: body.to_vec(),
    });
    let fault = lock(&inner.faults).pop_front();
    match fault {
        Some(Fault::Status(code)) => {
            return status_response(code, faults::reason(code), "scripted failure");
        }
        Some(Fault::Body(bytes)) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response();
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let Some(target) = parse_path(uri.path()) else {
        return status_response(
            404,
            "NotFound",
            &format!("the server could not find {}", uri.path()),
        );
    };
    let query = query_map(&uri);
    match (method, target.name.is_some()) {
        (Method::GET, true) => get_one(&inner, &target),
        (Method::GET, false) => {
            let filter = match Filter::from_query(&target, &query) {
                Ok(f) => f,
                Err(e) => return status_response(400, "BadRequest", &e.to_string()),
            };
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                watch(&inner, target, filter, &query)
            } else {
                list(&inner, &target, &filter, &query)
            }
        }
        (Method::POST, false) => create_over_http(&inner, &target, &body),
        (Method::PUT, true) => match serde_json::from_slice::<Value>(&body) {
            Ok(object) => match inner.write(object, Write::Update) {
                Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
                Err(s) => status_json(&s),
            },
            Err(e) => status_response(400, "BadRequest", &format!("request body: {e}")),
        },
        (Method::PATCH, true) => patch_one(&inner, &target, &body),
        (Method::DELETE, true) => {
            let namespace = target.namespace.clone().unwrap_or_default();
            let name = target.name.clone().unwrap_or_default();
            if let Some(conflict) = uid_conflict(&inner, &target, &body) {
                return conflict;
            }
            match inner.delete(&target.group, &target.plural, &namespace, &name) {
                Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
                Err(s) => status_json(&s),
            }
        }
        (method, _) => status_response(
            405,
            "MethodNotAllowed",
            &format!("{method} is not served here"),
        ),
    }
}

/// PATCH as a JSON merge patch (RFC 7386), whatever the content type: a strategic merge patch
/// of maps is the same; lists are replaced, not merged by key.
fn patch_one(inner: &Inner, target: &Target, body: &[u8]) -> Response {
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status_response(400, "BadRequest", &format!("request body: {e}")),
    };
    let name = target.name.clone().unwrap_or_default();
    let key = (
        target.group.clone(),
        target.plural.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.clone(),
    );
    let Some(mut object) = lock(&inner.store).objects.get(&key).cloned() else {
        return status_response(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", target.plural),
        );
    };
    let identity = (object["apiVersion"].clone(), object["kind"].clone());
    merge_patch(&mut object, &patch);
    (object["apiVersion"], object["kind"]) = identity;
    object["metadata"]["name"] = json!(name);
    match inner.write(object, Write::Update) {
        Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
        Err(s) => status_json(&s),
    }
}

/// RFC 7386 JSON merge patch.
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

/// A DELETE whose `DeleteOptions` carry a `preconditions.uid` other than the object's: 409.
fn uid_conflict(inner: &Inner, target: &Target, body: &[u8]) -> Option<Response> {
    let options: Value = serde_json::from_slice(body).ok()?;
    let wanted = options["preconditions"]["uid"].as_str()?;
    let key = (
        target.group.clone(),
        target.plural.clone(),
        target.namespace.clone().unwrap_or_default(),
        target.name.clone().unwrap_or_default(),
    );
    let store = lock(&inner.store);
    let uid = store
        .objects
        .get(&key)
        .map(|o| meta_str(o, "uid").to_owned())?;
    (uid != wanted).then(|| {
        status_response(
            409,
            "Conflict",
            &format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"
            ),
        )
    })
}

fn status_json(status: &Value) -> Response {
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        status,
    )
}

fn create_over_http(inner: &Inner, target: &Target, body: &[u8]) -> Response {
    let object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status_response(400, "BadRequest", &format!("request body: {e}")),
    };
    let handler = lock(&inner.handlers)
        .get(&(target.group.clone(), target.plural.clone()))
        .cloned();
    if let Some(handler) = handler {
        return match handler(&object) {
            Ok(answer) => json_response(StatusCode::CREATED, &answer),
            Err((code, message)) => status_response(code, "Failure", &message),
        };
    }
    let mut object = object;
    if let Some(ns) = &target.namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    match inner.write(object, Write::Create) {
        Ok(o) => json_response(
            StatusCode::CREATED,
            &served(&o, &target.group, &target.version),
        ),
        Err(s) => status_json(&s),
    }
}

fn get_one(inner: &Inner, target: &Target) -> Response {
    let store = lock(&inner.store);
    let name = target.name.clone().unwrap_or_default();
    let key = (
        target.group.clone(),
        target.plural.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.clone(),
    );
    match store.objects.get(&key) {
        Some(object) => json_response(
            StatusCode::OK,
            &served(object, &target.group, &target.version),
        ),
        None => status_response(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", target.plural),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_group_version_plural_namespace_name() {
        let t = parse_path("/apis/networking.istio.io/v1/namespaces/shop/virtualservices/catalog")
            .expect("path");
        assert_eq!(
            (t.group.as_str(), t.version.as_str(), t.plural.as_str()),
            ("networking.istio.io", "v1", "virtualservices")
        );
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.name.as_deref(), Some("catalog"));
        let ns = parse_path("/api/v1/namespaces/shop").expect("namespace path");
        assert_eq!(
            (ns.plural.as_str(), ns.name.as_deref()),
            ("namespaces", Some("shop"))
        );
        assert!(parse_path("/healthz").is_none());
    }

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

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("app%3Dweb%2Cversion"), "app=web,version");
        assert_eq!(percent_decode("a+in+%28x%29"), "a in (x)");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
