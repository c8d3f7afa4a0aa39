//! The load generator: N keep-alive HTTPS/1.1 connections trusting only the injector's CA,
//! either as fast as possible (closed loop) or at a fixed total rate (open loop, latency measured
//! from the scheduled send time so a stall is not hidden). The connections take turns through
//! one pool of pre-built reviews; with [`Check::Review`] every answer must fit its request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::report::Run;
use injector_load::reviews::Review;

/// What an answer must satisfy to count as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// HTTP 2xx (the canned server answers every review the same way).
    Status,
    /// HTTP 2xx and an injection for the request's uid ([`Review::check`]).
    Review,
}

/// The reviews, handed out in turn to whichever connection sends next.
#[derive(Debug, Clone)]
pub struct Pool {
    reviews: Arc<[Review]>,
    next: Arc<AtomicUsize>,
    check: Check,
}

impl Pool {
    pub fn new(reviews: Arc<[Review]>, check: Check) -> Pool {
        Pool {
            reviews,
            next: Arc::new(AtomicUsize::new(0)),
            check,
        }
    }

    fn next(&self) -> &Review {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.reviews[i % self.reviews.len()]
    }

    /// Send the next review on `conn` and check the answer.
    async fn send(&self, conn: &mut Conn) -> anyhow::Result<()> {
        let review = self.next();
        let answer = conn.send(&review.body).await?;
        if self.check == Check::Review {
            review.check(&answer).map_err(|mismatch| {
                anyhow::anyhow!(
                    "answer to uid {} does not fit ({mismatch:?}): {}",
                    review.uid,
                    String::from_utf8_lossy(&answer[..answer.len().min(300)])
                )
            })?;
        }
        Ok(())
    }
}

/// Latencies and failures of one connection.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, result: anyhow::Result<()>, latency: impl FnOnce() -> Duration) {
        match result {
            Ok(()) => self.latencies.push(latency()),
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
}

#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// One request; the whole response body is read.
    async fn send(&mut self, body: &Bytes) -> anyhow::Result<Bytes> {
        self.sender.ready().await?;
        let request = hyper::Request::post("/inject")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}");
        }
        Ok(bytes)
    }
}

impl Client {
    pub fn new(ca: &Path) -> anyhow::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).context("CA file")? {
            roots.add(cert.context("CA PEM")?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn connect(&self, addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    /// One request on a fresh connection; returns the response body.
    pub async fn one(&self, addr: SocketAddr, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut conn = self.connect(addr).await?;
        Ok(conn.send(&Bytes::copy_from_slice(body)).await?.to_vec())
    }

    /// `connections` loops sending back to back for `duration`.
    pub async fn closed_loop(
        &self,
        addr: SocketAddr,
        pool: &Pool,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let mut conns = Vec::new();
        for _ in 0..connections {
            conns.push(self.connect(addr).await?);
        }
        let start = Instant::now();
        let end = start + duration;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while Instant::now() < end {
                        let sent = Instant::now();
                        tally.record(pool.send(&mut conn).await, || sent.elapsed());
                    }
                    tally
                })
            })
            .collect();
        collect(tasks, start).await
    }

    /// `rate` requests/s in total, spread evenly over `connections`, for `duration`.
    pub async fn fixed_rate(
        &self,
        addr: SocketAddr,
        pool: &Pool,
        connections: usize,
        rate: u64,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let mut conns = Vec::new();
        for _ in 0..connections {
            conns.push(self.connect(addr).await?);
        }
        let per_conn = Duration::from_secs_f64(connections as f64 / rate as f64);
        let start = tokio::time::Instant::now();
        let end = start + duration;
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let pool = pool.clone();
                // Stagger the connections across one period.
                let first = start + per_conn.mul_f64(i as f64 / connections as f64);
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut scheduled = first;
                    while scheduled < end {
                        tokio::time::sleep_until(scheduled).await;
                        tally.record(pool.send(&mut conn).await, || scheduled.elapsed());
                        scheduled += per_conn;
                    }
                    tally
                })
            })
            .collect();
        collect(tasks, start.into_std()).await
    }
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    start: Instant,
) -> anyhow::Result<Run> {
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies.extend(tally.latencies);
        all.errors += tally.errors;
        all.first_error = all.first_error.or(tally.first_error);
    }
    let mut run = Run::new(start.elapsed(), all.latencies, all.errors);
    run.first_error = all.first_error;
    Ok(run)
}
