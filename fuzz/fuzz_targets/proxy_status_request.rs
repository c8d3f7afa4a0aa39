//! The proxy's status server (15020) on arbitrary bytes from the wire: hyper's HTTP/1 parser
//! and the status router (readiness, app probes, merged stats, `/quitquitquit`, `/drain`), from
//! a loopback or a remote peer. Never a panic; a lifecycle request from a remote peer is never
//! accepted.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::connect_info::MockConnectInfo;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use libfuzzer_sys::fuzz_target;
use outrigger_proxy::drain::Lifecycle;
use outrigger_proxy::metrics::Metrics;
use outrigger_proxy::status::probes::Probers;
use outrigger_proxy::status::{StatusState, status_router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Probes of a container whose ports nothing listens on: a probe fails at once.
const PROBERS: &str = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":1}},
"/app-health/web/livez":{"tcpSocket":{"port":1}},
"/app-health/web/startupz":{"grpc":{"port":1}}}"#;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&peer, wire)) = data.split_first() else {
        return;
    };
    let remote = peer & 1 == 1;
    let peer = if remote {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 40000)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000)
    };
    runtime().block_on(async {
        let (lifecycle, mut requests) = Lifecycle::new();
        let state = StatusState {
            lifecycle,
            metrics: Arc::new(Metrics::new()),
            probers: Arc::new(Probers::from_json(PROBERS).expect("probers")),
            scrape: None,
            app_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let router = status_router(state).layer(MockConnectInfo(peer));
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serve = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), TowerToHyperService::new(router));
        let talk = async {
            let _ = client.write_all(wire).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        let (_, _answer) = tokio::join!(serve, talk);
        if remote {
            assert!(
                requests.try_next().is_none(),
                "a remote peer's request reached the lifecycle"
            );
        }
    });
});
