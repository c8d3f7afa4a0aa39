//! The seam that reads a redirected connection's original destination.
//!
//! Production reads `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` through socket2; tests replace it
//! with a fixed address so the data path can be exercised without iptables or root.

use std::io;

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::addr::OrigDstAddr;

/// Why the original destination could not be read. The connection is closed, never guessed.
#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    #[error("cannot read the local address of the accepted socket")]
    LocalAddr(#[source] io::Error),
    #[error("the kernel has no original destination for this connection (not redirected?)")]
    Read(#[source] io::Error),
    #[error("the original destination is not an IP socket address")]
    NotInet,
}

/// Source of the original destination of an accepted connection.
pub trait OrigDstSource: Send + Sync + std::fmt::Debug + 'static {
    fn orig_dst(&self, stream: &TcpStream) -> Result<OrigDstAddr, OrigDstError>;
}

/// Reads the original destination the NAT table recorded (REDIRECT mode).
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketOrigDst;

impl OrigDstSource for SocketOrigDst {
    fn orig_dst(&self, stream: &TcpStream) -> Result<OrigDstAddr, OrigDstError> {
        let local = stream.local_addr().map_err(OrigDstError::LocalAddr)?;
        let sock = SockRef::from(stream);
        let raw = if local.is_ipv4() {
            sock.original_dst_v4()
        } else {
            sock.original_dst_v6()
        }
        .map_err(OrigDstError::Read)?;
        raw.as_socket()
            .map(OrigDstAddr)
            .ok_or(OrigDstError::NotInet)
    }
}

/// Always answers the same address: the test double.
#[derive(Debug, Clone, Copy)]
pub struct FixedOrigDst(pub OrigDstAddr);

impl OrigDstSource for FixedOrigDst {
    fn orig_dst(&self, _stream: &TcpStream) -> Result<OrigDstAddr, OrigDstError> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_has_no_original_destination_or_its_own() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // Without a NAT entry the kernel either has no record (error) or reports the
        // listener's own address: both are treated as "not redirected" by the caller.
        match SocketOrigDst.orig_dst(&accepted) {
            Err(OrigDstError::Read(_)) => {}
            Ok(found) => assert_eq!(found.0, addr),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
