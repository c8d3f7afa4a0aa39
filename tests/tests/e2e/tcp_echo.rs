//! Plain TCP through both proxies, with half-close: the server answers only after the client's
//! FIN, so the echo arrives only if the FIN crossed both proxies and the other direction stayed
//! open.

use outrigger_e2e::topology::metric_sum;

use crate::{stdout, two_pods};

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn tcp_echo_with_half_close_through_both_proxies() {
    echo_through_both_proxies("copy");
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn tcp_echo_with_half_close_through_both_proxies_with_splice() {
    echo_through_both_proxies("splice");
}

fn echo_through_both_proxies(relay: &str) {
    let (topology, proxy_a, proxy_b) = two_pods(&[], &["--relay", relay]);
    let server = topology.pod("b").addr(9000);
    let _echo = topology
        .start_server("b", &["echo-server", &server, "after-eof"])
        .expect("echo server in b");
    let out = topology
        .run_app("a", &["echo-client", &server, "1000000"])
        .expect("echo client in a");
    assert_eq!(
        stdout(&out),
        "ok 1000000\n",
        "stderr: {}\nproxy a: {}\nproxy b: {}",
        String::from_utf8_lossy(&out.stderr),
        proxy_a.log_text(),
        proxy_b.log_text()
    );
    // Outbound without a configuration: Istio's passthrough labels; inbound: the pod's ip:port.
    let passthrough = r#"destination_service_name="PassthroughCluster""#;
    let dst = format!(r#"destination_service="{server}""#);
    let metrics_a = topology.metrics("a").expect("metrics of a");
    assert_eq!(
        metric_sum(
            &metrics_a,
            "istio_tcp_received_bytes_total",
            &[r#"reporter="source""#, passthrough]
        ),
        1_000_000.0
    );
    assert_eq!(
        metric_sum(
            &metrics_a,
            "istio_tcp_sent_bytes_total",
            &[r#"reporter="source""#, passthrough]
        ),
        1_000_000.0
    );
    let metrics_b = topology.metrics("b").expect("metrics of b");
    assert_eq!(
        metric_sum(
            &metrics_b,
            "istio_tcp_connections_closed_total",
            &[r#"reporter="destination""#, &dst]
        ),
        1.0,
        "{metrics_b}"
    );
}
