//! Protocol detection for `auto` destinations (Istio's sniffing): the first bytes the client
//! sends, peeked (never consumed), decide between HTTP (an HTTP/1.x method and a space, or
//! the HTTP/2 connection preface) and TCP. The wait is bounded: a client that sends nothing
//! in time, as the client of a server-first protocol (MySQL, SMTP) does, is relayed as TCP,
//! so such a protocol is late by the timeout but never hangs.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The methods of RFC 9110 and PATCH, each followed by a space on the request line.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];
/// How long to wait between two peeks while the bytes so far could still be HTTP.
const REPEEK: Duration = Duration::from_millis(2);

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    Http1,
    Http2,
    NotHttp,
    /// A prefix of a method or of the preface: more bytes needed.
    NeedMore,
}

/// Classifies the first bytes of a connection.
pub fn sniff(bytes: &[u8]) -> Sniff {
    if bytes.is_empty() {
        return Sniff::NeedMore;
    }
    if bytes.starts_with(H2_PREFACE) {
        return Sniff::Http2;
    }
    if METHODS.iter().any(|m| bytes.starts_with(m)) {
        return Sniff::Http1;
    }
    let prefix_of = |whole: &[u8]| whole.starts_with(bytes);
    if prefix_of(H2_PREFACE) || METHODS.iter().any(|m| prefix_of(m)) {
        return Sniff::NeedMore;
    }
    Sniff::NotHttp
}

/// The outcome of detection on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http,
    Tcp,
    /// Nothing decisive within the timeout: relayed as TCP (and logged by the caller).
    TimedOut,
}

/// Peeks at the client's first bytes until they decide, or `timeout` passes (`None`: wait
/// as long as it takes, Istio's `protocolDetectionTimeout: 0s`).
pub async fn detect(stream: &TcpStream, timeout: Option<Duration>) -> Detected {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let peeked = match deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
                    Ok(peeked) => peeked,
                    Err(_) => return Detected::TimedOut,
                }
            }
            None => stream.peek(&mut buf).await,
        };
        let n = match peeked {
            // Closed before a byte, or an error: the relay sees the same.
            Ok(0) | Err(_) => return Detected::Tcp,
            Ok(n) => n,
        };
        match sniff(&buf[..n]) {
            Sniff::Http1 | Sniff::Http2 => return Detected::Http,
            Sniff::NotHttp => return Detected::Tcp,
            Sniff::NeedMore => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Detected::TimedOut;
                }
                // Peeking again at once would return the same bytes: wait a little.
                let wake = now + REPEEK;
                tokio::time::sleep_until(deadline.map_or(wake, |d| d.min(wake))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_the_preface_are_http() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.0\r\n",
            b"DELETE /a",
            b"PATCH ",
            b"OPTIONS * HTTP/1.1",
        ] {
            assert_eq!(
                sniff(line),
                Sniff::Http1,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(sniff(H2_PREFACE), Sniff::Http2);
    }

    #[test]
    fn prefixes_wait_and_everything_else_is_tcp() {
        for partial in [&b"G"[..], b"GE", b"PO", b"PRI * HTTP/2", b"DELET"] {
            assert_eq!(sniff(partial), Sniff::NeedMore, "{partial:?}");
        }
        // TLS ClientHello, a MySQL client's first bytes, lowercase, no space after the method.
        for other in [
            &[0x16, 0x03, 0x01][..],
            b"\x00\x00\x00\x01",
            b"get / HTTP/1.1",
            b"GETX",
        ] {
            assert_eq!(sniff(other), Sniff::NotHttp, "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out_and_a_talking_one_does_not() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let started = Instant::now();
        let outcome = detect(&server, Some(Duration::from_millis(100))).await;
        assert_eq!(outcome, Detected::TimedOut);
        assert!(started.elapsed() < Duration::from_millis(600));

        // Bytes in two pieces: decided once the method is complete, nothing consumed.
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(b"GE").await.expect("write");
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client
                .write_all(b"T / HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            client
        });
        assert_eq!(
            detect(&server, Some(Duration::from_secs(2))).await,
            Detected::Http
        );
        let _client = writer.await.expect("writer");
        let mut buf = [0u8; 3];
        let n = server.peek(&mut buf).await.expect("peek");
        assert_eq!(&buf[..n], b"GET");

        // A prefix that never completes: timed out at the deadline, not spinning past it.
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        stalled.write_all(b"PO").await.expect("write");
        let started = Instant::now();
        let outcome = detect(&server, Some(Duration::from_millis(100))).await;
        assert_eq!(outcome, Detected::TimedOut);
        assert!(started.elapsed() < Duration::from_millis(600));
    }
}
