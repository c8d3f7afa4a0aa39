//! The accept loops: TLS handshakes, HTTP/1.1 + HTTP/2 connections, timeouts, a connection cap
//! per listener, and graceful shutdown (stop accepting, close idle connections at once, let
//! in-flight requests finish within a grace period).
//!
//! hyper has a header-read timeout for HTTP/1 only and no idle timeout at all, so every
//! connection here runs under a small watchdog that counts its requests in flight: a connection
//! that has no request in flight is shut down gracefully (HTTP/1: closed; HTTP/2: GOAWAY, then
//! closed) once it was quiet for `read_timeout` before its first request (the header timeout of
//! both protocols) or `idle_timeout` after one, and at once when the server drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::handshake_log::{Class, HandshakeLog};

/// Default cap on the connections of the TLS port (the API servers multiplex over HTTP/2, so a
/// handful is normal; the cap only protects the descriptors and memory of the injector).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on the connections of the metrics port (a few scrapers).
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 64;
/// Default time a connection may sit with no request in flight before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest read buffer of an HTTP/1 connection (hyper's default is about 400 KiB).
pub const HTTP1_MAX_BUF_BYTES: usize = 64 * 1024;

/// What every listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TLS handshake; quiet time before the first request's headers (HTTP/1 and HTTP/2);
    /// HTTP/1 header read of every request.
    pub read_timeout: Duration,
    /// Quiet time with no request in flight after which a connection is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; the excess waits in the kernel's accept queue until one ends.
    pub max_connections: usize,
    /// After the stop, how long in-flight requests may take before the server returns anyway.
    pub grace: Duration,
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves, then drain for up to
/// `limits.grace`. Returns whether every connection finished within the grace period. Failed
/// handshakes are counted and logged (rate-limited) through `handshakes`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    handshakes: HandshakeLog,
) -> bool {
    serve(
        listener,
        Some((TlsAcceptor::from(tls), handshakes)),
        app,
        shutdown,
        limits,
    )
    .await
}

/// Serve plain HTTP (the metrics port) until `shutdown` resolves, with the same limits.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> bool {
    serve(listener, None, app, shutdown, limits).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, HandshakeLog)>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> bool {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let (drain_tx, drain_rx) = watch::channel(false);
    let local = listener.local_addr().ok();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, new connections wait in the accept queue.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        if slots.available_permits() == 0 {
            tracing::debug!(addr = ?local, max, "connection cap reached; new connections wait");
        }
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        let drain = drain_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            accept_connection(tcp, peer, tls, app, drain, limits).await;
        });
    }
    drop(listener);
    tracing::info!(
        addr = ?local,
        grace_seconds = limits.grace.as_secs_f64(),
        "stopped accepting; draining connections"
    );
    let _ = drain_tx.send(true);
    let every_slot = u32::try_from(max).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.grace, slots.acquire_many(every_slot)).await {
        Ok(_) => {
            tracing::info!(addr = ?local, "all connections drained");
            true
        }
        Err(_) => {
            tracing::warn!(
                addr = ?local,
                open = max - slots.available_permits(),
                "grace period over with connections still open"
            );
            false
        }
    }
}

async fn accept_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<(TlsAcceptor, HandshakeLog)>,
    app: Router,
    drain: watch::Receiver<bool>,
    limits: Limits,
) {
    let Some((acceptor, handshakes)) = tls else {
        serve_connection(TokioIo::new(tcp), peer, app, drain, limits).await;
        return;
    };
    let mut draining = drain.clone();
    // A handshake still under way when the server drains has no request to finish: drop it.
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(limits.read_timeout, acceptor.accept(tcp)) => handshake,
        _ = draining.wait_for(|draining| *draining) => {
            tracing::debug!(%peer, "TLS handshake dropped: draining");
            return;
        }
    };
    match handshake {
        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), peer, app, drain, limits).await,
        Ok(Err(error)) => handshakes.failed(peer, Class::of(&error), &error),
        Err(_) => handshakes.failed(
            peer,
            Class::Timeout,
            &format_args!(
                "no TLS handshake within the read timeout of {:?}",
                limits.read_timeout
            ),
        ),
    }
}

/// Requests in flight on one connection and when the last one began or ended.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    since: Instant,
    served: bool,
}

/// Counts a request in flight for as long as it lives.
struct InFlight(watch::Sender<Activity>);

impl InFlight {
    fn begin(activity: &watch::Sender<Activity>) -> InFlight {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.served = true;
            a.since = Instant::now();
        });
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.since = Instant::now();
        });
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    mut drain: watch::Receiver<bool>,
    limits: Limits,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let (activity, mut quiet) = watch::channel(Activity {
        in_flight: 0,
        since: Instant::now(),
        served: false,
    });
    let counter = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = InFlight::begin(&counter);
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(guard);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        // hyper's read buffer grows to ~400 KiB while a large body streams in and keeps that
        // size: a connection then waiting for the body budget holds 400 KiB of the next body
        // (128 such connections took the injector from 117 to 168 MiB). 64 KiB is plenty for
        // headers and still reads a body in large chunks.
        .max_buf_size(HTTP1_MAX_BUF_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone: its streams would otherwise hang.
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.read_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = idle(&mut quiet, limits), if !closing => {
                tracing::debug!(%peer, "idle connection closed");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // An error means the server is gone: close as when draining.
            _ = drain.wait_for(|draining| *draining), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once the connection had no request in flight for its quiet limit.
async fn idle(quiet: &mut watch::Receiver<Activity>, limits: Limits) {
    loop {
        let now = *quiet.borrow_and_update();
        if now.in_flight == 0 {
            let limit = if now.served {
                limits.idle_timeout
            } else {
                limits.read_timeout
            };
            tokio::select! {
                () = tokio::time::sleep_until(now.since + limit) => return,
                changed = quiet.changed() => if changed.is_err() { std::future::pending::<()>().await },
            }
        } else if quiet.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
