//! The `wait` (postStart hook) and `drain` (preStop hook) subcommands: small HTTP calls to the
//! local proxy's status ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

use crate::client::{self, Wire};
use outrigger_api::names::path as paths;

/// How often `wait` polls readiness.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on one call to the local proxy.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the proxy was not ready after {timeout:?} (last answer: {last})")]
    NotReady { timeout: Duration, last: String },
    #[error("the proxy refused the drain request: {0}")]
    Drain(String),
}

/// Polls `http://127.0.0.1:<port>/healthz/ready` until it answers 200 or `timeout` passes.
pub async fn wait_ready(health_port: u16, timeout: Duration) -> Result<(), CommandError> {
    let deadline = Instant::now() + timeout;
    let target = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), health_port);
    loop {
        let last = match call(target, Method::GET, paths::READY).await {
            Ok(StatusCode::OK) => return Ok(()),
            Ok(status) => format!("HTTP {status}"),
            Err(reason) => reason,
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            return Err(CommandError::NotReady { timeout, last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `POST http://127.0.0.1:<port>/drain`.
pub async fn drain(status_port: u16) -> Result<(), CommandError> {
    let target = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), status_port);
    match call(target, Method::POST, paths::DRAIN).await {
        Ok(StatusCode::OK) => Ok(()),
        Ok(status) => Err(CommandError::Drain(format!("HTTP {status}"))),
        Err(reason) => Err(CommandError::Drain(reason)),
    }
}

async fn call(target: SocketAddr, method: Method, path: &str) -> Result<StatusCode, String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, target.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(
        CALL_TIMEOUT,
        client::send(target, None, Wire::Http1, request),
    )
    .await
    {
        Ok(Ok(reply)) => Ok(reply.status),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}
