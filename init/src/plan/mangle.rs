//! mangle-table rules: `--drop-invalid`, and the TPROXY marks and ISTIO_INBOUND guards.

use super::{Context, RuleSet};
use crate::names::{
    INBOUND_PASSTHROUGH_V4, INBOUND_PASSTHROUGH_V6, ISTIO_DROP, ISTIO_INBOUND, LOOPBACK_IFACE,
    LOOPBACK_V6, OUTBOUND_MARK, OUTPUT, PREROUTING,
};
use crate::rule::{Table, spec};

/// `--drop-invalid`: drop out-of-window packets instead of letting them reset the connection.
pub(super) fn drop_invalid(rules: &mut RuleSet) {
    rules.append(
        Table::Mangle,
        PREROUTING,
        spec!["-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP],
    );
    rules.append(Table::Mangle, ISTIO_DROP, spec!["-j", "DROP"]);
}

/// TPROXY: connection marks so replies route back through the proxy, the proxy's own loopback
/// mark (1338), and the three guards inserted at the top of mangle ISTIO_INBOUND.
pub(super) fn marks(ctx: &Context<'_>, rules: &mut RuleSet) {
    let cfg = ctx.cfg;
    let mark = cfg.tproxy_mark;
    rules.append(
        Table::Mangle,
        PREROUTING,
        spec![
            "-p",
            "tcp",
            "-m",
            "mark",
            "--mark",
            mark,
            "-j",
            "CONNMARK",
            "--save-mark"
        ],
    );
    rules.append(
        Table::Mangle,
        OUTPUT,
        spec![
            "-p",
            "tcp",
            "-o",
            LOOPBACK_IFACE,
            "-m",
            "mark",
            "--mark",
            mark,
            "-j",
            "RETURN"
        ],
    );
    for (owner_flag, id) in ctx.proxy_owners() {
        rules.append_per_family(Table::Mangle, OUTPUT, &ctx.loopback_v4, LOOPBACK_V6, |lo| {
            spec![
                "!",
                "-d",
                lo,
                "-p",
                "tcp",
                "-o",
                LOOPBACK_IFACE,
                "-m",
                "owner",
                owner_flag,
                id,
                "-j",
                "MARK",
                "--set-mark",
                OUTBOUND_MARK
            ]
        });
    }
    rules.append(
        Table::Mangle,
        OUTPUT,
        spec![
            "-p",
            "tcp",
            "-m",
            "connmark",
            "--mark",
            mark,
            "-j",
            "CONNMARK",
            "--restore-mark"
        ],
    );
    rules.insert(
        Table::Mangle,
        ISTIO_INBOUND,
        1,
        spec!["-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN"],
    );
    rules.insert_v4(
        Table::Mangle,
        ISTIO_INBOUND,
        2,
        spec![
            "-p",
            "tcp",
            "-s",
            INBOUND_PASSTHROUGH_V4,
            "-i",
            LOOPBACK_IFACE,
            "-j",
            "RETURN"
        ],
    );
    rules.insert_v6(
        Table::Mangle,
        ISTIO_INBOUND,
        2,
        spec![
            "-p",
            "tcp",
            "-s",
            INBOUND_PASSTHROUGH_V6,
            "-i",
            LOOPBACK_IFACE,
            "-j",
            "RETURN"
        ],
    );
    rules.insert(
        Table::Mangle,
        ISTIO_INBOUND,
        3,
        spec![
            "-p",
            "tcp",
            "-i",
            LOOPBACK_IFACE,
            "-m",
            "mark",
            "!",
            "--mark",
            OUTBOUND_MARK,
            "-j",
            "RETURN"
        ],
    );
}
