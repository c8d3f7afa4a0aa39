//! Inbound capture: the shared nat chains and `-b`/`-d` (REDIRECT in nat or TPROXY in mangle).

use super::{Context, RuleSet};
use crate::names::{
    ISTIO_DIVERT, ISTIO_IN_REDIRECT, ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_TPROXY, LOOPBACK_V6,
    PREROUTING,
};
use crate::rule::{Table, spec};
use outrigger_api::capture::{InboundPorts, InterceptionMode};

/// The tunnel-port exemption and the two REDIRECT chains, always present in nat.
pub(super) fn base_chains(ctx: &Context<'_>, rules: &mut RuleSet) {
    let cfg = ctx.cfg;
    rules.append(
        Table::Nat,
        ISTIO_INBOUND,
        spec![
            "-p",
            "tcp",
            "--dport",
            cfg.inbound_tunnel_port,
            "-j",
            "RETURN"
        ],
    );
    rules.append(
        Table::Nat,
        ISTIO_REDIRECT,
        spec!["-p", "tcp", "-j", "REDIRECT", "--to-ports", cfg.proxy_port],
    );
    rules.append(
        Table::Nat,
        ISTIO_IN_REDIRECT,
        spec![
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            cfg.inbound_capture_port
        ],
    );
}

/// `-b` and `-d`: nothing when `-b` is empty; otherwise the PREROUTING jump and the per-port or
/// catch-all rules.
pub(super) fn inbound_ports(ctx: &Context<'_>, rules: &mut RuleSet) {
    let cfg = ctx.cfg;
    if cfg.inbound_ports == InboundPorts::Only(Vec::new()) {
        return;
    }
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    let table = if tproxy { Table::Mangle } else { Table::Nat };
    if tproxy {
        rules.append(
            Table::Mangle,
            ISTIO_DIVERT,
            spec!["-j", "MARK", "--set-mark", cfg.tproxy_mark],
        );
        rules.append(Table::Mangle, ISTIO_DIVERT, spec!["-j", "ACCEPT"]);
        let mark = format!("{}/0xffffffff", cfg.tproxy_mark);
        rules.append_per_family(
            Table::Mangle,
            ISTIO_TPROXY,
            &ctx.loopback_v4,
            LOOPBACK_V6,
            |lo| {
                spec![
                    "!",
                    "-d",
                    lo,
                    "-p",
                    "tcp",
                    "-j",
                    "TPROXY",
                    "--tproxy-mark",
                    mark,
                    "--on-port",
                    cfg.inbound_capture_port
                ]
            },
        );
    }
    rules.append(table, PREROUTING, spec!["-p", "tcp", "-j", ISTIO_INBOUND]);
    match &cfg.inbound_ports {
        InboundPorts::All => {
            for port in &cfg.inbound_ports_exclude {
                rules.append(
                    table,
                    ISTIO_INBOUND,
                    spec!["-p", "tcp", "--dport", port, "-j", "RETURN"],
                );
            }
            if tproxy {
                rules.append(
                    table,
                    ISTIO_INBOUND,
                    spec![
                        "-p",
                        "tcp",
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "RELATED,ESTABLISHED",
                        "-j",
                        ISTIO_DIVERT
                    ],
                );
                rules.append(table, ISTIO_INBOUND, spec!["-p", "tcp", "-j", ISTIO_TPROXY]);
            } else {
                rules.append(
                    table,
                    ISTIO_INBOUND,
                    spec!["-p", "tcp", "-j", ISTIO_IN_REDIRECT],
                );
            }
        }
        InboundPorts::Only(ports) => {
            for port in ports {
                if tproxy {
                    rules.append(
                        table,
                        ISTIO_INBOUND,
                        spec![
                            "-p",
                            "tcp",
                            "--dport",
                            port,
                            "-m",
                            "conntrack",
                            "--ctstate",
                            "RELATED,ESTABLISHED",
                            "-j",
                            ISTIO_DIVERT
                        ],
                    );
                    rules.append(
                        table,
                        ISTIO_INBOUND,
                        spec!["-p", "tcp", "--dport", port, "-j", ISTIO_TPROXY],
                    );
                } else {
                    rules.append(
                        table,
                        ISTIO_INBOUND,
                        spec!["-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT],
                    );
                }
            }
        }
    }
}
