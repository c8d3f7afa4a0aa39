//! DNS capture: nat ISTIO_OUTPUT_DNS redirects port 53 to the agent, raw splits conntrack zones.

use super::{Context, RuleSet};
use crate::names::{
    DNS_CAPTURE_PORT, DNS_PORT, ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_OUTPUT_DNS, OUTPUT, PREROUTING,
};
use crate::rule::{Table, spec};

/// Adds the nat redirect and the raw conntrack-zone rules (called only when DNS capture is on).
pub(super) fn redirect(ctx: &Context<'_>, rules: &mut RuleSet) {
    let all = ctx.cfg.capture_all_dns;
    rules.append(Table::Raw, OUTPUT, spec!["-j", ISTIO_OUTPUT_DNS]);
    if all || !ctx.dns_v4.is_empty() {
        rules.append_v4(Table::Nat, ISTIO_OUTPUT, spec!["-j", ISTIO_OUTPUT_DNS]);
    }
    if all || !ctx.dns_v6.is_empty() {
        rules.append_v6(Table::Nat, ISTIO_OUTPUT, spec!["-j", ISTIO_OUTPUT_DNS]);
    }
    // TCP uses `--to-ports`, UDP `--to-port`, exactly as istio-iptables writes them.
    if all {
        rules.append(
            Table::Nat,
            ISTIO_OUTPUT_DNS,
            spec![
                "-p",
                "tcp",
                "--dport",
                DNS_PORT,
                "-j",
                "REDIRECT",
                "--to-ports",
                DNS_CAPTURE_PORT
            ],
        );
        rules.append(
            Table::Nat,
            ISTIO_OUTPUT_DNS,
            spec![
                "-p",
                "udp",
                "--dport",
                DNS_PORT,
                "-j",
                "REDIRECT",
                "--to-port",
                DNS_CAPTURE_PORT
            ],
        );
    } else {
        for proto_target in [("tcp", "--to-ports"), ("udp", "--to-port")] {
            let (proto, to) = proto_target;
            for (family, servers) in ctx.dns_server_cidrs() {
                for server in servers {
                    rules.append_to(
                        family,
                        Table::Nat,
                        ISTIO_OUTPUT_DNS,
                        spec![
                            "-p",
                            proto,
                            "--dport",
                            DNS_PORT,
                            "-d",
                            server,
                            "-j",
                            "REDIRECT",
                            to,
                            DNS_CAPTURE_PORT
                        ],
                    );
                }
            }
        }
    }
    conntrack_zones(ctx, rules);
}

/// Zone 1: the proxy's upstream queries and their answers; zone 2: the app's queries to the
/// proxy. Keeps the two UDP flows from colliding in conntrack.
fn conntrack_zones(ctx: &Context<'_>, rules: &mut RuleSet) {
    let cfg = ctx.cfg;
    for (owner_flag, id) in ctx.proxy_owners() {
        rules.append(
            Table::Raw,
            ISTIO_OUTPUT_DNS,
            spec![
                "-p", "udp", "--dport", DNS_PORT, "-m", "owner", owner_flag, id, "-j", "CT",
                "--zone", 1
            ],
        );
        rules.append(
            Table::Raw,
            ISTIO_OUTPUT_DNS,
            spec![
                "-p",
                "udp",
                "--sport",
                DNS_CAPTURE_PORT,
                "-m",
                "owner",
                owner_flag,
                id,
                "-j",
                "CT",
                "--zone",
                2
            ],
        );
    }
    if cfg.capture_all_dns {
        rules.append(Table::Raw, PREROUTING, spec!["-j", ISTIO_INBOUND]);
        rules.append(
            Table::Raw,
            ISTIO_OUTPUT_DNS,
            spec!["-p", "udp", "--dport", DNS_PORT, "-j", "CT", "--zone", 2],
        );
        rules.append(
            Table::Raw,
            ISTIO_INBOUND,
            spec!["-p", "udp", "--sport", DNS_PORT, "-j", "CT", "--zone", 1],
        );
        return;
    }
    for (family, servers) in ctx.dns_server_cidrs() {
        if !servers.is_empty() {
            rules.append_to(family, Table::Raw, PREROUTING, spec!["-j", ISTIO_INBOUND]);
        }
        for server in servers {
            rules.append_to(
                family,
                Table::Raw,
                ISTIO_OUTPUT_DNS,
                spec![
                    "-p", "udp", "--dport", DNS_PORT, "-d", &server, "-j", "CT", "--zone", 2
                ],
            );
            rules.append_to(
                family,
                Table::Raw,
                ISTIO_INBOUND,
                spec![
                    "-p", "udp", "--sport", DNS_PORT, "-s", server, "-j", "CT", "--zone", 1
                ],
            );
        }
    }
}
