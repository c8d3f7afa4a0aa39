//! Every name and number the engine shares with Istio users: annotation keys, labels,
//! container names, ports and env names, kept in one place.

/// Container names written by the shipped template.
pub const PROXY_CONTAINER: &str = "istio-proxy";
pub const INIT_CONTAINER: &str = "istio-init";
pub const VALIDATION_CONTAINER: &str = "istio-validation";

/// Ports (DESIGN.md "Names and numbers").
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
pub const DEFAULT_STATUS_PORT: u16 = 15020;
pub const HEALTH_PORT: u16 = 15021;
pub const PROMETHEUS_PORT: u16 = 15090;
/// Ports the proxy owns: an application may not claim them for scraping.
pub const RESERVED_PORTS: [u16; 7] = [15001, 15006, 15008, 15020, 15021, 15053, 15090];
pub const MERGED_METRICS_PATH: &str = "/stats/prometheus";

/// Namespaces never injected.
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Pod label and annotation that switch injection per pod.
pub const INJECT: &str = "sidecar.istio.io/inject";
pub const STATUS: &str = "sidecar.istio.io/status";
pub const TEMPLATES: &str = "inject.istio.io/templates";
pub const REVISION: &str = "istio.io/rev";
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
pub const READINESS_INITIAL_DELAY: &str = "readiness.status.sidecar.istio.io/initialDelaySeconds";
pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";
pub const PROMETHEUS_MERGE: &str = "prometheus.istio.io/merge-metrics";
pub const PROMETHEUS_SCRAPE_TARGETS: &str = "prometheus.istio.io/scrape-targets";
/// Prefix of the `prometheus.io/scrape|port|path` annotations (also spelled `prometheus.io.scrape`).
pub const PROMETHEUS_PREFIX: &str = "prometheus.io";

/// Labels added to injected pods.
pub const TLS_MODE: &str = "security.istio.io/tlsMode";
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Env variables on `istio-proxy` that the proxy reads.
pub const ENV_APP_PROBERS: &str = "ISTIO_KUBE_APP_PROBERS";
pub const ENV_PROMETHEUS_ANNOTATIONS: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

/// Commands of our images.
pub const PROXY_WAIT_COMMAND: [&str; 2] = ["outrigger-proxy", "wait"];
pub const PROXY_DRAIN_COMMAND: [&str; 2] = ["outrigger-proxy", "drain"];

/// Path prefixes the status port serves for rewritten probes and hooks.
pub const APP_HEALTH_PREFIX: &str = "/app-health";
pub const APP_LIFECYCLE_PREFIX: &str = "/app-lifecycle";
