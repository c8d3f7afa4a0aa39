//! Every name and number Outrigger shares with Istio users and between its own parts (the table
//! "Names and numbers" of docs/DESIGN.md): container names, ports, annotation and label keys,
//! and the env variables the injector writes on `istio-proxy` for the proxy and the CNI plugin.

/// Container names the injector writes and the CNI plugin and proxy look for.
pub mod container {
    pub const PROXY: &str = "istio-proxy";
    pub const INIT: &str = "istio-init";
    /// The init container that only checks the CNI plugin's rules.
    pub const VALIDATION: &str = "istio-validation";
}

/// Ports of the data plane.
pub mod port {
    /// Outbound capture (`istio-iptables -p`).
    pub const OUTBOUND_CAPTURE: u16 = 15001;
    /// Inbound capture (`istio-iptables -z`).
    pub const INBOUND_CAPTURE: u16 = 15006;
    /// Tunnel port, never captured (`istio-iptables -e`).
    pub const INBOUND_TUNNEL: u16 = 15008;
    /// Validation probe target (`--iptables-probe-port`).
    pub const VALIDATION_PROBE: u16 = 15002;
    /// Status port: app-health probes, merged metrics, `/quitquitquit`.
    pub const STATUS: u16 = 15020;
    /// `/healthz/ready`.
    pub const HEALTH: u16 = 15021;
    /// The proxy's own `/stats/prometheus`.
    pub const PROXY_METRICS: u16 = 15090;
    /// The agent's DNS proxy.
    pub const DNS_CAPTURE: u16 = 15053;
    /// Admin port (loopback only).
    pub const ADMIN: u16 = 15000;
    /// The control plane's plaintext and TLS xDS ports and its monitoring port (istiod's).
    pub const PILOT_XDS: u16 = 15010;
    pub const PILOT_XDS_TLS: u16 = 15012;
    pub const PILOT_MONITORING: u16 = 15014;
    /// Ports the proxy owns: an application may not claim them for scraping.
    pub const RESERVED: [u16; 7] = [
        OUTBOUND_CAPTURE,
        INBOUND_CAPTURE,
        INBOUND_TUNNEL,
        STATUS,
        HEALTH,
        DNS_CAPTURE,
        PROXY_METRICS,
    ];
}

/// The proxy's identity, exempt from capture.
pub const DEFAULT_PROXY_UID: u32 = 1337;

/// Namespaces never injected and left alone by the CNI plugin by default.
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Pod annotation keys (and the labels that share a key).
pub mod annotation {
    pub const INJECT: &str = "sidecar.istio.io/inject";
    pub const STATUS: &str = "sidecar.istio.io/status";
    pub const TEMPLATES: &str = "inject.istio.io/templates";
    pub const REVISION: &str = "istio.io/rev";
    pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
    pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
    pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
    pub const READINESS_INITIAL_DELAY: &str =
        "readiness.status.sidecar.istio.io/initialDelaySeconds";
    pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
    pub const READINESS_FAILURE_THRESHOLD: &str =
        "readiness.status.sidecar.istio.io/failureThreshold";
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
    /// Prefix of `prometheus.io/scrape|port|path` (also spelled `prometheus.io.scrape`).
    pub const PROMETHEUS_PREFIX: &str = "prometheus.io";
}

/// Labels.
pub mod label {
    pub const INJECTION: &str = "istio-injection";
    pub const TLS_MODE: &str = "security.istio.io/tlsMode";
    pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
    pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
    pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
    /// The workload labels Istio's telemetry and subsets read when no canonical label is set.
    pub const APP: &str = "app";
    pub const VERSION: &str = "version";
    pub const K8S_APP_NAME: &str = "app.kubernetes.io/name";
    pub const K8S_APP_VERSION: &str = "app.kubernetes.io/version";
    /// The label an EndpointSlice carries to name its Service (Kubernetes').
    pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
    /// Put by the CNI repair loop on pods that raced the plugin.
    pub const CNI_UNINITIALIZED: &str = "cni.istio.io/uninitialized";
}

