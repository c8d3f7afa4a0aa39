//! The `outrigger-pilot` binary on SIGTERM: it exits within the drain period even while a
//! proxy's xDS stream stays open (a stream never ends by itself, so a graceful server alone
//! would wait for Kubernetes' SIGKILL).

use std::process::Stdio;
use std::time::{Duration, Instant};

use outrigger_pilot::index::DESTINATION_TYPE;
use outrigger_xds_api::envoy::config::core::v3::Node;
use outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use outrigger_xds_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::api_server;

const STOREFRONT: &str = "sidecar~10.244.1.30~storefront-7b9c-xyz12.shop~shop.svc.cluster.local";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_pilot_within_the_drain_period_while_a_stream_is_open() {
    let api = api_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("kubeconfig");
    let xds = free_port();
    let mut pilot = tokio::process::Command::new(env!("CARGO_BIN_EXE_outrigger-pilot"))
        .env("KUBECONFIG", &kubeconfig)
        .args([
            format!("--xds-address=127.0.0.1:{xds}"),
            format!("--monitoring-address=127.0.0.1:{}", free_port()),
            "--insecure-skip-auth".to_owned(),
            "--shutdown-drain=1s".to_owned(),
            "--log-format=text".to_owned(),
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start outrigger-pilot");

    let url = format!("http://127.0.0.1:{xds}");
    let mut client = None;
    for _ in 0..250 {
        if let Ok(c) = AggregatedDiscoveryServiceClient::connect(url.clone()).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.expect("pilot's xDS port opens within 5 s");
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: STOREFRONT.to_owned(),
            cluster: "outrigger".to_owned(),
        }),
        type_url: DESTINATION_TYPE.to_owned(),
        resource_names_subscribe: vec!["catalog.shop.svc.cluster.local:8080".to_owned()],
        ..Default::default()
    })
    .await
    .expect("subscribe");
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream accepted")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a response within 10 s")
        .expect("a response, not an error")
        .expect("the stream is open");
    assert_eq!(first.type_url, DESTINATION_TYPE);

    // The stream stays open (the sender `tx` is alive) while pilot is told to stop.
    let pid = nix::unistd::Pid::from_raw(pilot.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let sent = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), pilot.wait())
        .await
        .expect("pilot exits within 10 s of SIGTERM")
        .expect("wait");
    let took = sent.elapsed();
    let mut log = String::new();
    pilot
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .await
        .expect("read stderr");
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM with a 1 s drain; log:\n{log}"
    );
    assert!(
        log.contains("drain period"),
        "the log says why pilot exited with streams open:\n{log}"
    );
    drop(tx);
}
