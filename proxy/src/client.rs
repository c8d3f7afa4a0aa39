//! A minimal one-shot HTTP client (HTTP/1.1, optional TLS without verification, or cleartext
//! HTTP/2) for app probes, app metric scrapes and the `wait`/`drain` subcommands.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpSocket;

/// Why a request did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot bind the source address {0}")]
    Bind(IpAddr, #[source] io::Error),
    #[error("cannot connect to {0}")]
    Connect(SocketAddr, #[source] io::Error),
    #[error("TLS handshake with {0} failed")]
    Tls(SocketAddr, #[source] io::Error),
    #[error("HTTP exchange with {0} failed")]
    Http(SocketAddr, #[source] hyper::Error),
}

/// How to talk to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    /// HTTP/1.1 over TLS; the certificate is not verified (as the kubelet does for probes).
    Https,
    /// Cleartext HTTP/2 with prior knowledge (gRPC).
    Http2,
}

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Opens a TCP connection to `target`, from `source` when given.
pub async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> Result<tokio::net::TcpStream, ClientError> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ClientError::Connect(target, e))?;
    if let Some(ip) = source {
        crate::inbound::bind_source(&socket, ip).map_err(|e| ClientError::Bind(ip, e))?;
    }
    socket
        .connect(target)
        .await
        .map_err(|e| ClientError::Connect(target, e))
}

/// Sends one request and reads the whole response. The caller bounds it with a timeout.
pub async fn send(
    target: SocketAddr,
    source: Option<IpAddr>,
    wire: Wire,
    request: Request<Full<Bytes>>,
) -> Result<Reply, ClientError> {
    let stream = connect(target, source).await?;
    match wire {
        Wire::Http1 => http1(target, TokioIo::new(stream), request).await,
        Wire::Https => {
            let server_name = request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| ServerName::try_from(h.split(':').next()?.to_owned()).ok())
                .unwrap_or(ServerName::IpAddress(target.ip().into()));
            let tls = tokio_rustls::TlsConnector::from(insecure_tls_config())
                .connect(server_name, stream)
                .await
                .map_err(|e| ClientError::Tls(target, e))?;
            http1(target, TokioIo::new(tls), request).await
        }
        Wire::Http2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| ClientError::Http(target, e))?;
            tokio::spawn(conn);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::Http(target, e))?;
            collect(target, response).await
        }
    }
}

async fn http1<T>(
    target: SocketAddr,
    io: TokioIo<T>,
    request: Request<Full<Bytes>>,
) -> Result<Reply, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Http(target, e))?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(target, e))?;
    collect(target, response).await
}

async fn collect(
    target: SocketAddr,
    response: http::Response<hyper::body::Incoming>,
) -> Result<Reply, ClientError> {
    let (parts, body) = response.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| ClientError::Http(target, e))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

fn insecure_tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Kubelet semantics for HTTPS probes: the connection is encrypted, the peer is not verified.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
