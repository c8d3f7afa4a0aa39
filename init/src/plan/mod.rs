//! The pure planner: `CaptureConfig` + `HostInfo` -> the rules per family, in Istio's order.

mod dns;
mod inbound;
mod interfaces;
mod mangle;
mod outbound;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::host::HostInfo;
use crate::rule::{Family, Position, Rule, Table};
use outrigger_api::capture::{CaptureConfig, InterceptionMode, OutboundRanges};

/// The rules to install: IPv4 always, IPv6 when the host has IPv6 enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ipv4: Vec<Rule>,
    pub ipv6: Option<Vec<Rule>>,
}

impl Plan {
    /// The rules of each enabled family.
    pub fn families(&self) -> impl Iterator<Item = (Family, &[Rule])> {
        std::iter::once((Family::V4, self.ipv4.as_slice()))
            .chain(self.ipv6.as_deref().map(|rules| (Family::V6, rules)))
    }
}

/// Computes the rules Istio's istio-iptables installs for this configuration and host.
pub fn plan(cfg: &CaptureConfig, host: &HostInfo) -> Plan {
    let ctx = Context::new(cfg, host);
    let mut rules = RuleSet::new(host.ipv6);
    interfaces::exclude_interfaces(&ctx, &mut rules);
    interfaces::skip_virtual_interfaces(&ctx, &mut rules);
    if cfg.drop_invalid {
        mangle::drop_invalid(&mut rules);
    }
    inbound::base_chains(&ctx, &mut rules);
    inbound::inbound_ports(&ctx, &mut rules);
    outbound::owner_rules(&ctx, &mut rules);
    if ctx.redirect_dns {
        dns::redirect(&ctx, &mut rules);
    }
    outbound::destination_rules(&ctx, &mut rules);
    if cfg.mode == InterceptionMode::Tproxy {
        mangle::marks(&ctx, &mut rules);
    }
    Plan {
        ipv4: rules.v4,
        ipv6: rules.v6,
    }
}

/// Inputs derived once from the configuration and the host.
struct Context<'a> {
    cfg: &'a CaptureConfig,
    /// DNS capture is on: requested, and either all DNS or at least one server known.
    redirect_dns: bool,
    dns_v4: &'a [Ipv4Addr],
    dns_v6: &'a [Ipv6Addr],
    include: FamilyRanges,
    exclude_v4: Vec<IpNet>,
    exclude_v6: Vec<IpNet>,
    /// `-i` lists a loopback address (either family).
    include_has_loopback: bool,
    loopback_v4: String,
}

/// `-i` split per family.
struct FamilyRanges {
    all: bool,
    v4: Vec<IpNet>,
    v6: Vec<IpNet>,
}

impl<'a> Context<'a> {
    /// `--uid-owner` with each proxy UID, then `--gid-owner` with each proxy GID.
    fn proxy_owners(&self) -> impl Iterator<Item = (&'static str, &'a u32)> + use<'a> {
        let cfg = self.cfg;
        cfg.proxy_uids
            .iter()
            .map(|uid| ("--uid-owner", uid))
            .chain(cfg.proxy_gids.iter().map(|gid| ("--gid-owner", gid)))
    }

    fn new(cfg: &'a CaptureConfig, host: &'a HostInfo) -> Self {
        let has_servers = !host.dns_servers_v4.is_empty() || !host.dns_servers_v6.is_empty();
        let redirect_dns = cfg.redirect_dns && (cfg.capture_all_dns || has_servers);
        if cfg.redirect_dns && !redirect_dns {
            tracing::warn!(
                "DNS redirect requested but no DNS servers are known and --capture-all-dns is off; DNS capture disabled"
            );
        }
        let include = match &cfg.outbound_ranges {
            OutboundRanges::All => FamilyRanges {
                all: true,
                v4: Vec::new(),
                v6: Vec::new(),
            },
            OutboundRanges::Only(nets) => {
                let (v4, v6) = split_families(nets);
                FamilyRanges { all: false, v4, v6 }
            }
        };
        let include_has_loopback = include
            .v4
            .iter()
            .chain(&include.v6)
            .any(|net| net.addr().is_loopback());
        let (exclude_v4, exclude_v6) = split_families(&cfg.outbound_ranges_exclude);
        Self {
            cfg,
            redirect_dns,
            dns_v4: &host.dns_servers_v4,
            dns_v6: &host.dns_servers_v6,
            include,
            exclude_v4,
            exclude_v6,
            include_has_loopback,
            loopback_v4: cfg.loopback_v4.to_string(),
        }
    }
}

