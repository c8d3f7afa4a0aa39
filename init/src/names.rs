//! The names the rules are written with: chains, built-in chains, marks and addresses. The
//! flags, env variables and defaults of `istio-iptables` are in `outrigger_api::iptables`.

/// Chain that sends inbound traffic to the proxy (nat, mangle in TPROXY mode, raw for DNS zones).
pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
/// Chain that redirects outbound TCP to the outbound capture port.
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
/// Chain that redirects TCP to the inbound capture port.
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
/// Chain holding the outbound decisions.
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
/// Chain holding the DNS redirect (nat) and conntrack-zone (raw) rules.
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
/// TPROXY: marks packets of established inbound connections and accepts them.
pub const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
/// TPROXY: hands new inbound connections to the inbound capture port.
pub const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
/// `--drop-invalid`: drops packets conntrack considers invalid.
pub const ISTIO_DROP: &str = "ISTIO_DROP";
/// Prefix shared by every chain this crate owns.
pub const CHAIN_PREFIX: &str = "ISTIO_";

/// Built-in chain for packets arriving from an interface.
pub const PREROUTING: &str = "PREROUTING";
/// Built-in chain for locally generated packets.
pub const OUTPUT: &str = "OUTPUT";
/// Built-in chains: never declared with `-N`, never deleted.
pub const BUILTIN_CHAINS: [&str; 5] = ["INPUT", OUTPUT, "FORWARD", PREROUTING, "POSTROUTING"];

/// Port the agent's DNS proxy listens on.
pub const DNS_CAPTURE_PORT: u16 = outrigger_api::names::port::DNS_CAPTURE;
/// Well-known DNS port.
pub const DNS_PORT: u16 = 53;
/// Mark the proxy sets on its own loopback traffic to the app in TPROXY mode.
pub const OUTBOUND_MARK: u32 = 1338;
/// Inbound passthrough source address (IPv4): the proxy binds it to reach the local app.
pub const INBOUND_PASSTHROUGH_V4: &str = "127.0.0.6/32";
/// Inbound passthrough source address (IPv6).
pub const INBOUND_PASSTHROUGH_V6: &str = "::6/128";
/// IPv6 loopback as the rules spell it.
pub const LOOPBACK_V6: &str = "::1/128";
/// Loopback interface name.
pub const LOOPBACK_IFACE: &str = "lo";

/// Exit code when `--run-validation` finds the traffic is not captured.
pub const VALIDATION_EXIT_CODE: u8 = outrigger_api::names::VALIDATION_FAILED_EXIT_CODE;
