//! The data path of an in-process proxy: relaying, half-close, resets, timeouts, loops, the
//! inbound source address, and what the metrics say about it.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_proxy::addr::OrigDstAddr;
use outrigger_proxy::cli::RunArgs;
use outrigger_proxy::drain::Ended;
use outrigger_proxy::orig_dst::{OrigDstError, OrigDstSource};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn outbound_relays_with_half_close_and_counts_it() {
    let upstream = echo_server(false).await;
    let proxy = start_proxy(fixed(upstream), RunArgs::default()).await;
    let payload = vec![42u8; 200_000];
    let answer = echo_through(proxy.outbound(), &payload).await.unwrap();
    assert_eq!(
        answer, payload,
        "echo survives the half-close through the proxy"
    );

    // Outbound without a configuration: Istio's passthrough labels, not the address.
    let _ = upstream;
    let dst = r#"destination_service_name="PassthroughCluster""#.to_owned();
    let stats = proxy.stats();
    assert!(
        eventually(async || {
            let (_, metrics) = http(stats, "GET", "/stats/prometheus").await;
            sample(&metrics, "istio_tcp_connections_closed_total{", &[&dst]) == Some(1.0)
        })
        .await,
        "closed counter reaches 1"
    );
    let (status, metrics) = http(stats, "GET", "/stats/prometheus").await;
    assert_eq!(status, 200);
    let labels = [
        r#"reporter="source""#,
        r#"source_workload="web""#,
        dst.as_str(),
    ];
    assert_eq!(
        sample(&metrics, "istio_tcp_connections_opened_total{", &labels),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "istio_tcp_received_bytes_total{", &labels),
        Some(200_000.0)
    );
    assert_eq!(
        sample(&metrics, "istio_tcp_sent_bytes_total{", &labels),
        Some(200_000.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "outrigger_proxy_active_connections{",
            &[r#"direction="outbound""#]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_refused_upstream_resets_the_client() {
    // Bound but not listening: a connect is refused, and the port stays ours for the whole
    // test (a released port was taken by a listener bound meanwhile, the proxy's own among
    // them, and the test failed now and then).
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_addr = closed.local_addr().unwrap();
    let proxy = start_proxy(fixed(closed_addr), RunArgs::default()).await;
    // On loopback the proxy's reset can arrive before the client's connect is polled to its
    // end; the connect then reports it (SO_ERROR), and that is the same reset.
    let err = match TcpStream::connect(proxy.outbound()).await {
        Ok(mut client) => {
            let mut buf = [0u8; 1];
            client
                .read(&mut buf)
                .await
                .expect_err("a reset, not an EOF")
        }
        Err(err) => err,
    };
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    let (_, metrics) = http(proxy.stats(), "GET", "/stats/prometheus").await;
    assert_eq!(
        sample(
            &metrics,
            "outrigger_proxy_connect_errors_total{",
            &[r#"reason="refused""#]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_connect_timeout_applies() {
    // A listener whose accept queue is full drops SYNs, so connecting to it hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let full = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(full)).await
        {
            fillers.push(s);
        }
    }
    let args = RunArgs {
        connect_timeout: Some(Duration::from_millis(300)),
        ..RunArgs::default()
    };
    let proxy = start_proxy(fixed(full), args).await;
    let started = Instant::now();
    let mut client = TcpStream::connect(proxy.outbound()).await.unwrap();
    let mut buf = [0u8; 1];
    let err = client
        .read(&mut buf)
        .await
        .expect_err("reset after the timeout");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let (_, metrics) = http(proxy.stats(), "GET", "/stats/prometheus").await;
    assert_eq!(
        sample(
            &metrics,
            "outrigger_proxy_connect_errors_total{",
            &[r#"reason="timeout""#]
        ),
        Some(1.0)
    );
}

/// What the kernel reports for a connection that reached the listener without a redirect.
#[derive(Debug)]
struct NotRedirected;

impl OrigDstSource for NotRedirected {
    fn orig_dst(&self, stream: &TcpStream) -> Result<OrigDstAddr, OrigDstError> {
        stream
            .local_addr()
            .map(OrigDstAddr)
            .map_err(OrigDstError::LocalAddr)
    }
}

#[tokio::test]
async fn a_connection_to_the_proxy_itself_is_closed_not_looped() {
    let proxy = start_proxy(Arc::new(NotRedirected), RunArgs::default()).await;
    let mut client = TcpStream::connect(proxy.outbound()).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed");
    let (_, metrics) = http(proxy.stats(), "GET", "/stats/prometheus").await;
    assert_eq!(
        sample(
            &metrics,
            "outrigger_proxy_connect_errors_total{",
            &[r#"reason="loop""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "istio_tcp_connections_opened_total{", &[]),
        None
    );
}

#[tokio::test]
async fn inbound_connects_to_the_app_from_127_0_0_6() {
    let app = echo_server(true).await;
    let proxy = start_proxy(fixed(app), RunArgs::default()).await;
    let answer = echo_through(proxy.inbound(), b"hi").await.unwrap();
    assert_eq!(String::from_utf8(answer).unwrap(), "127.0.0.6\nhi");
    let stats = proxy.stats();
    assert!(
        eventually(async || {
            let (_, metrics) = http(stats, "GET", "/stats/prometheus").await;
            sample(
                &metrics,
                "istio_tcp_connections_closed_total{",
                &[r#"reporter="destination""#, r#"destination_workload="web""#],
            ) == Some(1.0)
        })
        .await
    );
}

#[tokio::test]
async fn readiness_and_quitquitquit() {
    let app = echo_server(false).await;
    let mut proxy = start_proxy(fixed(app), RunArgs::default()).await;
    let health = proxy.health();
    assert_eq!(http(health, "GET", "/healthz/ready").await.0, 200);
    assert_eq!(http(proxy.status(), "GET", "/healthz/ready").await.0, 200);
    assert_eq!(
        http(proxy.status(), "GET", "/quitquitquit").await.0,
        405,
        "POST only"
    );
    assert_eq!(http(proxy.status(), "POST", "/quitquitquit").await.0, 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("proxy ends after quitquitquit")
        .unwrap();
    assert_eq!(ended, Ended::Quit);
    assert!(
        TcpStream::connect(proxy.outbound()).await.is_err(),
        "no longer accepting"
    );
    drop(proxy.stop.take());
}

#[tokio::test]
async fn sigterm_drains_then_closes_open_connections_at_the_grace() {
    // Upstream that holds connections open until the client closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    let args = RunArgs {
        drain_duration: Some(Duration::from_millis(1500)),
        termination_grace: Some(Duration::from_millis(2500)),
        ..RunArgs::default()
    };
    let mut proxy = start_proxy(fixed(upstream), args).await;
    let mut held = TcpStream::connect(proxy.outbound()).await.unwrap();
    let health = proxy.health();
    let started = Instant::now();
    proxy.stop.take().unwrap().send(()).unwrap();
    assert!(
        eventually(async || http(health, "GET", "/healthz/ready").await.0 == 503).await,
        "not ready while draining"
    );
    // Still accepting during the drain duration.
    let during = TcpStream::connect(proxy.outbound()).await;
    assert!(during.is_ok(), "accepting during the drain");
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf))
        .await
        .expect("closed by the grace");
    assert!(matches!(closed, Ok(0)), "{closed:?}");
    // Closed a tenth of the grace early, so the proxy is gone before the kubelet's SIGKILL.
    assert!(
        started.elapsed() >= Duration::from_millis(2250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((&mut proxy.task).await.unwrap(), Ended::Signal);
}
