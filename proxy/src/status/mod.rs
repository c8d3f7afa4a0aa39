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
