//! Routing pieces of capture: TPROXY policy routing and the IPv6 passthrough address on lo.
//! Every step is idempotent, so a re-run neither fails nor duplicates anything.

use crate::error::ApplyError;
use crate::names::{INBOUND_PASSTHROUGH_V6, LOOPBACK_IFACE};
use crate::rule::spec;
use outrigger_api::capture::{CaptureConfig, InterceptionMode};

use super::exec;

/// One `ip` invocation, skipped when `skip_if_listed` (an `ip ... show` query) prints anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCommand {
    pub args: Vec<String>,
    pub skip_if_listed: Option<Vec<String>>,
}

/// The `ip` commands the configuration needs: `::6/128` on lo when IPv6 is on; in TPROXY mode,
/// `rule fwmark <t> lookup <r>` and `route local default dev lo table <r>` per enabled family.
pub fn route_commands(cfg: &CaptureConfig, ipv6: bool) -> Vec<RouteCommand> {
    let mut commands = Vec::new();
    if ipv6 {
        commands.push(RouteCommand {
            args: spec![
                "-6",
                "addr",
                "replace",
                INBOUND_PASSTHROUGH_V6,
                "dev",
                LOOPBACK_IFACE
            ],
            skip_if_listed: None,
        });
    }
    if cfg.mode == InterceptionMode::Tproxy {
        let families: &[&str] = if ipv6 { &["-4", "-6"] } else { &["-4"] };
        let (mark, table) = (cfg.tproxy_mark, cfg.tproxy_route_table);
        for family in families {
            // `ip rule add` happily adds duplicates, so look first.
            commands.push(RouteCommand {
                args: spec![family, "rule", "add", "fwmark", mark, "lookup", table],
                skip_if_listed: Some(spec![
                    family, "rule", "show", "fwmark", mark, "lookup", table
                ]),
            });
            // `add`, not `replace`: a default route someone else put in that table is theirs, and
            // `ip` refuses with "File exists" (as Istio's `ip route add` does) instead of losing it.
            commands.push(RouteCommand {
                args: spec![
                    family,
                    "route",
                    "add",
                    "local",
                    "default",
                    "dev",
                    LOOPBACK_IFACE,
                    "table",
                    table
                ],
                skip_if_listed: Some(spec![
                    family,
                    "route",
                    "show",
                    "table",
                    table,
                    "type",
                    "local",
                    "dev",
                    LOOPBACK_IFACE
                ]),
            });
        }
    }
    commands
}

/// What undoes [`route_commands`]' TPROXY routing for `cfg`'s mark and table, in both
/// families: `(delete, the query that lists it)`. The `::6` address on lo stays (harmless, and
/// the app may still be using it).
fn removals(cfg: &CaptureConfig) -> Vec<(Vec<String>, Vec<String>)> {
    let (mark, table) = (cfg.tproxy_mark, cfg.tproxy_route_table);
    let mut removals = Vec::new();
    for family in ["-4", "-6"] {
        removals.push((
            spec![family, "rule", "del", "fwmark", mark, "lookup", table],
            spec![family, "rule", "show", "fwmark", mark, "lookup", table],
        ));
        removals.push((
            spec![
                family,
                "route",
                "del",
                "local",
                "default",
                "dev",
                LOOPBACK_IFACE,
                "table",
                table
            ],
            spec![
                family,
                "route",
                "show",
                "table",
                table,
                "type",
                "local",
                "dev",
                LOOPBACK_IFACE
            ],
        ));
    }
    removals
}

/// Removes our TPROXY routing (`--cleanup-only`): every rule and route of ours that its query
/// lists is deleted (rules while listed: older runs may have added one twice); a family or table
/// that does not exist has nothing to remove.
pub fn remove_routes(cfg: &CaptureConfig) -> Result<(), ApplyError> {
    let mut errors = Vec::new();
    for (delete, query) in removals(cfg) {
        let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
        let query: Vec<&str> = query.iter().map(String::as_str).collect();
        for _ in 0..16 {
            if !exec::run("ip", &query, None).is_ok_and(|out| !out.trim().is_empty()) {
                break;
            }
            if let Err(e) = exec::run("ip", &delete, None) {
                errors.push(e);
                break;
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ApplyError::Several(errors)),
    }
}

/// Runs the route commands. Every command runs; the failures are returned together.
pub fn ensure_routes(cfg: &CaptureConfig, ipv6: bool) -> Result<(), ApplyError> {
    let mut errors = Vec::new();
    for command in route_commands(cfg, ipv6) {
        if let Err(e) = run_command(&command) {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ApplyError::Several(errors)),
    }
}

fn run_command(command: &RouteCommand) -> Result<(), ApplyError> {
    if let Some(query) = &command.skip_if_listed {
        let query: Vec<&str> = query.iter().map(String::as_str).collect();
        // A query can fail where there is nothing to list (`ip route show table 140` before the
        // table exists): then the command runs, and reports any real problem itself.
        if exec::run("ip", &query, None).is_ok_and(|listed| !listed.trim().is_empty()) {
            return Ok(());
        }
    }
    let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
    exec::run("ip", &args, None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tproxy_routes_for_each_family() {
        let cfg = CaptureConfig {
            mode: InterceptionMode::Tproxy,
            ..CaptureConfig::default()
        };
        let cmds: Vec<String> = route_commands(&cfg, true)
            .iter()
            .map(|c| c.args.join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "-6 addr replace ::6/128 dev lo",
                "-4 rule add fwmark 1337 lookup 133",
                "-4 route add local default dev lo table 133",
                "-6 rule add fwmark 1337 lookup 133",
                "-6 route add local default dev lo table 133",
            ]
        );
        let rule = &route_commands(&cfg, false)[0];
        assert_eq!(
            rule.skip_if_listed.as_ref().map(|q| q.join(" ")).as_deref(),
            Some("-4 rule show fwmark 1337 lookup 133")
        );
        assert!(route_commands(&CaptureConfig::default(), false).is_empty());
    }
}
