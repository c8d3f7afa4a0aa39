//! The status and health ports against real slow clients (issue 14 #4): a client that sends
//! nothing, or its headers byte by byte, is closed after the header-read timeout; beyond the
//! connection cap new connections are closed at once and counted, and probes pass again once
//! the idle ones are gone.

use std::time::{Duration, Instant};

use outrigger_proxy::cli::RunArgs;
use outrigger_proxy::status::serve::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn proxy() -> TestProxy {
    let upstream = echo_server(false).await;
    start_proxy_with(fixed(upstream), RunArgs::default(), |config| {
        config.http_limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 3,
        };
    })
    .await
}

/// Waits (at most 5 s) for the server to close; returns how long that took.
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
    started.elapsed()
}

#[tokio::test]
async fn silent_and_slow_clients_are_closed_on_the_status_and_health_ports() {
    let proxy = proxy().await;
    for port in [proxy.status(), proxy.health()] {
        let mut silent = TcpStream::connect(port).await.expect("connect");
        let waited = closed_after(&mut silent).await;
        assert!(
            waited < Duration::from_secs(2),
            "{port}: silent client kept {waited:?}"
        );

        let mut slow = TcpStream::connect(port).await.expect("connect");
        let started = Instant::now();
        for byte in b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\n".iter() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let _ = closed_after(&mut slow).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{port}: byte-by-byte client kept {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn the_connection_cap_refuses_idle_floods_and_probes_recover() {
    let proxy = proxy().await;
    let health = proxy.health();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(health).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = TcpStream::connect(health).await.expect("connect");
    assert!(
        closed_after(&mut over).await < Duration::from_millis(250),
        "closed at once"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = http(health, "GET", "/healthz/ready").await;
    assert_eq!(
        status, 200,
        "a probe passes once the idle connections timed out"
    );
    let (_, metrics) = http(proxy.stats(), "GET", "/stats/prometheus").await;
    assert_eq!(
        sample(
            &metrics,
            "outrigger_proxy_http_connections_refused_total",
            &[]
        ),
        Some(1.0),
        "{metrics}"
    );
    drop(idle);
}
