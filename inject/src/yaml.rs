//! How kube-inject reads one YAML document into a JSON value, as kubectl's YAML reading
//! (sigs.k8s.io/yaml over go-yaml v2) does: merge keys (`<<: *anchor`, `<<: [*a, *b]`) are
//! resolved, a key written twice in one mapping is refused with the key and its lines, and a
//! UTF-8 byte order mark before the document is skipped.
//!
//! Merge semantics are go-yaml v2's: the entries of a mapping apply in document order, so a key
//! written after `<<` overrides the merged one (and a `<<` after a key overrides that key); in a
//! sequence of merged mappings the earlier mappings win. A merged mapping's own merges are
//! resolved first. Only keys written twice in the same mapping are duplicates; a key that a merge
//! brought in and the mapping then sets is an override, not a duplicate.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The merge key of YAML 1.1 (`<<`).
const MERGE_KEY: &str = "<<";

/// Why a document could not be read; the message is complete (lines are the file's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(pub String);

/// Reads one document (no `---` line). `first_line` is the 1-based line of the text where the
/// body starts, so that lines in messages are the file's.
pub fn parse_document(body: &str, first_line: usize) -> Result<Value, YamlError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let context = Context::default();
    let deserializer = serde_yaml_ng::Deserializer::from_str(body);
    match (Reader { context: &context }).deserialize(deserializer) {
        Ok(value) => Ok(value),
        Err(error) => {
            let at = error.location().map(|l| (l.line(), l.column()));
            Err(YamlError(match context.failure.into_inner() {
                Some(Failure::Duplicate { path, key }) => {
                    duplicate_message(body, first_line, at, &path, &key)
                }
                Some(Failure::Merge { path }) => format!(
                    "{}map merge requires map or sequence of maps as the value{}",
                    in_path(&path),
                    at.map(|(line, _)| format!(" (line {})", line + first_line - 1))
                        .unwrap_or_default()
                ),
                None => relocate(&error.to_string(), first_line),
            }))
        }
    }
}

/// What went wrong, recorded by the reader (serde's errors carry only text).
#[derive(Debug)]
enum Failure {
    Duplicate { path: String, key: String },
    Merge { path: String },
}

#[derive(Debug, Default)]
struct Context {
    /// Keys from the root to the value being read.
    path: RefCell<Vec<String>>,
    failure: RefCell<Option<Failure>>,
}

impl Context {
    fn path(&self) -> String {
        self.path.borrow().join(".")
    }
}

/// Reads any YAML value into JSON, resolving merges and refusing duplicate keys.
#[derive(Clone, Copy)]
struct Reader<'c> {
    context: &'c Context,
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value that JSON can hold")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut written: Vec<String> = Vec::new();
        while let Some(key) = access.next_key::<String>()? {
            if key == MERGE_KEY {
                let merged = self.nested(&key, |reader| access.next_value_seed(reader))?;
                self.merge(&mut map, merged)?;
                continue;
            }
            if written.contains(&key) {
                let failure = Failure::Duplicate {
                    path: self.context.path(),
                    key: key.clone(),
                };
                *self.context.failure.borrow_mut() = Some(failure);
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = self.nested(&key, |reader| access.next_value_seed(reader))?;
            written.push(key.clone());
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

impl Reader<'_> {
    /// Reads a value under `key` (kept on the path for messages).
    fn nested<T>(self, key: &str, read: impl FnOnce(Self) -> T) -> T {
        self.context.path.borrow_mut().push(key.to_owned());
        let out = read(self);
        self.context.path.borrow_mut().pop();
        out
    }

    /// Applies the value of a `<<` key (already resolved) onto `map`, as go-yaml v2 does.
    fn merge<E: de::Error>(self, map: &mut Map<String, Value>, merged: Value) -> Result<(), E> {
        let mappings = match merged {
            Value::Object(one) => vec![one],
            // Earlier mappings take precedence: apply them last.
            Value::Array(many) => many
                .into_iter()
                .rev()
                .map(|item| match item {
                    Value::Object(one) => Ok(one),
                    _ => Err(()),
                })
                .collect::<Result<Vec<_>, ()>>()
                .map_err(|()| self.merge_error())?,
            _ => return Err(self.merge_error()),
        };
        for mapping in mappings {
            map.extend(mapping);
        }
        Ok(())
    }

    fn merge_error<E: de::Error>(self) -> E {
        let failure = Failure::Merge {
            path: self.context.path(),
        };
        *self.context.failure.borrow_mut() = Some(failure);
        E::custom("map merge requires map or sequence of maps as the value")
    }
}

/// `in metadata.labels: ` (nothing at the root).
fn in_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("in {path}: ")
    }
}

/// The message for a key written twice. serde_yaml_ng places the error at the start of the
/// mapping; in a block mapping the keys stand at that column, so the key's lines are found by
/// reading down the mapping's lines.
fn duplicate_message(
    body: &str,
    first_line: usize,
    at: Option<(usize, usize)>,
    path: &str,
    key: &str,
) -> String {
    let file_line = |line: usize| line + first_line - 1;
    let lines = at.map(|(line, column)| key_lines(body, line, column, key));
    let what = format!(
        "{}duplicate key {key:?} (kubectl refuses it)",
        in_path(path)
    );
    match (lines.as_deref(), at) {
        (Some([first, second, ..]), _) => format!(
            "line {}: {what}; first set at line {}",
            file_line(*second),
            file_line(*first)
        ),
        (_, Some((line, column))) => {
            format!(
                "line {}: {what} in the mapping at column {column}",
                file_line(line)
            )
        }
        _ => what,
    }
}

