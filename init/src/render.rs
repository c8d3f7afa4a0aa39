//! Renders a plan as iptables-restore input: tables sorted by name, `-N` lines in first-use
//! order, then the rules in plan order, each table closed by `COMMIT`.

use std::fmt::Write as _;

use crate::plan::Plan;
use crate::rule::{Rule, Table, is_builtin};

/// iptables-restore payloads, one per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedRules {
    pub ipv4: String,
    pub ipv6: Option<String>,
}

impl RenderedRules {
    /// What `--dry-run` prints: the IPv4 payload, then the IPv6 payload when IPv6 is on.
    pub fn dry_run_text(&self) -> String {
        let mut out = self.ipv4.clone();
        if let Some(v6) = &self.ipv6 {
            out.push_str(v6);
        }
        out
    }
}

/// Renders both families.
pub fn render(plan: &Plan) -> RenderedRules {
    RenderedRules {
        ipv4: render_rules(&plan.ipv4),
        ipv6: plan.ipv6.as_deref().map(render_rules),
    }
}

/// Renders one family's rules.
pub fn render_rules(rules: &[Rule]) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        let in_table: Vec<&Rule> = rules.iter().filter(|r| r.table == table).collect();
        if in_table.is_empty() {
            continue;
        }
        let _ = writeln!(out, "* {table}");
        for chain in declared_chains(&in_table) {
            let _ = writeln!(out, "-N {chain}");
        }
        for rule in &in_table {
            let _ = writeln!(out, "{rule}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The non-built-in chains that hold rules, in first-use order.
pub fn declared_chains<'a>(rules: &[&'a Rule]) -> Vec<&'a str> {
    let mut chains: Vec<&str> = Vec::new();
    for rule in rules {
        if !is_builtin(rule.chain) && !chains.contains(&rule.chain) {
            chains.push(rule.chain);
        }
    }
    chains
}
