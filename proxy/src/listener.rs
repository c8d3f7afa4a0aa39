//! Binding the capture and status listeners, and the accept loop of a capture listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addr::ClientAddr;
use crate::forward::Forwarder;

/// Accept backlog: connection bursts must not be dropped by the kernel.
const BACKLOG: i32 = 4096;

/// Binds a listening socket on the current runtime; an IPv6 one is IPv6-only so IPv4 goes to
/// the IPv4 listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, false)?)
}

/// Binds a non-blocking listening socket for any runtime to take. With `reuse_port`
/// (`SO_REUSEPORT`, for the capture listeners, one per worker) several sockets of this user
/// share the port and the kernel spreads new connections over them, as Envoy's listeners do.
pub fn bind_std(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts until `stop` fires; every connection runs as a task tracked by `tracker`.
pub async fn accept_loop(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracker.spawn(forwarder.clone().handle(stream, ClientAddr(peer)));
            }
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(direction = forwarder.direction.as_str(), "listener closed");
}
