//! Label and field selectors with the API server's grammar: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
//! `a in (x,y)`, `a notin (x,y)` for labels; `path=value`, `path==value`, `path!=value` for fields
//! (`metadata.name`, `metadata.namespace`, `status.phase`, `spec.nodeName`, any dotted path).

use serde_json::Value;

/// A selector the server could not parse; the API server answers 400 for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub selector: String,
    pub message: String,
}

impl std::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unable to parse selector {:?}: {}",
            self.selector, self.message
        )
    }
}

impl std::error::Error for SelectorError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`; every requirement must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed `fieldSelector`: `(path, value, equal)` terms, all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, String, bool)>);

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Vec<String> {
    let (mut out, mut current, mut depth) = (Vec::new(), String::new(), 0u32);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let error = |message: &str| SelectorError {
            selector: text.to_owned(),
            message: message.to_owned(),
        };
        let mut requirements = Vec::new();
        for term in terms(text) {
            let set = |rest: &str| -> Result<Vec<String>, SelectorError> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| error("a set needs parentheses: key in (a,b)"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let requirement = if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                Requirement::NotIn(key.trim().to_owned(), set(rest)?)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                Requirement::In(key.trim().to_owned(), set(rest)?)
            } else if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if term.contains(' ') || term.contains('(') {
                return Err(error(&format!("unknown operator in {term:?}")));
            } else {
                Requirement::Exists(term.clone())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        })
    }
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut out = Vec::new();
        for term in terms(text) {
            let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, v, true)
            } else {
                return Err(SelectorError {
                    selector: text.to_owned(),
                    message: format!("{term:?} is not path=value or path!=value"),
                });
            };
            out.push((path.trim().to_owned(), value.trim().to_owned(), equal));
        }
        Ok(Self(out))
    }

    /// Whether an object is selected; a missing field reads as `""` (the API server's rule).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, value, equal)| {
            let mut cursor = object;
            for part in path.split('.') {
                cursor = &cursor[part];
            }
            let actual = match cursor {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_grammar() {
        let pod = json!({"metadata": {"labels": {"app": "web", "version": "v1"}}});
        let yes = [
            "app=web",
            "app==web,version",
            "app in (web, api)",
            "version notin (v2)",
            "!missing",
            "app!=api",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).expect(s).matches(&pod), "{s}");
        }
        for s in [
            "app=api",
            "missing",
            "!app",
            "app notin (web)",
            "version in (v2,v3)",
        ] {
            assert!(!LabelSelector::parse(s).expect(s).matches(&pod), "{s}");
        }
        let err = LabelSelector::parse("app in web").expect_err("no parentheses");
        assert!(err.to_string().contains("parentheses"), "{err}");
    }

    #[test]
    fn field_selector_grammar() {
        let pod =
            json!({"metadata": {"name": "a", "namespace": "shop"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("metadata.name=a,status.phase!=Failed")
                .expect("parse")
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace==default")
                .expect("parse")
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .expect("parse")
                .matches(&pod)
        );
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
