//! Interface short-circuits: `-c` excluded NICs and `-k` virtual interfaces.

use super::{Context, RuleSet};
use crate::names::{OUTPUT, PREROUTING};
use crate::rule::{Table, spec};
use outrigger_api::capture::InterceptionMode;

/// `-c`: traffic in or out of these NICs is never captured (nat, and mangle in TPROXY mode).
pub(super) fn exclude_interfaces(ctx: &Context<'_>, rules: &mut RuleSet) {
    let nics = &ctx.cfg.exclude_interfaces;
    let mut tables = vec![Table::Nat];
    if ctx.cfg.mode == InterceptionMode::Tproxy {
        tables.push(Table::Mangle);
    }
    for table in tables {
        for nic in nics {
            rules.append(table, PREROUTING, spec!["-i", nic, "-j", "RETURN"]);
            rules.append(table, OUTPUT, spec!["-o", nic, "-j", "RETURN"]);
        }
    }
}

/// `-k`: inbound traffic from these interfaces skips inbound capture (it is treated as
/// outbound by the include rules, which insert their own jumps above this one).
pub(super) fn skip_virtual_interfaces(ctx: &Context<'_>, rules: &mut RuleSet) {
    for iface in &ctx.cfg.reroute_virtual_interfaces {
        rules.insert(
            Table::Nat,
            PREROUTING,
            1,
            spec!["-i", iface, "-j", "RETURN"],
        );
    }
}
