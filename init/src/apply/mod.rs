//! The one side-effecting applier: reads the current rules, decides (absent, up to date,
//! stale), runs one `iptables-restore --noflush` per family, sets up TPROXY routes and the IPv6
//! passthrough address, and restores the saved tables when any step fails.

mod backend;
mod exec;
mod routes;
mod state;

use std::process::{Child, Stdio};

pub use backend::{Backend, BackendChoice, Tool};
pub use routes::{RouteCommand, ensure_routes, remove_routes, route_commands};
pub use state::{SavedState, SavedTable, is_ours, jump_target};

use crate::error::ApplyError;
use crate::plan::Plan;
use crate::render::{declared_chains, render_rules};
use crate::rule::{Family, Rule, Table, is_builtin};
use outrigger_api::capture::CaptureConfig;

/// How to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOptions {
    /// `--force-iptables-binary`.
    pub backend: BackendChoice,
    /// `--reconcile`: remove stale or foreign `ISTIO_*` state, then apply.
    pub reconcile: bool,
    /// `--force-apply`: skip the comparison's verdict: remove whatever of ours is there
    /// (current or stale) and apply.
    pub force_apply: bool,
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The rules were installed into a namespace without our chains.
    Applied,
    /// The expected rules were already installed; nothing changed.
    AlreadyApplied,
    /// Stale state was removed and the rules were installed (`--reconcile`).
    Reconciled,
}

/// How one family's current rules compare with the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyState {
    /// None of our chains or jumps exist.
    Absent,
    /// Exactly the planned chains and rules exist.
    UpToDate,
    /// Something of ours exists but differs from the plan; the text says what.
    Stale(String),
}

/// One family as found before applying: what to restore if anything fails.
struct Snapshot<'a> {
    family: Family,
    rules: &'a [Rule],
    saved: SavedState,
    state: FamilyState,
}

