//! Property tests of the JSONPatch diff over random pairs of small JSON documents that share
//! structure (common array prefixes and suffixes, common keys): the patch applied to the first
//! gives exactly the second, and a document compared with itself gives an empty patch.

use outrigger_inject::patch::json_patch;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys that need escaping in a pointer (`/`, `~`), the empty key, and a few plain ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("a/b".to_owned()),
        Just("~".to_owned()),
        Just("~1".to_owned()),
        Just("0".to_owned()),
        Just("-".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        Just(Value::from(1.5)),
        "[a-c/~]{0,3}".prop_map(Value::String),
    ]
}

/// Any small JSON document.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a key holds in each document of a pair.
#[derive(Debug, Clone)]
enum Slot {
    Both(Value, Value),
    OnlyOriginal(Value),
    OnlyInjected(Value),
}

/// Two documents that are often equal, often differ in a few places, sometimes in type.
fn pair() -> impl Strategy<Value = (Value, Value)> {
    let leaf = prop_oneof![
        2 => value().prop_map(|v| (v.clone(), v)),
        1 => (value(), value()),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        let slot = prop_oneof![
            3 => inner.clone().prop_map(|(a, b)| Slot::Both(a, b)),
            1 => value().prop_map(Slot::OnlyOriginal),
            1 => value().prop_map(Slot::OnlyInjected),
        ];
        let items = prop::collection::vec(inner.clone(), 0..3);
        let extra = || prop::collection::vec(value(), 0..3);
        prop_oneof![
            // Arrays: a shared (pairwise similar) prefix and suffix around unrelated middles.
            (items.clone(), extra(), extra(), items).prop_map(
                |(prefix, middle_a, middle_b, suffix)| {
                    let side = |pick: fn(&(Value, Value)) -> &Value, middle: Vec<Value>| {
                        let mut v: Vec<Value> = prefix.iter().map(pick).cloned().collect();
                        v.extend(middle);
                        v.extend(suffix.iter().map(pick).cloned());
                        Value::Array(v)
                    };
                    (side(|p| &p.0, middle_a), side(|p| &p.1, middle_b))
                }
            ),
            // Objects: keys in both, in one only.
            prop::collection::btree_map(key(), slot, 0..5).prop_map(|slots| {
                let (mut a, mut b) = (Map::new(), Map::new());
                for (k, slot) in slots {
                    match slot {
                        Slot::Both(x, y) => {
                            a.insert(k.clone(), x);
                            b.insert(k, y);
                        }
                        Slot::OnlyOriginal(x) => {
                            a.insert(k, x);
                        }
                        Slot::OnlyInjected(y) => {
                            b.insert(k, y);
                        }
                    }
                }
                (Value::Object(a), Value::Object(b))
            }),
        ]
    })
}

/// The patch from `original` to `injected`, applied to `original`, gives `injected`.
fn round_trips(original: &Value, injected: &Value) -> Result<(), TestCaseError> {
    let patch = json_patch(original, injected);
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &patch)
        .map_err(|e| TestCaseError::fail(format!("patch {patch:?} does not apply: {e}")))?;
    prop_assert_eq!(&doc, injected, "patch: {:?}", patch);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn patch_applied_to_original_gives_injected((original, injected) in pair()) {
        round_trips(&original, &injected)?;
    }

    #[test]
    fn unrelated_documents_round_trip(original in value(), injected in value()) {
        round_trips(&original, &injected)?;
    }

    #[test]
    fn a_document_compared_with_itself_gives_no_operations(doc in value()) {
        prop_assert!(json_patch(&doc, &doc).0.is_empty());
    }
}