/// Audience of the `istio-token` projected service-account token the proxies present to the
/// control plane (Istio's `istio-ca`).
pub const TOKEN_AUDIENCE: &str = "istio-ca";

/// How a proxy finds and authenticates to the control plane (Istio's `istio-token` volume and
/// `discoveryAddress`).
pub mod discovery {
    /// The projected volume holding the proxy's service-account token, and its file name.
    pub const TOKEN_VOLUME: &str = "istio-token";
    /// Where `istio-proxy` mounts [`TOKEN_VOLUME`].
    pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/tokens";
    /// The token file the proxy reads (re-read at each reconnect: the kubelet rotates it).
    pub const TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";
    /// The token's lifetime the injector asks for (Istio's 43200 s).
    pub const TOKEN_EXPIRATION_SECONDS: u32 = 43200;
    /// The `discoveryAddress` a proxy gets when neither the mesh `defaultConfig` nor
    /// `proxy.istio.io/config` sets one: pilot's TLS port ([`super::port::PILOT_XDS_TLS`]).
    pub const DEFAULT_ADDRESS: &str = "outrigger-pilot.outrigger-system.svc:15012";
    /// The mesh's root certificate as Istio's template mounts it (ConfigMap
    /// [`ROOT_CERT_CONFIGMAP`]): the CA that signs the control plane's TLS certificate.
    pub const ROOT_CERT_PATH: &str = "/var/run/secrets/istio/root-cert.pem";
    /// The volume (Istio's `istiod-ca-cert`), the ConfigMap it reads (Istio's
    /// `istio-ca-root-cert`, one per namespace), its key and where `istio-proxy` mounts it.
    pub const ROOT_CERT_VOLUME: &str = "istiod-ca-cert";
    pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
    pub const ROOT_CERT_KEY: &str = "root-cert.pem";
    pub const ROOT_CERT_MOUNT_PATH: &str = "/var/run/secrets/istio";
}

/// Names of Istio's traffic API (`networking.istio.io`).
pub mod networking {
    /// The API group and the versions read (one schema for all three).
    pub const GROUP: &str = "networking.istio.io";
    pub const VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
    /// The reserved gateway name that binds a VirtualService to the sidecars.
    pub const MESH_GATEWAY: &str = "mesh";
    /// Annotation on a Service that limits the namespaces it is visible from.
    pub const EXPORT_TO: &str = "networking.istio.io/exportTo";
    /// Istio's root namespace, where mesh-wide DestinationRules and Sidecars live.
    pub const ROOT_NAMESPACE: &str = "istio-system";
    /// The cluster domain appended to short host names.
    pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";
    /// The cluster (and `destination_service_name`) of traffic to a destination the mesh does
    /// not know under `outboundTrafficPolicy: ALLOW_ANY`.
    pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
    /// The same under `REGISTRY_ONLY`: refused (HTTP 502 `NR`, TCP closed).
    pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";
    /// Istio's route name of the 502 answered under `REGISTRY_ONLY`.
    pub const BLOCK_ALL_ROUTE: &str = "block_all";
}

