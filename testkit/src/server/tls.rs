//! HTTPS for the fake API server: a throwaway CA and a server certificate for `127.0.0.1` and
//! `localhost` (rcgen), served with rustls over HTTP/1.1; the CA for a kubeconfig or a client.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The server side and what a client must trust.
pub(super) struct Tls {
    pub(super) acceptor: TlsAcceptor,
    pub(super) ca_pem: String,
    pub(super) ca_der: Vec<u8>,
}

pub(super) fn self_signed() -> anyhow::Result<Tls> {
    let ca_key = rcgen::KeyPair::generate().context("CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "outrigger-testkit CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).context("CA certificate")?;
    let server_key = rcgen::KeyPair::generate().context("server key")?;
    let server_cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .context("server params")?
            .signed_by(&server_key, &ca)
            .context("server certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .context("server TLS config")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
    })
}

/// Accepts TLS connections and serves `app` on each until the runtime ends.
pub(super) async fn serve(listener: TcpListener, acceptor: TlsAcceptor, app: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that fails the handshake is its test's failure, not the server's.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
        });
    }
}
