//! The traffic model on an arbitrary multi-document YAML text: `Snapshot::add_yaml` (Kubernetes
//! objects and Istio resources), `analyze`, then `resolve` for every pod and the matchers of the
//! result compiled. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outrigger_mesh::{ProxyId, Snapshot, analyze, resolve};

fuzz_target!(|text: &str| {
    let mut snapshot = Snapshot::default();
    if snapshot.add_yaml("fuzz", text).is_err() {
        return;
    }
    let _ = analyze(&snapshot);
    let names: Vec<String> = snapshot
        .pods
        .iter()
        .take(8)
        .filter(|pod| !pod.name.is_empty())
        .map(|pod| format!("{}/{}", pod.namespace, pod.name))
        .collect();
    for name in names {
        if let Ok(proxy) = ProxyId::from_pod(&snapshot, &name) {
            let config = resolve(&snapshot, &proxy);
            let _ = config.compile();
            serde_json::to_string(&config).expect("a resolved config encodes");
        }
    }
});
