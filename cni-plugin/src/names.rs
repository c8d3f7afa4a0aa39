//! The names and numbers only the CNI plugin and its installer use (the Istio ones: container
//! names, ports, annotation and label keys, proxy env names, the ignored namespaces, the
//! validation exit code, come from [`outrigger_api::names`]).

/// The `type` of our entry in a network configuration list.
pub const PLUGIN_TYPE: &str = "outrigger-cni";
/// The plugin binary's file name in the host CNI bin directory.
pub const PLUGIN_BINARY: &str = "outrigger-cni";
/// The kubeconfig file the installer writes next to the network configuration.
pub const KUBECONFIG_FILE: &str = "outrigger-cni-kubeconfig";
/// Appended to a network configuration's file name for the copy of its bytes from before the
/// installer first edited it (`10-bridge.conf.outrigger-original`); uninstall puts them back.
/// Runtimes read only `.conf`, `.conflist` and `.json` files, so the copy is never loaded.
pub const ORIGINAL_SUFFIX: &str = ".outrigger-original";

/// Keys of CNI_ARGS set by kubelet / the container runtime.
pub const CNI_ARG_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
pub const CNI_ARG_POD_NAME: &str = "K8S_POD_NAME";

/// The installer's own pods (DaemonSet name prefix) are passed through before any API call.
pub const DEFAULT_INSTALLER_NAMESPACE: &str = "outrigger-system";
pub const DEFAULT_INSTALLER_POD_PREFIX: &str = "outrigger-cni-node-";

/// Environment of the installer (downward API and ServiceAccount mounts); `POD_NAME` and
/// `POD_NAMESPACE` are the proxy's names of [`outrigger_api::names::env`].
pub const ENV_NODE_NAME: &str = "NODE_NAME";
pub const ENV_KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
pub const ENV_KUBERNETES_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Field manager / reporter name used for patches and Events.
pub const CONTROLLER_NAME: &str = "outrigger-cni-repair";
