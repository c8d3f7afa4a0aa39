//! Istio's `headers` operations on a request or a response: per level (the route
//! destination's first, then the rule's, as Envoy applies a weighted cluster's before its
//! route's), `remove` first, then `set` (overwrite), then `add` (append). Pseudo-headers and
//! names or values that are not valid HTTP are skipped: the configuration was validated by
//! `outrigger-routes`, and one odd header must not fail the request.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use outrigger_mesh::config::{HeaderOps, HeaderRules};

/// Which side of the exchange an operation list applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Applies the destination's operations, then the rule's (the rule's `set` wins).
pub fn apply(
    side: Side,
    rule: Option<&HeaderRules>,
    destination: Option<&HeaderRules>,
    headers: &mut HeaderMap,
) {
    for rules in [destination, rule].into_iter().flatten() {
        let ops = match side {
            Side::Request => &rules.request,
            Side::Response => &rules.response,
        };
        apply_ops(ops, headers);
    }
}

/// One level: remove, set, add.
pub fn apply_ops(ops: &HeaderOps, headers: &mut HeaderMap) {
    for name in &ops.remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for (name, value) in &ops.set {
        if let Some((name, value)) = header(name, value) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &ops.add {
        if let Some((name, value)) = header(name, value) {
            headers.append(name, value);
        }
    }
}

fn header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    if name.starts_with(':') {
        return None;
    }
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let value = HeaderValue::from_str(value).ok()?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOps {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        HeaderOps {
            set: map(set),
            add: map(add),
            remove: remove.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn destination_first_then_rule_remove_set_add() {
        let rule = HeaderRules {
            request: ops(&[("x-env", "rule")], &[("x-tag", "rule")], &["x-debug"]),
            response: HeaderOps::default(),
        };
        let destination = HeaderRules {
            request: ops(&[("x-env", "dest")], &[("x-tag", "dest")], &[]),
            response: ops(&[("x-only-response", "1")], &[], &[]),
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("x-tag", HeaderValue::from_static("client"));
        apply(Side::Request, Some(&rule), Some(&destination), &mut headers);
        assert_eq!(headers["x-env"], "rule", "the rule's set is applied last");
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["client", "dest", "rule"]);
        assert!(!headers.contains_key("x-debug"));
        assert!(!headers.contains_key("x-only-response"));
    }

    #[test]
    fn pseudo_headers_and_invalid_values_are_skipped() {
        let mut headers = HeaderMap::new();
        apply_ops(
            &ops(
                &[(":authority", "x"), ("x-ok", "1"), ("x-bad", "a\nb")],
                &[],
                &[],
            ),
            &mut headers,
        );
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-ok"], "1");
    }
}
