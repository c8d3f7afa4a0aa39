//! The installer's HTTP endpoints: `/readyz` (chain correct) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    ready: Arc<AtomicBool>,
    metrics: Metrics,
}

pub const READY_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

pub fn app(ready: Arc<AtomicBool>, metrics: Metrics) -> Router {
    Router::new()
        .route(READY_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics_text))
        .with_state(AppState { ready, metrics })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "chain not installed\n")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        let ready = Arc::new(AtomicBool::new(false));
        let router = app(ready.clone(), Metrics::new());
        assert_eq!(
            get_path(router.clone(), READY_PATH).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get_path(router, READY_PATH).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_served() {
        let metrics = Metrics::new();
        metrics.count_repair("label", true);
        let (status, body) =
            get_path(app(Arc::new(AtomicBool::new(true)), metrics), METRICS_PATH).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(r#"outrigger_cni_pod_repairs_total{action="label",result="ok"} 1"#),
            "{body}"
        );
    }
}
