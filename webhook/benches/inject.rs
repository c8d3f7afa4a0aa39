//! Speed of the injection engine on a realistic two-container Deployment pod with HTTP, TCP and
//! exec probes, prometheus annotations and an init container (target: <= 50 µs per pod).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use outrigger_webhook::inject::{Config, InjectRequest, Outcome, inject, patch::json_patch};
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
