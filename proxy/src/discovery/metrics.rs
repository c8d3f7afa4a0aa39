//! The discovery client's metrics: connection state, reconnects, updates and NACKs by type,
//! connections served from the last good configuration while pilot is away, and on-demand
//! waits that ran out.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `type`: `destination` or `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

/// Registered in the proxy's one registry; clones share the metrics.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryMetrics {
    pub connected: Gauge,
    pub connects: Counter,
    pub disconnects: Counter,
    pub updates: Family<TypeLabels, Counter>,
    pub rejects: Family<TypeLabels, Counter>,
    pub stale_connections: Counter,
    pub on_demand_timeouts: Counter,
}

impl DiscoveryMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = DiscoveryMetrics::default();
        registry.register(
            "outrigger_proxy_discovery_connected",
            "1 while the stream to pilot is open",
            metrics.connected.clone(),
        );
        registry.register(
            "outrigger_proxy_discovery_connects",
            "Streams to pilot opened",
            metrics.connects.clone(),
        );
        registry.register(
            "outrigger_proxy_discovery_disconnects",
            "Streams to pilot lost or refused (the last good configuration stays in force)",
            metrics.disconnects.clone(),
        );
        registry.register(
            "outrigger_proxy_discovery_updates",
            "Responses from pilot accepted (ACK), by resource type",
            metrics.updates.clone(),
        );
        registry.register(
            "outrigger_proxy_discovery_rejects",
            "Responses from pilot refused (NACK), by resource type; the previous version stays",
            metrics.rejects.clone(),
        );
        registry.register(
            "outrigger_proxy_discovery_stale_connections",
            "Captured connections served from the last good configuration while pilot was away",
            metrics.stale_connections.clone(),
        );
        registry.register(
            "outrigger_proxy_discovery_on_demand_timeouts",
            "Connections that waited the on-demand bound for a destination and went on as TCP",
            metrics.on_demand_timeouts.clone(),
        );
        metrics
    }
}