/// Installs the plan. Idempotent: up-to-date rules are left alone. Stale state is an error
/// unless `reconcile` (remove ours, re-apply) or `force_apply`. Every family's tables are saved
/// first, and on any failure, whatever it was (a rule the kernel refuses, iptables-restore killed
/// without a line number, a commit-time error nft already rolled back, a route step), every
/// saved table is restored and the failure itself is reported.
pub fn apply(
    cfg: &CaptureConfig,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<ApplyOutcome, ApplyError> {
    let backend = Backend::detect(opts.backend);
    let ipv6 = plan.ipv6.is_some();
    tracing::info!(?backend, ipv6, "applying capture rules");
    let mut snapshots = Vec::new();
    for (family, rules) in plan.families() {
        let saved = SavedState::parse(&exec::run(&backend.program(family, Tool::Save), &[], None)?);
        snapshots.push(Snapshot {
            family,
            rules,
            saved,
            state: FamilyState::Absent,
        });
    }
    if !opts.force_apply && snapshots.iter().all(|s| !s.saved.has_ours()) {
        // A namespace without our chains (the usual case): no comparison needed.
        for (done, snapshot) in snapshots.iter().enumerate() {
            let payload = render_rules(snapshot.rules);
            if let Err(error) = restore(backend, snapshot.family, &payload) {
                return Err(rollback(backend, &snapshots[..=done], error));
            }
        }
        if let Err(error) = ensure_routes(cfg, ipv6) {
            return Err(rollback(backend, &snapshots, error));
        }
        return Ok(ApplyOutcome::Applied);
    }
    for snapshot in &mut snapshots {
        snapshot.state = compare(backend, snapshot.family, snapshot.rules, &snapshot.saved)?;
        tracing::debug!(family = %snapshot.family, state = ?snapshot.state, "current rules");
    }
    if !opts.force_apply && snapshots.iter().all(|s| s.state == FamilyState::UpToDate) {
        tracing::info!("the expected rules are already installed; nothing to do");
        ensure_routes(cfg, ipv6)?;
        return Ok(ApplyOutcome::AlreadyApplied);
    }
    let stale = snapshots.iter().find_map(|s| match &s.state {
        FamilyState::Stale(detail) => Some((s.family, detail.clone())),
        _ => None,
    });
    let reconcile = stale.is_some() && opts.reconcile;
    if let Some((family, detail)) = stale {
        if !opts.reconcile && !opts.force_apply {
            return Err(ApplyError::StaleState { family, detail });
        }
        tracing::warn!(%family, %detail, reconcile, "existing capture rules differ from the expected ones");
    }
    // Reconcile, and force-apply, replace whatever of ours is there.
    let replace = reconcile || opts.force_apply;
    for (done, snapshot) in snapshots.iter().enumerate() {
        let result = apply_family(backend, snapshot, replace);
        if let Err(error) = result {
            return Err(rollback(backend, &snapshots[..=done], error));
        }
    }
    if let Err(error) = ensure_routes(cfg, ipv6) {
        return Err(rollback(backend, &snapshots, error));
    }
    Ok(if reconcile {
        ApplyOutcome::Reconciled
    } else {
        ApplyOutcome::Applied
    })
}

/// Restores one family's rules, first removing ours when `replace` is set.
fn apply_family(
    backend: Backend,
    snapshot: &Snapshot<'_>,
    replace: bool,
) -> Result<(), ApplyError> {
    if replace && snapshot.state != FamilyState::Absent {
        cleanup_family(backend, snapshot.family, snapshot.rules, &snapshot.saved)?;
    }
    restore(backend, snapshot.family, &render_rules(snapshot.rules))
}

/// Feeds `payload` to `iptables-restore --noflush` (or `ip6tables-restore`).
pub fn restore(backend: Backend, family: Family, payload: &str) -> Result<(), ApplyError> {
    let mut args = vec!["--noflush"];
    args.extend(backend.lock_args());
    exec::run(
        &backend.program(family, Tool::Restore),
        &args,
        Some(payload),
    )
    .map(drop)
}

/// Puts back the saved tables the plan touches (tables that did not exist are emptied).
fn rollback(backend: Backend, snapshots: &[Snapshot<'_>], error: ApplyError) -> ApplyError {
    tracing::error!(error = %outrigger_runtime::error_chain(&error), "apply failed; restoring the previous rules");
    let mut failures = Vec::new();
    for snapshot in snapshots {
        let mut text = String::new();
        for table in Table::ALL {
            match snapshot.saved.table(table.name()) {
                Some(saved) => text.push_str(&saved.block),
                None => text.push_str(&format!("*{table}\nCOMMIT\n")),
            }
        }
        let mut args: Vec<&str> = Vec::new();
        args.extend(backend.lock_args());
        if let Err(e) = exec::run(
            &backend.program(snapshot.family, Tool::Restore),
            &args,
            Some(&text),
        ) {
            failures.push(e);
        }
    }
    rollback_result(error, failures)
}

fn rollback_result(error: ApplyError, mut failures: Vec<ApplyError>) -> ApplyError {
    match failures.len() {
        0 => ApplyError::RolledBack(Box::new(error)),
        1 => ApplyError::RollbackFailed {
            rollback: Box::new(failures.remove(0)),
            source: Box::new(error),
        },
        _ => ApplyError::RollbackFailed {
            rollback: Box::new(ApplyError::Several(failures)),
            source: Box::new(error),
        },
    }
}

/// Compares one family's saved state with its planned rules. Structure first (our chains, rule
/// counts, jumps into our chains); then every planned rule is checked with `iptables -C`, so
/// iptables itself decides equality (it prints rules differently than we write them).
pub fn compare(
    backend: Backend,
    family: Family,
    rules: &[Rule],
    saved: &SavedState,
) -> Result<FamilyState, ApplyError> {
    if !saved.has_ours() {
        return Ok(FamilyState::Absent);
    }
    let empty = SavedTable::default();
    for table in Table::ALL {
        let planned: Vec<&Rule> = rules.iter().filter(|r| r.table == table).collect();
        let expected = declared_chains(&planned);
        let current = saved.table(table.name()).unwrap_or(&empty);
        let existing: Vec<&str> = current.our_chains().collect();
        if let Some(chain) = expected.iter().find(|c| !existing.contains(c)) {
            return Ok(FamilyState::Stale(format!(
                "chain {chain} is missing from table {table}"
            )));
        }
        if let Some(chain) = existing.iter().find(|c| !expected.contains(c)) {
            return Ok(FamilyState::Stale(format!(
                "table {table} holds an unexpected chain {chain}"
            )));
        }
        for chain in &expected {
            let want = planned.iter().filter(|r| r.chain == *chain).count();
            let have = current.rule_count(chain);
            if want != have {
                return Ok(FamilyState::Stale(format!(
                    "{table} {chain} holds {have} rules, expected {want}"
                )));
            }
        }
        let want_jumps = planned
            .iter()
            .filter(|r| is_builtin(r.chain) && r.target().is_some_and(is_ours))
            .count();
        let have_jumps = current.jumps_to_ours().count();
        if want_jumps != have_jumps {
            return Ok(FamilyState::Stale(format!(
                "table {table} has {have_jumps} jumps into ISTIO_ chains, expected {want_jumps}"
            )));
        }
    }
    let present = rules_present(backend, family, rules)?;
    match rules.iter().zip(present).find(|(_, ok)| !ok) {
        Some((rule, _)) => Ok(FamilyState::Stale(format!(
            "rule `-t {} {rule}` is missing",
            rule.table
        ))),
        None => Ok(FamilyState::UpToDate),
    }
}

/// Checks each rule with `iptables -t T -C CHAIN spec`, all checks running at once.
fn rules_present(
    backend: Backend,
    family: Family,
    rules: &[Rule],
) -> Result<Vec<bool>, ApplyError> {
    let program = backend.program(family, Tool::Iptables);
    let spawn = |rule: &Rule| -> Result<Child, ApplyError> {
        exec::command(&program)
            .args(backend.lock_args())
            .args(["-t", rule.table.name(), "-C", rule.chain])
            .args(&rule.spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })
    };
    let children = rules.iter().map(spawn).collect::<Result<Vec<_>, _>>()?;
    children
        .into_iter()
        .map(|mut child| {
            child
                .wait()
                .map(|status| status.success())
                .map_err(|source| ApplyError::Spawn {
                    program: program.clone(),
                    source,
                })
        })
        .collect()
}

/// Removes our jumps, our other built-in-chain rules, our chains and our TPROXY routing
/// (`--cleanup-only`); nothing else. Both families are cleaned even when this run has IPv6 off:
/// an earlier run with IPv6 on may have left IPv6 rules (a host without IPv6 tables has none to
/// remove). Every step is attempted; the failures are returned together.
pub fn cleanup(cfg: &CaptureConfig, plan: &Plan, opts: &ApplyOptions) -> Result<(), ApplyError> {
    let backend = Backend::detect(opts.backend);
    let mut errors = Vec::new();
    let mut families: Vec<(Family, &[Rule])> = plan.families().collect();
    if plan.ipv6.is_none() {
        families.push((Family::V6, &[]));
    }
    for (family, rules) in families {
        let saved = match exec::run(&backend.program(family, Tool::Save), &[], None) {
            Ok(text) => SavedState::parse(&text),
            Err(error) if family == Family::V6 && plan.ipv6.is_none() => {
                tracing::debug!(error = %outrigger_runtime::error_chain(&error), "no IPv6 tables to clean");
                continue;
            }
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        if let Err(e) = cleanup_family(backend, family, rules, &saved) {
            errors.push(e);
        }
    }
    if let Err(e) = remove_routes(cfg) {
        errors.push(e);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ApplyError::Several(errors)),
    }
}

/// The cleanup script for one family, in one restore: delete the jumps into our chains and the
/// planned built-in-chain rules that exist, then flush and delete our chains.
fn cleanup_family(
    backend: Backend,
    family: Family,
    rules: &[Rule],
    saved: &SavedState,
) -> Result<(), ApplyError> {
    let builtin_rules: Vec<Rule> = rules
        .iter()
        .filter(|r| is_builtin(r.chain) && !r.target().is_some_and(is_ours))
        .cloned()
        .collect();
    let present = rules_present(backend, family, &builtin_rules)?;
    let mut script = String::new();
    for (name, table) in &saved.tables {
        let mut lines = Vec::new();
        for (chain, spec) in table.jumps_to_ours() {
            lines.push(format!("-D {chain} {spec}"));
        }
        for (rule, _) in builtin_rules
            .iter()
            .zip(&present)
            .filter(|(r, ok)| **ok && r.table.name() == name)
        {
            lines.push(format!("-D {} {}", rule.chain, rule.spec_text()));
        }
        let ours: Vec<&str> = table.our_chains().collect();
        lines.extend(ours.iter().map(|c| format!("-F {c}")));
        lines.extend(ours.iter().map(|c| format!("-X {c}")));
        if !lines.is_empty() {
            script.push_str(&format!("*{name}\n{}\nCOMMIT\n", lines.join("\n")));
        }
    }
    if script.is_empty() {
        tracing::info!(%family, "no capture rules to remove");
        return Ok(());
    }
    tracing::info!(%family, "removing capture rules");
    restore(backend, family, &script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostInfo;

    fn sidecar_rules() -> Vec<Rule> {
        crate::plan(&CaptureConfig::sidecar_default(), &HostInfo::default()).ipv4
    }

    /// A save dump holding `chains` (declared) and `rules` in the nat table.
    fn saved(chains: &[&str], rules: &[&str]) -> SavedState {
        let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
        for chain in chains {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in rules {
            text.push_str(&format!("{rule}\n"));
        }
        text.push_str("COMMIT\n");
        SavedState::parse(&text)
    }

    // These verdicts come from the structure alone, before any `iptables -C` would run.
    fn verdict(state: &SavedState) -> FamilyState {
        compare(Backend::Nft, Family::V4, &sidecar_rules(), state).expect("structural comparison")
    }

    #[test]
    fn nothing_of_ours_is_absent() {
        let state = saved(&["KUBE-SERVICES"], &["-A PREROUTING -j KUBE-SERVICES"]);
        assert_eq!(verdict(&state), FamilyState::Absent);
    }

    #[test]
    fn missing_or_unexpected_chains_are_stale() {
        let state = saved(&["ISTIO_INBOUND", "ISTIO_OUTPUT"], &[]);
        assert!(
            matches!(verdict(&state), FamilyState::Stale(d) if d.contains("ISTIO_REDIRECT is missing"))
        );
        let all = [
            "ISTIO_INBOUND",
            "ISTIO_REDIRECT",
            "ISTIO_IN_REDIRECT",
            "ISTIO_OUTPUT",
            "ISTIO_OLD",
        ];
        assert!(
            matches!(verdict(&saved(&all, &[])), FamilyState::Stale(d) if d.contains("unexpected chain ISTIO_OLD"))
        );
    }

    #[test]
    fn rule_counts_and_jumps_are_compared() {
        let chains = [
            "ISTIO_INBOUND",
            "ISTIO_REDIRECT",
            "ISTIO_IN_REDIRECT",
            "ISTIO_OUTPUT",
        ];
        let state = saved(
            &chains,
            &["-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN"],
        );
        assert!(
            matches!(verdict(&state), FamilyState::Stale(d) if d.contains("ISTIO_INBOUND holds 1 rules, expected 5"))
        );
        // Right chains and counts, but three jumps into our chains from built-in chains.
        let planned = sidecar_rules();
        let mut lines: Vec<String> = planned
            .iter()
            .filter(|r| !is_builtin(r.chain))
            .map(|r| format!("-A {} {}", r.chain, r.spec_text()))
            .collect();
        lines.extend(
            [
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A OUTPUT -j ISTIO_OUTPUT",
                "-A OUTPUT -j ISTIO_OUTPUT",
            ]
            .map(String::from),
        );
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert!(
            matches!(verdict(&saved(&chains, &refs)), FamilyState::Stale(d) if d.contains("3 jumps into ISTIO_ chains, expected 2"))
        );
    }
}
