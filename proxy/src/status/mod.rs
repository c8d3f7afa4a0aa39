//! The HTTP servers next to the data path: health (15021), proxy metrics (15090) and the status
//! port (15020: readiness, app probes, merged metrics, `/quitquitquit`, `/drain`).

pub mod health;
pub mod merge_metrics;
#[cfg(test)]
mod probe_tests;
pub mod probes;
pub mod serve;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::drain::{Lifecycle, Request};
use crate::metrics::Metrics;
use merge_metrics::ScrapeConfig;
use outrigger_api::names::path as paths;
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

/// Port 15020. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the
/// lifecycle endpoints read the peer address and refuse any that is not loopback.
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

/// Whether a lifecycle request may stop or drain this proxy: only from loopback, as Istio's
/// pilot-agent (`isRequestFromLocalhost` in pilot/cmd/pilot-agent/status/server.go). The status
/// port listens on every address for the kubelet, so any pod could otherwise stop this one and
/// black-hole its captured traffic. A request without a known peer is refused too.
fn from_loopback(peer: Option<&ConnectInfo<SocketAddr>>) -> bool {
    peer.is_some_and(|ConnectInfo(addr)| match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

fn lifecycle_request(
    state: &StatusState,
    peer: Option<ConnectInfo<SocketAddr>>,
    path: &'static str,
    request: Request,
) -> (StatusCode, &'static str) {
    if !from_loopback(peer.as_ref()) {
        let peer = peer.map(|ConnectInfo(addr)| addr.to_string());
        tracing::warn!(
            path,
            peer = peer.as_deref().unwrap_or("unknown"),
            "refused a lifecycle request from a non-loopback address"
        );
        state.metrics.refused_admin_request(path);
        return (StatusCode::FORBIDDEN, "only accepted from localhost\n");
    }
    state.lifecycle.request(request);
    (StatusCode::OK, "OK\n")
}

async fn quit(
    State(state): State<StatusState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> (StatusCode, &'static str) {
    lifecycle_request(
        &state,
        peer.map(|Extension(peer)| peer),
        paths::QUIT,
        Request::Quit,
    )
}

async fn drain(
    State(state): State<StatusState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> (StatusCode, &'static str) {
    lifecycle_request(
        &state,
        peer.map(|Extension(peer)| peer),
        paths::DRAIN,
        Request::Drain,
    )
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

    const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

    async fn call(router: Router, method: &str, uri: &str) -> (StatusCode, String) {
        call_from(router, Some(LOOPBACK), method, uri).await
    }

    async fn call_from(
        router: Router,
        peer: Option<SocketAddr>,
        method: &str,
        uri: &str,
    ) -> (StatusCode, String) {
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
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
    async fn quit_and_drain_from_another_address_are_refused_and_counted() {
        let (state, mut requests) = state("{}");
        let metrics = state.metrics.clone();
        let router = status_router(state);
        let remote: SocketAddr = "10.1.2.3:51000".parse().unwrap();
        let pod_v6: SocketAddr = "[fd00::5]:51000".parse().unwrap();
        for (peer, path) in [
            (Some(remote), "/quitquitquit"),
            (Some(pod_v6), "/drain"),
            (None, "/quitquitquit"),
        ] {
            let (status, body) = call_from(router.clone(), peer, "POST", path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} from {peer:?}");
            assert!(body.contains("localhost"), "{body}");
        }
        assert_eq!(requests.try_next(), None, "nothing reached the coordinator");
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"outrigger_proxy_admin_requests_refused_total{path="/quitquitquit"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"outrigger_proxy_admin_requests_refused_total{path="/drain"} 1"#),
            "{text}"
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let v6: SocketAddr = "[::1]:40000".parse().unwrap();
        for peer in [mapped, v6] {
            assert_eq!(
                call_from(router.clone(), Some(peer), "POST", "/drain")
                    .await
                    .0,
                StatusCode::OK
            );
        }
        assert_eq!(requests.try_next(), Some(Request::Drain));
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
