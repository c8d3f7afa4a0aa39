//! Unit tests of the planner: structure and the option effects, without rendering.

use super::*;
use crate::config::{InboundPorts, InterceptionMode, OwnerGroups};
use crate::rule::Family;

fn lines(rules: &[Rule], table: Table) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.table == table)
        .map(|r| r.to_string())
        .collect()
}

fn v4(cfg: &CaptureConfig) -> Vec<Rule> {
    plan(cfg, &HostInfo::default()).ipv4
}

#[test]
fn ipv6_plan_only_when_host_has_ipv6() {
    let cfg = CaptureConfig::sidecar_default();
    assert!(plan(&cfg, &HostInfo::default()).ipv6.is_none());
    let p = plan(
        &cfg,
        &HostInfo {
            ipv6: true,
            ..HostInfo::default()
        },
    );
    let v6 = p.ipv6.as_ref().unwrap();
    assert!(
        lines(v6, Table::Nat).contains(&"-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN".to_owned())
    );
    assert_eq!(
        p.families().map(|(f, _)| f).collect::<Vec<_>>(),
        [Family::V4, Family::V6]
    );
}

#[test]
fn empty_inbound_ports_means_no_prerouting_jump() {
    let cfg = CaptureConfig {
        inbound_ports: InboundPorts::Only(vec![]),
        ..CaptureConfig::sidecar_default()
    };
    let nat = lines(&v4(&cfg), Table::Nat);
    assert!(!nat.iter().any(|l| l.starts_with("-A PREROUTING")));
    assert!(nat.contains(&"-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN".to_owned()));
}

#[test]
fn exclude_ports_only_apply_with_wildcard() {
    let cfg = CaptureConfig {
        inbound_ports: InboundPorts::Only(vec![80]),
        ..CaptureConfig::sidecar_default()
    };
    let nat = lines(&v4(&cfg), Table::Nat);
    assert!(!nat.iter().any(|l| l.contains("--dport 15090")));
    assert!(nat.contains(&"-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_IN_REDIRECT".to_owned()));
}

#[test]
fn one_trio_per_uid_and_gid() {
    let cfg = CaptureConfig {
        proxy_uids: vec![1, 2],
        proxy_gids: vec![3],
        ..CaptureConfig::sidecar_default()
    };
    let nat = lines(&v4(&cfg), Table::Nat);
    assert_eq!(nat.iter().filter(|l| l.contains("--uid-owner")).count(), 6);
    assert_eq!(nat.iter().filter(|l| l.contains("--gid-owner")).count(), 3);
}

#[test]
fn loopback_include_drops_other_owner_returns() {
    let cfg = CaptureConfig {
        outbound_ranges: OutboundRanges::Only(vec!["127.0.0.1/32".parse().unwrap()]),
        ..CaptureConfig::sidecar_default()
    };
    let nat = lines(&v4(&cfg), Table::Nat);
    assert!(
        !nat.iter()
            .any(|l| l.contains("! --uid-owner") || l.contains("! --gid-owner"))
    );
}

#[test]
fn owner_group_include_is_one_combined_rule() {
    let cfg = CaptureConfig {
        owner_groups: OwnerGroups::Only(vec!["a".into(), "b".into()]),
        ..CaptureConfig::sidecar_default()
    };
    let nat = lines(&v4(&cfg), Table::Nat);
    assert!(nat.contains(
        &"-A ISTIO_OUTPUT -m owner ! --gid-owner a -m owner ! --gid-owner b -j RETURN".to_owned()
    ));
}

#[test]
fn dns_without_servers_is_silently_off() {
    let cfg = CaptureConfig {
        redirect_dns: true,
        ..CaptureConfig::sidecar_default()
    };
    let rules = v4(&cfg);
    assert!(
        !rules
            .iter()
            .any(|r| r.table == Table::Raw || r.to_string().contains("53"))
    );
    let host = HostInfo {
        dns_servers_v4: vec!["10.96.0.10".parse().unwrap()],
        ..HostInfo::default()
    };
    let rules = plan(&cfg, &host).ipv4;
    assert!(
        lines(&rules, Table::Nat).contains(
            &"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053"
                .to_owned()
        )
    );
    assert!(lines(&rules, Table::Raw).contains(
        &"-A ISTIO_INBOUND -p udp --sport 53 -s 10.96.0.10/32 -j CT --zone 1".to_owned()
    ));
}

#[test]
fn tproxy_inserts_guards_at_positions_1_to_3() {
    let cfg = CaptureConfig {
        mode: InterceptionMode::Tproxy,
        ..CaptureConfig::sidecar_default()
    };
    let mangle = lines(&v4(&cfg), Table::Mangle);
    let inserts: Vec<&String> = mangle
        .iter()
        .filter(|l| l.starts_with("-I ISTIO_INBOUND"))
        .collect();
    assert_eq!(inserts.len(), 3);
    assert!(inserts[1].starts_with("-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo"));
    assert!(
        mangle
            .iter()
            .any(|l| l.contains("--tproxy-mark 1337/0xffffffff --on-port 15006"))
    );
}

#[test]
fn ipv6_ranges_go_only_to_ipv6() {
    let cfg = CaptureConfig {
        outbound_ranges: OutboundRanges::Only(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]),
        outbound_ranges_exclude: vec!["fd00:1::/32".parse().unwrap()],
        ..CaptureConfig::sidecar_default()
    };
    let p = plan(
        &cfg,
        &HostInfo {
            ipv6: true,
            ..HostInfo::default()
        },
    );
    let v4 = lines(&p.ipv4, Table::Nat);
    let v6 = lines(p.ipv6.as_ref().unwrap(), Table::Nat);
    assert!(v4.iter().any(|l| l.contains("10.0.0.0/8")) && !v4.iter().any(|l| l.contains("fd00")));
    assert!(
        v6.iter()
            .any(|l| l.contains("-d fd00::/8 -j ISTIO_REDIRECT"))
            && !v6.iter().any(|l| l.contains("10.0.0.0/8"))
    );
    assert!(v6.contains(&"-A ISTIO_OUTPUT -d fd00:1::/32 -j RETURN".to_owned()));
}
