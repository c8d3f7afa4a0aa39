//! The capture settings every capture path shares: every `istio-iptables` option as a typed
//! field, `validate()`, and the parsers that turn Istio's string forms into it (over the one
//! grammar of [`crate::values`]). outrigger-iptables fills it from flags; the CNI plugin fills it
//! from the pod's annotations; both plan the same rules from it.

use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use crate::iptables::{self as names, flag};
use crate::values::{self, Selection, ValueError};

/// A configuration value that cannot be used. Names the flag, env variable or annotation, the
/// value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {flag}: {reason}")]
pub struct ConfigError {
    /// The flag, environment variable or annotation, e.g. `-b/--istio-inbound-ports`.
    pub flag: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    pub fn new(flag: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            flag,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Frames a grammar refusal with what was read.
    pub fn from_value(flag: &'static str, value: &str, error: ValueError) -> Self {
        Self::new(flag, value, error.0)
    }
}

/// How inbound connections reach the proxy (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterceptionMode {
    /// nat REDIRECT to the inbound capture port (the original source address is lost).
    #[default]
    Redirect,
    /// mangle TPROXY (keeps the original source address; needs policy routing).
    Tproxy,
}

/// Which inbound ports are captured (`-b`): `*` (every port except `-d`) or these only (empty:
/// no inbound capture at all).
pub type InboundPorts = Selection<u16>;

/// Which outbound destinations are captured (`-i`): `*` (every destination except `-x`) or these
/// CIDRs only (IPv4 and IPv6 mixed; empty: no outbound capture by address).
pub type OutboundRanges = Selection<IpNet>;

/// Owner groups whose outbound traffic is captured (`ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Include `*`: every group except these.
    AllExcept(Vec<String>),
    /// Only these groups (names or numeric GIDs).
    Only(Vec<String>),
}

/// The validation probe's settings (`--iptables-probe-port`, `--probe-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub port: u16,
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            port: names::DEFAULT_PROBE_PORT,
            timeout: Duration::from_secs(names::DEFAULT_PROBE_TIMEOUT_SECS),
        }
    }
}

/// Everything that shapes the capture rules. `Default` gives Istio's defaults
/// (`-b ""`, `-i ""`: nothing captured until ports and ranges are set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// `-p`: outbound capture port.
    pub proxy_port: u16,
    /// `-z`: inbound capture port.
    pub inbound_capture_port: u16,
    /// `-e`: tunnel port, never captured.
    pub inbound_tunnel_port: u16,
    /// `-u`: proxy UIDs, one rule trio each.
    pub proxy_uids: Vec<u32>,
    /// `-g`: proxy GIDs, one rule trio each (Istio: defaults to the UIDs).
    pub proxy_gids: Vec<u32>,
    /// `-m`.
    pub mode: InterceptionMode,
    /// `-b`.
    pub inbound_ports: InboundPorts,
    /// `-d`: only used with `-b '*'`.
    pub inbound_ports_exclude: Vec<u16>,
    /// `-i`.
    pub outbound_ranges: OutboundRanges,
    /// `-x`.
    pub outbound_ranges_exclude: Vec<IpNet>,
    /// `-q`: outbound ports always redirected.
    pub outbound_ports_include: Vec<u16>,
    /// `-o`: outbound ports never redirected (TCP and UDP).
    pub outbound_ports_exclude: Vec<u16>,
    /// `-k`: virtual interfaces whose inbound traffic is treated as outbound.
    pub reroute_virtual_interfaces: Vec<String>,
    /// `-c`: interfaces whose traffic is never captured.
    pub exclude_interfaces: Vec<String>,
    /// `-t`.
    pub tproxy_mark: u32,
    /// `-r`.
    pub tproxy_route_table: u32,
    /// `--redirect-dns`.
    pub redirect_dns: bool,
    /// `--capture-all-dns`.
    pub capture_all_dns: bool,
    /// `--drop-invalid`.
    pub drop_invalid: bool,
    /// `--dual-stack`.
    pub dual_stack: bool,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`.
    pub owner_groups: OwnerGroups,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`.
    pub loopback_v4: Ipv4Net,
    /// Validation probe.
    pub probe: ProbeSettings,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            proxy_port: names::DEFAULT_PROXY_PORT,
            inbound_capture_port: names::DEFAULT_INBOUND_CAPTURE_PORT,
            inbound_tunnel_port: names::DEFAULT_INBOUND_TUNNEL_PORT,
            proxy_uids: vec![names::DEFAULT_PROXY_UID],
            proxy_gids: vec![names::DEFAULT_PROXY_UID],
            mode: InterceptionMode::Redirect,
            inbound_ports: InboundPorts::Only(Vec::new()),
            inbound_ports_exclude: Vec::new(),
            outbound_ranges: OutboundRanges::Only(Vec::new()),
            outbound_ranges_exclude: Vec::new(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            reroute_virtual_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            tproxy_mark: names::DEFAULT_TPROXY_MARK,
            tproxy_route_table: names::DEFAULT_TPROXY_ROUTE_TABLE,
            redirect_dns: false,
            capture_all_dns: false,
            drop_invalid: false,
            dual_stack: false,
            owner_groups: OwnerGroups::AllExcept(Vec::new()),
            loopback_v4: names::DEFAULT_LOOPBACK_V4
                .parse()
                .expect("the default loopback CIDR is a valid IPv4 CIDR"),
            probe: ProbeSettings::default(),
        }
    }
}

