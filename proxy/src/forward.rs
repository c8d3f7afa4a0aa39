//! Handling of one redirected connection, shared by the outbound and inbound listeners:
//! original destination, loop check, upstream connect (with timeout), relay, metrics, logs.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::addr::{ClientAddr, LocalAddr, OrigDstAddr};
use crate::l7::http::Plan;
use crate::l7::inbound::InboundPlan;
use crate::metrics::{ConnectError, Direction, Metrics, TcpLabels};
use crate::orig_dst::OrigDstSource;
use crate::relay::{self, Flow, RelayMode};
use crate::workload::Workload;
use crate::{inbound, outbound};
use outrigger_runtime::error_chain;

/// Everything a connection handler needs; one per capture listener.
#[derive(Debug)]
pub struct Forwarder {
    pub direction: Direction,
    pub orig_dst: Arc<dyn OrigDstSource>,
    pub connect_timeout: Duration,
    pub relay: RelayMode,
    pub metrics: Arc<Metrics>,
    pub workload: Arc<Workload>,
    /// The proxy's capture ports: an original destination on one of them is a loop.
    pub capture_ports: Vec<u16>,
    /// Fires when open connections must be closed (termination grace over).
    pub close: CancellationToken,
    /// HTTP handling of the destinations the configuration marks HTTP (outbound, with
    /// `--config-file`); `None`: every connection is relayed.
    pub l7: Option<Arc<crate::l7::http::Outbound>>,
    /// The discovery client (outbound only): an original destination not yet known is asked
    /// of pilot before the connection is served.
    pub discovery: Option<Arc<crate::discovery::Discovery>>,
    /// HTTP handling of the pod's own ports the configuration marks HTTP (inbound, with
    /// `--config-file`); `None`: relayed.
    pub l7_inbound: Option<Arc<crate::l7::inbound::Inbound>>,
}

impl Forwarder {
    /// Serves one accepted connection to completion, inside its own span.
    pub async fn handle(self: Arc<Self>, client: TcpStream, peer: ClientAddr) {
        let span = tracing::info_span!(
            "conn",
            direction = self.direction.as_str(),
            client = %peer,
            orig_dst = field::Empty,
        );
        self.forward(client).instrument(span).await;
    }

    async fn forward(&self, client: TcpStream) {
        let started = Instant::now();
        let orig_dst = match self.orig_dst.orig_dst(&client) {
            Ok(orig_dst) => orig_dst,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "closing: cannot read the original destination");
                self.metrics
                    .connect_error(self.direction, ConnectError::OrigDst);
                return;
            }
        };
        tracing::Span::current().record("orig_dst", field::display(orig_dst));
        let local = match client.local_addr() {
            Ok(local) => LocalAddr(local),
            Err(error) => {
                tracing::warn!(%error, "closing: cannot read the local address");
                self.metrics
                    .connect_error(self.direction, ConnectError::OrigDst);
                return;
            }
        };
        if is_loop(&orig_dst, &local, &self.capture_ports) {
            tracing::warn!(%local, "closing: the original destination is the proxy itself (loop)");
            self.metrics
                .connect_error(self.direction, ConnectError::Loop);
            return;
        }
        // Held for the connection's life: its destination is not unsubscribed as idle.
        let _in_use = match &self.discovery {
            Some(discovery) => Some(discovery.ensure(orig_dst.0).await),
            None => None,
        };
        if let Some(l7) = &self.l7 {
            match l7.plan(&client, &orig_dst).await {
                Plan::Http => {
                    tracing::debug!("serving HTTP");
                    l7.clone().serve(client, orig_dst, self.close.clone()).await;
                    return;
                }
                Plan::BlackHoleTcp => {
                    tracing::debug!("closing: unknown destination under REGISTRY_ONLY");
                    let labels =
                        TcpLabels::new(self.direction, &self.workload, &orig_dst).black_hole();
                    drop(self.metrics.open_connection(self.direction, &labels));
                    return;
                }
                Plan::Tcp => {}
            }
        }
        if let Some(l7) = &self.l7_inbound
            && let InboundPlan::Http(port) = l7.plan(&client, &orig_dst).await
        {
            tracing::debug!("serving inbound HTTP");
            l7.clone()
                .serve(client, orig_dst, port, self.close.clone())
                .await;
            return;
        }
        let source = match self.direction {
            Direction::Outbound => outbound::upstream_source(&orig_dst),
            Direction::Inbound => inbound::upstream_source(&orig_dst),
        };
        let upstream = match connect(orig_dst, source, self.connect_timeout).await {
            Ok(upstream) => upstream,
            Err((kind, error)) => {
                tracing::info!(reason = kind.as_str(), %error, "upstream connect failed: resetting the client");
                self.metrics.connect_error(self.direction, kind);
                // The client sees what it would have seen without the proxy: a reset.
                relay::reset_on_drop(&client);
                return;
            }
        };
        for stream in [&client, &upstream] {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        }
        let mut labels = TcpLabels::new(self.direction, &self.workload, &orig_dst);
        if let Some(l7) = &self.l7
            && let Some((host, name, port)) = l7.service_of(&orig_dst)
        {
            labels = labels.service(&host, &name, port);
        }
        let counters = self.metrics.open_connection(self.direction, &labels);
        tracing::debug!("relaying");
        let on_bytes = |flow: Flow, bytes: u64| match flow {
            Flow::ToUpstream => counters.received(bytes),
            Flow::ToClient => counters.sent(bytes),
        };
        let outcome = relay::relay(client, upstream, self.relay, &self.close, &on_bytes).await;
        tracing::info!(
            bytes_to_upstream = outcome.to_upstream,
            bytes_to_client = outcome.to_client,
            duration_ms = started.elapsed().as_millis() as u64,
            close_reason = outcome.reason.as_str(),
            "closed"
        );
    }
}

