//! The installer's Prometheus metrics: chain re-insertions and pod repairs.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of the repair counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    /// `delete` or `label`.
    pub action: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub chain_insertions: Counter,
    /// Passes of the installer's reconcile loop (each reads the configuration directory).
    pub reconcile_passes: Counter,
    pub repairs: Family<RepairLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("outrigger_cni");
        let chain_insertions = Counter::default();
        registry.register(
            "chain_insertions",
            "Times our entry was (re-)inserted into the primary network configuration",
            chain_insertions.clone(),
        );
        let reconcile_passes = Counter::default();
        registry.register(
            "install_reconciles",
            "Passes of the node installer over the CNI configuration directory",
            reconcile_passes.clone(),
        );
        let repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "pod_repairs",
            "Pods repaired after racing the plugin installation",
            repairs.clone(),
        );
        Self {
            registry: Arc::new(registry),
            chain_insertions,
            reconcile_passes,
            repairs,
        }
    }

    pub fn count_repair(&self, action: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.repairs
            .get_or_create(&RepairLabels {
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "encoding metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.chain_insertions.inc();
        metrics.count_repair("delete", true);
        metrics.count_repair("delete", true);
        metrics.count_repair("label", false);
        let text = metrics.encode();
        assert!(
            text.contains("outrigger_cni_chain_insertions_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"outrigger_cni_pod_repairs_total{action="delete",result="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"outrigger_cni_pod_repairs_total{action="label",result="error"} 1"#),
            "{text}"
        );
    }
}