/// The 1-based lines, from the mapping starting at `line`:`column`, whose key at that column is
/// `key` (plain, single- or double-quoted), until the mapping ends (a line indented less).
fn key_lines(body: &str, line: usize, column: usize, key: &str) -> Vec<usize> {
    let indent = column.saturating_sub(1);
    let spellings = [
        format!("{key}:"),
        format!("'{key}':"),
        format!("\"{key}\":"),
        format!("? {key}"),
    ];
    let mut found = Vec::new();
    for (index, text) in body.lines().enumerate().skip(line.saturating_sub(1)) {
        let number = index + 1;
        // The first line may be `- key: ...` or `parent: key: ...`: start at the column.
        let text = if number == line {
            text.get(indent..).unwrap_or_default()
        } else {
            let trimmed = text.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let own = text.len() - trimmed.len();
            if own < indent {
                break;
            }
            if own > indent {
                continue;
            }
            trimmed
        };
        let matches = spellings.iter().any(|s| {
            text.strip_prefix(s.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with([' ', '\t']) || s.starts_with('?')
            })
        });
        if matches {
            found.push(number);
        }
    }
    found
}

/// serde_yaml_ng's message with `at line N` moved to the file's line numbers.
fn relocate(message: &str, first_line: usize) -> String {
    if first_line <= 1 {
        return message.to_owned();
    }
    let Some(at) = message.rfind(" at line ") else {
        return message.to_owned();
    };
    let (head, tail) = message.split_at(at);
    let rest = &tail[" at line ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    match rest[..digits].parse::<usize>() {
        Ok(line) => format!(
            "{head} at line {}{}",
            line + first_line - 1,
            &rest[digits..]
        ),
        Err(_) => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Value {
        parse_document(text, 1).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn refuse(text: &str) -> String {
        match parse_document(text, 1) {
            Ok(value) => panic!("{text:?} was accepted: {value}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn merge_keys_resolve_like_go_yaml() {
        let text = "\
probe: &probe
  httpGet: {path: /ready, port: 8080}
  periodSeconds: 5
spec:
  readinessProbe:
    <<: *probe
    periodSeconds: 10
";
        assert_eq!(
            read(text)["spec"]["readinessProbe"],
            json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10})
        );
    }

    #[test]
    fn merge_order_is_go_yaml_v2s() {
        // A key before `<<` is overridden by the merge; earlier mappings of a list win.
        let text = "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nm:\n  y: 0\n  <<: [*a, *b]\n";
        assert_eq!(read(text)["m"], json!({"y": 1, "x": 1, "z": 2}));
    }

    #[test]
    fn nested_merges_resolve_before_they_are_merged() {
        let text = "a: &a {x: 1}\nb: &b\n  <<: *a\n  y: 2\nm:\n  <<: *b\n";
        assert_eq!(read(text)["m"], json!({"x": 1, "y": 2}));
    }

    #[test]
    fn merge_of_a_scalar_is_refused_as_go_yaml_does() {
        let message = refuse("a: &a 3\nm:\n  <<: *a\n");
        assert_eq!(
            message,
            "in m: map merge requires map or sequence of maps as the value (line 3)"
        );
        let message = refuse("m:\n  <<: [{x: 1}, 2]\n");
        assert!(message.starts_with("in m: map merge requires"), "{message}");
    }

    #[test]
    fn duplicate_keys_are_refused_with_the_key_and_lines() {
        let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
    tier: front
    app: other
";
        assert_eq!(
            refuse(text),
            "line 8: in metadata.labels: duplicate key \"app\" (kubectl refuses it); first set at line 6"
        );
        assert_eq!(
            refuse("a: 1\nb: 2\na: 3\n"),
            "line 3: duplicate key \"a\" (kubectl refuses it); first set at line 1"
        );
    }

    #[test]
    fn duplicate_keys_in_a_list_item_and_in_flow_style() {
        let text = "spec:\n  containers:\n  - name: a\n    image: x\n    name: b\n";
        assert_eq!(
            refuse(text),
            "line 5: in spec.containers: duplicate key \"name\" (kubectl refuses it); first set at line 3"
        );
        assert_eq!(
            refuse("m: {a: 1, a: 2}\n"),
            "line 1: in m: duplicate key \"a\" (kubectl refuses it) in the mapping at column 4"
        );
    }

    #[test]
    fn lines_are_the_files() {
        let message = parse_document("a: 1\na: 2\n", 11).unwrap_err().0;
        assert!(message.starts_with("line 12: "), "{message}");
        let here = parse_document("a: 1\nb: [\n", 1).unwrap_err().0;
        let there = parse_document("a: 1\nb: [\n", 11).unwrap_err().0;
        assert!(here.contains(" at line 3 "), "{here}");
        assert_eq!(there, here.replace(" at line 3 ", " at line 13 "));
    }

    #[test]
    fn a_merge_overridden_key_is_not_a_duplicate() {
        let text = "a: &a {x: 1}\nm:\n  <<: *a\n  x: 2\n";
        assert_eq!(read(text)["m"], json!({"x": 2}));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(read("\u{feff}a: 1\n"), json!({"a": 1}));
    }

    #[test]
    fn scalars_read_as_json() {
        assert_eq!(
            read("a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: x\ng: .inf\n1: k\n"),
            json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "x", "g": null, "1": "k"})
        );
    }
}
