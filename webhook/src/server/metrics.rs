//! Prometheus metrics of the injector (prometheus-client), rendered as text for `--metrics-addr`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of the Prometheus text format we emit.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `reason` label of the skip/failure counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// `result` label of the reload counters (`success` or `failure`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Outcome of a reload, for [`Metrics::config_reloaded`] and [`Metrics::cert_reloaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Success,
    Failure,
}

impl Reload {
    fn label(self) -> ResultLabel {
        ResultLabel {
            result: match self {
                Reload::Success => "success",
                Reload::Failure => "failure",
            },
        }
    }
}

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Counter,
    success: Counter,
    skip: Family<ReasonLabel, Counter>,
    failure: Family<ReasonLabel, Counter>,
    time: Histogram,
    config_reload: Family<ResultLabel, Counter>,
    cert_reload: Family<ResultLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
    body_budget_waits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let success = Counter::default();
        let skip = Family::<ReasonLabel, Counter>::default();
        let failure = Family::<ReasonLabel, Counter>::default();
        // 0.25 ms .. ~4 s
        let time = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        let config_reload = Family::<ResultLabel, Counter>::default();
        let cert_reload = Family::<ResultLabel, Counter>::default();
        let handshake_failures = Family::<ReasonLabel, Counter>::default();
        let body_budget_waits = Counter::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "sidecar_injection_requests",
            "Admission requests received on the injection endpoint",
            requests.clone(),
        );
        registry.register(
            "sidecar_injection_success",
            "Pods injected",
            success.clone(),
        );
        registry.register(
            "sidecar_injection_skip",
            "Requests allowed without injection, by reason",
            skip.clone(),
        );
        registry.register(
            "sidecar_injection_failure",
            "Requests that failed, by reason",
            failure.clone(),
        );
        registry.register(
            "sidecar_injection_time_seconds",
            "Time spent handling an admission request",
            time.clone(),
        );
        registry.register(
            "outrigger_injector_config_reload",
            "Configuration reloads, by result",
            config_reload.clone(),
        );
        registry.register(
            "outrigger_injector_cert_reload",
            "Serving certificate reloads, by result",
            cert_reload.clone(),
        );
        registry.register(
            "outrigger_injector_tls_handshake_failures",
            "TLS handshakes that failed on the HTTPS port, by reason (timeout, closed, tls, io)",
            handshake_failures.clone(),
        );
        registry.register(
            "outrigger_injector_body_budget_waits",
            "Admission requests that waited for the budget of request bodies in flight (--max-inflight-body-bytes)",
            body_budget_waits.clone(),
        );
        Metrics {
            registry,
            requests,
            success,
            skip,
            failure,
            time,
            config_reload,
            cert_reload,
            handshake_failures,
            body_budget_waits,
        }
    }

    pub fn request(&self) {
        self.requests.inc();
    }

    pub fn injected(&self) {
        self.success.inc();
    }

    pub fn skipped(&self, reason: &str) {
        self.skip
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn failed(&self, reason: &str) {
        self.failure
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn observe_time(&self, elapsed: Duration) {
        self.time.observe(elapsed.as_secs_f64());
    }

    pub fn config_reloaded(&self, result: Reload) {
        self.config_reload.get_or_create(&result.label()).inc();
    }

    pub fn cert_reloaded(&self, result: Reload) {
        self.cert_reload.get_or_create(&result.label()).inc();
    }

    pub fn handshake_failed(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn body_budget_waited(&self) {
        self.body_budget_waits.inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_istio_names() {
        let m = Metrics::new();
        m.request();
        m.injected();
        m.skipped("host_network");
        m.failed("invalid_annotation");
        m.config_reloaded(Reload::Failure);
        m.cert_reloaded(Reload::Success);
        m.observe_time(Duration::from_millis(2));
        let text = m.render();
        for line in [
            "sidecar_injection_requests_total 1",
            "sidecar_injection_success_total 1",
            "sidecar_injection_skip_total{reason=\"host_network\"} 1",
            "sidecar_injection_failure_total{reason=\"invalid_annotation\"} 1",
            "sidecar_injection_time_seconds_count 1",
            "outrigger_injector_config_reload_total{result=\"failure\"} 1",
            "outrigger_injector_cert_reload_total{result=\"success\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
