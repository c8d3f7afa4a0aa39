//! Unit tests of the planner: structure and the option effects, without rendering.

use super::*;
use outrigger_api::capture::{InboundPorts, InterceptionMode, OwnerGroups};

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

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::render::render_rules;

    fn ports() -> impl Strategy<Value = Vec<u16>> {
        prop::collection::vec(1u16.., 0..4)
    }

    fn nets() -> impl Strategy<Value = Vec<IpNet>> {
        let v4 = (any::<u32>(), 0u8..=32)
            .prop_map(|(a, p)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap()));
        let v6 = (any::<u128>(), 0u8..=128)
            .prop_map(|(a, p)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), p).unwrap()));
        prop::collection::vec(prop_oneof![v4, v6], 0..3)
    }

    prop_compose! {
        fn configs()(
            tproxy in any::<bool>(),
            inbound_all in any::<bool>(),
            inbound in ports(),
            exclude_in in ports(),
            outbound_all in any::<bool>(),
            include in nets(),
            exclude in nets(),
            q in ports(),
            o in ports(),
            uids in prop::collection::vec(0u32..5000, 1..3),
            gids in prop::collection::vec(0u32..5000, 1..3),
            ifaces in prop::collection::vec("[a-z]{1,6}[0-9]", 0..2),
            nics in prop::collection::vec("[a-z]{1,6}[0-9]", 0..2),
            groups in prop::collection::vec("[a-z0-9]{1,5}", 0..3),
            groups_only in any::<bool>(),
            dns in any::<bool>(),
            all_dns in any::<bool>(),
            drop in any::<bool>(),
        ) -> CaptureConfig {
            CaptureConfig {
                mode: if tproxy { InterceptionMode::Tproxy } else { InterceptionMode::Redirect },
                inbound_ports: if inbound_all { InboundPorts::All } else { InboundPorts::Only(inbound) },
                inbound_ports_exclude: exclude_in,
                outbound_ranges: if outbound_all { OutboundRanges::All } else { OutboundRanges::Only(include) },
                outbound_ranges_exclude: exclude,
                outbound_ports_include: q,
                outbound_ports_exclude: o,
                proxy_uids: uids,
                proxy_gids: gids,
                reroute_virtual_interfaces: ifaces,
                exclude_interfaces: nics,
                owner_groups: if groups_only { OwnerGroups::Only(groups) } else { OwnerGroups::AllExcept(groups) },
                redirect_dns: dns,
                capture_all_dns: all_dns,
                drop_invalid: drop,
                ..CaptureConfig::default()
            }
        }
    }

    fn hosts() -> impl Strategy<Value = HostInfo> {
        (
            any::<bool>(),
            prop::collection::vec(any::<u32>(), 0..2),
            prop::collection::vec(any::<u128>(), 0..2),
        )
            .prop_map(|(ipv6, v4, v6)| HostInfo {
                ipv6,
                dns_servers_v4: v4.into_iter().map(Into::into).collect(),
                dns_servers_v6: v6.into_iter().map(Into::into).collect(),
            })
    }

    proptest! {
        /// Every chain a rule jumps to, or inserts into, is declared in the same table, so
        /// iptables-restore can load every plan; the built-in chains are never declared.
        #[test]
        fn every_referenced_chain_is_declared(cfg in configs(), host in hosts()) {
            let plan = plan(&cfg, &host);
            prop_assert_eq!(plan.ipv6.is_some(), host.ipv6);
            for (_, rules) in plan.families() {
                for table in Table::ALL {
                    let in_table: Vec<&Rule> = rules.iter().filter(|r| r.table == table).collect();
                    let declared = crate::render::declared_chains(&in_table);
                    for rule in &in_table {
                        if let Some(target) = rule.target().filter(|t| t.starts_with(crate::names::CHAIN_PREFIX)) {
                            prop_assert!(declared.contains(&target), "{table}: {rule} jumps to undeclared {target}");
                        }
                        prop_assert!(!crate::rule::is_builtin(rule.chain) || !declared.contains(&rule.chain));
                    }
                }
                let text = render_rules(rules);
                prop_assert!(text.starts_with("* ") && text.ends_with("COMMIT\n"));
            }
        }

        /// IPv4 payloads never carry IPv6 addresses and the other way round.
        #[test]
        fn families_do_not_mix(cfg in configs(), host in hosts()) {
            let plan = plan(&cfg, &host);
            for rule in &plan.ipv4 {
                for token in &rule.spec {
                    prop_assert!(token.parse::<IpNet>().map_or(true, |n| matches!(n, IpNet::V4(_))), "{rule}");
                }
            }
            for rule in plan.ipv6.iter().flatten() {
                for token in &rule.spec {
                    prop_assert!(token.parse::<IpNet>().map_or(true, |n| matches!(n, IpNet::V6(_))), "{rule}");
                }
            }
        }
    }
}
