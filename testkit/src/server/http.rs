//! Routing: a request recorded in the log, answered by a scripted fault or
//! turned into a target (group, version, plural, namespace, name) and a selector filter and
//! dispatched to GET, LIST, WATCH, POST, PUT, PATCH or DELETE, the answer then held by the gates.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::{self, Fault};
use super::list::list;
use super::patch;
use super::status::{self, status};
use super::store::{Inner, Write};
use super::watch::watch;
use super::{Recorded, lock, meta_str};
use crate::selector::{FieldSelector, LabelSelector};

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
#[derive(Debug, Clone)]
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
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let index = {
        let mut requests = lock(&inner.requests);
        requests.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or("").to_owned(),
            content_type: content_type.clone(),
            body: body.to_vec(),
            status: None,
        });
        requests.len() - 1
    };
    // Answered from the store as it is now, then held: requests a gate releases together saw
    // the same state, however late each one's task runs after the release.
    let (gated_method, path) = (method.to_string(), uri.path().to_owned());
    let response = answer(&inner, method, &uri, content_type.as_deref(), &body).await;
    let gates = lock(&inner.gates).clone();
    for gate in gates {
        gate.pass(&gated_method, &path).await;
    }
    lock(&inner.requests)[index].status = Some(response.status().as_u16());
    response
}

async fn answer(
    inner: &Arc<Inner>,
    method: Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
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
    let query = query_map(uri);
    match (method, target.name.is_some()) {
        (Method::GET, true) => get_one(inner, &target),
        (Method::GET, false) => {
            let filter = match Filter::from_query(&target, &query) {
                Ok(f) => f,
                Err(e) => return status_response(400, "BadRequest", &e.to_string()),
            };
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                watch(inner, target, filter, &query)
            } else {
                list(inner, &target, &filter, &query)
            }
        }
        (Method::POST, false) => create_over_http(inner, &target, body),
        (Method::PUT, true) => replace_over_http(inner, &target, body),
        (Method::PATCH, true) => patch_one(inner, &target, content_type, body),
        (Method::DELETE, true) => {
            let namespace = target.namespace.clone().unwrap_or_default();
            let name = target.name.clone().unwrap_or_default();
            if let Some(conflict) = uid_conflict(inner, &target, body) {
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

/// The body's `metadata.namespace` and `metadata.name` against the URL's, as the API server
/// checks them: a namespace that is set, and the name, must be the ones in the path.
fn check_identity(target: &Target, object: &Value) -> Result<(), String> {
    let namespace = meta_str(object, "namespace");
    if let Some(url_namespace) = &target.namespace
        && !namespace.is_empty()
        && namespace != url_namespace
    {
        return Err(format!(
            "the namespace of the provided object ({namespace}) does not match the namespace \
             sent on the request ({url_namespace})"
        ));
    }
    let name = meta_str(object, "name");
    if let Some(url_name) = &target.name
        && name != url_name
    {
        return Err(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        ));
    }
    Ok(())
}

/// PUT: the whole object replaced; a `resourceVersion` it carries must be the current one.
fn replace_over_http(inner: &Inner, target: &Target, body: &[u8]) -> Response {
    let object: Value = match serde_json::from_slice(body) {
        Ok(object) => object,
        Err(e) => return status_response(400, "BadRequest", &format!("request body: {e}")),
    };
    if let Err(message) = check_identity(target, &object) {
        return status_response(400, "BadRequest", &message);
    }
    let mut object = object;
    if let Some(ns) = &target.namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    match inner.write(object, Write::Update) {
        Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
        Err(s) => status_json(&s),
    }
}

/// PATCH by `Content-Type` (merge, strategic merge or JSON patch: `patch.rs`), applied under
/// the store lock so concurrent patches never undo each other; a `resourceVersion` or `uid` the
/// patched object carries is a precondition (409 Conflict when stale), as on the API server.
fn patch_one(inner: &Inner, target: &Target, content_type: Option<&str>, body: &[u8]) -> Response {
    let kind_of_patch = match patch::patch_type(content_type) {
        Ok(kind_of_patch) => kind_of_patch,
        Err(refusal) => return status_response(refusal.code, refusal.reason, &refusal.message),
    };
    let patch_body: Value = match serde_json::from_slice(body) {
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
    let mut store = lock(&inner.store);
    let Some(mut object) = store.objects.get(&key).cloned() else {
        return status_json(&status::not_found(&target.group, &target.plural, &name));
    };
    let identity = (object["apiVersion"].clone(), object["kind"].clone());
    let kind = identity.1.as_str().unwrap_or("").to_owned();
    if let Err(refusal) = patch::apply(
        kind_of_patch,
        &target.group,
        &kind,
        &mut object,
        &patch_body,
    ) {
        return status_response(refusal.code, refusal.reason, &refusal.message);
    }
    if !object.is_object() {
        return status_response(
            422,
            "Invalid",
            &format!(
                "{} \"{name}\": the patched object is not a JSON object",
                status::resource(&target.group, &target.plural)
            ),
        );
    }
    (object["apiVersion"], object["kind"]) = identity;
    object["metadata"]["name"] = json!(name);
    if let Some(ns) = &target.namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    match store.write(&inner.events, object, Write::Update) {
        Ok(o) => json_response(StatusCode::OK, &served(&o, &target.group, &target.version)),
        Err(s) => status_json(&s),
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
        status_json(&status::uid_conflict(
            &target.group,
            &target.plural,
            target.name.as_deref().unwrap_or(""),
            wanted,
            &uid,
        ))
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
    let namespace_only = Target {
        name: None,
        ..target.clone()
    };
    if let Err(message) = check_identity(&namespace_only, &object) {
        return status_response(400, "BadRequest", &message);
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
        None => status_json(&status::not_found(&target.group, &target.plural, &name)),
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
    fn percent_decoding() {
        assert_eq!(percent_decode("app%3Dweb%2Cversion"), "app=web,version");
        assert_eq!(percent_decode("a+in+%28x%29"), "a in (x)");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
