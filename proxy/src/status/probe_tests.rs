//! Probe execution against small in-test servers: HTTP (status, headers, HTTPS), TCP, gRPC.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::probes::{Probe, ProbeAction, Probers, run_probe};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An app whose `/ready` answers with a status the test controls.
async fn http_app() -> (SocketAddr, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let app = Router::new()
        .route(
            "/ready",
            get(|State(s): State<Arc<AtomicU16>>| async move {
                StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route(
            "/needs-header",
            get(|headers: HeaderMap| async move {
                if headers.get("x-probe").is_some_and(|v| v == "yes") {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .with_state(status.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, status)
}

fn http_probe(port: u16, path: &str) -> Probe {
    Probe {
        action: ProbeAction::Http {
            host: None,
            port,
            path: path.into(),
            https: false,
            headers: vec![],
        },
        timeout: Duration::from_secs(1),
    }
}

#[test]
fn probers_parse_the_injector_format() {
    let probers = Probers::from_json(
        r#"{"/app-health/web/readyz":{"httpGet":{"path":"ready","port":8080,"scheme":"HTTPS","httpHeaders":[{"name":"X-A","value":"b"}]},"timeoutSeconds":3},
            "/app-health/web/livez":{"tcpSocket":{"port":"8081"}},
            "/app-health/grpc/startupz":{"grpc":{"port":9090,"service":"svc"}}}"#,
    )
    .unwrap();
    assert_eq!(probers.len(), 3);
    assert_eq!(
        probers.get("/app-health/web/readyz"),
        Some(&Probe {
            action: ProbeAction::Http {
                host: None,
                port: 8080,
                path: "/ready".into(),
                https: true,
                headers: vec![("X-A".into(), "b".into())],
            },
            timeout: Duration::from_secs(3),
        })
    );
    assert_eq!(
        probers.get("/app-health/web/livez").unwrap().action,
        ProbeAction::Tcp {
            host: None,
            port: 8081
        }
    );
    assert_eq!(
        probers.get("/app-health/web/livez").unwrap().timeout,
        Duration::from_secs(1),
        "Kubernetes' default timeout"
    );
    assert_eq!(
        probers.get("/app-health/grpc/startupz").unwrap().action,
        ProbeAction::Grpc {
            port: 9090,
            service: Some("svc".into())
        }
    );
}

#[test]
fn bad_probers_name_the_probe_and_the_reason() {
    let err = Probers::from_json(r#"{"/app-health/web/readyz":{"httpGet":{"port":"http"}}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/app-health/web/readyz"), "{err}");
    assert!(
        err.contains("httpGet.port: 'http' is not a port number"),
        "{err}"
    );
    assert!(err.starts_with("ISTIO_KUBE_APP_PROBERS: "), "{err}");
    let err = Probers::from_json(r#"{"/p":{"exec":{"command":["true"]}}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one of"), "{err}");
    let err = Probers::from_json(r#"{"/p":{"httpGet":{"port":80,"scheme":"FTP"}}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("FTP"), "{err}");
}

#[tokio::test]
async fn http_probe_reflects_the_apps_readiness() {
    let (addr, status) = http_app().await;
    let probe = http_probe(addr.port(), "/ready");
    assert_eq!(run_probe(&probe, LOCALHOST).await.status, StatusCode::OK);
    status.store(503, Ordering::SeqCst);
    assert_eq!(
        run_probe(&probe, LOCALHOST).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    status.store(500, Ordering::SeqCst);
    assert_eq!(
        run_probe(&probe, LOCALHOST).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    status.store(302, Ordering::SeqCst);
    assert_eq!(
        run_probe(&probe, LOCALHOST).await.status,
        StatusCode::OK,
        "a redirect counts as success, as for the kubelet"
    );
}

#[tokio::test]
async fn http_probe_sends_the_recorded_headers() {
    let (addr, _) = http_app().await;
    let mut probe = http_probe(addr.port(), "/needs-header");
    assert_eq!(
        run_probe(&probe, LOCALHOST).await.status,
        StatusCode::BAD_REQUEST
    );
    if let ProbeAction::Http { headers, .. } = &mut probe.action {
        headers.push(("X-Probe".into(), "yes".into()));
    }
    assert_eq!(run_probe(&probe, LOCALHOST).await.status, StatusCode::OK);
}

#[tokio::test]
async fn http_probe_honours_the_timeout() {
    let (addr, _) = http_app().await;
    let mut probe = http_probe(addr.port(), "/slow");
    probe.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let result = run_probe(&probe, LOCALHOST).await;
    assert_eq!(result.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(result.detail.contains("timed out"), "{}", result.detail);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tcp_probe_connects_or_fails() {
    let (addr, _) = http_app().await;
    let probe = Probe {
        action: ProbeAction::Tcp {
            host: None,
            port: addr.port(),
        },
        timeout: Duration::from_secs(1),
    };
    assert_eq!(run_probe(&probe, LOCALHOST).await.status, StatusCode::OK);
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let probe = Probe {
        action: ProbeAction::Tcp {
            host: Some("127.0.0.1".into()),
            port: closed_port,
        },
        timeout: Duration::from_secs(1),
    };
    let result = run_probe(&probe, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).await;
    assert_eq!(result.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        result.detail.contains("cannot connect"),
        "{}",
        result.detail
    );
}

/// A gRPC health server answering `status` (1 = SERVING, 2 = NOT_SERVING) for service "web"
/// and NOT_FOUND (grpc-status 5) for any other service.
async fn grpc_app(status: u8) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let known = body.as_ref() == b"\x00\x00\x00\x00\x05\x0a\x03web";
                        let (frame, grpc_status) = if known {
                            (vec![0, 0, 0, 0, 2, 0x08, status], "0")
                        } else {
                            (vec![], "5")
                        };
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", grpc_status.parse().unwrap());
                        let body = Full::new(Bytes::from(frame))
                            .with_trailers(async move { Some(Ok(trailers)) });
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn grpc_probe(port: u16, service: &str) -> Probe {
    Probe {
        action: ProbeAction::Grpc {
            port,
            service: Some(service.into()),
        },
        timeout: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn grpc_probe_passes_only_when_serving() {
    let serving = grpc_app(1).await;
    let result = run_probe(&grpc_probe(serving.port(), "web"), LOCALHOST).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.detail);

    let not_serving = grpc_app(2).await;
    let result = run_probe(&grpc_probe(not_serving.port(), "web"), LOCALHOST).await;
    assert_eq!(result.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(result.detail.contains("not SERVING"), "{}", result.detail);

    let result = run_probe(&grpc_probe(serving.port(), "other"), LOCALHOST).await;
    assert_eq!(result.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(result.detail.contains("grpc-status 5"), "{}", result.detail);
}

#[tokio::test]
async fn https_probe_does_not_verify_the_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["app.local".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let status = if req.uri().path() == "/secure" {
                            200
                        } else {
                            404
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let mut probe = http_probe(addr.port(), "/secure");
    if let ProbeAction::Http { https, .. } = &mut probe.action {
        *https = true;
    }
    let result = run_probe(&probe, LOCALHOST).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.detail);
    if let ProbeAction::Http { path, .. } = &mut probe.action {
        *path = "/missing".into();
    }
    assert_eq!(
        run_probe(&probe, LOCALHOST).await.status,
        StatusCode::NOT_FOUND
    );
}