/// The `outrigger-iptables` command line the injector's default sidecar template writes
/// (Istio's own list); it parses to [`CaptureConfig::sidecar_default`]. Tests, benchmarks and
/// the end-to-end topology use this one list.
pub const SIDECAR_ARGS: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

impl CaptureConfig {
    /// The configuration the sidecar template uses: capture all inbound and outbound traffic,
    /// keeping the proxy's own ports (15090, 15021, 15020) out of inbound capture.
    pub fn sidecar_default() -> Self {
        Self {
            inbound_ports: InboundPorts::All,
            inbound_ports_exclude: vec![15090, 15021, 15020],
            outbound_ranges: OutboundRanges::All,
            ..Self::default()
        }
    }

    /// Checks what the types cannot: ports in 1–65535, interface names, the loopback CIDR,
    /// non-empty UID/GID lists and the owner-group limit. The first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_port(flag::PROXY_PORT, self.proxy_port)?;
        check_port(flag::INBOUND_CAPTURE_PORT, self.inbound_capture_port)?;
        check_port(flag::INBOUND_TUNNEL_PORT, self.inbound_tunnel_port)?;
        check_port(flag::PROBE_PORT, self.probe.port)?;
        if let InboundPorts::Only(ports) = &self.inbound_ports {
            ports
                .iter()
                .try_for_each(|p| check_port(flag::INBOUND_PORTS, *p))?;
        }
        for (name, list) in [
            (flag::INBOUND_PORTS_EXCLUDE, &self.inbound_ports_exclude),
            (flag::OUTBOUND_PORTS, &self.outbound_ports_include),
            (flag::OUTBOUND_PORTS_EXCLUDE, &self.outbound_ports_exclude),
        ] {
            list.iter().try_for_each(|p| check_port(name, *p))?;
        }
        if self.proxy_uids.is_empty() {
            return Err(ConfigError::new(
                flag::PROXY_UID,
                "",
                "at least one UID is required",
            ));
        }
        if self.proxy_gids.is_empty() {
            return Err(ConfigError::new(
                flag::PROXY_GID,
                "",
                "at least one GID is required",
            ));
        }
        for (name, list) in [
            (flag::VIRTUAL_INTERFACES, &self.reroute_virtual_interfaces),
            (flag::EXCLUDE_INTERFACES, &self.exclude_interfaces),
        ] {
            list.iter().try_for_each(|i| check_interface(name, i))?;
        }
        check_loopback(&self.loopback_v4)?;
        if self.tproxy_mark == 0 {
            return Err(ConfigError::new(
                flag::TPROXY_MARK,
                "0",
                "a mark of 0 matches every unmarked packet and would route all traffic to lo",
            ));
        }
        if names::RESERVED_ROUTE_TABLES.contains(&self.tproxy_route_table) {
            return Err(ConfigError::new(
                flag::TPROXY_ROUTE_TABLE,
                self.tproxy_route_table.to_string(),
                "tables 0 (unspec), 253 (default), 254 (main) and 255 (local) are the kernel's; pick another (Istio's default is 133)",
            ));
        }
        let (name, groups) = match &self.owner_groups {
            OwnerGroups::Only(groups) => (flag::OWNER_GROUPS_INCLUDE, groups),
            OwnerGroups::AllExcept(groups) => (flag::OWNER_GROUPS_EXCLUDE, groups),
        };
        groups.iter().try_for_each(|g| check_group(name, g))?;
        if name == flag::OWNER_GROUPS_INCLUDE && groups.len() > names::MAX_OWNER_GROUPS_INCLUDE {
            return Err(ConfigError::new(
                name,
                groups.join(","),
                format!(
                    "at most {} owner groups can be captured (one rule), got {}",
                    names::MAX_OWNER_GROUPS_INCLUDE,
                    groups.len()
                ),
            ));
        }
        if self.probe.timeout.is_zero() {
            return Err(ConfigError::new(
                flag::PROBE_TIMEOUT,
                "0s",
                "the timeout must be longer than zero",
            ));
        }
        Ok(())
    }
}

