//! Command-line arguments of `outrigger-proxy` (pure parsing; nothing here touches the system).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::relay::RelayMode;
use outrigger_api::duration::parse_duration;
pub use outrigger_runtime::LogFormat;

/// Transparent TCP sidecar proxy for traffic captured by outrigger-iptables.
#[derive(Debug, Parser)]
#[command(name = "outrigger-proxy", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy: capture listeners, status, health and metrics servers.
    Run(Box<RunArgs>),
    /// Wait until the local proxy reports ready (postStart hook).
    Wait(WaitArgs),
    /// Ask the local proxy to start draining (preStop hook).
    Drain(DrainArgs),
}

/// Flags of `run`. Each unset flag falls back to its environment variable, then the default
/// (names in [`crate::names::flag_env`]).
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Worker threads of the runtime; 0 = one per core, more than the cores is capped to them
    /// [env: OUTRIGGER_PROXY_CONCURRENCY] [default: 2]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to stay up, not ready, after SIGTERM before refusing new connections (Istio's
    /// `terminationDrainDuration`; ends early when no connection is open, see
    /// EXIT_ON_ZERO_ACTIVE_CONNECTIONS) [env: OUTRIGGER_PROXY_DRAIN_DURATION] [default: 5s]
    #[arg(long, value_parser = parse_duration)]
    pub drain_duration: Option<Duration>,
    /// The pod's terminationGracePeriodSeconds: the proxy is gone before it ends (open
    /// connections are closed a tenth of it, at most 1s, earlier)
    /// [env: OUTRIGGER_PROXY_TERMINATION_GRACE] [default: 30s]
    #[arg(long, value_parser = parse_duration)]
    pub termination_grace: Option<Duration>,
    /// Upstream connect timeout [env: OUTRIGGER_PROXY_CONNECT_TIMEOUT] [default: 10s]
    #[arg(long, value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// How long protocol detection (`auto` ports) waits for the client's first bytes before
    /// relaying as TCP; 0s waits without limit (Istio's protocolDetectionTimeout)
    /// [env: OUTRIGGER_PROXY_PROTOCOL_DETECTION_TIMEOUT] [default: 1s]
    #[arg(long, value_parser = parse_duration)]
    pub protocol_detection_timeout: Option<Duration>,
    /// Outbound capture port [env: OUTRIGGER_PROXY_OUTBOUND_PORT] [default: 15001]
    #[arg(long)]
    pub outbound_port: Option<u16>,
    /// Inbound capture port [env: OUTRIGGER_PROXY_INBOUND_PORT] [default: 15006]
    #[arg(long)]
    pub inbound_port: Option<u16>,
    /// Status port [env: OUTRIGGER_PROXY_STATUS_PORT] [default: 15020]
    #[arg(long)]
    pub status_port: Option<u16>,
    /// Health port [env: OUTRIGGER_PROXY_HEALTH_PORT] [default: 15021]
    #[arg(long)]
    pub health_port: Option<u16>,
    /// Metrics port [env: OUTRIGGER_PROXY_STATS_PORT] [default: 15090]
    #[arg(long)]
    pub stats_port: Option<u16>,
    /// Also listen on [::] [env: OUTRIGGER_PROXY_IPV6] [default: auto]
    #[arg(long, value_enum)]
    pub ipv6: Option<Ipv6Mode>,
    /// How bytes are relayed [env: OUTRIGGER_PROXY_RELAY] [default: copy]
    #[arg(long, value_enum)]
    pub relay: Option<RelayMode>,
    /// Log format: text or json [env: OUTRIGGER_PROXY_LOG_FORMAT] [default: text]
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// The ProxyConfig `outrigger-routes build` writes (JSON or YAML); reloaded when it
    /// changes. Unset: every connection is relayed as TCP [env: OUTRIGGER_PROXY_CONFIG_FILE]
    #[arg(long)]
    pub config_file: Option<std::path::PathBuf>,
    /// The control plane to stream the configuration from (Istio's `discoveryAddress`:
    /// `host:port`, TLS unless the port is 15010; `http://` or `https://` to say). Unset: the
    /// `discoveryAddress` of PROXY_CONFIG; neither: no discovery. Not with --config-file
    /// [env: OUTRIGGER_PROXY_DISCOVERY_ADDRESS]
    #[arg(long)]
    pub discovery_address: Option<String>,
    /// PEM of the CA that signs pilot's certificate (TLS)
    /// [env: OUTRIGGER_PROXY_DISCOVERY_CA_FILE] [default: /var/run/secrets/istio/root-cert.pem]
    #[arg(long)]
    pub discovery_ca_file: Option<std::path::PathBuf>,
    /// The service-account token presented to pilot, re-read at each connection
    /// [env: OUTRIGGER_PROXY_DISCOVERY_TOKEN_FILE] [default: /var/run/secrets/tokens/istio-token]
    #[arg(long)]
    pub discovery_token_file: Option<std::path::PathBuf>,
    /// How long a connection to a destination not yet known waits for pilot's answer before
    /// it is relayed as TCP [env: OUTRIGGER_PROXY_DISCOVERY_ON_DEMAND_TIMEOUT] [default: 1s]
    #[arg(long, value_parser = parse_duration)]
    pub discovery_on_demand_timeout: Option<Duration>,
    /// How long /healthz/ready waits for the first connection to pilot
    /// [env: OUTRIGGER_PROXY_DISCOVERY_READY_TIMEOUT] [default: 15s]
    #[arg(long, value_parser = parse_duration)]
    pub discovery_ready_timeout: Option<Duration>,
    /// Unsubscribe a destination no connection used for this long; 0s: never
    /// [env: OUTRIGGER_PROXY_DISCOVERY_IDLE_TIMEOUT] [default: 30m]
    #[arg(long, value_parser = parse_duration)]
    pub discovery_idle_timeout: Option<Duration>,
    /// Admin port, loopback only: /config_dump, /clusters, /stats
    /// [env: OUTRIGGER_PROXY_ADMIN_PORT] [default: 15000]
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// The pod's labels as the downward API writes them (the `istio-podinfo` volume), read
    /// once at start for telemetry and the metadata exchange; absent: the configuration's
    /// proxy labels [env: OUTRIGGER_PROXY_POD_LABELS_FILE] [default: /etc/istio/pod/labels]
    #[arg(long)]
    pub pod_labels_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Health port of the proxy to poll.
    #[arg(long, default_value_t = outrigger_api::names::port::HEALTH)]
    pub health_port: u16,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Status port of the proxy.
    #[arg(long, default_value_t = outrigger_api::names::port::STATUS)]
    pub status_port: u16,
}

/// Whether to open IPv6 capture listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Mode {
    /// When the host supports IPv6 sockets.
    Auto,
    True,
    False,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse_go_durations() {
        let cli = Cli::try_parse_from([
            "outrigger-proxy",
            "run",
            "--concurrency",
            "4",
            "--drain-duration",
            "1m",
            "--connect-timeout",
            "250ms",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.concurrency, Some(4));
        assert_eq!(args.drain_duration, Some(Duration::from_secs(60)));
        assert_eq!(args.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(args.termination_grace, None);
    }

    #[test]
    fn a_bad_duration_names_the_flag() {
        let err = Cli::try_parse_from(["outrigger-proxy", "run", "--drain-duration", "5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--drain-duration"), "{err}");
        assert!(err.contains("missing unit"), "{err}");
    }

    #[test]
    fn wait_defaults_to_sixty_seconds() {
        let cli = Cli::try_parse_from(["outrigger-proxy", "wait"]).unwrap();
        let Command::Wait(args) = cli.command else {
            panic!("expected wait");
        };
        assert_eq!(args.timeout, Duration::from_secs(60));
        assert_eq!(args.health_port, 15021);
    }
}
