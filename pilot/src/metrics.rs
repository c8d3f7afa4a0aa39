//! pilot's metrics with Istio's names where they exist: `pilot_xds` (connected proxies),
//! `pilot_xds_pushes{type}`, `pilot_proxy_convergence_time` (seconds from the first change of a
//! rebuild to the proxy's ACK), `pilot_total_xds_rejects{type}` (NACKs), plus our
//! `pilot_rebuilds` and `pilot_rebuild_seconds`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// `destination` or `endpoints`.
    pub r#type: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub connected: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub rejects: Family<TypeLabel, Counter>,
    pub convergence: Histogram,
    pub rebuilds: Counter,
    pub rebuild_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        registry.register(
            "pilot_xds",
            "Number of proxies connected to this pilot",
            connected.clone(),
        );
        let pushes = Family::<TypeLabel, Counter>::default();
        registry.register("pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds (here: destination, endpoints responses sent)", pushes.clone());
        let rejects = Family::<TypeLabel, Counter>::default();
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of xDS responses from pilot rejected by proxy",
            rejects.clone(),
        );
        // Istio's buckets for pilot_proxy_convergence_time.
        let convergence = Histogram::new([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]);
        registry.register("pilot_proxy_convergence_time", "Delay in seconds between config change and a proxy receiving all required configuration", convergence.clone());
        let rebuilds = Counter::default();
        registry.register(
            "pilot_rebuilds",
            "Debounced rebuilds of the snapshot",
            rebuilds.clone(),
        );
        let rebuild_seconds = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "pilot_rebuild_seconds",
            "Time to read the stores and resolve the connected views",
            rebuild_seconds.clone(),
        );
        Self {
            registry,
            connected,
            pushes,
            rejects,
            convergence,
            rebuilds,
            rebuild_seconds,
        }
    }
}

impl Metrics {
    pub fn push(&self, type_label: &str) {
        self.pushes
            .get_or_create(&TypeLabel {
                r#type: type_label.to_owned(),
            })
            .inc();
    }

    pub fn reject(&self, type_label: &str) {
        self.rejects
            .get_or_create(&TypeLabel {
                r#type: type_label.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
