//! Prometheus metrics with Istio's standard TCP names, plus the proxy's own gauges.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::addr::OrigDstAddr;
use crate::workload::{UNKNOWN, Workload};

/// Which side of the connection this proxy sits on (Istio's `reporter` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Redirected outbound traffic of the local app: `reporter="source"`.
    Outbound,
    /// Redirected inbound traffic to the local app: `reporter="destination"`.
    Inbound,
}

impl Direction {
    pub fn reporter(self) -> &'static str {
        match self {
            Direction::Outbound => "source",
            Direction::Inbound => "destination",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Labels of Istio's `istio_tcp_*` metrics that can be derived without a control plane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_port: String,
    pub request_protocol: &'static str,
    pub connection_security_policy: &'static str,
}

/// Istio's `destination_service_name` of traffic to a destination it does not know
/// (`ALLOW_ANY`): the passthrough cluster.
pub const PASSTHROUGH_CLUSTER: &str = outrigger_api::names::networking::PASSTHROUGH_CLUSTER;

impl TcpLabels {
    /// Labels for one connection: our own workload on our side and, outbound, the destination
    /// as Istio labels one it does not know (`destination_service="unknown"`,
    /// `destination_service_name="PassthroughCluster"`, no port), so any number of distinct
    /// destinations adds no series; [`TcpLabels::service`] names a known one. Inbound, our
    /// workload is the destination and the address is the pod's own `ip:port` (bounded by
    /// the ports the app listens on: a connection is counted only once the app accepted it).
    pub fn new(direction: Direction, workload: &Workload, orig_dst: &OrigDstAddr) -> Self {
        let ours = (workload.name.clone(), workload.namespace.clone());
        let theirs = (UNKNOWN.to_owned(), UNKNOWN.to_owned());
        let ((source_workload, source_ns), (dest_workload, dest_ns)) = match direction {
            Direction::Outbound => (ours, theirs),
            Direction::Inbound => (theirs, ours),
        };
        let (service, service_name, port) = match direction {
            Direction::Outbound => (
                UNKNOWN.to_owned(),
                PASSTHROUGH_CLUSTER.to_owned(),
                UNKNOWN.to_owned(),
            ),
            Direction::Inbound => (
                orig_dst.0.to_string(),
                orig_dst.0.ip().to_string(),
                orig_dst.0.port().to_string(),
            ),
        };
        TcpLabels {
            reporter: direction.reporter(),
            source_workload,
            source_workload_namespace: source_ns,
            destination_workload: dest_workload,
            destination_workload_namespace: dest_ns,
            destination_service: service,
            destination_service_name: service_name,
            destination_port: port,
            request_protocol: "tcp",
            connection_security_policy: "none",
        }
    }

    /// A destination refused under `REGISTRY_ONLY` (Istio's `BlackHoleCluster`).
    pub fn black_hole(mut self) -> Self {
        let name = outrigger_api::names::networking::BLACK_HOLE_CLUSTER;
        self.destination_service = name.to_owned();
        self.destination_service_name = name.to_owned();
        self
    }

    /// A destination of the configuration in force: its FQDN, Service name and port.
    pub fn service(mut self, host: &str, name: &str, port: u16) -> Self {
        self.destination_service = host.to_owned();
        self.destination_service_name = name.to_owned();
        self.destination_port = port.to_string();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectErrorLabels {
    pub direction: &'static str,
    pub reason: &'static str,
}

/// Why a redirected connection could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The original destination could not be read.
    OrigDst,
    /// The original destination is the proxy itself.
    Loop,
    Refused,
    Timeout,
    /// Any other connect failure (unreachable, bind failure, ...).
    Other,
}

impl ConnectError {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectError::OrigDst => "orig_dst",
            ConnectError::Loop => "loop",
            ConnectError::Refused => "refused",
            ConnectError::Timeout => "timeout",
            ConnectError::Other => "other",
        }
    }
}

