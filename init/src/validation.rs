//! The validation probe: proves that traffic is redirected by connecting to 127.0.0.6:<probe>
//! and waiting for that connection to arrive at a capture port.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::error::ValidationError;
use outrigger_api::capture::CaptureConfig;

/// Where the probe connects: the inbound passthrough address, never listened on.
pub const PROBE_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// How often the probe dials.
pub const DIAL_INTERVAL: Duration = Duration::from_secs(1);

/// Listens on 127.0.0.1:<-p> and 127.0.0.1:<-z>, dials 127.0.0.6:<probe port> once a second
/// until the probe timeout, and passes when an accepted connection's original destination
/// port is the probe port. The dialing socket is created with the proxy's UID/GID as its
/// owner (as the validation container runs) so the owner rules treat it as the proxy's.
pub fn run_validation(cfg: &CaptureConfig) -> Result<(), ValidationError> {
    let listeners = [cfg.proxy_port, cfg.inbound_capture_port]
        .into_iter()
        .map(|port| {
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
            let listener = TcpListener::bind(addr)
                .map_err(|source| ValidationError::Listen { addr, source })?;
            listener
                .set_nonblocking(true)
                .map_err(|source| ValidationError::Listen { addr, source })?;
            Ok(listener)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = SocketAddrV4::new(PROBE_ADDRESS, cfg.probe.port);
    let owner = (
        cfg.proxy_uids.first().copied(),
        cfg.proxy_gids.first().copied(),
    );
    let deadline = Instant::now() + cfg.probe.timeout;
    let mut next_dial = Instant::now();
    let mut dialed = Vec::new();
    while Instant::now() < deadline {
        if Instant::now() >= next_dial {
            match dial(target, owner) {
                Ok(stream) => dialed.push(stream),
                Err(error) => tracing::debug!(%error, %target, "probe connection failed"),
            }
            next_dial += DIAL_INTERVAL;
        }
        for listener in &listeners {
            while let Ok((stream, peer)) = listener.accept() {
                match SockRef::from(&stream).original_dst_v4() {
                    Ok(orig) if orig.as_socket().is_some_and(|a| a.port() == cfg.probe.port) => {
                        tracing::info!(%peer, original_destination = ?orig.as_socket(), "validation passed");
                        return Ok(());
                    }
                    Ok(orig) => {
                        tracing::debug!(original_destination = ?orig.as_socket(), "unrelated connection")
                    }
                    Err(error) => {
                        tracing::debug!(%error, "connection without an original destination")
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(ValidationError::NotCaptured {
        target: SocketAddr::V4(target),
        timeout: cfg.probe.timeout,
    })
}

/// Connects to `target` from a socket whose owner (the file credentials the owner match
/// reads) is the proxy's UID/GID. setfsuid/setfsgid change only this thread and are reset
/// right after the socket is created; without the privilege they are no-ops.
fn dial(target: SocketAddrV4, owner: (Option<u32>, Option<u32>)) -> std::io::Result<Socket> {
    let previous_gid = owner.1.map(|gid| nix::unistd::setfsgid(Gid::from_raw(gid)));
    let previous_uid = owner.0.map(|uid| nix::unistd::setfsuid(Uid::from_raw(uid)));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP));
    if let Some(uid) = previous_uid {
        nix::unistd::setfsuid(uid);
    }
    if let Some(gid) = previous_gid {
        nix::unistd::setfsgid(gid);
    }
    let socket = socket?;
    socket.connect_timeout(&SocketAddr::V4(target).into(), Duration::from_millis(500))?;
    Ok(socket)
}
