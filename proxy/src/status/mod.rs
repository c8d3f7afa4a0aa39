//! The HTTP servers next to the data path: health (15021), proxy metrics (15090) and the status
//! port (15020: readiness, app probes, merged metrics, `/quitquitquit`, `/drain`).

pub mod health;
pub mod merge_metrics;
#[cfg(test)]
mod probe_tests;
pub mod probes;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::drain::{Lifecycle, Request};
use crate::metrics::Metrics;
use crate::names::paths;
use merge_metrics::ScrapeConfig;
use probes::Probers;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything the status handlers read.
#[derive(Debug, Clone)]
pub struct StatusState {
    pub lifecycle: Lifecycle,
    pub metrics: Arc<Metrics>,
    pub probers: Arc<Probers>,
    pub scrape: Option<Arc<ScrapeConfig>>,
    /// Where probes and scrapes without an explicit host go (the pod IP, else localhost).
    pub app_ip: IpAddr,
}

/// Port 15021.
pub fn health_router(lifecycle: Lifecycle) -> Router {
    Router::new()
        .route(paths::READY, get(health::ready))
        .with_state(lifecycle)
}

/// Port 15090.
pub fn stats_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(paths::STATS, get(own_stats))
        .with_state(metrics)
}

/// Port 15020.
pub fn status_router(state: StatusState) -> Router {
    let ready = health_router(state.lifecycle.clone());
    Router::new()
        .route("/app-health/{container}/{probe}", get(app_health))
        .route(
            "/app-lifecycle/{container}/{hook}",
            get(app_lifecycle).post(app_lifecycle),
        )
        .route(paths::STATS, get(merged_stats))
        .route(paths::QUIT, post(quit))
        .route(paths::DRAIN, post(drain))
        .with_state(state)
        .merge(ready)
}

async fn own_stats(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.encode()).into_response()
}

async fn merged_stats(State(state): State<StatusState>) -> Response {
    let body = merge_metrics::merged(
        &state.metrics.encode(),
        state.scrape.as_deref(),
        state.app_ip,
    )
    .await;
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

async fn app_health(
    State(state): State<StatusState>,
    Path((container, probe)): Path<(String, String)>,
) -> Response {
    run_recorded(&state, &format!("/app-health/{container}/{probe}")).await
}

async fn app_lifecycle(
    State(state): State<StatusState>,
    Path((container, hook)): Path<(String, String)>,
) -> Response {
    run_recorded(&state, &format!("/app-lifecycle/{container}/{hook}")).await
}

async fn run_recorded(state: &StatusState, path: &str) -> Response {
    let Some(probe) = state.probers.get(path) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no probe recorded for {path}\n"),
        )
            .into_response();
    };
    let result = probes::run_probe(probe, state.app_ip).await;
    if result.status.is_success() {
        tracing::debug!(%path, detail = %result.detail, "app probe passed");
    } else {
        tracing::info!(%path, status = %result.status, detail = %result.detail, "app probe failed");
    }
    (result.status, format!("{}\n", result.detail)).into_response()
}

async fn quit(State(state): State<StatusState>) -> (StatusCode, &'static str) {
    state.lifecycle.request(Request::Quit);
    (StatusCode::OK, "OK\n")
}

async fn drain(State(state): State<StatusState>) -> (StatusCode, &'static str) {
    state.lifecycle.request(Request::Drain);
    (StatusCode::OK, "OK\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use std::net::Ipv4Addr;
    use tower::ServiceExt;

    fn state(probers: &str) -> (StatusState, crate::drain::Requests) {
        let (lifecycle, requests) = Lifecycle::new();
        let state = StatusState {
            lifecycle,
            metrics: Arc::new(Metrics::new()),
            probers: Arc::new(Probers::from_json(probers).unwrap()),
            scrape: None,
            app_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        (state, requests)
    }

    async fn call(router: Router, method: &str, uri: &str) -> (StatusCode, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_is_503_until_listening_and_while_draining() {
        let (state, _requests) = state("{}");
        let lifecycle = state.lifecycle.clone();
        let router = health_router(lifecycle.clone());
        assert_eq!(
            call(router.clone(), "GET", "/healthz/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        lifecycle.mark_listening();
        assert_eq!(
            call(router.clone(), "GET", "/healthz/ready").await,
            (StatusCode::OK, "ready\n".to_owned())
        );
        lifecycle.start_draining();
        assert_eq!(
            call(router, "GET", "/healthz/ready").await,
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
        );
    }

    #[tokio::test]
    async fn unknown_probe_paths_are_404_and_recorded_ones_run() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, _requests) = state(&format!(
            r#"{{"/app-health/web/livez":{{"tcpSocket":{{"port":{port}}}}},
                "/app-lifecycle/web/prestopz":{{"tcpSocket":{{"port":1}}}}}}"#
        ));
        let router = status_router(state);
        let (status, body) = call(router.clone(), "GET", "/app-health/web/readyz").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/app-health/web/readyz"), "{body}");
        assert_eq!(
            call(router.clone(), "GET", "/app-health/web/livez").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(router, "POST", "/app-lifecycle/web/prestopz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "nothing listens on port 1"
        );
    }

    #[tokio::test]
    async fn quit_and_drain_are_post_only_and_reach_the_coordinator() {
        let (state, mut requests) = state("{}");
        let router = status_router(state);
        assert_eq!(
            call(router.clone(), "GET", "/quitquitquit").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(router.clone(), "POST", "/drain").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(router, "POST", "/quitquitquit").await.0,
            StatusCode::OK
        );
        assert_eq!(requests.try_next(), Some(Request::Drain));
        assert_eq!(requests.try_next(), Some(Request::Quit));
    }

    #[tokio::test]
    async fn merged_stats_append_the_apps_metrics_without_our_eof() {
        let app = Router::new().route(
            "/metrics",
            get(|| async { "# TYPE app_hits counter\napp_hits_total 7\n" }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (mut state, _requests) = state("{}");
        state.scrape = ScrapeConfig::from_json(&format!(
            r#"{{"scrape":"true","port":"{port}","path":"/metrics"}}"#
        ))
        .unwrap()
        .map(Arc::new);
        state.metrics.connect_error(
            crate::metrics::Direction::Outbound,
            crate::metrics::ConnectError::Loop,
        );
        let (status, body) = call(status_router(state.clone()), "GET", "/stats/prometheus").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("app_hits_total 7"), "{body}");
        assert!(
            body.contains(
                r#"outrigger_proxy_connect_errors_total{direction="outbound",reason="loop"} 1"#
            ),
            "{body}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        let (_, own) = call(stats_router(state.metrics), "GET", "/stats/prometheus").await;
        assert!(own.ends_with("# EOF\n"));
        assert!(!own.contains("app_hits_total"));
    }
}