/// Counters of one open connection, fetched once so the data path does no label lookups.
#[derive(Debug)]
pub struct ConnectionMetrics {
    received: Counter,
    sent: Counter,
    closed: Counter,
    active: Gauge,
}

impl ConnectionMetrics {
    /// Bytes from the client towards the upstream (the request side).
    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    /// Bytes from the upstream back to the client (the response side).
    pub fn sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.closed.inc();
        self.active.dec();
    }
}

/// All metrics of one proxy process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent_bytes: Family<TcpLabels, Counter>,
    received_bytes: Family<TcpLabels, Counter>,
    active: Family<DirectionLabels, Gauge>,
    connect_errors: Family<ConnectErrorLabels, Counter>,
    refused_admin: Family<PathLabels, Counter>,
    http_refused: Counter,
    /// Request metrics and the configuration source's counters.
    pub l7: crate::l7::telemetry::L7Metrics,
    /// The discovery client's (registered even without one: all zero).
    pub discovery: crate::discovery::DiscoveryMetrics,
}

/// Labels of a refused status-port request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let opened = Family::<TcpLabels, Counter>::default();
        let closed = Family::<TcpLabels, Counter>::default();
        let sent_bytes = Family::<TcpLabels, Counter>::default();
        let received_bytes = Family::<TcpLabels, Counter>::default();
        let active = Family::<DirectionLabels, Gauge>::default();
        let connect_errors = Family::<ConnectErrorLabels, Counter>::default();
        let refused_admin = Family::<PathLabels, Counter>::default();
        registry.register(
            "istio_tcp_connections_opened",
            "Total TCP connections opened",
            opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Total TCP connections closed",
            closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Total bytes sent during response in TCP connections",
            sent_bytes.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Total bytes received during request in TCP connections",
            received_bytes.clone(),
        );
        registry.register(
            "outrigger_proxy_active_connections",
            "Connections currently relayed by this proxy",
            active.clone(),
        );
        registry.register(
            "outrigger_proxy_connect_errors",
            "Redirected connections that could not be forwarded, by reason",
            connect_errors.clone(),
        );
        registry.register(
            "outrigger_proxy_admin_requests_refused",
            "Lifecycle requests (/quitquitquit, /drain) refused because they did not come from loopback",
            refused_admin.clone(),
        );
        let http_refused = Counter::default();
        registry.register(
            "outrigger_proxy_http_connections_refused",
            "Connections to the status, health, stats and admin ports closed because the connection cap was reached",
            http_refused.clone(),
        );
        let l7 = crate::l7::telemetry::L7Metrics::register(&mut registry);
        let discovery = crate::discovery::DiscoveryMetrics::register(&mut registry);
        Metrics {
            l7,
            discovery,
            http_refused,
            registry,
            opened,
            closed,
            sent_bytes,
            received_bytes,
            active,
            connect_errors,
            refused_admin,
        }
    }

    /// Records a forwarded connection as opened and active; the returned handle counts its
    /// bytes and records the close when dropped (also when the task is cancelled).
    pub fn open_connection(&self, direction: Direction, labels: &TcpLabels) -> ConnectionMetrics {
        self.opened.get_or_create(labels).inc();
        let active = self.active_gauge(direction);
        active.inc();
        ConnectionMetrics {
            received: self.received_bytes.get_or_create(labels).clone(),
            sent: self.sent_bytes.get_or_create(labels).clone(),
            closed: self.closed.get_or_create(labels).clone(),
            active,
        }
    }

    pub fn connect_error(&self, direction: Direction, error: ConnectError) {
        self.connect_errors
            .get_or_create(&ConnectErrorLabels {
                direction: direction.as_str(),
                reason: error.as_str(),
            })
            .inc();
    }

    /// Counts a lifecycle request refused for coming from a remote address.
    pub fn refused_admin_request(&self, path: &'static str) {
        self.refused_admin.get_or_create(&PathLabels { path }).inc();
    }

    /// The counter of connections the status servers' cap refused.
    pub fn http_connections_refused(&self) -> Counter {
        self.http_refused.clone()
    }

    fn active_gauge(&self, direction: Direction) -> Gauge {
        self.active
            .get_or_create(&DirectionLabels {
                direction: direction.as_str(),
            })
            .clone()
    }

    /// Renders the OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding metrics into a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            name: "web".into(),
            namespace: "shop".into(),
            pod_name: "web-1".into(),
            instance_ip: None,
            ..Workload::default()
        }
    }

    #[test]
    fn outbound_connections_are_reported_by_the_source_with_istio_names() {
        let metrics = Metrics::new();
        let dst = OrigDstAddr("10.0.0.2:8080".parse().unwrap());
        let labels = TcpLabels::new(Direction::Outbound, &workload(), &dst);
        let connection = metrics.open_connection(Direction::Outbound, &labels);
        connection.received(120);
        connection.sent(4000);
        let text = metrics.encode();
        let opened = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
            .expect("opened counter present");
        for part in [
            r#"reporter="source""#,
            r#"source_workload="web""#,
            r#"source_workload_namespace="shop""#,
            r#"destination_workload="unknown""#,
            r#"destination_service="unknown""#,
            r#"destination_service_name="PassthroughCluster""#,
        ] {
            assert!(opened.contains(part), "{part} missing in {opened}");
        }
        assert!(opened.ends_with(" 1"), "{opened}");
        assert!(text.contains("istio_tcp_received_bytes_total{"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("istio_tcp_sent_bytes_total{") && l.ends_with(" 4000"))
        );
        assert!(text.contains(r#"outrigger_proxy_active_connections{direction="outbound"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn ten_thousand_unknown_destinations_leave_a_bounded_series_set() {
        let metrics = Metrics::new();
        let series = |metrics: &Metrics| {
            metrics
                .encode()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count()
        };
        let one = |i: u32| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let dst = OrigDstAddr(std::net::SocketAddr::new(
                ip.into(),
                1024 + (i % 60000) as u16,
            ));
            let labels = TcpLabels::new(Direction::Outbound, &workload(), &dst);
            drop(metrics.open_connection(Direction::Outbound, &labels));
        };
        one(0);
        let after_one = series(&metrics);
        for i in 1..10_000 {
            one(i);
        }
        assert_eq!(series(&metrics), after_one, "no series per destination");
        assert!(after_one < 20, "{after_one} series");
    }

    #[test]
    fn known_destinations_are_named_by_service() {
        let dst = OrigDstAddr("10.96.0.10:9080".parse().unwrap());
        let labels = TcpLabels::new(Direction::Outbound, &workload(), &dst).service(
            "reviews.demo.svc.cluster.local",
            "reviews",
            9080,
        );
        assert_eq!(labels.destination_service, "reviews.demo.svc.cluster.local");
        assert_eq!(labels.destination_port, "9080");
    }

    #[test]
    fn inbound_connections_name_us_as_destination_and_close_updates_the_gauge() {
        let metrics = Metrics::new();
        let dst = OrigDstAddr("10.0.0.3:80".parse().unwrap());
        let labels = TcpLabels::new(Direction::Inbound, &workload(), &dst);
        let connection = metrics.open_connection(Direction::Inbound, &labels);
        drop(connection);
        metrics.connect_error(Direction::Inbound, ConnectError::Refused);
        let text = metrics.encode();
        let closed = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{"))
            .expect("closed counter present");
        assert!(closed.contains(r#"reporter="destination""#));
        assert!(closed.contains(r#"destination_workload="web""#));
        assert!(closed.contains(r#"source_workload="unknown""#));
        assert!(text.contains(r#"outrigger_proxy_active_connections{direction="inbound"} 0"#));
        assert!(text.contains(
            r#"outrigger_proxy_connect_errors_total{direction="inbound",reason="refused"} 1"#
        ));
    }
}
