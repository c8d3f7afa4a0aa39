//! Every name and number the plugin and installer share with Istio and Kubernetes, in one place.

/// The `type` of our entry in a network configuration list.
pub const PLUGIN_TYPE: &str = "outrigger-cni";
/// The plugin binary's file name in the host CNI bin directory.
pub const PLUGIN_BINARY: &str = "outrigger-cni";
/// The kubeconfig file the installer writes next to the network configuration.
pub const KUBECONFIG_FILE: &str = "outrigger-cni-kubeconfig";

/// Container names the injector produces.
pub const INIT_CONTAINER: &str = "istio-init";
pub const VALIDATION_CONTAINER: &str = "istio-validation";
pub const PROXY_CONTAINER: &str = "istio-proxy";

/// Pod annotations and labels read by the plugin.
pub const ANNOTATION_INJECT: &str = "sidecar.istio.io/inject";
pub const ANNOTATION_STATUS: &str = "sidecar.istio.io/status";
pub const ANNOTATION_INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES: &str =
    "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES: &str =
    "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const ANNOTATION_INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const ANNOTATION_EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const ANNOTATION_INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const ANNOTATION_EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const ANNOTATION_KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
pub const ANNOTATION_REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
pub const ANNOTATION_EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
/// Label the repair loop puts on pods that raced the plugin (`labelPods` mode).
pub const LABEL_UNINITIALIZED: &str = "cni.istio.io/uninitialized";

/// Environment variables of the `istio-proxy` container read by the plugin.
pub const ENV_DNS_CAPTURE: &str = "ISTIO_META_DNS_CAPTURE";
pub const ENV_DISABLE_ENVOY: &str = "DISABLE_ENVOY";
pub const ENV_INVALID_DROP: &str = "INVALID_DROP";
pub const ENV_DUAL_STACK: &str = "ISTIO_DUAL_STACK";

/// Proxy identity used when the proxy container does not set one (or sets root).
pub const DEFAULT_PROXY_UID: u32 = 1337;
/// Ports: the status port is excluded from inbound and outbound capture by default; status,
/// health and metrics ports are always excluded from inbound capture.
pub const STATUS_PORT: u16 = 15020;
pub const HEALTH_PORT: u16 = 15021;
pub const PROXY_METRICS_PORT: u16 = 15090;

/// Exit code of `istio-validation` when the rules were not in place (the pod raced the plugin).
pub const VALIDATION_FAILED_EXIT_CODE: i32 = 126;

/// Keys of CNI_ARGS set by kubelet / the container runtime.
pub const CNI_ARG_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const CNI_ARG_POD_NAME: &str = "K8S_POD_NAME";

/// The installer's own pods (DaemonSet name prefix) are passed through before any API call.
pub const DEFAULT_INSTALLER_NAMESPACE: &str = "outrigger-system";
pub const DEFAULT_INSTALLER_POD_PREFIX: &str = "outrigger-cni-node-";

/// Namespaces the installer writes into `exclude_namespaces` unless told otherwise.
pub const DEFAULT_EXCLUDED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Environment of the installer (downward API and ServiceAccount mounts).
pub const ENV_NODE_NAME: &str = "NODE_NAME";
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const ENV_KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
pub const ENV_KUBERNETES_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Field manager / reporter name used for patches and Events.
pub const CONTROLLER_NAME: &str = "outrigger-cni-repair";
