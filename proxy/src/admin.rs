//! The admin port (Istio's 15000), bound on loopback only: `/config_dump` (the configuration in
//! force with its version), `/clusters` (endpoints, health and outlier ejection, requests in
//! flight; Envoy's text layout, `?format=json` for JSON) and `/stats` (the proxy's metrics).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outrigger_mesh::config::Health;
use serde::Deserialize;
use serde_json::json;

use crate::l7::balance::EndpointState;
use crate::l7::outlier;
use crate::l7::source::ConfigStore;
use crate::metrics::Metrics;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// `None`: no `--config-file`, every connection is relayed.
    pub store: Option<Arc<ConfigStore>>,
    pub metrics: Arc<Metrics>,
}

/// Port 15000.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/config_dump", get(config_dump))
        .route("/clusters", get(clusters))
        .route("/stats", get(stats))
        .route("/stats/prometheus", get(stats))
        .with_state(state)
}

async fn config_dump(State(state): State<AdminState>) -> Response {
    let body = match &state.store {
        None => json!({
            "version": null,
            "source": null,
            "mode": "tcp-relay",
            "config": null,
        }),
        Some(store) => {
            let loaded = store.current();
            let loaded_at = loaded
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            json!({
                "version": loaded.config.version,
                "source": store.source_name(),
                "discovery": store.source_status(),
                "loadedAtUnixSeconds": loaded_at,
                "mode": "l7",
                "config": loaded.config_json(),
            })
        }
    };
    json_response(&body)
}

#[derive(Debug, Deserialize)]
struct ClustersQuery {
    format: Option<String>,
}

/// Envoy's spelling of an endpoint's health: `healthy`, or its failure flags in Envoy's order
/// (`/failed_outlier_check` before the EDS ones).
fn health_flags(endpoint: &EndpointState, now: u64) -> String {
    let mut flags = String::new();
    if endpoint.outlier.is_ejected(now) {
        flags += "/failed_outlier_check";
    }
    match endpoint.health {
        Health::Healthy => {}
        Health::Unhealthy => flags += "/failed_eds_health",
        Health::Draining => flags += "/eds_status_draining",
    }
    if flags.is_empty() {
        flags += "healthy";
    }
    flags
}

async fn clusters(State(state): State<AdminState>, Query(query): Query<ClustersQuery>) -> Response {
    let Some(store) = &state.store else {
        return text_response(String::new());
    };
    let loaded = store.current();
    let clusters = loaded.clusters.sorted();
    let now = outlier::now_ms();
    if query.format.as_deref() == Some("json") {
        let all: Vec<_> = clusters
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "loadBalancer": c.lb_policy(),
                    "http2": c.http2,
                    "activeRequests": c.active.load(Ordering::Relaxed),
                    "maxRequests": c.max_active,
                    "overflows": c.overflows.load(Ordering::Relaxed),
                    "maxConnections": c.connections.max(),
                    "connectionsOpen": c.connections.open(),
                    "maxPendingRequests": c.connections.max_pending(),
                    "pendingRequests": c.connections.pending(),
                    "outlierDetection": c.outlier.is_some(),
                    "endpoints": c.endpoints.iter().map(|e| json!({
                        "address": e.address,
                        "health": health_flags(e, now),
                        "ejected": e.outlier.is_ejected(now),
                        "ejectedForMs": e.outlier.ejected_for_ms(now),
                        "ejections": e.outlier.ejections(),
                        "activeRequests": e.active.load(Ordering::Relaxed),
                        "totalRequests": e.total.load(Ordering::Relaxed),
                        "connectionsOpened": e.connections_opened(),
                        "connectionsOpen": e.connections_open(),
                        "workload": &*e.workload,
                        "version": &*e.version,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return json_response(&json!({ "version": loaded.config.version, "clusters": all }));
    }
    let mut out = String::new();
    for c in clusters {
        let name = &c.name;
        out += &format!("{name}::lb_policy::{}\n", c.lb_policy());
        out += &format!(
            "{name}::circuit_breakers::max_requests::{}\n",
            limit_text(c.max_active)
        );
        out += &format!(
            "{name}::circuit_breakers::max_connections::{}\n",
            limit_text(c.connections.max())
        );
        out += &format!(
            "{name}::circuit_breakers::max_pending_requests::{}\n",
            limit_text(c.connections.max_pending())
        );
        out += &format!(
            "{name}::circuit_breakers::rq_overflow::{}\n",
            c.overflows.load(Ordering::Relaxed)
        );
        out += &format!("{name}::cx_active::{}\n", c.connections.open());
        out += &format!("{name}::rq_pending_active::{}\n", c.connections.pending());
        for e in &c.endpoints {
            let prefix = format!("{name}::{}", e.address);
            out += &format!("{prefix}::health_flags::{}\n", health_flags(e, now));
            out += &format!("{prefix}::outlier_ejections::{}\n", e.outlier.ejections());
            out += &format!(
                "{prefix}::rq_active::{}\n",
                e.active.load(Ordering::Relaxed)
            );
            out += &format!("{prefix}::rq_total::{}\n", e.total.load(Ordering::Relaxed));
            out += &format!("{prefix}::cx_active::{}\n", e.connections_open());
            out += &format!("{prefix}::cx_total::{}\n", e.connections_opened());
        }
    }
    text_response(out)
}

/// A cap as `/clusters` shows it.
fn limit_text(limit: Option<u32>) -> String {
    limit.map_or("unlimited".to_owned(), |m| m.to_string())
}

async fn stats(State(state): State<AdminState>) -> Response {
    text_response(state.metrics.encode())
}

fn json_response(value: &serde_json::Value) -> Response {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn text_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}
