//! Flags that contradict each other. istio-iptables accepts every combination and lets one flag
//! silently win (tools/istio-iptables/pkg/cmd/root.go and pkg/capture/run.go); a combination
//! whose effect cannot be what was meant is refused here with both flags named, and one where a
//! flag merely has no effect is accepted with a warning. The facts from Istio's code:
//!
//! - `--skip-rule-apply` skips the whole configurator, cleanup included: with `--cleanup-only`
//!   Istio removes nothing (refused).
//! - `--cleanup-only` installs nothing, so `--run-validation` after it can only fail (refused);
//!   `--dry-run` prints the rules an install would write, not what a cleanup removes (refused);
//!   `--reconcile` and `--force-apply` have no effect with it (warned). The capture flags are
//!   read: the cleanup deletes the built-in-chain rules they planned (`-c`, `-k`, TPROXY's).
//! - `-d` RETURNs ports only under `-b '*'`; with a list, `-b` wins: a port in both is captured
//!   (refused). `-d` next to a list is otherwise Istio's own template's output (not warned).
//! - `-x` RETURNs come before `-i`: an `-i` range inside an `-x` range is never captured
//!   (refused); `-i '*'` with `-x` is the normal "everything but" (accepted).
//! - `-o` RETURNs (TCP and UDP) come before the `-q` redirects: a port in both is never captured
//!   (refused).
//! - `-k` inserts its PREROUTING jump first and `-c` appends a RETURN: an interface in both is
//!   captured though excluded (refused).
//! - `-t` and `-r` are read only with `-m TPROXY` (warned otherwise; `--cleanup-only` reads `-r`
//!   to remove the route). No flag is read only by REDIRECT (`-z` is TPROXY's `--on-port` too).
//! - `--capture-all-dns` is read only with `--redirect-dns` (warned).
//! - `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE` is read only when `ISTIO_OUTBOUND_OWNER_GROUPS` is
//!   `*`: a group in both is refused, other excludes are warned.
//! - `-p`, `-z` and `-e` must differ: the proxy tells outbound, inbound and tunnel traffic apart
//!   by the port it arrives on (refused; Istio does not check).

use outrigger_api::capture::{InboundPorts, InterceptionMode, OutboundRanges, OwnerGroups};
use outrigger_api::iptables::{env, flag};

use crate::flags::Invocation;

/// Two flags that cannot be used together as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conflicting flags {first} and {second}: {reason}")]
pub struct Conflict {
    pub first: &'static str,
    pub second: &'static str,
    pub reason: String,
}

/// What was set, as opposed to defaulted: the flags given (or their environment variables),
/// and the owner groups excluded (read only when every group is captured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    pub flags: Vec<&'static str>,
    pub owner_groups_exclude: Vec<String>,
}

