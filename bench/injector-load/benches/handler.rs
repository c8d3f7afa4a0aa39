//! Server CPU per admission request without TLS or sockets: the injector's router driven with
//! `oneshot` through the same pools as `injector-load`. `handler` cycles through replicas of one
//! pod (after the first, the replica memo answers); `handler/distinct` through pods that share
//! nothing, so every request is decoded, injected and diffed: next to the engine alone (inject +
//! JSONPatch diff) on the same pods, `handler/distinct - engine` is what the server code around
//! the engine costs. `handler/json-logs` adds the production log output (JSON, `info`) written
//! to a sink, to price the per-request span and log line. `decode` and `encode` are the server's
//! own JSON work: the review into typed fields (the pod kept as its text), and the patch into
//! base64 inside the answer.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use injector_load::{REVIEW, reviews};
use outrigger_inject::patch::json_patch;
use outrigger_inject::{Config, InjectRequest, Outcome, inject};
use outrigger_webhook::server::admission;
use outrigger_webhook::server::app::{self, AppState};
use outrigger_webhook::server::config_reload::ConfigStore;
use outrigger_webhook::server::metrics::Metrics;
use serde_json::Value;
use tower::ServiceExt as _;

/// The injector's allocator, so allocation costs are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Replicas cycled through, as in the load benchmark.
const REPLICAS: usize = 4096;

fn bench(c: &mut Criterion) {
    let pool = reviews::pool(REVIEW, REPLICAS, 1).expect("the review pool builds");
    let config = Config::embedded().expect("the embedded configuration loads");
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        Arc::new(ConfigStore::fixed(config.clone(), metrics.clone())),
        metrics,
    );
    state.ready.store(true, Ordering::Release);
    let router = app::app(state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let distinct = reviews::pool_of(reviews::Pods::Distinct, REVIEW, REPLICAS, 1)
        .expect("the distinct pool builds");
    let mut handle = handler(&router, &runtime, &pool);
    c.bench_function("handler", &mut handle);
    c.bench_function("handler/distinct", handler(&router, &runtime, &distinct));
    let json_logs = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(json_logs, || {
        c.bench_function("handler/json-logs", &mut handle)
    });

    c.bench_function("decode", |b| {
        let mut next = pool.iter().cycle();
        b.iter(|| admission::decode(black_box(&next.next().expect("cycles").body)))
    });

    let first = admission::decode(&pool[0].body).expect("decodes");
    let pod = &first
        .request
        .parse_object()
        .expect("valid JSON")
        .expect("has a pod");
    let request = InjectRequest {
        namespace: "shop".into(),
        ..InjectRequest::default()
    };
    let Ok(Outcome::Injected { pod: injected, .. }) = inject(pod, &request, &config) else {
        panic!("the benchmark pod is injected");
    };
    let patch = json_patch(pod, &injected);
    c.bench_function("encode", |b| {
        b.iter(|| {
            let response =
                admission::AdmissionResponse::patch(&*first.request.uid, &patch).expect("encodes");
            admission::AdmissionReviewResponse::new(first.version, response).to_vec()
        })
    });

    let pods: Vec<Value> = distinct
        .iter()
        .map(|r| {
            let review: Value = serde_json::from_slice(&r.body).expect("valid JSON");
            review["request"]["object"].clone()
        })
        .collect();
    c.bench_function("engine/inject+diff", |b| {
        let mut next = pods.iter().cycle();
        b.iter(|| {
            let pod = next.next().expect("cycles");
            let Ok(Outcome::Injected { pod: injected, .. }) = inject(pod, &request, &config) else {
                panic!("the benchmark pod is injected");
            };
            json_patch(pod, &injected)
        })
    });
}

/// One request after another through the router, cycling through `pool`, each answer checked.
fn handler<'a>(
    router: &'a axum::Router,
    runtime: &'a tokio::runtime::Runtime,
    pool: &'a [reviews::Review],
) -> impl FnMut(&mut criterion::Bencher) + 'a {
    let mut next = pool.iter().cycle();
    move |b: &mut criterion::Bencher| {
        b.iter(|| {
            let review = next.next().expect("the pool cycles");
            let request = Request::post("/inject")
                .header("content-type", "application/json")
                .body(Body::from(review.body.clone()))
                .expect("valid request");
            let response = runtime.block_on(async {
                let response = router.clone().oneshot(request).await.expect("infallible");
                axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .expect("body")
            });
            review.check(&response).expect("an injection for this uid");
        })
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
