//! Property tests: weights keep their proportions; resolution is deterministic and does not
//! depend on the order of the inputs; nothing panics on mutated resources.

use outrigger_mesh::resolve::normalize_weights;
use outrigger_mesh::{ProxyId, Snapshot, analyze, resolve};
use proptest::prelude::*;

use crate::support::fixture;

/// Every document of the shop fixture, as JSON values.
fn shop_documents() -> Vec<serde_json::Value> {
    let mut paths: Vec<_> = std::fs::read_dir(fixture("shop"))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    let mut documents = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).expect("fixture");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(document).expect("valid YAML");
            documents.push(value);
        }
    }
    documents
}

fn snapshot_of(
    documents: &[serde_json::Value],
) -> Result<Snapshot, outrigger_mesh::error::LoadError> {
    let mut snapshot = Snapshot::default();
    for (i, document) in documents.iter().enumerate() {
        snapshot.add_value("prop", i + 1, document.clone())?;
    }
    Ok(snapshot)
}

fn pods(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .pods
        .iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

/// Every JSON pointer of a value.
fn pointers(value: &serde_json::Value, prefix: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let pointer = format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(pointer.clone());
                pointers(child, pointer, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let pointer = format!("{prefix}/{i}");
                out.push(pointer.clone());
                pointers(child, pointer, out);
            }
        }
        _ => {}
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1.0e6f64..1.0e6).prop_map(serde_json::Value::from),
        "[a-z0-9.*/:(|)\\[\\]-]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
        Just(serde_json::json!({"exact": ""})),
        Just(serde_json::json!([{"destination": {"host": "*"}}])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn weights_keep_their_proportions(weights in proptest::collection::vec(0i64..10_000, 2..8)) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let normalized = normalize_weights(&weights);
        prop_assert_eq!(normalized.iter().sum::<u32>(), 100);
        let total: i64 = weights.iter().sum();
        for (w, n) in weights.iter().zip(&normalized) {
            let exact = *w as f64 * 100.0 / total as f64;
            prop_assert!((f64::from(*n) - exact).abs() < 1.0, "{w} -> {n}, exact {exact}");
        }
        for (i, a) in weights.iter().enumerate() {
            for (j, b) in weights.iter().enumerate() {
                if a > b {
                    prop_assert!(normalized[i] >= normalized[j]);
                }
            }
        }
    }

    #[test]
    fn resolution_does_not_depend_on_input_order(order in Just(shop_documents()).prop_shuffle()) {
        let reference = snapshot_of(&shop_documents()).expect("shop loads");
        let shuffled = snapshot_of(&order).expect("shop loads in any order");
        for pod in pods(&reference) {
            let a = resolve(&reference, &ProxyId::from_pod(&reference, &pod).expect("pod"));
            let b = resolve(&shuffled, &ProxyId::from_pod(&shuffled, &pod).expect("pod"));
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(serde_json::to_string(&a).expect("json"), serde_json::to_string(&b).expect("json"));
        }
        prop_assert_eq!(analyze(&reference), analyze(&shuffled));
    }

    #[test]
    fn nothing_panics_on_mutated_resources(
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), arbitrary_json()), 1..6)
    ) {
        let mut documents = shop_documents();
        for (document, at, value) in mutations {
            let count = documents.len();
            let document = &mut documents[document.index(count)];
            let mut all = Vec::new();
            pointers(document, String::new(), &mut all);
            if all.is_empty() {
                continue;
            }
            let pointer = &all[at.index(all.len())];
            if let Some(slot) = document.pointer_mut(pointer) {
                *slot = value;
            }
        }
        // A load error is a fine answer; a panic is not.
        let mut snapshot = Snapshot::default();
        for (i, document) in documents.into_iter().enumerate() {
            let _ = snapshot.add_value("prop", i + 1, document);
        }
        let _ = analyze(&snapshot);
        for pod in pods(&snapshot) {
            if let Ok(proxy) = ProxyId::from_pod(&snapshot, &pod) {
                let config = resolve(&snapshot, &proxy);
                let _ = config.compile();
                let request = outrigger_mesh::explain::parse_request("GET http://catalog:8080/api/v3", &["end-user: jason".to_owned()]).expect("valid request");
                let _ = outrigger_mesh::explain::explain(&config, &request);
            }
        }
    }
}
