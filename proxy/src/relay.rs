//! Copies bytes both ways between two TCP connections with correct half-close.
//!
//! A FIN in one direction is forwarded as a FIN (`shutdown(Write)`) and the other direction keeps
//! flowing. A reset or error on one side resets the other. Buffers are only held while data is
//! moving, so an idle connection costs no buffer memory.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

/// Size of the buffer one direction holds while data is flowing.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// How bytes are moved between the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayMode {
    /// Read into a user-space buffer and write it out.
    Copy,
    /// Linux `splice(2)` through a pipe: no copy into user space.
    Splice,
}

/// Which way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// From the client that connected to the proxy towards the upstream.
    ToUpstream,
    /// From the upstream back to the client.
    ToClient,
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished with a FIN.
    Complete,
    /// The client side failed or reset; the upstream was reset.
    ClientError(io::ErrorKind),
    /// The upstream side failed or reset; the client was reset.
    UpstreamError(io::ErrorKind),
    /// The proxy closed the connection (termination grace expired).
    Cancelled,
}

impl CloseReason {
    /// Short label for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Complete => "complete",
            CloseReason::ClientError(_) => "client_error",
            CloseReason::UpstreamError(_) => "upstream_error",
            CloseReason::Cancelled => "cancelled",
        }
    }
}

/// What a finished relay moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOutcome {
    pub to_upstream: u64,
    pub to_client: u64,
    pub reason: CloseReason,
}

