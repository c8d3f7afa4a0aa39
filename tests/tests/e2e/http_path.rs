//! HTTP from an app in pod a to an app in pod b crosses both proxies; what is not captured stays
//! uncaptured; the kubelet's rewritten probe reflects the app's readiness; metrics merge.

use outrigger_e2e::topology::metric_sum;

use crate::{stdout, two_pods};

const PROBERS: &str = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080},"timeoutSeconds":2},"/app-health/web/livez":{"tcpSocket":{"port":8080}}}"#;
const PROMETHEUS: &str = r#"{"scrape":"true","path":"/metrics","port":"8080"}"#;
const OPENED: &str = "istio_tcp_connections_opened_total";

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn http_request_crosses_both_proxies_and_probes_reflect_readiness() {
    let (topology, proxy_a, proxy_b) = two_pods(
        &[
            ("ISTIO_KUBE_APP_PROBERS", PROBERS),
            ("ISTIO_PROMETHEUS_ANNOTATIONS", PROMETHEUS),
        ],
        &[],
    );
    let b = topology.pod("b");
    let server_addr = b.addr(8080);
    let _server = topology
        .start_server("b", &["http-server", &server_addr])
        .expect("app server in b");
    let _local_only = topology
        .start_server("b", &["http-server", "127.0.0.1:8081"])
        .expect("localhost server in b");

    // The request from a's app reaches b's app with the right body.
    let out = topology
        .run_app("a", &["http-get", &server_addr, "/"])
        .expect("client in a");
    assert_eq!(
        stdout(&out),
        format!("200\nhello from {server_addr}\n"),
        "stderr: {}\nproxy a: {}\nproxy b: {}",
        String::from_utf8_lossy(&out.stderr),
        proxy_a.log_text(),
        proxy_b.log_text()
    );

    // a counted exactly one outbound connection, b exactly one inbound: nothing looped.
    // Outbound without a configuration: Istio's passthrough labels; inbound: the pod's ip:port.
    let passthrough = r#"destination_service_name="PassthroughCluster""#;
    let dst = format!(r#"destination_service="{server_addr}""#);
    let metrics_a = topology.metrics("a").expect("metrics of a");
    let metrics_b = topology.metrics("b").expect("metrics of b");
    assert_eq!(
        metric_sum(
            &metrics_a,
            OPENED,
            &[
                r#"reporter="source""#,
                passthrough,
                r#"source_workload="a""#
            ]
        ),
        1.0,
        "{metrics_a}"
    );
    assert_eq!(
        metric_sum(&metrics_a, OPENED, &[r#"reporter="destination""#]),
        0.0
    );
    assert_eq!(
        metric_sum(
            &metrics_b,
            OPENED,
            &[
                r#"reporter="destination""#,
                &dst,
                r#"destination_workload="b""#
            ]
        ),
        1.0,
        "{metrics_b}"
    );
    assert_eq!(
        metric_sum(&metrics_b, OPENED, &[r#"reporter="source""#]),
        0.0
    );

    // An app calling localhost and its own pod IP is not captured.
    let local = topology
        .run_app("b", &["http-get", "127.0.0.1:8081", "/"])
        .expect("localhost call in b");
    assert!(stdout(&local).starts_with("200\n"), "{}", stdout(&local));
    let own_ip = topology
        .run_app("b", &["http-get", &server_addr, "/"])
        .expect("own-IP call in b");
    assert!(stdout(&own_ip).starts_with("200\n"), "{}", stdout(&own_ip));
    let metrics_b = topology.metrics("b").expect("metrics of b");
    assert_eq!(
        metric_sum(&metrics_b, OPENED, &[]),
        1.0,
        "local calls captured: {metrics_b}"
    );

    // A connection to the proxy's own capture port that was not redirected is closed, not looped.
    let read = topology
        .pod("a")
        .ns
        .run(|| -> std::io::Result<usize> {
            use std::io::Read;
            let mut stream = std::net::TcpStream::connect("127.0.0.1:15001")?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            stream.read(&mut [0u8; 16])
        })
        .expect("enter a");
    assert!(matches!(read, Ok(0)), "closed by the proxy: {read:?}");
    let metrics_a = topology.metrics("a").expect("metrics of a");
    assert_eq!(
        metric_sum(
            &metrics_a,
            "outrigger_proxy_connect_errors_total",
            &[r#"reason="loop""#]
        ),
        1.0,
        "{metrics_a}"
    );
    assert_eq!(metric_sum(&metrics_a, OPENED, &[]), 1.0);

    // The kubelet (the node) probes through 15020 and sees the app's real readiness.
    let readyz = b.addr(15020);
    let probe = || {
        topology
            .from_node(&readyz, "GET", "/app-health/web/readyz")
            .expect("probe from the node")
    };
    assert_eq!(probe().0, 200, "{}", proxy_b.log_text());
    let livez = topology
        .from_node(&readyz, "GET", "/app-health/web/livez")
        .expect("livez");
    assert_eq!(livez.0, 200);
    let unready = topology
        .pod("b")
        .ns
        .run(|| outrigger_e2e::http::request(&server_addr, "POST", "/admin/unready"))
        .expect("enter b")
        .expect("make the app unready");
    assert_eq!(unready.0, 200);
    assert_eq!(probe().0, 503, "probe reflects the unready app");
    topology
        .pod("b")
        .ns
        .run(|| outrigger_e2e::http::request(&server_addr, "POST", "/admin/ready"))
        .expect("enter b")
        .expect("make the app ready");
    assert_eq!(probe().0, 200);
    assert_eq!(
        topology
            .from_node(&readyz, "GET", "/app-health/other/readyz")
            .expect("unknown probe")
            .0,
        404
    );

    // Merged metrics on 15020: the proxy's and the app's.
    let (status, merged) = topology
        .from_node(&readyz, "GET", "/stats/prometheus")
        .expect("merged metrics");
    assert_eq!(status, 200);
    assert!(merged.contains("e2e_app_requests_total"), "{merged}");
    assert!(merged.contains(OPENED), "{merged}");
}
