//! `istio-iptables`' contract: its defaults, the env variables viper binds to its flags, and
//! how errors name each option (tools/istio-iptables/pkg/cmd/root.go in istio/istio).

/// Default outbound capture port (`-p`).
pub const DEFAULT_PROXY_PORT: u16 = crate::names::port::OUTBOUND_CAPTURE;
/// Default inbound capture port (`-z`).
pub const DEFAULT_INBOUND_CAPTURE_PORT: u16 = crate::names::port::INBOUND_CAPTURE;
/// Default tunnel port that is never captured (`-e`).
pub const DEFAULT_INBOUND_TUNNEL_PORT: u16 = crate::names::port::INBOUND_TUNNEL;
/// Default validation probe port (`--iptables-probe-port`).
pub const DEFAULT_PROBE_PORT: u16 = crate::names::port::VALIDATION_PROBE;
/// Default validation timeout in seconds (`--probe-timeout`).
pub const DEFAULT_PROBE_TIMEOUT_SECS: u64 = 5;
/// Default proxy UID (and GID when `-g` is not given).
pub const DEFAULT_PROXY_UID: u32 = crate::names::DEFAULT_PROXY_UID;
/// Default TPROXY mark (`-t`).
pub const DEFAULT_TPROXY_MARK: u32 = 1337;
/// Default TPROXY route table (`-r`).
pub const DEFAULT_TPROXY_ROUTE_TABLE: u32 = 133;
/// Route tables the kernel owns (`unspec`, `default`, `main`, `local`): never ours for `-r`.
pub const RESERVED_ROUTE_TABLES: [u32; 4] = [0, 253, 254, 255];
/// Most owner groups `ISTIO_OUTBOUND_OWNER_GROUPS` may list (one combined rule).
pub const MAX_OWNER_GROUPS_INCLUDE: usize = 64;

/// Default IPv4 loopback CIDR (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`).
pub const DEFAULT_LOOPBACK_V4: &str = "127.0.0.1/32";

/// Environment variables read only from the environment (no flag).
pub mod env {
    /// Owner groups whose outbound traffic is captured (`*` = all).
    pub const OWNER_GROUPS_INCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
    /// Owner groups whose outbound traffic is not captured (with include `*`).
    pub const OWNER_GROUPS_EXCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";
    /// IPv4 loopback CIDR used in the loopback rules.
    pub const IPV4_LOOPBACK_CIDR: &str = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
    /// Default for `--redirect-dns`.
    pub const DNS_CAPTURE: &str = "ISTIO_META_DNS_CAPTURE";
    /// Default for `--drop-invalid`.
    pub const INVALID_DROP: &str = "INVALID_DROP";
    /// Default for `--dual-stack`.
    pub const DUAL_STACK: &str = "ISTIO_AGENT_DUAL_STACK";

    // The variables viper binds to istio-iptables' flags (the flag name, upper-cased).
    pub const PROXY_PORT: &str = "ENVOY_PORT";
    pub const INBOUND_CAPTURE_PORT: &str = "INBOUND_CAPTURE_PORT";
    pub const INBOUND_TUNNEL_PORT: &str = "INBOUND_TUNNEL_PORT";
    pub const PROXY_UID: &str = "PROXY_UID";
    pub const PROXY_GID: &str = "PROXY_GID";
    pub const MODE: &str = "ISTIO_INBOUND_INTERCEPTION_MODE";
    pub const INBOUND_PORTS: &str = "ISTIO_INBOUND_PORTS";
    pub const INBOUND_PORTS_EXCLUDE: &str = "ISTIO_LOCAL_EXCLUDE_PORTS";
    pub const OUTBOUND_RANGES: &str = "ISTIO_SERVICE_CIDR";
    pub const OUTBOUND_RANGES_EXCLUDE: &str = "ISTIO_SERVICE_EXCLUDE_CIDR";
    pub const OUTBOUND_PORTS: &str = "ISTIO_OUTBOUND_PORTS";
    pub const OUTBOUND_PORTS_EXCLUDE: &str = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE";
    pub const VIRTUAL_INTERFACES: &str = "KUBE_VIRT_INTERFACES";
    pub const EXCLUDE_INTERFACES: &str = "ISTIO_EXCLUDE_INTERFACES";
    pub const TPROXY_MARK: &str = "ISTIO_INBOUND_TPROXY_MARK";
    pub const TPROXY_ROUTE_TABLE: &str = "ISTIO_INBOUND_TPROXY_ROUTE_TABLE";
    pub const REDIRECT_DNS: &str = "REDIRECT_DNS";
    pub const CAPTURE_ALL_DNS: &str = "CAPTURE_ALL_DNS";
    pub const DROP_INVALID: &str = "DROP_INVALID";
    pub const DUAL_STACK_FLAG: &str = "DUAL_STACK";
    pub const DRY_RUN: &str = "DRY_RUN";
    pub const RUN_VALIDATION: &str = "RUN_VALIDATION";
    pub const SKIP_RULE_APPLY: &str = "SKIP_RULE_APPLY";
    pub const CLEANUP_ONLY: &str = "CLEANUP_ONLY";
    pub const RECONCILE: &str = "RECONCILE";
    pub const FORCE_APPLY: &str = "FORCE_APPLY";
    pub const PROBE_PORT: &str = "IPTABLES_PROBE_PORT";
    pub const PROBE_TIMEOUT: &str = "PROBE_TIMEOUT";
    pub const FORCE_IPTABLES_BINARY: &str = "FORCE_IPTABLES_BINARY";
    pub const LOG_AS_JSON: &str = "LOG_AS_JSON";
}