fn check_port(name: &'static str, port: u16) -> Result<(), ConfigError> {
    if port == 0 {
        return Err(ConfigError::new(name, "0", "a port must be in 1-65535"));
    }
    Ok(())
}

fn check_interface(name: &'static str, iface: &str) -> Result<(), ConfigError> {
    values::check_interface_name(iface).map_err(|e| ConfigError::from_value(name, iface, e))
}

fn check_group(name: &'static str, group: &str) -> Result<(), ConfigError> {
    if group.is_empty()
        || group
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(ConfigError::new(
            name,
            group,
            "not a group name or numeric GID",
        ));
    }
    Ok(())
}

fn check_loopback(net: &Ipv4Net) -> Result<(), ConfigError> {
    if !net.addr().is_loopback() || !(8..=32).contains(&net.prefix_len()) {
        return Err(ConfigError::new(
            flag::LOOPBACK_CIDR,
            net.to_string(),
            "must be an IPv4 loopback CIDR (127.0.0.0/8) with a prefix length of /8 to /32",
        ));
    }
    Ok(())
}

pub use crate::values::split_list;

/// Parses one port (1–65535).
pub fn parse_port(name: &'static str, value: &str) -> Result<u16, ConfigError> {
    values::parse_port(value).map_err(|e| ConfigError::from_value(name, value, e))
}

/// Parses a comma list of ports; an empty string is an empty list.
pub fn parse_port_list(name: &'static str, value: &str) -> Result<Vec<u16>, ConfigError> {
    values::parse_port_list(value).map_err(|e| ConfigError::from_value(name, value, e))
}

/// Parses `-b`: `*` or a port list.
pub fn parse_inbound_ports(value: &str) -> Result<InboundPorts, ConfigError> {
    values::parse_port_selection(value)
        .map_err(|e| ConfigError::from_value(flag::INBOUND_PORTS, value, e))
}

/// Parses `-i`: `*` or a CIDR list.
pub fn parse_outbound_ranges(value: &str) -> Result<OutboundRanges, ConfigError> {
    values::parse_cidr_selection(value)
        .map_err(|e| ConfigError::from_value(flag::OUTBOUND_RANGES, value, e))
}

/// Parses `-x`: a CIDR list (the wildcard is refused: it would disable all outbound capture).
pub fn parse_outbound_ranges_exclude(value: &str) -> Result<Vec<IpNet>, ConfigError> {
    if split_list(value).any(|v| v == "*") {
        return Err(ConfigError::new(
            flag::OUTBOUND_RANGES_EXCLUDE,
            value,
            "the wildcard '*' is not allowed; to capture no outbound traffic use -i \"\"",
        ));
    }
    values::parse_cidr_list(value)
        .map_err(|e| ConfigError::from_value(flag::OUTBOUND_RANGES_EXCLUDE, value, e))
}

