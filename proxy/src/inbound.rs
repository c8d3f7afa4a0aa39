//! Inbound capture (15006): redirected connections to the pod go to the local app from
//! 127.0.0.6 (`::6` for IPv6), which the pod's rules return instead of capturing again.

use std::io;
use std::net::{IpAddr, SocketAddr};

use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use tokio::net::TcpSocket;

use crate::addr::OrigDstAddr;
use crate::names::{INBOUND_SOURCE_V4, INBOUND_SOURCE_V6};

/// The passthrough source address for the family of the original destination.
pub fn upstream_source(orig_dst: &OrigDstAddr) -> Option<IpAddr> {
    Some(if orig_dst.0.is_ipv4() {
        IpAddr::V4(INBOUND_SOURCE_V4)
    } else {
        IpAddr::V6(INBOUND_SOURCE_V6)
    })
}

/// Binds `socket` to `ip` with the port left to `connect()` (`IP_BIND_ADDRESS_NO_PORT`), so
/// source ports are shared across destinations instead of being exhausted by a plain
/// `bind(ip:0)` when many connections to the app sit in TIME_WAIT.
pub fn bind_source(socket: &TcpSocket, ip: IpAddr) -> io::Result<()> {
    if let Err(error) = setsockopt(socket, IpBindAddressNoPort, &true) {
        tracing::debug!(%error, "IP_BIND_ADDRESS_NO_PORT unavailable; binding a port now");
    }
    socket.bind(SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_source_matches_the_family() {
        let v4 = OrigDstAddr("10.0.0.2:8080".parse().unwrap());
        let v6 = OrigDstAddr("[fd00::2]:8080".parse().unwrap());
        assert_eq!(upstream_source(&v4), Some("127.0.0.6".parse().unwrap()));
        assert_eq!(upstream_source(&v6), Some("::6".parse().unwrap()));
    }
}