/// How errors name each option: the short flag and the long flag, as the operator typed them.
pub mod flag {
    pub const PROXY_PORT: &str = "-p/--envoy-port";
    pub const INBOUND_CAPTURE_PORT: &str = "-z/--inbound-capture-port";
    pub const INBOUND_TUNNEL_PORT: &str = "-e/--inbound-tunnel-port";
    pub const PROXY_UID: &str = "-u/--proxy-uid";
    pub const PROXY_GID: &str = "-g/--proxy-gid";
    pub const MODE: &str = "-m/--istio-inbound-interception-mode";
    pub const INBOUND_PORTS: &str = "-b/--istio-inbound-ports";
    pub const INBOUND_PORTS_EXCLUDE: &str = "-d/--istio-local-exclude-ports";
    pub const OUTBOUND_RANGES: &str = "-i/--istio-service-cidr";
    pub const OUTBOUND_RANGES_EXCLUDE: &str = "-x/--istio-service-exclude-cidr";
    pub const OUTBOUND_PORTS: &str = "-q/--istio-outbound-ports";
    pub const OUTBOUND_PORTS_EXCLUDE: &str = "-o/--istio-local-outbound-ports-exclude";
    pub const VIRTUAL_INTERFACES: &str = "-k/--kube-virt-interfaces";
    pub const EXCLUDE_INTERFACES: &str = "-c/--istio-exclude-interfaces";
    pub const TPROXY_MARK: &str = "-t/--istio-inbound-tproxy-mark";
    pub const TPROXY_ROUTE_TABLE: &str = "-r/--istio-inbound-tproxy-route-table";
    pub const PROBE_PORT: &str = "--iptables-probe-port";
    pub const PROBE_TIMEOUT: &str = "--probe-timeout";
    pub const FORCE_IPTABLES_BINARY: &str = "--force-iptables-binary";
    pub const IPV6: &str = "--ipv6";
    pub const REDIRECT_DNS: &str = "--redirect-dns";
    pub const CAPTURE_ALL_DNS: &str = "--capture-all-dns";
    pub const DROP_INVALID: &str = "--drop-invalid";
    pub const DUAL_STACK: &str = "--dual-stack";
    pub const RECONCILE: &str = "--reconcile";
    pub const FORCE_APPLY: &str = "--force-apply";
    pub const DRY_RUN: &str = "-n/--dry-run";
    pub const RUN_VALIDATION: &str = "--run-validation";
    pub const SKIP_RULE_APPLY: &str = "--skip-rule-apply";
    pub const CLEANUP_ONLY: &str = "--cleanup-only";
    pub const LOG_AS_JSON: &str = "--log-as-json";
    pub const OWNER_GROUPS_INCLUDE: &str = super::env::OWNER_GROUPS_INCLUDE;
    pub const OWNER_GROUPS_EXCLUDE: &str = super::env::OWNER_GROUPS_EXCLUDE;
    pub const LOOPBACK_CIDR: &str = super::env::IPV4_LOOPBACK_CIDR;
}
