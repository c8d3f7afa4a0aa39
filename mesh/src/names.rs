//! Names and numbers of the traffic model, in one place (Istio's own names come from
//! `outrigger_api::names`; they are re-exported here under the model's spelling).

use outrigger_api::names::{label, networking};

/// `apiVersion` of the `ProxyConfig` document.
pub const PROXY_CONFIG_API_VERSION: &str = "outrigger.dev/v1alpha1";
/// `kind` of the `ProxyConfig` document.
pub const PROXY_CONFIG_KIND: &str = "ProxyConfig";
/// Versions of `networking.istio.io` we read (one schema).
pub const ISTIO_NETWORKING_VERSIONS: &[&str] = networking::VERSIONS;
/// The cluster domain appended to short names.
pub const CLUSTER_DOMAIN: &str = networking::CLUSTER_DOMAIN;
/// The reserved gateway name of sidecars.
pub const MESH_GATEWAY: &str = networking::MESH_GATEWAY;
/// Annotation that limits where a Service is visible.
pub const EXPORT_TO_ANNOTATION: &str = networking::EXPORT_TO;
/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = label::SERVICE_NAME;
/// Istio's root namespace, where mesh-wide DestinationRules live.
pub const ROOT_NAMESPACE: &str = networking::ROOT_NAMESPACE;
/// Istio's default load balancer.
pub const DEFAULT_LOAD_BALANCER: &str = "LEAST_REQUEST";
/// Istio's default retry policy: attempts and conditions.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled";
/// Istio's outlier detection defaults, used for the fields a policy leaves out.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
pub const DEFAULT_OUTLIER_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_BASE_EJECTION_MS: u64 = 30_000;
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Pod labels copied onto endpoints (what metrics and subsets by version need).
pub const ENDPOINT_LABELS: &[&str] = &[
    label::APP,
    label::VERSION,
    label::K8S_APP_NAME,
    label::K8S_APP_VERSION,
    label::CANONICAL_NAME,
    label::CANONICAL_REVISION,
];
/// Ports Istio treats as TCP when the port name gives no protocol (server-first protocols
/// that sniffing would hang: SSH, SMTP, MySQL, MongoDB).
pub const WELL_KNOWN_TCP_PORTS: &[i32] = &[22, 25, 465, 587, 3306, 27017];
/// Exit code of `analyze` when it found something.
pub const ANALYZE_FOUND_EXIT_CODE: u8 = 3;
/// Exit code for usage and input errors.
pub const INPUT_ERROR_EXIT_CODE: u8 = 2;
