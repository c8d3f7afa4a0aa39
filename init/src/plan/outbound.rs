//! Outbound capture in nat ISTIO_OUTPUT: owner (UID/GID/group) rules, then destination rules.

use super::{Context, RuleSet};
use crate::names::{
    DNS_PORT, INBOUND_PASSTHROUGH_V4, INBOUND_PASSTHROUGH_V6, ISTIO_IN_REDIRECT, ISTIO_OUTPUT,
    ISTIO_REDIRECT, LOOPBACK_IFACE, LOOPBACK_V6, OUTPUT, PREROUTING,
};
use crate::rule::{Family, Table, spec};
use outrigger_api::capture::OwnerGroups;

/// The OUTPUT jump, `-o` port exclusions, the passthrough source, one rule trio per UID and per
/// GID, and the owner-group filter.
pub(super) fn owner_rules(ctx: &Context<'_>, rules: &mut RuleSet) {
    let cfg = ctx.cfg;
    rules.append(Table::Nat, OUTPUT, spec!["-j", ISTIO_OUTPUT]);
    for port in &cfg.outbound_ports_exclude {
        rules.append(
            Table::Nat,
            ISTIO_OUTPUT,
            spec!["-p", "tcp", "--dport", port, "-j", "RETURN"],
        );
        rules.append(
            Table::Nat,
            ISTIO_OUTPUT,
            spec!["-p", "udp", "--dport", port, "-j", "RETURN"],
        );
    }
    rules.append_per_family(
        Table::Nat,
        ISTIO_OUTPUT,
        INBOUND_PASSTHROUGH_V4,
        INBOUND_PASSTHROUGH_V6,
        |src| spec!["-o", LOOPBACK_IFACE, "-s", src, "-j", "RETURN"],
    );
    let tunnel = cfg.inbound_tunnel_port;
    for uid in &cfg.proxy_uids {
        rules.append_per_family(
            Table::Nat,
            ISTIO_OUTPUT,
            &ctx.loopback_v4,
            LOOPBACK_V6,
            |lo| {
                let mut spec = spec!["-o", LOOPBACK_IFACE, "!", "-d", lo, "-p", "tcp"];
                if ctx.redirect_dns {
                    spec.extend(spec![
                        "-m",
                        "multiport",
                        "!",
                        "--dports",
                        format!("{DNS_PORT},{tunnel}")
                    ]);
                } else {
                    spec.extend(spec!["!", "--dport", tunnel]);
                }
                spec.extend(spec![
                    "-m",
                    "owner",
                    "--uid-owner",
                    uid,
                    "-j",
                    ISTIO_IN_REDIRECT
                ]);
                spec
            },
        );
        owner_trio_tail(ctx, rules, "--uid-owner", &uid.to_string());
    }
    for gid in &cfg.proxy_gids {
        rules.append_per_family(
            Table::Nat,
            ISTIO_OUTPUT,
            &ctx.loopback_v4,
            LOOPBACK_V6,
            |lo| {
                spec![
                    "-o",
                    LOOPBACK_IFACE,
                    "!",
                    "-d",
                    lo,
                    "-p",
                    "tcp",
                    "!",
                    "--dport",
                    tunnel,
                    "-m",
                    "owner",
                    "--gid-owner",
                    gid,
                    "-j",
                    ISTIO_IN_REDIRECT
                ]
            },
        );
        owner_trio_tail(ctx, rules, "--gid-owner", &gid.to_string());
    }
    match &cfg.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for group in groups {
                rules.append(
                    Table::Nat,
                    ISTIO_OUTPUT,
                    spec!["-m", "owner", "--gid-owner", group, "-j", "RETURN"],
                );
            }
        }
        OwnerGroups::Only(groups) => {
            let mut spec = Vec::new();
            for group in groups {
                spec.extend(spec!["-m", "owner", "!", "--gid-owner", group]);
            }
            spec.extend(spec!["-j", "RETURN"]);
            rules.append(Table::Nat, ISTIO_OUTPUT, spec);
        }
    }
}

/// The loopback RETURN for other owners (unless `-i` includes loopback) and the proxy's RETURN.
fn owner_trio_tail(ctx: &Context<'_>, rules: &mut RuleSet, owner_flag: &str, id: &str) {
    if !ctx.include_has_loopback {
        let spec = if ctx.redirect_dns {
            spec![
                "-o",
                LOOPBACK_IFACE,
                "-p",
                "tcp",
                "!",
                "--dport",
                DNS_PORT,
                "-m",
                "owner",
                "!",
                owner_flag,
                id,
                "-j",
                "RETURN"
            ]
        } else {
            spec![
                "-o",
                LOOPBACK_IFACE,
                "-m",
                "owner",
                "!",
                owner_flag,
                id,
                "-j",
                "RETURN"
            ]
        };
        rules.append(Table::Nat, ISTIO_OUTPUT, spec);
    }
    rules.append(
        Table::Nat,
        ISTIO_OUTPUT,
        spec!["-m", "owner", owner_flag, id, "-j", "RETURN"],
    );
}

/// Loopback destinations, `-x` exclusions, `-q` ports, then `-i` inclusions (with the `-k`
/// PREROUTING jumps).
pub(super) fn destination_rules(ctx: &Context<'_>, rules: &mut RuleSet) {
    let cfg = ctx.cfg;
    rules.append_per_family(
        Table::Nat,
        ISTIO_OUTPUT,
        &ctx.loopback_v4,
        LOOPBACK_V6,
        |lo| spec!["-d", lo, "-j", "RETURN"],
    );
    for net in &ctx.exclude_v4 {
        rules.append_v4(Table::Nat, ISTIO_OUTPUT, spec!["-d", net, "-j", "RETURN"]);
    }
    for net in &ctx.exclude_v6 {
        rules.append_v6(Table::Nat, ISTIO_OUTPUT, spec!["-d", net, "-j", "RETURN"]);
    }
    for port in &cfg.outbound_ports_include {
        rules.append(
            Table::Nat,
            ISTIO_OUTPUT,
            spec!["-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT],
        );
    }
    let ifaces = &cfg.reroute_virtual_interfaces;
    if ctx.include.all {
        rules.append(Table::Nat, ISTIO_OUTPUT, spec!["-j", ISTIO_REDIRECT]);
        for iface in ifaces {
            rules.insert(
                Table::Nat,
                PREROUTING,
                1,
                spec!["-i", iface, "-j", ISTIO_REDIRECT],
            );
        }
        return;
    }
    for (family, nets) in [(Family::V4, &ctx.include.v4), (Family::V6, &ctx.include.v6)] {
        for net in nets {
            for iface in ifaces {
                rules.insert_to(
                    family,
                    Table::Nat,
                    PREROUTING,
                    1,
                    spec!["-i", iface, "-d", net, "-j", ISTIO_REDIRECT],
                );
            }
            rules.append_to(
                family,
                Table::Nat,
                ISTIO_OUTPUT,
                spec!["-d", net, "-j", ISTIO_REDIRECT],
            );
        }
    }
}
