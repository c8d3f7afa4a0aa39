//! TLS handshake failures: counted by class in `outrigger_injector_tls_handshake_failures_total`
//! and logged at `warn` with the peer and the reason, at most one line per peer address and
//! class per [`LOG_INTERVAL`] (the next line says how many were left out), so a port scanner
//! or a client with the wrong CA cannot flood the log.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::Metrics;

/// One log line per peer address and class at most this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peers remembered at most; past it, expired entries are dropped, and a new peer's failures
/// are only counted until room frees up.
pub const MAX_PEERS: usize = 4096;

/// Why a handshake failed, as the metric's `reason` label (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// No handshake within the read timeout.
    Timeout,
    /// The peer closed or reset the connection before the handshake ended (a port scan, a
    /// health check of the TCP port, a client giving up).
    Closed,
    /// The TLS layer refused the peer (unknown CA on its side, no common protocol or cipher,
    /// not TLS at all).
    Tls,
    /// Any other socket error.
    Io,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Class::Timeout => "timeout",
            Class::Closed => "closed",
            Class::Tls => "tls",
            Class::Io => "io",
        }
    }

    /// The class of a failed `accept`.
    pub fn of(error: &io::Error) -> Class {
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Class::Closed,
            io::ErrorKind::InvalidData => Class::Tls,
            io::ErrorKind::TimedOut => Class::Timeout,
            _ => Class::Io,
        }
    }
}

/// The rate limiter of the log lines: per (peer address, class), when the last line was
/// written and how many failures were left out since.
#[derive(Debug, Default)]
pub struct Limiter {
    peers: HashMap<(IpAddr, Class), (Instant, u64)>,
}

impl Limiter {
    /// Whether to write a line for this failure now; `Some(n)` with the failures of this peer
    /// and class left out since its last line.
    pub fn admit(&mut self, peer: IpAddr, class: Class, now: Instant) -> Option<u64> {
        if let Some((last, left_out)) = self.peers.get_mut(&(peer, class)) {
            if now.duration_since(*last) < LOG_INTERVAL {
                *left_out += 1;
                return None;
            }
            let skipped = *left_out;
            *last = now;
            *left_out = 0;
            return Some(skipped);
        }
        if self.peers.len() >= MAX_PEERS {
            self.peers
                .retain(|_, (last, _)| now.duration_since(*last) < LOG_INTERVAL);
            if self.peers.len() >= MAX_PEERS {
                return None;
            }
        }
        self.peers.insert((peer, class), (now, 0));
        Some(0)
    }
}

/// Counts and logs the handshake failures of one listener.
#[derive(Debug, Clone)]
pub struct HandshakeLog {
    metrics: Arc<Metrics>,
    limiter: Arc<Mutex<Limiter>>,
}

impl HandshakeLog {
    pub fn new(metrics: Arc<Metrics>) -> HandshakeLog {
        HandshakeLog {
            metrics,
            limiter: Arc::new(Mutex::new(Limiter::default())),
        }
    }

    /// Count the failure; log it unless this peer's class was logged within the interval.
    pub fn failed(&self, peer: SocketAddr, class: Class, reason: &dyn std::fmt::Display) {
        self.metrics.handshake_failed(class.label());
        let admitted = match self.limiter.lock() {
            Ok(mut limiter) => limiter.admit(peer.ip(), class, Instant::now()),
            // A panic elsewhere while holding the lock: still count, never log-flood.
            Err(_) => None,
        };
        if let Some(left_out) = admitted {
            tracing::warn!(
                %peer,
                class = class.label(),
                reason = %reason,
                left_out,
                interval_seconds = LOG_INTERVAL.as_secs(),
                "TLS handshake failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_line_per_peer_and_class_per_interval_then_the_count_left_out() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        assert_eq!(limiter.admit(ip(1), Class::Closed, start), Some(0));
        for i in 1..=500u64 {
            let at = start + Duration::from_millis(i);
            assert_eq!(limiter.admit(ip(1), Class::Closed, at), None);
        }
        // Another class or another peer has its own line.
        assert_eq!(limiter.admit(ip(1), Class::Tls, start), Some(0));
        assert_eq!(limiter.admit(ip(2), Class::Closed, start), Some(0));
        assert_eq!(
            limiter.admit(ip(1), Class::Closed, start + LOG_INTERVAL),
            Some(500)
        );
        assert_eq!(
            limiter.admit(ip(1), Class::Closed, start + LOG_INTERVAL),
            None
        );
    }

    #[test]
    fn the_set_of_peers_is_bounded() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        for n in 0..MAX_PEERS as u32 {
            let peer = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            assert_eq!(limiter.admit(peer, Class::Closed, start), Some(0));
        }
        let newcomer = IpAddr::from([192, 168, 0, 1]);
        assert_eq!(limiter.admit(newcomer, Class::Closed, start), None);
        assert_eq!(limiter.peers.len(), MAX_PEERS);
        // Once the old entries expire there is room again.
        assert_eq!(
            limiter.admit(newcomer, Class::Closed, start + LOG_INTERVAL),
            Some(0)
        );
        assert_eq!(limiter.peers.len(), 1);
    }

    #[test]
    fn classes_of_accept_errors() {
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(Class::of(&eof), Class::Closed);
        let tls = io::Error::new(io::ErrorKind::InvalidData, "received corrupt message");
        assert_eq!(Class::of(&tls), Class::Tls);
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(Class::of(&other), Class::Io);
    }
}