/// Relays until both directions finished, one side failed, or `cancel` fires.
/// `on_bytes` is called as data moves (for live metrics).
pub async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    mode: RelayMode,
    cancel: &CancellationToken,
    on_bytes: &(dyn Fn(Flow, u64) + Sync),
) -> RelayOutcome {
    let to_upstream = AtomicU64::new(0);
    let to_client = AtomicU64::new(0);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let count = |flow: Flow, n: u64| {
        match flow {
            Flow::ToUpstream => to_upstream.fetch_add(n, Ordering::Relaxed),
            Flow::ToClient => to_client.fetch_add(n, Ordering::Relaxed),
        };
        on_bytes(flow, n);
    };
    let forward = pump(
        &mut client_read,
        &mut upstream_write,
        Flow::ToUpstream,
        mode,
        &count,
    );
    let backward = pump(
        &mut upstream_read,
        &mut client_write,
        Flow::ToClient,
        mode,
        &count,
    );
    let both = async { tokio::try_join!(forward, backward) };
    let reason = tokio::select! {
        result = both => match result {
            Ok(_) => CloseReason::Complete,
            Err(PumpError { side: Side::Client, kind }) => CloseReason::ClientError(kind),
            Err(PumpError { side: Side::Upstream, kind }) => CloseReason::UpstreamError(kind),
        },
        () = cancel.cancelled() => CloseReason::Cancelled,
    };
    if matches!(
        reason,
        CloseReason::ClientError(_) | CloseReason::UpstreamError(_)
    ) {
        // One side failed: reset both, so the surviving peer sees what it would have seen
        // without the proxy. `forget` keeps the write halves from sending a FIN first.
        reset_on_drop(client_read.as_ref());
        reset_on_drop(upstream_read.as_ref());
        client_write.forget();
        upstream_write.forget();
    }
    RelayOutcome {
        to_upstream: to_upstream.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
        reason,
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Upstream,
}

#[derive(Debug)]
struct PumpError {
    side: Side,
    kind: io::ErrorKind,
}

/// Moves one direction; on EOF forwards the FIN and returns, so the other direction goes on.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    flow: Flow,
    mode: RelayMode,
    count: &(dyn Fn(Flow, u64) + Sync),
) -> Result<(), PumpError> {
    let (reader_side, writer_side) = match flow {
        Flow::ToUpstream => (Side::Client, Side::Upstream),
        Flow::ToClient => (Side::Upstream, Side::Client),
    };
    let failed = |side: Side| {
        move |e: io::Error| PumpError {
            side,
            kind: e.kind(),
        }
    };
    if mode == RelayMode::Splice {
        return crate::splice::pump(from, to, &|n| count(flow, n))
            .await
            .map_err(|e| match e {
                crate::splice::SpliceError::Read(e) => failed(reader_side)(e),
                crate::splice::SpliceError::Write(e) => failed(writer_side)(e),
            });
    }
    let mut buffer: Option<Vec<u8>> = None;
    loop {
        let buf = buffer.get_or_insert_with(|| Vec::with_capacity(BUFFER_SIZE));
        buf.clear();
        match from.try_read_buf(buf) {
            Ok(0) => return to.shutdown().await.map_err(failed(writer_side)),
            Ok(n) => {
                to.write_all(&buf[..n]).await.map_err(failed(writer_side))?;
                count(flow, n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Idle: give the buffer back before waiting.
                buffer = None;
                from.readable().await.map_err(failed(reader_side))?;
            }
            Err(e) => return Err(failed(reader_side)(e)),
        }
    }
}

/// Makes the socket send RST instead of FIN when it is finally closed.
pub fn reset_on_drop(stream: &TcpStream) {
    // Best effort: if setting linger fails the peer still sees a close, just a FIN.
    if let Err(error) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "cannot arm reset on close");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Returns (far end the test drives, near end handed to the relay).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (near, _) = listener.accept().await.unwrap();
        (far, near)
    }

    const MODES: [RelayMode; 2] = [RelayMode::Copy, RelayMode::Splice];

    fn start(
        mode: RelayMode,
        client_near: TcpStream,
        upstream_near: TcpStream,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<RelayOutcome> {
        tokio::spawn(
            async move { relay(client_near, upstream_near, mode, &cancel, &|_, _| {}).await },
        )
    }

    #[tokio::test]
    async fn half_close_from_the_client_keeps_the_response_flowing() {
        for mode in MODES {
            let (mut client, client_near) = socket_pair().await;
            let (mut server, upstream_near) = socket_pair().await;
            let relay = start(mode, client_near, upstream_near, CancellationToken::new());

            client.write_all(b"request body").await.unwrap();
            client.shutdown().await.unwrap();

            let mut received = Vec::new();
            server.read_to_end(&mut received).await.unwrap();
            assert_eq!(received, b"request body", "server sees the data, then EOF");

            // The server answers after the client's FIN: the other direction still works.
            let response = vec![7u8; 300_000];
            server.write_all(&response).await.unwrap();
            server.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, response);

            let outcome = relay.await.unwrap();
            assert_eq!(outcome.reason, CloseReason::Complete);
            assert_eq!(outcome.to_upstream, 12);
            assert_eq!(outcome.to_client, 300_000);
        }
    }

    #[tokio::test]
    async fn half_close_from_the_upstream_keeps_the_request_flowing() {
        for mode in MODES {
            let (mut client, client_near) = socket_pair().await;
            let (mut server, upstream_near) = socket_pair().await;
            let relay = start(mode, client_near, upstream_near, CancellationToken::new());

            server.write_all(b"banner").await.unwrap();
            server.shutdown().await.unwrap();
            let mut banner = Vec::new();
            client.read_to_end(&mut banner).await.unwrap();
            assert_eq!(banner, b"banner");

            client.write_all(b"still talking").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"still talking");
            assert_eq!(relay.await.unwrap().reason, CloseReason::Complete);
        }
    }

    #[tokio::test]
    async fn an_upstream_reset_resets_the_client() {
        for mode in MODES {
            let (mut client, client_near) = socket_pair().await;
            let (server, upstream_near) = socket_pair().await;
            let relay = start(mode, client_near, upstream_near, CancellationToken::new());

            reset_on_drop(&server);
            drop(server);

            let mut buf = [0u8; 16];
            let err = client
                .read(&mut buf)
                .await
                .expect_err("the client must see a reset, not a clean EOF");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            assert!(matches!(
                relay.await.unwrap().reason,
                CloseReason::UpstreamError(io::ErrorKind::ConnectionReset)
            ));
        }
    }

    #[tokio::test]
    async fn cancellation_closes_an_idle_connection() {
        for mode in MODES {
            let (mut client, client_near) = socket_pair().await;
            let (_server, upstream_near) = socket_pair().await;
            let cancel = CancellationToken::new();
            let relay = start(mode, client_near, upstream_near, cancel.clone());
            cancel.cancel();
            assert_eq!(relay.await.unwrap().reason, CloseReason::Cancelled);
            let mut buf = [0u8; 1];
            assert_eq!(client.read(&mut buf).await.unwrap(), 0, "client sees EOF");
        }
    }

    #[tokio::test]
    async fn live_byte_counts_are_reported_per_direction() {
        for mode in MODES {
            let (mut client, client_near) = socket_pair().await;
            let (mut server, upstream_near) = socket_pair().await;
            let seen = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
            let seen_in_relay = seen.clone();
            let relay = tokio::spawn(async move {
                let cancel = CancellationToken::new();
                let on_bytes = move |flow: Flow, n: u64| {
                    let mut seen = seen_in_relay.lock().unwrap();
                    match flow {
                        Flow::ToUpstream => seen.0 += n,
                        Flow::ToClient => seen.1 += n,
                    }
                };
                relay(client_near, upstream_near, mode, &cancel, &on_bytes).await
            });
            client.write_all(&[1u8; 1000]).await.unwrap();
            let mut buf = vec![0u8; 1000];
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(&[2u8; 10]).await.unwrap();
            let mut small = [0u8; 10];
            client.read_exact(&mut small).await.unwrap();
            assert_eq!(*seen.lock().unwrap(), (1000, 10), "counted while open");
            drop(client);
            drop(server);
            relay.await.unwrap();
        }
    }
}
