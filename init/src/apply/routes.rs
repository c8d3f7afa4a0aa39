//! Routing pieces of capture: TPROXY policy routing and the IPv6 passthrough address on lo.

use crate::config::{CaptureConfig, InterceptionMode};
use crate::error::ApplyError;
use crate::names::{INBOUND_PASSTHROUGH_V6, LOOPBACK_IFACE};

use super::exec;
use crate::spec;

/// Every `ip` command the configuration needs, as argument lists.
pub fn route_commands(cfg: &CaptureConfig, ipv6: bool) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    if ipv6 {
        commands.push(spec![
            "-6",
            "addr",
            "add",
            INBOUND_PASSTHROUGH_V6,
            "dev",
            LOOPBACK_IFACE
        ]);
    }
    if cfg.mode == InterceptionMode::Tproxy {
        let families: &[&str] = if ipv6 { &["-4", "-6"] } else { &["-4"] };
        let (mark, table) = (cfg.tproxy_mark, cfg.tproxy_route_table);
        for family in families {
            commands.push(spec![
                family, "rule", "add", "fwmark", mark, "lookup", table
            ]);
            commands.push(spec![
                family,
                "route",
                "add",
                "local",
                "default",
                "dev",
                LOOPBACK_IFACE,
                "table",
                table
            ]);
        }
    }
    commands
}

/// Runs the route commands; "already exists" counts as success. Every command runs; the
/// failures are returned together.
pub fn ensure_routes(cfg: &CaptureConfig, ipv6: bool) -> Result<(), ApplyError> {
    let mut errors = Vec::new();
    for args in route_commands(cfg, ipv6) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match exec::run("ip", &args, None) {
            Ok(_) => {}
            Err(ApplyError::Command { stderr, .. }) if stderr.contains("File exists") => {}
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ApplyError::Several(errors)),
    }
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
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "-6 addr add ::6/128 dev lo",
                "-4 rule add fwmark 1337 lookup 133",
                "-4 route add local default dev lo table 133",
                "-6 rule add fwmark 1337 lookup 133",
                "-6 route add local default dev lo table 133",
            ]
        );
        assert!(route_commands(&CaptureConfig::default(), false).is_empty());
    }
}