/// Parses a non-empty comma list of numeric UIDs or GIDs.
pub fn parse_ids(name: &'static str, value: &str) -> Result<Vec<u32>, ConfigError> {
    let ids = split_list(value)
        .map(|id| {
            id.parse::<u32>()
                .map_err(|_| ConfigError::new(name, value, format!("{id:?} is not a numeric ID")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(ConfigError::new(
            name,
            value,
            "at least one numeric ID is required",
        ));
    }
    Ok(ids)
}

/// Parses a comma list of interface names.
pub fn parse_interfaces(name: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    values::parse_interface_list(value).map_err(|e| ConfigError::from_value(name, value, e))
}

/// Parses `-m`: `REDIRECT` (also empty) or `TPROXY`.
pub fn parse_mode(value: &str) -> Result<InterceptionMode, ConfigError> {
    match value.trim() {
        "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        _ => Err(ConfigError::new(
            flag::MODE,
            value,
            "must be REDIRECT or TPROXY",
        )),
    }
}

/// Parses an unsigned number (marks, route tables).
pub fn parse_u32(name: &'static str, value: &str) -> Result<u32, ConfigError> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| ConfigError::new(name, value, "not an unsigned 32-bit number"))
}

/// Parses `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`.
pub fn parse_loopback_cidr(value: &str) -> Result<Ipv4Net, ConfigError> {
    let net = value.trim().parse::<Ipv4Net>().map_err(|_| {
        ConfigError::new(
            flag::LOOPBACK_CIDR,
            value,
            "not an IPv4 CIDR; must be an IPv4 loopback CIDR such as 127.0.0.1/32",
        )
    })?;
    check_loopback(&net)?;
    Ok(net)
}

/// Parses the owner-group include (`*` or a list) and exclude lists.
pub fn parse_owner_groups(include: &str, exclude: &str) -> Result<OwnerGroups, ConfigError> {
    let groups = if include.trim() == "*" {
        OwnerGroups::AllExcept(split_list(exclude).map(str::to_owned).collect())
    } else {
        OwnerGroups::Only(split_list(include).map(str::to_owned).collect())
    };
    let check = CaptureConfig {
        owner_groups: groups,
        ..CaptureConfig::default()
    };
    check.validate()?;
    Ok(check.owner_groups)
}

/// Parses a Go-style duration: `5s`, `500ms`, `1m30s`, `2h`, `0`.
pub fn parse_duration(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    crate::duration::parse_duration(value).map_err(|e| {
        ConfigError::new(
            name,
            value,
            format!("not a duration like 5s, 500ms or 1m30s ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_istio() {
        let cfg = CaptureConfig::default();
        assert_eq!(cfg.proxy_port, 15001);
        assert_eq!(cfg.inbound_capture_port, 15006);
        assert_eq!(cfg.inbound_tunnel_port, 15008);
        assert_eq!(cfg.proxy_uids, vec![1337]);
        assert_eq!(cfg.proxy_gids, vec![1337]);
        assert_eq!(cfg.tproxy_mark, 1337);
        assert_eq!(cfg.tproxy_route_table, 133);
        assert_eq!(cfg.loopback_v4.to_string(), "127.0.0.1/32");
        assert_eq!(cfg.probe.port, 15002);
        assert_eq!(cfg.probe.timeout, Duration::from_secs(5));
        cfg.validate().unwrap();
        CaptureConfig::sidecar_default().validate().unwrap();
    }

    #[test]
    fn ports_outside_range_name_flag_value_and_reason() {
        let err = parse_port_list(flag::INBOUND_PORTS, "80,70000").unwrap_err();
        assert_eq!(err.flag, flag::INBOUND_PORTS);
        assert_eq!(err.value, "80,70000");
        assert!(err.to_string().contains("1-65535"), "{err}");
        assert!(parse_port(flag::PROXY_PORT, "0").is_err());
        assert!(parse_port(flag::PROXY_PORT, "http").is_err());
        assert_eq!(
            parse_port_list(flag::INBOUND_PORTS, " 80 , ,443").unwrap(),
            vec![80, 443]
        );
    }

    #[test]
    fn exclude_wildcard_is_refused() {
        let err = parse_outbound_ranges_exclude("10.0.0.0/8,*").unwrap_err();
        assert_eq!(err.flag, flag::OUTBOUND_RANGES_EXCLUDE);
        assert!(parse_outbound_ranges_exclude("").unwrap().is_empty());
    }

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(parse_outbound_ranges("*").unwrap(), OutboundRanges::All);
        let err = parse_outbound_ranges("10.0.0.0/33").unwrap_err();
        assert!(err.reason.contains("10.0.0.0/33"), "{err}");
        assert_eq!(err.flag, flag::OUTBOUND_RANGES);
        assert!(parse_outbound_ranges("10.0.0.1").is_err());
        assert!(parse_outbound_ranges("10.0.0.0/8,fd00::/8").is_ok());
    }

    #[test]
    fn interface_names() {
        assert!(parse_interfaces(flag::EXCLUDE_INTERFACES, "eth0,veth+").is_ok());
        assert!(
            parse_interfaces(flag::EXCLUDE_INTERFACES, "ethé,é").is_ok(),
            "multi-byte names do not panic"
        );
        for bad in ["eth/0", "a:b", "this-name-is-too-long", "..", "e+th"] {
            assert!(
                parse_interfaces(flag::EXCLUDE_INTERFACES, bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn loopback_cidr_must_be_ipv4_loopback_8_to_32() {
        assert_eq!(
            parse_loopback_cidr("127.0.0.1/8").unwrap().to_string(),
            "127.0.0.1/8"
        );
        for bad in ["10.0.0.1/32", "127.0.0.1/7", "::1/128", "127.0.0.1"] {
            assert_eq!(
                parse_loopback_cidr(bad).unwrap_err().flag,
                flag::LOOPBACK_CIDR,
                "{bad}"
            );
        }
    }

    #[test]
    fn owner_groups() {
        assert_eq!(
            parse_owner_groups("*", "a,b").unwrap(),
            OwnerGroups::AllExcept(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_owner_groups("java,202", "x").unwrap(),
            OwnerGroups::Only(vec!["java".into(), "202".into()])
        );
        let many = (0..65).map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        assert!(
            parse_owner_groups(&many, "")
                .unwrap_err()
                .reason
                .contains("64")
        );
    }

    #[test]
    fn modes_and_durations() {
        assert_eq!(parse_mode("").unwrap(), InterceptionMode::Redirect);
        assert_eq!(parse_mode("TPROXY").unwrap(), InterceptionMode::Tproxy);
        assert!(parse_mode("tproxy-ish").is_err());
        assert_eq!(
            parse_duration("x", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("x", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration("x", "5").is_err());
        assert!(parse_duration("x", "").is_err());
    }

    #[test]
    fn validate_rejects_the_zero_mark_and_the_kernels_route_tables() {
        let cfg = CaptureConfig {
            tproxy_mark: 0,
            ..CaptureConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, flag::TPROXY_MARK);
        for table in [0, 253, 254, 255] {
            let cfg = CaptureConfig {
                tproxy_route_table: table,
                ..CaptureConfig::default()
            };
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.flag, flag::TPROXY_ROUTE_TABLE, "{table}");
            assert!(err.reason.contains("main"), "{err}");
        }
        for table in [1, 133, 252, 256] {
            let cfg = CaptureConfig {
                tproxy_route_table: table,
                ..CaptureConfig::default()
            };
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn validate_rejects_zero_ports_and_empty_ids() {
        let cfg = CaptureConfig {
            inbound_ports_exclude: vec![0],
            ..CaptureConfig::default()
        };
        assert_eq!(
            cfg.validate().unwrap_err().flag,
            flag::INBOUND_PORTS_EXCLUDE
        );
        let cfg = CaptureConfig {
            proxy_uids: vec![],
            ..CaptureConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, flag::PROXY_UID);
    }
}