impl Given {
    pub fn has(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}

/// Refuses the contradictory combinations; returns a warning for each flag that has no effect.
pub fn check(inv: &Invocation, given: &Given) -> Result<Vec<String>, Conflict> {
    let cfg = &inv.capture;
    let conflict = |first, second, reason: String| Conflict {
        first,
        second,
        reason,
    };
    let mut warnings = Vec::new();

    if inv.cleanup_only {
        if inv.skip_rule_apply {
            return Err(conflict(
                flag::CLEANUP_ONLY,
                flag::SKIP_RULE_APPLY,
                "--skip-rule-apply skips every iptables change, the cleanup too (istio-iptables \
                 then removes nothing); give one of them"
                    .into(),
            ));
        }
        if inv.run_validation {
            return Err(conflict(
                flag::CLEANUP_ONLY,
                flag::RUN_VALIDATION,
                "the cleanup removes the capture, so the validation could only fail".into(),
            ));
        }
        if inv.dry_run {
            return Err(conflict(
                flag::CLEANUP_ONLY,
                flag::DRY_RUN,
                "--dry-run prints the rules an install would write, not what a cleanup removes"
                    .into(),
            ));
        }
        for (name, set) in [
            (flag::RECONCILE, inv.apply.reconcile),
            (flag::FORCE_APPLY, inv.apply.force_apply),
        ] {
            if set {
                warnings.push(format!(
                    "{name} has no effect with {}: the cleanup removes every rule of ours anyway",
                    flag::CLEANUP_ONLY
                ));
            }
        }
    }

    if let InboundPorts::Only(ports) = &cfg.inbound_ports
        && let Some(port) = ports.iter().find(|p| cfg.inbound_ports_exclude.contains(p))
    {
        return Err(conflict(
            flag::INBOUND_PORTS,
            flag::INBOUND_PORTS_EXCLUDE,
            format!(
                "port {port} is in both; {} excludes ports only from -b '*' (istio-iptables \
                 captures it)",
                flag::INBOUND_PORTS_EXCLUDE
            ),
        ));
    }
    if let OutboundRanges::Only(ranges) = &cfg.outbound_ranges {
        for range in ranges {
            if let Some(outer) = cfg
                .outbound_ranges_exclude
                .iter()
                .find(|x| x.contains(range))
            {
                return Err(conflict(
                    flag::OUTBOUND_RANGES,
                    flag::OUTBOUND_RANGES_EXCLUDE,
                    format!(
                        "{range} is inside the excluded {outer}, so it would never be captured"
                    ),
                ));
            }
        }
        if ranges.is_empty() && !cfg.outbound_ranges_exclude.is_empty() {
            warnings.push(format!(
                "{} has no effect: {} is empty, so no outbound traffic is captured by address",
                flag::OUTBOUND_RANGES_EXCLUDE,
                flag::OUTBOUND_RANGES
            ));
        }
    }
    if let Some(port) = cfg
        .outbound_ports_include
        .iter()
        .find(|p| cfg.outbound_ports_exclude.contains(p))
    {
        return Err(conflict(
            flag::OUTBOUND_PORTS,
            flag::OUTBOUND_PORTS_EXCLUDE,
            format!("port {port} is in both; the exclusion comes first, so it is never captured"),
        ));
    }
    if let Some(name) = cfg
        .reroute_virtual_interfaces
        .iter()
        .find(|i| cfg.exclude_interfaces.contains(i))
    {
        return Err(conflict(
            flag::VIRTUAL_INTERFACES,
            flag::EXCLUDE_INTERFACES,
            format!("interface {name} is in both; its traffic would be captured though excluded"),
        ));
    }
    for (first, a, second, b) in [
        (
            flag::PROXY_PORT,
            cfg.proxy_port,
            flag::INBOUND_CAPTURE_PORT,
            cfg.inbound_capture_port,
        ),
        (
            flag::PROXY_PORT,
            cfg.proxy_port,
            flag::INBOUND_TUNNEL_PORT,
            cfg.inbound_tunnel_port,
        ),
        (
            flag::INBOUND_CAPTURE_PORT,
            cfg.inbound_capture_port,
            flag::INBOUND_TUNNEL_PORT,
            cfg.inbound_tunnel_port,
        ),
    ] {
        if a == b {
            return Err(conflict(
                first,
                second,
                format!(
                    "both are {a}; the proxy tells outbound, inbound and tunnel traffic apart by \
                     the port it arrives on"
                ),
            ));
        }
    }
    if let OwnerGroups::Only(include) = &cfg.owner_groups {
        let exclude = &given.owner_groups_exclude;
        if let Some(group) = include.iter().find(|g| exclude.contains(g)) {
            return Err(conflict(
                env::OWNER_GROUPS_INCLUDE,
                env::OWNER_GROUPS_EXCLUDE,
                format!("group {group} is in both"),
            ));
        }
        if !exclude.is_empty() {
            warnings.push(format!(
                "{} has no effect: it is read only when {} is '*'",
                env::OWNER_GROUPS_EXCLUDE,
                env::OWNER_GROUPS_INCLUDE
            ));
        }
    }

    if cfg.mode != InterceptionMode::Tproxy && !inv.cleanup_only {
        for name in [flag::TPROXY_MARK, flag::TPROXY_ROUTE_TABLE] {
            if given.has(name) {
                warnings.push(format!(
                    "{name} has no effect: it is read only with {} TPROXY",
                    flag::MODE
                ));
            }
        }
    }
    if cfg.capture_all_dns && !cfg.redirect_dns && !inv.cleanup_only {
        warnings.push(format!(
            "{} has no effect without {}",
            flag::CAPTURE_ALL_DNS,
            flag::REDIRECT_DNS
        ));
    }
    if inv.skip_rule_apply {
        for (name, set) in [
            (flag::RECONCILE, inv.apply.reconcile),
            (flag::FORCE_APPLY, inv.apply.force_apply),
        ] {
            if set {
                warnings.push(format!(
                    "{name} has no effect with {}: no rule is changed",
                    flag::SKIP_RULE_APPLY
                ));
            }
        }
    }
    if inv.dry_run && inv.run_validation {
        warnings.push(format!(
            "{} has no effect with {}: nothing is installed to validate",
            flag::RUN_VALIDATION,
            flag::DRY_RUN
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::flags::{FlagsError, Invocation, parse};
    use outrigger_api::iptables::{env, flag};

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, FlagsError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(
            std::iter::once("outrigger-iptables").chain(args.iter().copied()),
            &env,
        )
    }

    /// The refusal of `args`: both flags and the message.
    fn refused(args: &[&str], env: &[(&str, &str)]) -> (&'static str, &'static str, String) {
        match run(args, env) {
            Err(FlagsError::Conflict(c)) => (c.first, c.second, c.to_string()),
            other => panic!("{args:?}: expected a conflict, got {other:?}"),
        }
    }

    fn warnings(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
        match run(args, env) {
            Ok(inv) => inv.warnings,
            Err(e) => panic!("{args:?}: expected acceptance, got {e}"),
        }
    }

    #[test]
    fn cleanup_only_with_skip_rule_apply_is_refused() {
        let (a, b, message) = refused(&["--cleanup-only", "--skip-rule-apply"], &[]);
        assert_eq!((a, b), (flag::CLEANUP_ONLY, flag::SKIP_RULE_APPLY));
        assert!(
            message.starts_with("conflicting flags --cleanup-only and --skip-rule-apply: "),
            "{message}"
        );
        // Through the environment too.
        let (a, b, _) = refused(&[], &[("CLEANUP_ONLY", "true"), ("SKIP_RULE_APPLY", "1")]);
        assert_eq!((a, b), (flag::CLEANUP_ONLY, flag::SKIP_RULE_APPLY));
    }

    #[test]
    fn cleanup_only_with_run_validation_or_dry_run_is_refused() {
        let (_, b, _) = refused(&["--cleanup-only", "--run-validation"], &[]);
        assert_eq!(b, flag::RUN_VALIDATION);
        let (_, b, _) = refused(&["--cleanup-only", "--dry-run"], &[]);
        assert_eq!(b, flag::DRY_RUN);
    }

    #[test]
    fn cleanup_only_warns_about_reconcile_and_force_apply_not_the_capture_flags() {
        let w = warnings(
            &[
                "--cleanup-only",
                "--reconcile",
                "-b",
                "*",
                "-c",
                "eth9",
                "-r",
                "140",
            ],
            &[],
        );
        assert_eq!(
            w,
            [
                "--reconcile has no effect with --cleanup-only: the cleanup removes every rule of ours anyway"
            ]
        );
    }

    #[test]
    fn an_inbound_port_both_included_and_excluded_is_refused() {
        let (a, b, message) = refused(&["-b", "8080,9090", "-d", "15020,9090"], &[]);
        assert_eq!((a, b), (flag::INBOUND_PORTS, flag::INBOUND_PORTS_EXCLUDE));
        assert!(message.contains("port 9090 is in both"), "{message}");
        // `-d` is what `-b '*'` leaves out, and next to a list it is the injector's own output.
        assert!(warnings(&["-b", "*", "-d", "9090"], &[]).is_empty());
        assert!(warnings(&["-b", "8080", "-d", "15090,15021,15020"], &[]).is_empty());
    }

    #[test]
    fn an_outbound_range_inside_an_excluded_one_is_refused() {
        let (a, b, message) = refused(&["-i", "10.1.0.0/16", "-x", "10.0.0.0/8"], &[]);
        assert_eq!(
            (a, b),
            (flag::OUTBOUND_RANGES, flag::OUTBOUND_RANGES_EXCLUDE)
        );
        assert!(
            message.contains("10.1.0.0/16 is inside the excluded 10.0.0.0/8"),
            "{message}"
        );
        let (_, _, message) = refused(&["-i", "10.0.0.0/8", "-x", "10.0.0.0/8"], &[]);
        assert!(
            message.contains("10.0.0.0/8 is inside the excluded 10.0.0.0/8"),
            "{message}"
        );
        // Excluding part of what is included, or of everything, is what -x is for.
        assert!(warnings(&["-i", "10.0.0.0/8", "-x", "10.1.0.0/16"], &[]).is_empty());
        assert!(warnings(&["-i", "*", "-x", "10.0.0.0/8"], &[]).is_empty());
    }

    #[test]
    fn excluding_ranges_when_none_is_captured_is_warned() {
        let w = warnings(&["-i", "", "-x", "10.0.0.0/8"], &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("-x/--istio-service-exclude-cidr has no effect"),
            "{w:?}"
        );
    }

    #[test]
    fn an_outbound_port_both_included_and_excluded_is_refused() {
        let (a, b, message) = refused(&["-q", "443,80", "-o", "80"], &[]);
        assert_eq!((a, b), (flag::OUTBOUND_PORTS, flag::OUTBOUND_PORTS_EXCLUDE));
        assert!(message.contains("port 80 is in both"), "{message}");
    }

    #[test]
    fn an_interface_both_rerouted_and_excluded_is_refused() {
        let (a, b, message) = refused(&["-k", "eth1", "-c", "eth2,eth1"], &[]);
        assert_eq!((a, b), (flag::VIRTUAL_INTERFACES, flag::EXCLUDE_INTERFACES));
        assert!(message.contains("interface eth1 is in both"), "{message}");
    }

    #[test]
    fn equal_capture_ports_are_refused() {
        let (a, b, message) = refused(&["-p", "15006"], &[]);
        assert_eq!((a, b), (flag::PROXY_PORT, flag::INBOUND_CAPTURE_PORT));
        assert!(message.contains("both are 15006"), "{message}");
        let (a, b, _) = refused(&["-z", "15008"], &[]);
        assert_eq!(
            (a, b),
            (flag::INBOUND_CAPTURE_PORT, flag::INBOUND_TUNNEL_PORT)
        );
        let (a, b, _) = refused(&["-e", "15001"], &[]);
        assert_eq!((a, b), (flag::PROXY_PORT, flag::INBOUND_TUNNEL_PORT));
    }

    #[test]
    fn tproxy_options_without_tproxy_are_warned() {
        let w = warnings(&["-m", "REDIRECT", "-t", "42", "-r", "140"], &[]);
        assert_eq!(
            w,
            [
                "-t/--istio-inbound-tproxy-mark has no effect: it is read only with -m/--istio-inbound-interception-mode TPROXY",
                "-r/--istio-inbound-tproxy-route-table has no effect: it is read only with -m/--istio-inbound-interception-mode TPROXY",
            ]
        );
        assert!(warnings(&["-m", "TPROXY", "-t", "42", "-r", "140"], &[]).is_empty());
    }

    #[test]
    fn capture_all_dns_without_redirect_dns_is_warned() {
        let w = warnings(&["--capture-all-dns"], &[]);
        assert_eq!(
            w,
            ["--capture-all-dns has no effect without --redirect-dns"]
        );
        assert!(warnings(&["--capture-all-dns", "--redirect-dns"], &[]).is_empty());
    }

    #[test]
    fn owner_groups_in_both_lists_are_refused_and_an_unread_exclude_is_warned() {
        let (a, b, message) = refused(
            &[],
            &[
                (env::OWNER_GROUPS_INCLUDE, "java,python"),
                (env::OWNER_GROUPS_EXCLUDE, "python"),
            ],
        );
        assert_eq!(
            (a, b),
            (env::OWNER_GROUPS_INCLUDE, env::OWNER_GROUPS_EXCLUDE)
        );
        assert!(message.contains("group python is in both"), "{message}");
        let w = warnings(
            &[],
            &[
                (env::OWNER_GROUPS_INCLUDE, "java"),
                (env::OWNER_GROUPS_EXCLUDE, "python"),
            ],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("read only when ISTIO_OUTBOUND_OWNER_GROUPS is '*'"),
            "{w:?}"
        );
        assert!(
            warnings(
                &[],
                &[
                    (env::OWNER_GROUPS_INCLUDE, "*"),
                    (env::OWNER_GROUPS_EXCLUDE, "python"),
                ],
            )
            .is_empty()
        );
    }

    #[test]
    fn skip_rule_apply_and_dry_run_warn_about_what_they_make_useless() {
        let w = warnings(&["--skip-rule-apply", "--force-apply"], &[]);
        assert_eq!(
            w,
            ["--force-apply has no effect with --skip-rule-apply: no rule is changed"]
        );
        let w = warnings(&["--dry-run", "--run-validation"], &[]);
        assert_eq!(
            w,
            ["--run-validation has no effect with -n/--dry-run: nothing is installed to validate"]
        );
    }

    #[test]
    fn the_injected_command_lines_have_no_conflict_and_no_warning() {
        assert!(warnings(outrigger_api::capture::SIDECAR_ARGS, &[]).is_empty());
        // The CNI validation init container of the injector.
        let mut cni: Vec<&str> = outrigger_api::capture::SIDECAR_ARGS.to_vec();
        cni.extend(["--run-validation", "--skip-rule-apply"]);
        assert!(warnings(&cni, &[]).is_empty());
    }
}
