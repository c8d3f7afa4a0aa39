//! `resolve` at the scale of the issue: 1,000 Services (20 namespaces × 50), 10,000 pods with
//! their EndpointSlices, 500 VirtualServices and 500 DestinationRules, generated.
//!
//! - `resolve/one-proxy`: one proxy's view from an indexed snapshot (`Resolver::resolve`);
//! - `resolve/index+one-proxy`: the same including indexing the snapshot (`resolve()`);
//! - `resolve/full-rebuild`: index once, then one view per namespace (20).
//!
//! Memory is printed once: the JSON size of one view and the process's peak RSS (VmHWM) after
//! building the snapshot and after the full rebuild. Run: `cargo bench -p outrigger-mesh`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use outrigger_mesh::{ProxyId, Resolver, Snapshot, resolve};

const NAMESPACES: usize = 20;
const SERVICES_PER_NAMESPACE: usize = 50;
const PODS_PER_SERVICE: usize = 10;

fn document(snapshot: &mut Snapshot, value: serde_json::Value) {
    snapshot
        .add_value("bench", 0, value)
        .expect("generated documents are valid");
}

fn generate() -> Snapshot {
    let mut snapshot = Snapshot::default();
    for n in 0..NAMESPACES {
        let ns = format!("team-{n:02}");
        for s in 0..SERVICES_PER_NAMESPACE {
            let name = format!("svc-{s:02}");
            let index = n * SERVICES_PER_NAMESPACE + s;
            document(
                &mut snapshot,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"clusterIP": format!("10.96.{}.{}", index / 250, index % 250 + 1), "selector": {"app": name},
                             "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}
                }),
            );
            let mut endpoints = Vec::new();
            for p in 0..PODS_PER_SERVICE {
                let pod = format!("{name}-{p}");
                let ip = format!("10.{}.{}.{}", 100 + n, s, p + 1);
                let version = if p % 2 == 0 { "v1" } else { "v2" };
                document(
                    &mut snapshot,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod, "namespace": ns, "labels": {"app": name, "version": version}},
                        "spec": {"serviceAccountName": name, "containers": [{"name": "app", "image": "app"}]},
                        "status": {"podIP": ip}
                    }),
                );
                endpoints.push(
                    serde_json::json!({"addresses": [ip], "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}),
                );
            }
            document(
                &mut snapshot,
                serde_json::json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints
                }),
            );
            if s % 2 == 0 {
                document(
                    &mut snapshot,
                    serde_json::json!({
                        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"hosts": [name], "http": [
                            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": name, "subset": "v2"}}]},
                            {"match": [{"uri": {"regex": "/api/v[0-9]+/items/.*"}}], "route": [{"destination": {"host": name, "subset": "v1"}}], "timeout": "2s"},
                            {"route": [{"destination": {"host": name, "subset": "v1"}, "weight": 90}, {"destination": {"host": name, "subset": "v2"}, "weight": 10}],
                             "retries": {"attempts": 3, "perTryTimeout": "500ms"}}
                        ]}
                    }),
                );
                document(
                    &mut snapshot,
                    serde_json::json!({
                        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"host": name, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}},
                                 "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}},
                                 "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}
                    }),
                );
            }
        }
    }
    snapshot
}

fn proxy(namespace: usize) -> ProxyId {
    ProxyId {
        namespace: format!("team-{namespace:02}"),
        pod: "svc-00-0".to_owned(),
        labels: [
            ("app".to_owned(), "svc-00".to_owned()),
            ("version".to_owned(), "v1".to_owned()),
        ]
        .into(),
        service_account: "svc-00".to_owned(),
        ip: None,
    }
}

/// Peak resident set size of this process in KiB (Linux), if readable.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench(c: &mut Criterion) {
    let snapshot = generate();
    let after_snapshot = peak_rss_kib();
    let resolver = Resolver::new(&snapshot);
    let one = resolver.resolve(&proxy(0));
    let json = serde_json::to_vec(&one).expect("serializes");
    let endpoints: usize = one.clusters.values().map(|c| c.endpoints.len()).sum();
    let views: Vec<_> = (0..NAMESPACES)
        .map(|n| resolver.resolve(&proxy(n)))
        .collect();
    eprintln!(
        "inputs: {} services, {} pods, {} EndpointSlices, {} VirtualServices, {} DestinationRules",
        snapshot.services.len(),
        snapshot.pods.len(),
        snapshot.endpoint_slices.len(),
        snapshot.virtual_services.len(),
        snapshot.destination_rules.len()
    );
    eprintln!(
        "one view: {} destinations, {} clusters, {} endpoints, {} bytes of JSON ({:.1} MiB)",
        one.destinations.len(),
        one.clusters.len(),
        endpoints,
        json.len(),
        json.len() as f64 / 1048576.0
    );
    eprintln!(
        "peak RSS: {:?} KiB after generating the snapshot, {:?} KiB after {} views held at once",
        after_snapshot,
        peak_rss_kib(),
        views.len()
    );
    drop(views);

    let mut group = c.benchmark_group("resolve");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("one-proxy", |b| {
        b.iter(|| black_box(resolver.resolve(black_box(&proxy(3)))))
    });
    group.bench_function("index+one-proxy", |b| {
        b.iter(|| black_box(resolve(&snapshot, black_box(&proxy(3)))))
    });
    group.bench_function("full-rebuild", |b| {
        b.iter(|| {
            let resolver = Resolver::new(&snapshot);
            for n in 0..NAMESPACES {
                black_box(resolver.resolve(&proxy(n)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
