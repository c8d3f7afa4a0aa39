//! The API server's `Status` bodies: reason, code, message and `details` spelled as
//! kube-apiserver spells them (`secrets "x" already exists`, `deployments.apps "x" not found`,
//! `Operation cannot be fulfilled on ...`), so clients' error handling meets the real text.

use serde_json::{Value, json};

/// A `Status` without details (routing errors, scripted faults).
pub(super) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// The resource as the API server names it in messages: `plural` or `plural.group`.
pub(super) fn resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

/// A `Status` about one object, with `details` {name, group, kind} as the API server fills
/// them (`kind` holds the plural there; `group` only for named groups).
fn about(code: u16, reason: &str, group: &str, plural: &str, name: &str, message: &str) -> Value {
    let mut body = status(code, reason, message);
    let mut details = json!({"name": name, "kind": plural});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    body["details"] = details;
    body
}

/// 404 NotFound.
pub(super) fn not_found(group: &str, plural: &str, name: &str) -> Value {
    let message = format!("{} \"{name}\" not found", resource(group, plural));
    about(404, "NotFound", group, plural, name, &message)
}

/// 409 AlreadyExists: a create of a name that is taken.
pub(super) fn already_exists(group: &str, plural: &str, name: &str) -> Value {
    let message = format!("{} \"{name}\" already exists", resource(group, plural));
    about(409, "AlreadyExists", group, plural, name, &message)
}

/// 409 Conflict: an update or patch carrying a `resourceVersion` that is no longer current.
pub(super) fn conflict(group: &str, plural: &str, name: &str) -> Value {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please \
         apply your changes to the latest version and try again",
        resource(group, plural)
    );
    about(409, "Conflict", group, plural, name, &message)
}

/// 409 Conflict: a write or delete whose `uid` precondition is not the object's.
pub(super) fn uid_conflict(
    group: &str,
    plural: &str,
    name: &str,
    wanted: &str,
    actual: &str,
) -> Value {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in \
         precondition: {wanted}, UID in object meta: {actual}",
        resource(group, plural)
    );
    about(409, "Conflict", group, plural, name, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_as_kube_apiserver_writes_them() {
        assert_eq!(
            already_exists("", "secrets", "ca"),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "secrets \"ca\" already exists", "reason": "AlreadyExists",
                   "details": {"name": "ca", "kind": "secrets"}, "code": 409})
        );
        let missing = not_found("apps", "deployments", "web");
        assert_eq!(missing["message"], "deployments.apps \"web\" not found");
        assert_eq!(
            missing["details"],
            json!({"name": "web", "group": "apps", "kind": "deployments"})
        );
        let stale = conflict(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "injector",
        );
        assert_eq!(
            stale["message"],
            "Operation cannot be fulfilled on mutatingwebhookconfigurations.admissionregistration.k8s.io \"injector\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(
            (&stale["reason"], &stale["code"]),
            (&json!("Conflict"), &json!(409))
        );
    }
}
