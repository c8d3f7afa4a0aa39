//! Every name and number the proxy shares with Istio, the injector and the init rules.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Port of the outbound capture listener (`istio-iptables -p`).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the inbound capture listener (`istio-iptables -z`).
pub const INBOUND_PORT: u16 = 15006;
/// Status port: app-health probes, merged metrics, `/quitquitquit`, `/drain`.
pub const STATUS_PORT: u16 = 15020;
/// Health port serving `/healthz/ready`.
pub const HEALTH_PORT: u16 = 15021;
/// Port serving the proxy's own `/stats/prometheus`.
pub const STATS_PORT: u16 = 15090;

/// Source address of inbound hops to the local application, so the pod's rules return it.
pub const INBOUND_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// IPv6 counterpart of [`INBOUND_SOURCE_V4`] (`::6/128`, added to `lo` by the init binary).
pub const INBOUND_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Defaults of the `run` flags.
pub const DEFAULT_CONCURRENCY: usize = 2;
pub const DEFAULT_DRAIN_DURATION: Duration = Duration::from_secs(5);
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(30);
/// Buffered copying: `splice(2)` was not measurably faster in bench/proxy-load (see README).
pub const DEFAULT_RELAY: crate::relay::RelayMode = crate::relay::RelayMode::Copy;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Kubernetes' default probe timeout (`timeoutSeconds: 1`).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one scrape of the application's metrics may take.
pub const APP_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP paths served by the status servers.
pub mod paths {
    pub const READY: &str = "/healthz/ready";
    pub const STATS: &str = "/stats/prometheus";
    pub const QUIT: &str = "/quitquitquit";
    pub const DRAIN: &str = "/drain";
}

/// Environment variables the proxy reads (set by the injector, or by an operator).
pub mod env {
    /// Original probes recorded by the injector's probe rewrite (JSON object).
    pub const APP_PROBERS: &str = "ISTIO_KUBE_APP_PROBERS";
    /// Prometheus scrape settings of the application (JSON object).
    pub const PROMETHEUS_ANNOTATIONS: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const INSTANCE_IP: &str = "INSTANCE_IP";
    pub const WORKLOAD_NAME: &str = "ISTIO_META_WORKLOAD_NAME";

    /// Env equivalents of the `run` flags (flag beats env beats default).
    pub const CONCURRENCY: &str = "OUTRIGGER_PROXY_CONCURRENCY";
    pub const DRAIN_DURATION: &str = "OUTRIGGER_PROXY_DRAIN_DURATION";
    pub const TERMINATION_GRACE: &str = "OUTRIGGER_PROXY_TERMINATION_GRACE";
    pub const CONNECT_TIMEOUT: &str = "OUTRIGGER_PROXY_CONNECT_TIMEOUT";
    pub const OUTBOUND_PORT: &str = "OUTRIGGER_PROXY_OUTBOUND_PORT";
    pub const INBOUND_PORT: &str = "OUTRIGGER_PROXY_INBOUND_PORT";
    pub const STATUS_PORT: &str = "OUTRIGGER_PROXY_STATUS_PORT";
    pub const HEALTH_PORT: &str = "OUTRIGGER_PROXY_HEALTH_PORT";
    pub const STATS_PORT: &str = "OUTRIGGER_PROXY_STATS_PORT";
    pub const IPV6: &str = "OUTRIGGER_PROXY_IPV6";
    pub const RELAY: &str = "OUTRIGGER_PROXY_RELAY";
    pub const LOG_FORMAT: &str = "OUTRIGGER_PROXY_LOG_FORMAT";
}