impl Context<'_> {
    /// The resolv.conf DNS servers as host CIDRs (`/32`, `/128`), per family.
    fn dns_server_cidrs(&self) -> [(Family, Vec<String>); 2] {
        [
            (
                Family::V4,
                self.dns_v4.iter().map(|s| format!("{s}/32")).collect(),
            ),
            (
                Family::V6,
                self.dns_v6.iter().map(|s| format!("{s}/128")).collect(),
            ),
        ]
    }
}

fn split_families(nets: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    nets.iter().partition(|net| matches!(net, IpNet::V4(_)))
}

/// Rules being collected for both families; IPv6 is `None` when IPv6 is off.
struct RuleSet {
    v4: Vec<Rule>,
    v6: Option<Vec<Rule>>,
}

impl RuleSet {
    fn new(ipv6: bool) -> Self {
        Self {
            v4: Vec::new(),
            v6: ipv6.then(Vec::new),
        }
    }

    fn rule(table: Table, chain: &'static str, position: Position, spec: Vec<String>) -> Rule {
        Rule {
            table,
            chain,
            position,
            spec,
        }
    }

    /// Appends to both families.
    fn append(&mut self, table: Table, chain: &'static str, spec: Vec<String>) {
        self.append_v6(table, chain, spec.clone());
        self.append_v4(table, chain, spec);
    }

    fn append_v4(&mut self, table: Table, chain: &'static str, spec: Vec<String>) {
        self.v4
            .push(Self::rule(table, chain, Position::Append, spec));
    }

    fn append_v6(&mut self, table: Table, chain: &'static str, spec: Vec<String>) {
        if let Some(v6) = &mut self.v6 {
            v6.push(Self::rule(table, chain, Position::Append, spec));
        }
    }

    /// Appends to both families with a family-specific address filled in by `spec`.
    fn append_per_family(
        &mut self,
        table: Table,
        chain: &'static str,
        v4: &str,
        v6: &str,
        spec: impl Fn(&str) -> Vec<String>,
    ) {
        self.append_v4(table, chain, spec(v4));
        self.append_v6(table, chain, spec(v6));
    }

    /// Appends to one family (a no-op for IPv6 when IPv6 is off).
    fn append_to(&mut self, family: Family, table: Table, chain: &'static str, spec: Vec<String>) {
        match family {
            Family::V4 => self.append_v4(table, chain, spec),
            Family::V6 => self.append_v6(table, chain, spec),
        }
    }

    /// Inserts into one family (a no-op for IPv6 when IPv6 is off).
    fn insert_to(
        &mut self,
        family: Family,
        table: Table,
        chain: &'static str,
        position: u32,
        spec: Vec<String>,
    ) {
        match family {
            Family::V4 => self.insert_v4(table, chain, position, spec),
            Family::V6 => self.insert_v6(table, chain, position, spec),
        }
    }

    fn insert(&mut self, table: Table, chain: &'static str, position: u32, spec: Vec<String>) {
        self.insert_v6(table, chain, position, spec.clone());
        self.insert_v4(table, chain, position, spec);
    }

    fn insert_v4(&mut self, table: Table, chain: &'static str, position: u32, spec: Vec<String>) {
        self.v4
            .push(Self::rule(table, chain, Position::Insert(position), spec));
    }

    fn insert_v6(&mut self, table: Table, chain: &'static str, position: u32, spec: Vec<String>) {
        if let Some(v6) = &mut self.v6 {
            v6.push(Self::rule(table, chain, Position::Insert(position), spec));
        }
    }
}

#[cfg(test)]
mod tests;
