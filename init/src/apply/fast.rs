//! The fast path for the common case, a namespace without our chains: one restore per family
//! and no read of the current rules. Every planned chain is created with `-N`, which fails when
//! the chain exists, so a successful restore proves the planned chains were absent (every plan
//! creates the nat chains, so any earlier run of ours makes this fail). When a restore fails,
//! the table blocks it already committed are undone and the caller takes the careful path.

use crate::error::ApplyError;
use crate::plan::Plan;
use crate::render::{declared_chains, render_rules};
use crate::rule::{Family, Rule, Table, is_builtin};

use super::{Backend, restore};

/// What the fast path found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fast {
    /// Every family's rules are installed.
    Applied,
    /// Something of ours (or a failing rule) is in the way; nothing was changed.
    NotFresh,
}

/// Restores each family's payload; on the first failure undoes everything it committed.
pub(super) fn try_fresh(backend: Backend, plan: &Plan) -> Result<Fast, ApplyError> {
    let mut applied: Vec<(Family, &[Rule])> = Vec::new();
    for (family, rules) in plan.families() {
        let payload = render_rules(rules);
        let Err(error) = restore(backend, family, &payload) else {
            applied.push((family, rules));
            continue;
        };
        let committed = committed_tables(&payload, &error);
        tracing::debug!(%family, ?committed, error = %crate::error::error_chain(&error), "fast path failed; undoing");
        let mut undo_errors = Vec::new();
        if let Err(e) = undo(backend, family, rules, &committed) {
            undo_errors.push(e);
        }
        for (family, rules) in applied {
            if let Err(e) = undo(backend, family, rules, &Table::ALL) {
                undo_errors.push(e);
            }
        }
        return match undo_errors.len() {
            0 => Ok(Fast::NotFresh),
            1 => Err(ApplyError::RollbackFailed {
                rollback: Box::new(undo_errors.remove(0)),
                source: Box::new(error),
            }),
            _ => Err(ApplyError::RollbackFailed {
                rollback: Box::new(ApplyError::Several(undo_errors)),
                source: Box::new(error),
            }),
        };
    }
    Ok(Fast::Applied)
}

/// Undoes what a fresh restore of `rules` did in `tables`: deletes the rules it added to
/// built-in chains and removes the chains it created (they did not exist before).
pub(super) fn undo(
    backend: Backend,
    family: Family,
    rules: &[Rule],
    tables: &[Table],
) -> Result<(), ApplyError> {
    let mut script = String::new();
    for &table in tables {
        let in_table: Vec<&Rule> = rules.iter().filter(|r| r.table == table).collect();
        if in_table.is_empty() {
            continue;
        }
        script.push_str(&format!("*{table}\n"));
        for rule in in_table.iter().rev().filter(|r| is_builtin(r.chain)) {
            script.push_str(&format!("-D {} {}\n", rule.chain, rule.spec_text()));
        }
        let chains = declared_chains(&in_table);
        for chain in &chains {
            script.push_str(&format!("-F {chain}\n"));
        }
        for chain in &chains {
            script.push_str(&format!("-X {chain}\n"));
        }
        script.push_str("COMMIT\n");
    }
    if script.is_empty() {
        return Ok(());
    }
    restore(backend, family, &script)
}

/// The tables whose blocks iptables-restore committed before failing. iptables-restore stops
/// at the first failing line ("line N failed" or "Error occurred at line: N"); every block
/// whose COMMIT comes before that line was committed. Without a line number, none is assumed
/// (the careful path then sees any leftover as stale state and asks for --reconcile).
pub(super) fn committed_tables(payload: &str, error: &ApplyError) -> Vec<Table> {
    let ApplyError::Command { stderr, .. } = error else {
        return Vec::new();
    };
    let Some(failed_line) = failing_line(stderr) else {
        return Vec::new();
    };
    let mut committed = Vec::new();
    let mut current = None;
    for (index, line) in payload.lines().enumerate() {
        let number = index + 1;
        if let Some(name) = line.strip_prefix("* ") {
            current = Table::ALL.into_iter().find(|t| t.name() == name);
        } else if line == "COMMIT" && number < failed_line {
            committed.extend(current.take());
        }
    }
    committed
}

fn failing_line(stderr: &str) -> Option<usize> {
    for marker in ["line: ", "line "] {
        for (pos, _) in stderr.match_indices(marker) {
            let digits: String = stderr[pos + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> ApplyError {
        ApplyError::Command {
            program: "iptables-restore".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        }
    }

    const PAYLOAD: &str = "* mangle\n-N ISTIO_DIVERT\n-A ISTIO_DIVERT -j ACCEPT\nCOMMIT\n* nat\n-N ISTIO_INBOUND\nCOMMIT\n* raw\n-N ISTIO_OUTPUT_DNS\nCOMMIT\n";

    #[test]
    fn blocks_before_the_failing_line_were_committed() {
        let nft = failed(
            "iptables-nft-restore v1.8.9 (nf_tables): Chain 'X' does not exist\nError occurred at line: 7\nTry ...",
        );
        assert_eq!(committed_tables(PAYLOAD, &nft), [Table::Mangle]);
        let legacy = failed("iptables-restore: line 6 failed");
        assert_eq!(committed_tables(PAYLOAD, &legacy), [Table::Mangle]);
        let first = failed("iptables-nft-restore: line 2 failed: Chain already exists.");
        assert!(committed_tables(PAYLOAD, &first).is_empty());
        let last = failed("Error occurred at line: 9");
        assert_eq!(
            committed_tables(PAYLOAD, &last),
            [Table::Mangle, Table::Nat]
        );
        assert!(committed_tables(PAYLOAD, &failed("something else")).is_empty());
    }
}
