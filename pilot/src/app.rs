//! pilot assembled: reflectors → debounced rebuilds (Istio's 100 ms quiet period, 10 s at most)
//! → generations → the xDS service; the monitoring router (`/metrics`, `/ready`, `/healthz`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::{mpsc, watch};

use crate::auth::Authenticator;
use crate::cluster::{self, Change, Stores};
use crate::index::{Generation, WirePool};
use crate::metrics::Metrics;
use crate::xds::{ActiveViews, XdsServer};

/// Istio's `PILOT_DEBOUNCE_AFTER` and `PILOT_DEBOUNCE_MAX`.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    pub quiet: Duration,
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Waits for a change, then for `quiet` without one (or `max` since the first): the batch and
/// when its first change came. `None` when every sender is gone.
pub async fn next_batch(
    changes: &mut mpsc::UnboundedReceiver<Change>,
    debounce: Debounce,
) -> Option<(Instant, Vec<Change>)> {
    let first = changes.recv().await?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + debounce.max;
    let mut batch = vec![first];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep(debounce.quiet) => break,
            change = changes.recv() => match change {
                Some(change) => batch.push(change),
                None => break,
            },
        }
    }
    Some((started, batch))
}

/// A running pilot (without its listeners).
#[derive(Clone)]
pub struct Pilot {
    pub stores: Stores,
    pub generations: watch::Receiver<Option<Arc<Generation>>>,
    pub metrics: Arc<Metrics>,
    pub active: Arc<ActiveViews>,
    pub auth: Arc<Authenticator>,
}

impl Pilot {
    /// Starts the reflectors and the rebuild loop on the current runtime.
    pub fn start(client: kube::Client, auth: Authenticator, debounce: Debounce) -> Self {
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let stores = cluster::start(client, changes_tx);
        let (publish, generations) = watch::channel(None);
        let metrics = Arc::new(Metrics::default());
        let active = Arc::new(ActiveViews::default());
        let pilot = Self {
            stores: stores.clone(),
            generations,
            metrics: metrics.clone(),
            active: active.clone(),
            auth: Arc::new(auth),
        };
        tokio::spawn(async move {
            let mut number = 0;
            // One pool for pilot's lifetime: generations share the resources that did not change.
            let pool = Arc::new(WirePool::default());
            let mut previous: Option<Arc<Generation>> = None;
            // Changes before the first full sync wait with their time, so the first
            // generation's convergence counts from the first event.
            let mut pending: Option<Instant> = None;
            while let Some((changed_at, batch)) = next_batch(&mut changes, debounce).await {
                let changed_at = *pending.get_or_insert(changed_at);
                if !stores.synced() {
                    continue;
                }
                pending = None;
                number += 1;
                let batch_len = batch.len();
                let patch = previous
                    .clone()
                    .and_then(|base| Some((base, cluster::patch_of(&stores, &batch)?)));
                let incremental = patch.is_some();
                let (stores, active, pool) = (stores.clone(), active.clone(), pool.clone());
                let started = Instant::now();
                let built = tokio::task::spawn_blocking(move || {
                    let (snapshot, errors) = stores.snapshot();
                    let generation = match patch {
                        Some((base, patch)) => base
                            .patched(number, changed_at, snapshot, &patch)
                            .unwrap_or_else(|full| *full),
                        None => Generation::new(number, changed_at, snapshot, pool.clone()),
                    };
                    generation.precompute(&active.keys());
                    let pooled = pool.prune();
                    (generation, errors, pooled)
                })
                .await;
                let Ok((generation, errors, pooled)) = built else {
                    tracing::error!("rebuild panicked; keeping the previous generation");
                    continue;
                };
                for error in &errors {
                    tracing::warn!(%error, "resource left out of resolution");
                }
                metrics.rebuilds.inc();
                metrics
                    .rebuild_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    generation = number,
                    changes = batch_len,
                    incremental,
                    pooled,
                    build_ms = started.elapsed().as_millis() as u64,
                    "rebuilt"
                );
                let generation = Arc::new(generation);
                previous = Some(generation.clone());
                if publish.send(Some(generation)).is_err() {
                    return;
                }
            }
        });
        pilot
    }

    pub fn xds(&self) -> XdsServer {
        XdsServer::new(
            self.generations.clone(),
            self.auth.clone(),
            self.metrics.clone(),
            self.active.clone(),
        )
    }

    /// Ready once every reflector has listed and the first generation is built.
    pub fn ready(&self) -> Result<(), String> {
        let unsynced = self.stores.unsynced();
        if !unsynced.is_empty() {
            return Err(format!("not synced yet: {}", unsynced.join(", ")));
        }
        if self.generations.borrow().is_none() {
            return Err("first configuration not built yet".to_owned());
        }
        Ok(())
    }

    /// `/metrics` (OpenMetrics text), `/ready` (200 once ready, else 503 saying why), `/healthz`.
    pub fn monitoring(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/ready", get(ready_handler))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.clone())
    }
}

/// A tonic server builder for the TLS xDS port (rustls, ring), from a PEM chain and key.
pub fn tls_server(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let identity = tonic::transport::Identity::from_pem(cert_pem, key_pem);
    tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
}

async fn metrics_handler(State(pilot): State<Pilot>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        pilot.metrics.encode(),
    )
}

async fn ready_handler(State(pilot): State<Pilot>) -> impl IntoResponse {
    match pilot.ready() {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_quiet_and_caps_at_max() {
        let debounce = Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Three changes 50 ms apart: one batch, closed 100 ms after the last.
        let sender = tx.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                let _ = sender.send(Change::Config);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = tokio::time::Instant::now();
        let (_, batch) = next_batch(&mut rx, debounce).await.expect("batch");
        assert_eq!(batch.len(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(200));

        // A change every 60 ms forever: the batch is cut at 10 s.
        let sender = tx.clone();
        let flood = tokio::spawn(async move {
            loop {
                let _ = sender.send(Change::Config);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        });
        let start = tokio::time::Instant::now();
        let (_, batch) = next_batch(&mut rx, debounce).await.expect("batch");
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(10) && elapsed < Duration::from_millis(10_100),
            "{elapsed:?}"
        );
        assert!(batch.len() > 100);
        flood.abort();
    }
}