/// Env variables of `istio-proxy`: written by the injector's template, read by the proxy and
/// (from the node) by the CNI plugin.
pub mod env {
    /// Original probes recorded by the probe rewrite ([`crate::proxy_env::AppProbers`]).
    pub const APP_PROBERS: &str = "ISTIO_KUBE_APP_PROBERS";
    /// The app's Prometheus scrape settings ([`crate::proxy_env::PrometheusScrape`]).
    pub const PROMETHEUS_ANNOTATIONS: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const INSTANCE_IP: &str = "INSTANCE_IP";
    pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
    /// The pod's merged proxy configuration as JSON (mesh `defaultConfig` deep-merged with
    /// `proxy.istio.io/config`), as Istio's template writes it; the proxy reads
    /// `discoveryAddress` from it.
    pub const PROXY_CONFIG: &str = "PROXY_CONFIG";
    pub const HOST_IP: &str = "HOST_IP";
    pub const WORKLOAD_NAME: &str = "ISTIO_META_WORKLOAD_NAME";
    /// The pod's controller, `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>`.
    pub const OWNER: &str = "ISTIO_META_OWNER";
    /// The mesh's id (Istio: `global.meshID`, else the trust domain).
    pub const MESH_ID: &str = "ISTIO_META_MESH_ID";
    pub const INTERCEPTION_MODE: &str = "ISTIO_META_INTERCEPTION_MODE";
    pub const APP_CONTAINERS: &str = "ISTIO_META_APP_CONTAINERS";
    pub const CLUSTER_ID: &str = "ISTIO_META_CLUSTER_ID";
    pub const NETWORK: &str = "ISTIO_META_NETWORK";
    /// Redirect DNS to the proxy and capture all DNS (read by the CNI plugin).
    pub const DNS_CAPTURE: &str = "ISTIO_META_DNS_CAPTURE";
    pub const DISABLE_ENVOY: &str = "DISABLE_ENVOY";
    pub const INVALID_DROP: &str = "INVALID_DROP";
    pub const DUAL_STACK: &str = "ISTIO_DUAL_STACK";
    /// pilot-agent's switch: after SIGTERM, end the drain as soon as no connection is open
    /// (checked once [`MINIMUM_DRAIN_DURATION`] has passed). A Go boolean.
    pub const EXIT_ON_ZERO_ACTIVE_CONNECTIONS: &str = "EXIT_ON_ZERO_ACTIVE_CONNECTIONS";
    /// pilot-agent's least drain before the open connections are counted (Go duration, `5s`).
    pub const MINIMUM_DRAIN_DURATION: &str = "MINIMUM_DRAIN_DURATION";
}

/// The `istio-podinfo` downward-API volume of `istio-proxy` (Istio's template): the pod's
/// labels and annotations as files, in the downward API's `key="value"` lines.
pub mod podinfo {
    pub const VOLUME: &str = "istio-podinfo";
    pub const MOUNT_PATH: &str = "/etc/istio/pod";
    /// The pod's labels (pilot-agent reads them from here into its node metadata).
    pub const LABELS_PATH: &str = "/etc/istio/pod/labels";
}

/// Istio's HTTP metadata exchange between sidecars (istio/proxy's `peer_metadata` filter):
/// each request carries the client proxy's node id and metadata, each answer the server's.
/// Telemetry only: plaintext headers are spoofable.
pub mod peer_metadata {
    /// The sender's node id (`sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`).
    pub const ID_HEADER: &str = "x-envoy-peer-metadata-id";
    /// Standard base64 of a serialized `google.protobuf.Struct` with the fields below.
    pub const METADATA_HEADER: &str = "x-envoy-peer-metadata";
    /// Fields of the Struct (Istio's node metadata names, `pkg/model` `NodeMetadata`).
    pub mod field {
        /// The pod's name.
        pub const NAME: &str = "NAME";
        pub const NAMESPACE: &str = "NAMESPACE";
        pub const WORKLOAD_NAME: &str = "WORKLOAD_NAME";
        pub const OWNER: &str = "OWNER";
        pub const CLUSTER_ID: &str = "CLUSTER_ID";
        pub const MESH_ID: &str = "MESH_ID";
        pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
        /// Comma-separated pod IPs.
        pub const INSTANCE_IPS: &str = "INSTANCE_IPS";
        /// A nested Struct of the pod's labels (string values).
        pub const LABELS: &str = "LABELS";
    }
}

/// HTTP paths of the proxy's status servers.
pub mod path {
    pub const READY: &str = "/healthz/ready";
    pub const STATS: &str = "/stats/prometheus";
    pub const QUIT: &str = "/quitquitquit";
    pub const DRAIN: &str = "/drain";
    /// Prefixes of rewritten probes and lifecycle hooks.
    pub const APP_HEALTH_PREFIX: &str = "/app-health";
    pub const APP_LIFECYCLE_PREFIX: &str = "/app-lifecycle";
}

/// Exit code of `istio-validation` / `--run-validation` when traffic is not captured.
pub const VALIDATION_FAILED_EXIT_CODE: u8 = 126;
