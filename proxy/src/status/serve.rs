//! Serving the status (15020), health (15021), stats (15090) and admin (15000) routers with
//! the limits a listener reachable by other pods needs: a header-read timeout (a client that
//! connects and sends nothing, or sends its headers byte by byte, is closed), and a cap on open
//! connections (beyond it a new connection is closed at once and counted, so idle connections
//! cannot use up the descriptors real probes need). HTTP/1.1 only: the kubelet, Prometheus and
//! `curl` speak it, and HTTP/2 would bring idle streams no header timeout covers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long a client may take to send a request's headers, and how long a keep-alive
/// connection may stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener; the kubelet and Prometheus need a handful.
pub const MAX_CONNECTIONS: usize = 256;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` until the task is dropped; the peer address reaches handlers
/// as `ConnectInfo<SocketAddr>`. `refused` counts connections closed for the cap.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, refused: Counter) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "status accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused.inc();
            tracing::debug!(%peer, max = limits.max_connections, "connection cap reached: closing");
            drop(stream);
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "status connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    async fn server(limits: Limits) -> (SocketAddr, Counter) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let refused = Counter::default();
        tokio::spawn(serve(listener, router, limits, refused.clone()));
        (addr, refused)
    }

    fn limits(ms: u64, max: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(ms),
            max_connections: max,
        }
    }

    /// Reads until EOF (or a reset); returns what came and how long it took.
    async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        (
            String::from_utf8_lossy(&out).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_header_timeout() {
        let (addr, _) = server(limits(300, 8)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (_, waited) = read_to_close(&mut silent).await;
        assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
    }

    #[tokio::test]
    async fn a_client_sending_headers_byte_by_byte_is_closed() {
        let (addr, _) = server(limits(400, 8)).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let request = b"GET /peer HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for byte in request.iter().cycle().take(200) {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let (answer, _) = read_to_close(&mut slow).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_too() {
        let (addr, _) = server(limits(300, 8)).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, waited) = read_to_close(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("127.0.0.1:"),
            "the handler sees the peer: {answer}"
        );
        assert!(
            waited < Duration::from_secs(2),
            "idle closed after {waited:?}"
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_counted_and_real_requests_still_pass() {
        let (addr, refused) = server(limits(1000, 2)).await;
        let _idle1 = TcpStream::connect(addr).await.unwrap();
        let _idle2 = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let (answer, waited) = read_to_close(&mut third).await;
        assert!(answer.is_empty() && waited < Duration::from_millis(500));
        assert_eq!(refused.get(), 1);
        // Once the idle ones time out, a probe gets through.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut probe = TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = read_to_close(&mut probe).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
