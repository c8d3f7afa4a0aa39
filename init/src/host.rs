//! Host-derived inputs of the planner: whether IPv6 is on, and the DNS servers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::error::HostError;

/// What the planner needs to know about the pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostInfo {
    /// Install IPv6 rules too (`ip6tables-restore`).
    pub ipv6: bool,
    pub dns_servers_v4: Vec<Ipv4Addr>,
    pub dns_servers_v6: Vec<Ipv6Addr>,
}

/// How to detect the host inputs; each can be pinned.
#[derive(Debug, Clone, Default)]
pub struct HostOptions<'a> {
    /// `--ipv6=true|false`; `None` detects it from the interface addresses.
    pub ipv6: Option<bool>,
    /// `--dual-stack`: IPv6 on when any address is IPv6 (not only the first).
    pub dual_stack: bool,
    /// Where to read DNS servers; `None` reads none (DNS capture off or capture-all).
    pub resolv_conf: Option<&'a Path>,
}

/// Detects IPv6 from this network namespace's interface addresses (unless pinned) and reads
/// the DNS servers from the resolver configuration (when a path is given).
pub fn detect_host_info(options: &HostOptions<'_>) -> Result<HostInfo, HostError> {
    let ipv6 = match options.ipv6 {
        Some(pinned) => pinned,
        None => {
            let addrs = nix::ifaddrs::getifaddrs()
                .map_err(HostError::Interfaces)?
                .filter_map(|ifa| {
                    let addr = ifa.address?;
                    if let Some(v4) = addr.as_sockaddr_in() {
                        Some(IpAddr::V4(v4.ip()))
                    } else {
                        addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                    }
                })
                .collect::<Vec<_>>();
            ipv6_from_addresses(&addrs, options.dual_stack)
        }
    };
    let (dns_servers_v4, dns_servers_v6) = match options.resolv_conf {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| HostError::ResolvConf {
                path: path.to_owned(),
                source,
            })?;
            parse_resolv_conf(&text)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(HostInfo {
        ipv6,
        dns_servers_v4,
        dns_servers_v6,
    })
}

/// Istio's rule: the first usable (not loopback, not link-local) address decides; with
/// dual-stack, any usable IPv6 address turns IPv6 on.
pub fn ipv6_from_addresses(addrs: &[IpAddr], dual_stack: bool) -> bool {
    let mut usable = addrs.iter().map(|a| a.to_canonical()).filter(|a| match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback()
                && !v6.is_unicast_link_local()
                && !v6.is_unspecified()
                && !v6.is_multicast()
        }
    });
    if dual_stack {
        usable.any(|a| a.is_ipv6())
    } else {
        usable.next().is_some_and(|a| a.is_ipv6())
    }
}

/// The `nameserver` lines of a resolv.conf, split by family. Unparsable entries are skipped
/// (the resolver skips them too).
pub fn parse_resolv_conf(text: &str) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // A scoped address (fe80::1%eth0) cannot be written into a rule; drop the scope.
        match words
            .next()
            .map(|w| w.split('%').next().unwrap_or(w).parse::<IpAddr>())
        {
            Some(Ok(IpAddr::V4(addr))) => v4.push(addr),
            Some(Ok(IpAddr::V6(addr))) => match addr.to_ipv4_mapped() {
                Some(mapped) => v4.push(mapped),
                None => v6.push(addr),
            },
            _ => {}
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_servers_split_by_family() {
        let text = "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::10\n\
                    nameserver bogus\noptions ndots:5\nnameserver 127.0.0.53 # local\n";
        let (v4, v6) = parse_resolv_conf(text);
        assert_eq!(
            v4,
            vec![Ipv4Addr::new(10, 96, 0, 10), Ipv4Addr::new(127, 0, 0, 53)]
        );
        assert_eq!(v6, vec!["fd00::10".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn ipv6_detection_follows_first_usable_address() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert!(!ipv6_from_addresses(&[lo, ll, v4, v6], false));
        assert!(ipv6_from_addresses(&[lo, ll, v6, v4], false));
        assert!(ipv6_from_addresses(&[lo, v4, v6], true));
        assert!(!ipv6_from_addresses(&[lo, ll], true));
        assert!(!ipv6_from_addresses(&[], false));
    }

    #[test]
    fn pinned_values_win_and_missing_resolv_conf_is_an_error() {
        let host = detect_host_info(&HostOptions {
            ipv6: Some(true),
            ..HostOptions::default()
        })
        .unwrap();
        assert!(host.ipv6);
        let missing = Path::new("/nonexistent/resolv.conf");
        let err = detect_host_info(&HostOptions {
            ipv6: Some(false),
            resolv_conf: Some(missing),
            ..HostOptions::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/resolv.conf"));
    }
}
