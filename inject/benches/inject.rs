//! Speed of the injection engine on a realistic two-container Deployment pod with HTTP, TCP and
//! exec probes, prometheus annotations and an init container (target: <= 50 µs per pod).
//! `inject/deployment-pod` repeats one pod; `inject/replica` gives every iteration a new replica of
//! that workload, as the API server sends them (a random `kube-api-access-xxxxx` token volume
//! name each); `inject/deployment-pod-uncached` gives every iteration a pod whose overlay is new
//! (the first pod of a workload: template render + YAML parse).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use outrigger_inject::{Config, InjectRequest, Outcome, inject, patch::json_patch};
use serde_json::Value;

fn pod() -> Value {
    serde_json::from_str(include_str!("../tests/fixtures/pod-web.json"))
        .expect("fixture pod is valid JSON")
}

fn bench(c: &mut Criterion) {
    let config = Config::embedded().expect("embedded config loads");
    let pod = pod();
    let req = InjectRequest {
        namespace: "shop".into(),
        ..Default::default()
    };
    let Ok(Outcome::Injected { pod: injected, .. }) = inject(&pod, &req, &config) else {
        panic!("the fixture pod must be injected");
    };

    c.bench_function("inject/deployment-pod", |b| {
        b.iter(|| inject(black_box(&pod), black_box(&req), &config))
    });
    let mut n: u32 = 0;
    let mut replica = || {
        n += 1;
        let mut p = pod.clone();
        let name = Value::String(format!("kube-api-access-{n:05}"));
        p["spec"]["volumes"][0]["name"] = name.clone();
        p["spec"]["containers"][0]["volumeMounts"][0]["name"] = name;
        p
    };
    c.bench_function("inject/replica", |b| {
        b.iter_batched(
            &mut replica,
            |p| inject(&p, &req, &config),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("inject+patch/replica", |b| {
        b.iter_batched(
            &mut replica,
            |p| {
                let Ok(Outcome::Injected { pod: out, .. }) = inject(&p, &req, &config) else {
                    panic!("injected")
                };
                json_patch(&p, &out)
            },
            BatchSize::SmallInput,
        )
    });
    // Every iteration renders a different overlay (a new excluded port), so nothing is reused
    // from an earlier pod: the cost of the first pod of a workload.
    let mut n: u32 = 0;
    c.bench_function("inject/deployment-pod-uncached", |b| {
        b.iter_batched(
            || {
                n = n % 60000 + 1;
                let mut p = pod.clone();
                p["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"] =
                    Value::String(n.to_string());
                p
            },
            |p| inject(&p, &req, &config),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("inject+patch/deployment-pod", |b| {
        b.iter(|| {
            let Ok(Outcome::Injected { pod: out, .. }) = inject(black_box(&pod), &req, &config)
            else {
                panic!("injected")
            };
            json_patch(&pod, &out)
        })
    });
    c.bench_function("patch/deployment-pod", |b| {
        b.iter(|| json_patch(black_box(&pod), black_box(&injected)))
    });
    c.bench_function("config/embedded-load", |b| b.iter(Config::embedded));
}

criterion_group!(benches, bench);
criterion_main!(benches);
