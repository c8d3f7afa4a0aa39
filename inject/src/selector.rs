//! Kubernetes LabelSelector matching (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Map, Value};

/// Checks a selector is well formed (known operators, values present exactly where required).
pub(crate) fn check(sel: &LabelSelector) -> Result<(), String> {
    for req in sel.match_expressions.iter().flatten() {
        let n = req.values.as_ref().map_or(0, Vec::len);
        match req.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                return Err(format!(
                    "matchExpressions key '{}': operator {} needs at least one value",
                    req.key, req.operator
                ));
            }
            "Exists" | "DoesNotExist" if n != 0 => {
                return Err(format!(
                    "matchExpressions key '{}': operator {} takes no values",
                    req.key, req.operator
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "matchExpressions key '{}': unknown operator '{other}' (expected In, NotIn, Exists or DoesNotExist)",
                    req.key
                ));
            }
        }
    }
    Ok(())
}

/// True when the selector is empty (Istio ignores empty selectors instead of matching all).
pub(crate) fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// Whether `labels` satisfies every requirement of the selector.
pub(crate) fn matches(sel: &LabelSelector, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v.as_str()));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let actual = get(&req.key);
            match req.operator.as_str() {
                "In" => actual.is_some_and(|a| values.iter().any(|v| v == a)),
                "NotIn" => actual.is_none_or(|a| values.iter().all(|v| v != a)),
                "Exists" => actual.is_some(),
                "DoesNotExist" => actual.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }
    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        assert!(matches(
            &sel(json!({"matchLabels": {"app": "web"}})),
            Some(&l)
        ));
        assert!(!matches(
            &sel(json!({"matchLabels": {"app": "db"}})),
            Some(&l)
        ));
        let expr = |op: &str, vals: Value| {
            sel(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": vals}]}))
        };
        assert!(matches(&expr("In", json!(["front", "x"])), Some(&l)));
        assert!(!matches(&expr("In", json!(["back"])), Some(&l)));
        assert!(matches(&expr("NotIn", json!(["back"])), Some(&l)));
        assert!(!matches(&expr("NotIn", json!(["front"])), Some(&l)));
        assert!(matches(&expr("Exists", Value::Null), Some(&l)));
        assert!(!matches(&expr("DoesNotExist", Value::Null), Some(&l)));
        // Missing label: NotIn and DoesNotExist match, In and Exists do not.
        assert!(matches(&expr("NotIn", json!(["front"])), None));
        assert!(matches(&expr("DoesNotExist", Value::Null), None));
        assert!(!matches(&expr("In", json!(["front"])), None));
        assert!(!matches(&expr("Exists", Value::Null), None));
    }

    #[test]
    fn malformed_selectors_are_refused() {
        let bad = sel(json!({"matchExpressions": [{"key": "a", "operator": "Has"}]}));
        assert!(check(&bad).unwrap_err().contains("unknown operator 'Has'"));
        let no_vals = sel(json!({"matchExpressions": [{"key": "a", "operator": "In"}]}));
        assert!(
            check(&no_vals)
                .unwrap_err()
                .contains("needs at least one value")
        );
        let vals =
            sel(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}));
        assert!(check(&vals).unwrap_err().contains("takes no values"));
        assert!(is_empty(&sel(json!({}))));
    }
}