/// A connection whose original destination is one of our capture ports on a local address (or
/// the very socket it arrived on) was not redirected: forwarding it would connect to ourselves.
pub fn is_loop(orig_dst: &OrigDstAddr, local: &LocalAddr, capture_ports: &[u16]) -> bool {
    let dst = orig_dst.0;
    if dst == local.0 {
        return true;
    }
    let ip = dst.ip();
    capture_ports.contains(&dst.port())
        && (ip.is_loopback() || ip.is_unspecified() || ip == local.0.ip())
}

async fn connect(
    orig_dst: OrigDstAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, (ConnectError, io::Error)> {
    let other = |e: io::Error| (ConnectError::Other, e);
    let socket = if orig_dst.0.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(other)?;
    if let Some(ip) = source {
        inbound::bind_source(&socket, ip).map_err(other)?;
    }
    match tokio::time::timeout(timeout, socket.connect(orig_dst.0)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err((ConnectError::Refused, e))
        }
        Ok(Err(e)) => Err(other(e)),
        Err(_) => Err((
            ConnectError::Timeout,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(s: &str) -> OrigDstAddr {
        OrigDstAddr(s.parse().unwrap())
    }

    fn local(s: &str) -> LocalAddr {
        LocalAddr(s.parse().unwrap())
    }

    #[test]
    fn loops_are_detected() {
        let ports = [15001, 15006];
        assert!(is_loop(
            &dst("10.0.0.5:15001"),
            &local("10.0.0.5:15001"),
            &ports
        ));
        assert!(is_loop(
            &dst("127.0.0.1:15006"),
            &local("10.0.0.5:15001"),
            &ports
        ));
        assert!(is_loop(
            &dst("0.0.0.0:15001"),
            &local("127.0.0.1:15001"),
            &ports
        ));
        assert!(is_loop(
            &dst("10.0.0.5:15006"),
            &local("10.0.0.5:15001"),
            &ports
        ));
        assert!(is_loop(
            &dst("127.0.0.1:4000"),
            &local("127.0.0.1:4000"),
            &ports
        ));
    }

    #[test]
    fn ordinary_destinations_are_not_loops() {
        let ports = [15001, 15006];
        assert!(!is_loop(
            &dst("10.0.0.9:8080"),
            &local("10.0.0.5:15001"),
            &ports
        ));
        assert!(!is_loop(
            &dst("127.0.0.1:8080"),
            &local("127.0.0.1:15006"),
            &ports
        ));
        // Another pod's capture port is a legitimate destination.
        assert!(!is_loop(
            &dst("10.0.0.9:15001"),
            &local("10.0.0.5:15001"),
            &ports
        ));
    }
}
