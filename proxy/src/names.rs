//! The proxy's own names and numbers: the env equivalents of its `run` flags, their defaults,
//! and the source addresses of inbound hops. Istio's names (ports, paths, the injector's env)
//! come from [`outrigger_api::names`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Source address of inbound hops to the local application, so the pod's rules return it.
pub const INBOUND_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// IPv6 counterpart of [`INBOUND_SOURCE_V4`] (`::6/128`, added to `lo` by the init binary).
pub const INBOUND_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Defaults of the `run` flags.
pub const DEFAULT_CONCURRENCY: usize = 2;
pub const DEFAULT_DRAIN_DURATION: Duration = Duration::from_secs(5);
/// Kubernetes' default `terminationGracePeriodSeconds`; the injector passes the pod's own.
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(30);
/// `EXIT_ON_ZERO_ACTIVE_CONNECTIONS` when unset. Istio's default is false; ours is true
/// because the proxy counts its connections exactly and has no hot restart (README).
pub const DEFAULT_EXIT_ON_ZERO_ACTIVE_CONNECTIONS: bool = true;
/// `MINIMUM_DRAIN_DURATION` when unset: Istio's 5 s.
pub const DEFAULT_MINIMUM_DRAIN_DURATION: Duration = Duration::from_secs(5);
/// Buffered copying: `splice(2)` was not measurably faster in bench/proxy-load (see README).
pub const DEFAULT_RELAY: crate::relay::RelayMode = crate::relay::RelayMode::Copy;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Protocol detection's wait for the client's first bytes. Istio's default is now 0 (no
/// limit), with which a server-first protocol on an `auto` port hangs; ours is bounded (README).
pub const DEFAULT_PROTOCOL_DETECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Kubernetes' default probe timeout (`timeoutSeconds: 1`).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one scrape of the application's metrics may take.
pub const APP_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a captured connection to an original destination not yet known waits for pilot's
/// answer before it is relayed as TCP (Envoy's on-demand CDS waits 5 s by default; a sidecar
/// in front of every call should fail over sooner).
pub const DEFAULT_ON_DEMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `/healthz/ready` waits for the first connection to pilot before reporting ready
/// anyway (serving every connection as TCP until pilot answers).
pub const DEFAULT_DISCOVERY_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a destination no connection used stays subscribed (its updates keep coming while
/// it is); `0s` keeps every destination met for the life of the proxy.
pub const DEFAULT_DISCOVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The filter of the proxy's logs when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Env equivalents of the `run` flags (flag beats env beats default).
pub mod flag_env {
    pub const CONCURRENCY: &str = "OUTRIGGER_PROXY_CONCURRENCY";
    pub const DRAIN_DURATION: &str = "OUTRIGGER_PROXY_DRAIN_DURATION";
    pub const TERMINATION_GRACE: &str = "OUTRIGGER_PROXY_TERMINATION_GRACE";
    pub const CONNECT_TIMEOUT: &str = "OUTRIGGER_PROXY_CONNECT_TIMEOUT";
    pub const PROTOCOL_DETECTION_TIMEOUT: &str = "OUTRIGGER_PROXY_PROTOCOL_DETECTION_TIMEOUT";
    pub const OUTBOUND_PORT: &str = "OUTRIGGER_PROXY_OUTBOUND_PORT";
    pub const INBOUND_PORT: &str = "OUTRIGGER_PROXY_INBOUND_PORT";
    pub const STATUS_PORT: &str = "OUTRIGGER_PROXY_STATUS_PORT";
    pub const HEALTH_PORT: &str = "OUTRIGGER_PROXY_HEALTH_PORT";
    pub const STATS_PORT: &str = "OUTRIGGER_PROXY_STATS_PORT";
    pub const IPV6: &str = "OUTRIGGER_PROXY_IPV6";
    pub const RELAY: &str = "OUTRIGGER_PROXY_RELAY";
    pub const LOG_FORMAT: &str = "OUTRIGGER_PROXY_LOG_FORMAT";
    pub const CONFIG_FILE: &str = "OUTRIGGER_PROXY_CONFIG_FILE";
    pub const ADMIN_PORT: &str = "OUTRIGGER_PROXY_ADMIN_PORT";
    pub const DISCOVERY_ADDRESS: &str = "OUTRIGGER_PROXY_DISCOVERY_ADDRESS";
    pub const DISCOVERY_CA_FILE: &str = "OUTRIGGER_PROXY_DISCOVERY_CA_FILE";
    pub const DISCOVERY_TOKEN_FILE: &str = "OUTRIGGER_PROXY_DISCOVERY_TOKEN_FILE";
    pub const DISCOVERY_ON_DEMAND_TIMEOUT: &str = "OUTRIGGER_PROXY_DISCOVERY_ON_DEMAND_TIMEOUT";
    pub const DISCOVERY_READY_TIMEOUT: &str = "OUTRIGGER_PROXY_DISCOVERY_READY_TIMEOUT";
    pub const DISCOVERY_IDLE_TIMEOUT: &str = "OUTRIGGER_PROXY_DISCOVERY_IDLE_TIMEOUT";
    pub const POD_LABELS_FILE: &str = "OUTRIGGER_PROXY_POD_LABELS_FILE";
}
