//! gRPC through the proxy end to end: a tonic echo app per version (proto compiled by protox
//! in `build.rs`), a tonic client on HTTP/2 prior knowledge, routing by a header, the
//! `grpc_response_status` label from the trailers, and a gRPC fault abort.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

use crate::l7_request::{proxy_to, setup};
use crate::support::*;

mod echo {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("outrigger.test.echo");
}

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{SayReply, SayRequest};

const GRPC: &str = "10.96.1.40:8080";

struct App(&'static str);

#[tonic::async_trait]
impl Echo for App {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let message = request.into_inner().message;
        if message == "missing" {
            return Err(Status::not_found("no such message"));
        }
        Ok(Response::new(SayReply {
            message,
            version: self.0.to_owned(),
        }))
    }
}

async fn grpc_app(addr: SocketAddr, version: &'static str) {
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(App(version)))
            .serve(addr),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gRPC app on {addr} did not start");
}

/// The `grpc` Service (port name `grpc`) with v1 on 127.0.0.55 and v2 on 127.0.0.56.
fn grpc_yaml(port: u16) -> String {
    let pod = |version: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: grpc-{version}\n  namespace: req\n  labels: {{app: grpc, version: {version}}}\n\
             spec:\n  containers:\n  - name: app\n    image: req/grpc\n\
             status:\n  phase: Running\n  podIP: {ip}\n---\n"
        )
    };
    let mut text = pod("v1", "127.0.0.55") + &pod("v2", "127.0.0.56");
    text += &format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: grpc\n  namespace: req\n\
         spec:\n  clusterIP: 10.96.1.40\n  selector: {{app: grpc}}\n  ports:\n  - name: grpc\n    port: 8080\n    targetPort: {port}\n---\n"
    );
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: grpc, namespace: req}
spec:
  host: grpc
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: req}
spec:
  hosts: [grpc]
  http:
  - name: variant-b
    match: [{headers: {x-variant: {exact: b}}}]
    route: [{destination: {host: grpc, subset: v2}}]
  - name: unavailable
    match: [{headers: {x-fault: {exact: "yes"}}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: grpc, subset: v1}}]
  - route: [{destination: {host: grpc, subset: v1}}]
"#;
    text
}

fn say(message: &str, headers: &[(&'static str, &'static str)]) -> Request<SayRequest> {
    let mut request = Request::new(SayRequest {
        message: message.to_owned(),
    });
    for (name, value) in headers {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("metadata value"));
    }
    request
}

#[tokio::test]
async fn grpc_is_routed_by_header_and_counted_with_its_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = std::net::TcpListener::bind("127.0.0.55:0").expect("free port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    grpc_app(format!("127.0.0.55:{port}").parse().expect("addr"), "v1").await;
    grpc_app(format!("127.0.0.56:{port}").parse().expect("addr"), "v2").await;
    let (config, _) = setup(dir.path(), &grpc_yaml(port)).await;
    let proxy = proxy_to(&config, GRPC).await;
    let mut client = EchoClient::connect(format!("http://{}", proxy.outbound()))
        .await
        .expect("connect through the proxy");

    let v1 = client.say(say("hello", &[])).await.expect("v1 answers");
    assert_eq!(v1.get_ref().version, "v1");
    assert_eq!(v1.get_ref().message, "hello");
    let v2 = client
        .say(say("hello", &[("x-variant", "b")]))
        .await
        .expect("v2 answers");
    assert_eq!(v2.get_ref().version, "v2");

    let missing = client
        .say(say("missing", &[]))
        .await
        .expect_err("the app's NOT_FOUND");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let fault = client
        .say(say("hello", &[("x-fault", "yes")]))
        .await
        .expect_err("the fault's UNAVAILABLE");
    assert_eq!(fault.code(), Code::Unavailable, "{fault:?}");
    assert_eq!(fault.message(), "fault filter abort");

    let expected: [(&str, &[&str]); 4] = [
        (
            "0",
            &[r#"destination_version="v1""#, r#"response_flags="-""#],
        ),
        ("0", &[r#"destination_version="v2""#]),
        ("5", &[r#"destination_version="v1""#]),
        ("14", &[r#"response_flags="FI""#]),
    ];
    let scrape = async || http(proxy.stats(), "GET", "/stats/prometheus").await.1;
    // Each request is counted when its response has gone out: wait for the last one.
    let fi = [r#"grpc_response_status="14""#, r#"response_flags="FI""#];
    assert!(
        eventually(async || sample(&scrape().await, "istio_requests_total{", &fi).is_some()).await
    );
    let text = scrape().await;
    for (status, extra) in expected {
        let status = format!(r#"grpc_response_status="{status}""#);
        let mut labels = vec![
            status.as_str(),
            r#"request_protocol="grpc""#,
            r#"response_code="200""#,
            r#"destination_service_name="grpc""#,
        ];
        labels.extend_from_slice(extra);
        assert_eq!(
            sample(&text, "istio_requests_total{", &labels),
            Some(1.0),
            "{labels:?}: {text}"
        );
    }
}
