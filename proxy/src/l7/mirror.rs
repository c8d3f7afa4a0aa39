//! Istio's `mirror` / `mirrorPercentage`: a copy of the request sent to another cluster, fire
//! and forget, as Envoy's shadowing does. The copy goes to `<host>-shadow` (the suffix before
//! the port, as Envoy does), its answer is read and dropped, and nothing about it touches the
//! original request: it is spawned after the copy is built, bounded by a time limit, and at
//! most [`MAX_IN_FLIGHT`] copies are in flight per proxy (a further one is dropped and counted).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::l7::telemetry::{L7Metrics, MirrorResult};
use crate::l7::upstream::Body;

/// Mirrored requests in flight per proxy; a slow shadow cluster cannot hold more than this
/// many connections and bodies.
pub const MAX_IN_FLIGHT: usize = 256;
/// A mirrored request that has not finished (answer body included) by then is abandoned.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The mirrors of one proxy.
#[derive(Debug)]
pub struct Mirrors {
    in_flight: Arc<Semaphore>,
    metrics: L7Metrics,
}

impl Mirrors {
    pub fn new(metrics: L7Metrics) -> Self {
        Self::with_limit(metrics, MAX_IN_FLIGHT)
    }

    pub fn with_limit(metrics: L7Metrics, limit: usize) -> Self {
        Mirrors {
            in_flight: Arc::new(Semaphore::new(limit)),
            metrics,
        }
    }

    /// Sends `request` in the background with `exchange` (or drops it when the limit is
    /// reached); the answer's body is read and dropped.
    pub fn send<F, E>(
        &self,
        mut request: Request<Body>,
        timeout: Duration,
        exchange: impl FnOnce(Request<Body>) -> F,
    ) where
        F: Future<Output = Result<Response<Incoming>, E>> + Send + 'static,
    {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.mirror(MirrorResult::Dropped);
            return;
        };
        shadow_host(request.headers_mut());
        let metrics = self.metrics.clone();
        let sent = exchange(request);
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let response = sent.await.ok()?;
                response.into_body().collect().await.ok()
            };
            let result = match tokio::time::timeout(timeout, exchange).await {
                Ok(Some(_)) => MirrorResult::Sent,
                Ok(None) | Err(_) => MirrorResult::Failed,
            };
            metrics.mirror(result);
        });
    }
}

/// Envoy's shadow authority: `-shadow` after the host, before any port.
pub fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

fn shadow_host(headers: &mut http::HeaderMap) {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&shadow_authority(host)) {
        headers.insert(header::HOST, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use prometheus_client::registry::Registry;

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[tokio::test]
    async fn copies_beyond_the_limit_are_dropped_and_counted() {
        // A shadow that accepts and never answers holds the one permit.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut registry = Registry::default();
        let mirrors = Mirrors::with_limit(L7Metrics::register(&mut registry), 1);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(HttpConnector::new());
        let request = || {
            Request::get(format!("http://{addr}/"))
                .header(header::HOST, "front:8080")
                .body(
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .expect("request")
        };
        for _ in 0..2 {
            let client = client.clone();
            mirrors.send(request(), Duration::from_millis(300), move |r| {
                client.request(r)
            });
        }
        assert!(
            text(&registry)
                .contains(r#"outrigger_proxy_mirror_requests_total{result="dropped"} 1"#)
        );
        // The held one times out and frees its permit.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            text(&registry).contains(r#"outrigger_proxy_mirror_requests_total{result="failed"} 1"#)
        );
        assert_eq!(mirrors.in_flight.available_permits(), 1);
    }

    #[test]
    fn the_shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_authority("front:8080"), "front-shadow:8080");
        assert_eq!(shadow_authority("front"), "front-shadow");
        assert_eq!(
            shadow_authority("front.req.svc.cluster.local"),
            "front.req.svc.cluster.local-shadow"
        );
        assert_eq!(shadow_authority("[fd00::1]:80"), "[fd00::1]-shadow:80");
    }
}
