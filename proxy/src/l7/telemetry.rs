//! Request metrics under Istio's names and labels (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`), and
//! the configuration source's own counters. Every label value comes from the configuration
//! (a bounded set) or from a small fixed set (codes, flags, protocols).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::workload::UNKNOWN;

/// Istio's buckets of `istio_request_duration_milliseconds`.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's buckets of `istio_request_bytes` / `istio_response_bytes`.
const SIZE_BUCKETS: [f64; 9] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

/// One label value, shared: cloning it (per request, per series) is a reference count, not
/// a copy. The values come from the configuration and the workload, a bounded set.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(Arc<str>);

impl Label {
    /// `unknown`, allocated once.
    pub fn unknown() -> Label {
        static UNKNOWN_LABEL: OnceLock<Label> = OnceLock::new();
        UNKNOWN_LABEL
            .get_or_init(|| Label(Arc::from(UNKNOWN)))
            .clone()
    }

    /// The empty value, allocated once.
    pub fn empty() -> Label {
        static EMPTY: OnceLock<Label> = OnceLock::new();
        EMPTY.get_or_init(|| Label(Arc::from(""))).clone()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Label {
    fn default() -> Self {
        Label::empty()
    }
}

impl std::ops::Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl From<&str> for Label {
    fn from(value: &str) -> Self {
        if value == UNKNOWN {
            return Label::unknown();
        }
        Label(Arc::from(value))
    }
}

impl From<String> for Label {
    fn from(value: String) -> Self {
        if value == UNKNOWN {
            return Label::unknown();
        }
        Label(Arc::from(value))
    }
}

impl From<&Arc<str>> for Label {
    fn from(value: &Arc<str>) -> Self {
        Label(value.clone())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

/// Istio's standard labels of the HTTP/gRPC request metrics.
/// Istio's `destination_service`, `destination_service_name` and
/// `destination_service_namespace` of one destination (made once per configuration load).
#[derive(Debug, Clone)]
pub struct ServiceLabels {
    pub service: Label,
    pub name: Label,
    pub namespace: Label,
}

impl ServiceLabels {
    /// From the destination's host and `namespace/name` service.
    pub fn of(host: &str, service: &str) -> Self {
        let (namespace, name) = service.split_once('/').unwrap_or((UNKNOWN, service));
        ServiceLabels {
            service: Label::from(host),
            name: Label::from(name),
            namespace: Label::from(namespace),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: Label,
    pub source_workload_namespace: Label,
    pub source_app: Label,
    pub source_version: Label,
    pub destination_workload: Label,
    pub destination_workload_namespace: Label,
    pub destination_app: Label,
    pub destination_version: Label,
    pub destination_service: Label,
    pub destination_service_name: Label,
    pub destination_service_namespace: Label,
    pub request_protocol: &'static str,
    pub response_code: Label,
    pub response_flags: Label,
    pub grpc_response_status: Label,
    pub connection_security_policy: &'static str,
}

/// A label set with its hash computed once, so the four request families each hash eight
/// bytes instead of the seventeen labels (equal sets still compare label by label).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Series {
    hash: u64,
    labels: RequestLabels,
}

impl Series {
    /// Hashed once with foldhash, not SipHash: the 17 values come from the configuration and
    /// a fixed set, never from a request, so there is nothing to flood.
    fn new(labels: RequestLabels) -> Self {
        Series {
            hash: foldhash::fast::FixedState::default().hash_one(&labels),
            labels,
        }
    }
}

impl Hash for Series {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl EncodeLabelSet for Series {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        self.labels.encode(encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// How a mirrored request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// Answered (any status) and its body read.
    Sent,
    /// Connect error, reset or time limit.
    Failed,
    /// Not sent: too many mirrored requests in flight.
    Dropped,
}

impl MirrorResult {
    fn as_str(self) -> &'static str {
        match self {
            MirrorResult::Sent => "sent",
            MirrorResult::Failed => "failed",
            MirrorResult::Dropped => "dropped",
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// The L7 families, registered in the proxy's one registry. Clones share the families.
#[derive(Debug, Clone)]
pub struct L7Metrics {
    requests: Family<Series, Counter>,
    duration: Family<Series, Histogram, fn() -> Histogram>,
    request_bytes: Family<Series, Histogram, fn() -> Histogram>,
    response_bytes: Family<Series, Histogram, fn() -> Histogram>,
    config_loads: Family<ResultLabels, Counter>,
    config_timestamp: Gauge,
    mirrors: Family<ResultLabels, Counter>,
    peer_metadata_errors: Family<ReasonLabels, Counter>,
}

/// What one finished request measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl L7Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = L7Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
            config_loads: Family::default(),
            config_timestamp: Gauge::default(),
            mirrors: Family::default(),
            peer_metadata_errors: Family::default(),
        };
        registry.register(
            "istio_requests",
            "Requests processed",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration, from the first byte received to the last byte sent",
            metrics.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            metrics.response_bytes.clone(),
        );
        registry.register(
            "outrigger_proxy_config_loads",
            "Loads of --config-file, by result (ok, refused: the last good configuration stays)",
            metrics.config_loads.clone(),
        );
        registry.register(
            "outrigger_proxy_config_last_load_timestamp_seconds",
            "When the configuration in force was loaded (Unix time)",
            metrics.config_timestamp.clone(),
        );
        registry.register(
            "outrigger_proxy_mirror_requests",
            "Mirrored requests (VirtualService mirror), by result: sent, failed, dropped (too many in flight)",
            metrics.mirrors.clone(),
        );
        registry.register(
            "outrigger_proxy_peer_metadata_errors",
            "Peer metadata (x-envoy-peer-metadata) not used, by reason: too_large, not_base64, not_protobuf, invalid_value (a field labelled unknown), peer_limit (too many distinct peers); the request is served either way",
            metrics.peer_metadata_errors.clone(),
        );
        metrics
    }

    /// Peer metadata that was (partly) ignored, by a reason of a fixed set.
    pub fn peer_metadata_error(&self, reason: &'static str) {
        self.peer_metadata_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn mirror(&self, result: MirrorResult) {
        self.mirrors
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn record(&self, labels: &RequestLabels, measured: Measured) {
        let labels = &Series::new(labels.clone());
        self.requests.get_or_create(labels).inc();
        self.duration
            .get_or_create(labels)
            .observe(measured.duration_ms);
        self.request_bytes
            .get_or_create(labels)
            .observe(measured.request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(measured.response_bytes as f64);
    }

    pub(crate) fn config_loaded(&self, _version: &str) {
        self.config_loads
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.config_timestamp.set(now);
    }

    pub(crate) fn config_refused(&self) {
        self.config_loads
            .get_or_create(&ResultLabels { result: "refused" })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_labels_split_the_namespace_from_the_name() {
        let labels = ServiceLabels::of("web.shop.svc.cluster.local", "shop/web");
        assert_eq!(labels.service, "web.shop.svc.cluster.local");
        assert_eq!(labels.name, "web");
        assert_eq!(labels.namespace, "shop");
        // A ServiceEntry host without a namespace/name service.
        let external = ServiceLabels::of("api.example.com", "api.example.com");
        assert_eq!(external.name, "api.example.com");
        assert_eq!(external.namespace, UNKNOWN);
    }

    #[test]
    fn a_series_hash_follows_its_labels() {
        let labels = |code: &str| RequestLabels {
            reporter: "source",
            source_workload: Label::from("client"),
            source_workload_namespace: Label::from("shop"),
            source_app: Label::from("client"),
            source_version: Label::unknown(),
            destination_workload: Label::from("web-v1"),
            destination_workload_namespace: Label::from("shop"),
            destination_app: Label::from("web"),
            destination_version: Label::from("v1"),
            destination_service: Label::from("web.shop.svc.cluster.local"),
            destination_service_name: Label::from("web"),
            destination_service_namespace: Label::from("shop"),
            request_protocol: "http",
            response_code: Label::from(code),
            response_flags: Label::from("-"),
            grpc_response_status: Label::empty(),
            connection_security_policy: "unknown",
        };
        assert_eq!(
            Series::new(labels("200")).hash,
            Series::new(labels("200")).hash
        );
        assert_ne!(
            Series::new(labels("200")).hash,
            Series::new(labels("503")).hash
        );
    }
}
