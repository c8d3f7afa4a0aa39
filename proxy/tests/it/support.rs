//! Helpers: an in-process proxy on ephemeral ports, echo servers, tiny HTTP calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outrigger_proxy::addr::OrigDstAddr;
use outrigger_proxy::cli::{Ipv6Mode, RunArgs};
use outrigger_proxy::config::{EnvSource, ProxyConfig};
use outrigger_proxy::drain::Ended;
use outrigger_proxy::orig_dst::{FixedOrigDst, OrigDstSource};
use outrigger_proxy::server::{BoundAddrs, BoundProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running in-process proxy.
pub struct TestProxy {
    pub addrs: BoundAddrs,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Ended>,
}

impl TestProxy {
    pub fn outbound(&self) -> SocketAddr {
        loopback(self.addrs.outbound[0])
    }

    pub fn inbound(&self) -> SocketAddr {
        loopback(self.addrs.inbound[0])
    }

    pub fn stats(&self) -> SocketAddr {
        loopback(self.addrs.stats[0])
    }

    pub fn health(&self) -> SocketAddr {
        loopback(self.addrs.health[0])
    }

    pub fn admin(&self) -> SocketAddr {
        self.addrs.admin[0]
    }

    pub fn status(&self) -> SocketAddr {
        loopback(self.addrs.status[0])
    }
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new("127.0.0.1".parse().expect("valid IP"), addr.port())
}

/// Starts a proxy on ephemeral IPv4 ports with `orig_dst` as its original-destination source.
pub async fn start_proxy(orig_dst: Arc<dyn OrigDstSource>, args: RunArgs) -> TestProxy {
    start_proxy_with(orig_dst, args, |_| {}).await
}

/// [`start_proxy`] with a last change to the resolved configuration.
pub async fn start_proxy_with(
    orig_dst: Arc<dyn OrigDstSource>,
    args: RunArgs,
    adjust: impl FnOnce(&mut ProxyConfig),
) -> TestProxy {
    let args = RunArgs {
        outbound_port: Some(0),
        inbound_port: Some(0),
        status_port: Some(0),
        health_port: Some(0),
        stats_port: Some(0),
        admin_port: Some(0),
        ipv6: Some(Ipv6Mode::False),
        ..args
    };
    let vars = EnvSource::from_map([
        ("POD_NAMESPACE", "test"),
        ("ISTIO_META_WORKLOAD_NAME", "web"),
    ]);
    let mut config = ProxyConfig::resolve(&args, &vars).expect("valid test configuration");
    adjust(&mut config);
    let proxy = BoundProxy::bind(config, orig_dst).expect("ephemeral ports bind");
    let addrs = proxy.addrs().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    TestProxy {
        addrs,
        stop: Some(stop),
        task,
    }
}

pub fn fixed(addr: SocketAddr) -> Arc<dyn OrigDstSource> {
    Arc::new(FixedOrigDst(OrigDstAddr(addr)))
}

/// Echo server: reads everything until EOF, then writes it back and closes. It also sends the
/// peer address it saw first, as one line, when `announce_peer` is set.
pub async fn echo_server(announce_peer: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut data = Vec::new();
                if stream.read_to_end(&mut data).await.is_err() {
                    return;
                }
                if announce_peer {
                    let _ = stream
                        .write_all(format!("{}\n", peer.ip()).as_bytes())
                        .await;
                }
                let _ = stream.write_all(&data).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `data`, half-closes, reads the whole answer.
pub async fn echo_through(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(data).await?;
    stream.shutdown().await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// A minimal HTTP/1.1 call; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to status port");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The proxy's Prometheus page (its stats port).
pub async fn metrics(proxy: &TestProxy) -> String {
    http(proxy.stats(), "GET", "/stats/prometheus").await.1
}

/// The value of the first sample line starting with `prefix` and containing all of `parts`.
pub fn sample(metrics: &str, prefix: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `check` until it returns true or two seconds pass.
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..40 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
