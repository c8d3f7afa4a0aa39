//! The load generator: N keep-alive HTTPS/1.1 connections trusting only the injector's CA,
//! either as fast as possible (closed loop) or at a fixed total rate (open loop, latency measured
//! from the scheduled send time so a stall is not hidden).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
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
        body: &[u8],
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let body = Bytes::copy_from_slice(body);
        let mut conns = Vec::new();
        for _ in 0..connections {
            conns.push(self.connect(addr).await?);
        }
        let start = Instant::now();
        let end = start + duration;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let body = body.clone();
                tokio::spawn(async move {
                    let (mut latencies, mut errors) = (Vec::new(), 0u64);
                    while Instant::now() < end {
                        let sent = Instant::now();
                        match conn.send(&body).await {
                            Ok(_) => latencies.push(sent.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        collect(tasks, start).await
    }

    /// `rate` requests/s in total, spread evenly over `connections`, for `duration`.
    pub async fn fixed_rate(
        &self,
        addr: SocketAddr,
        body: &[u8],
        connections: usize,
        rate: u64,
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let body = Bytes::copy_from_slice(body);
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
                let body = body.clone();
                // Stagger the connections across one period.
                let first = start + per_conn.mul_f64(i as f64 / connections as f64);
                tokio::spawn(async move {
                    let (mut latencies, mut errors) = (Vec::new(), 0u64);
                    let mut scheduled = first;
                    while scheduled < end {
                        tokio::time::sleep_until(scheduled).await;
                        match conn.send(&body).await {
                            Ok(_) => latencies.push(scheduled.elapsed()),
                            Err(_) => errors += 1,
                        }
                        scheduled += per_conn;
                    }
                    (latencies, errors)
                })
            })
            .collect();
        collect(tasks, start.into_std()).await
    }
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>,
    start: Instant,
) -> anyhow::Result<Run> {
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    Ok(Run::new(start.elapsed(), all, errors))
}
