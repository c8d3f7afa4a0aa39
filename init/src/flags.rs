//! The command line: Istio's istio-iptables flags and environment variables, parsed purely from
//! argv and an environment map into a validated `Invocation`. Flag beats env beats default.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Parser;

use crate::apply::{ApplyOptions, BackendChoice};
use crate::conflicts::{self, Conflict, Given};
use outrigger_api::capture::ConfigError;
use outrigger_api::capture::{self as config, CaptureConfig, ProbeSettings};
use outrigger_api::iptables::{env, flag};

/// Default resolver configuration read for `--redirect-dns`.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Everything one run of `outrigger-iptables` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub capture: CaptureConfig,
    pub apply: ApplyOptions,
    /// `-n/--dry-run`: print the iptables-restore input, change nothing.
    pub dry_run: bool,
    /// `--run-validation`: probe that traffic is captured; exit 126 when it is not.
    pub run_validation: bool,
    /// `--skip-rule-apply`: do not install rules (CNI mode validation only).
    pub skip_rule_apply: bool,
    /// `--cleanup-only`: remove our jumps and chains, install nothing.
    pub cleanup_only: bool,
    /// `--ipv6=true|false`: pin IPv6 instead of detecting it.
    pub ipv6: Option<bool>,
    /// `--resolv-conf`: where DNS servers are read from.
    pub resolv_conf: PathBuf,
    /// `--log-as-json`: JSON log lines on stderr (for clusters).
    pub log_as_json: bool,
    /// Flags that have no effect as combined (`conflicts`); logged at warn before the run.
    pub warnings: Vec<String>,
}

/// Why the command line was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// Unknown flag, missing value, `--help`, `--version`.
    #[error(transparent)]
    Usage(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two flags that contradict each other.
    #[error(transparent)]
    Conflict(#[from] Conflict),
}

#[derive(Debug, Parser)]
#[command(
    name = "outrigger-iptables",
    version,
    about = "Installs the iptables rules that send a pod's traffic through the Outrigger proxy (istio-iptables compatible)"
)]
struct Args {
    /// Outbound capture port [env ENVOY_PORT, default 15001]
    #[arg(short = 'p', long = "envoy-port")]
    envoy_port: Option<String>,
    /// Inbound capture port [env INBOUND_CAPTURE_PORT, default 15006]
    #[arg(short = 'z', long = "inbound-capture-port")]
    inbound_capture_port: Option<String>,
    /// Tunnel port, never captured [env INBOUND_TUNNEL_PORT, default 15008]
    #[arg(short = 'e', long = "inbound-tunnel-port")]
    inbound_tunnel_port: Option<String>,
    /// Comma list of proxy UIDs exempt from capture [env PROXY_UID, default 1337]
    #[arg(short = 'u', long = "proxy-uid")]
    proxy_uid: Option<String>,
    /// Comma list of proxy GIDs exempt from capture [env PROXY_GID, default: the UIDs]
    #[arg(short = 'g', long = "proxy-gid")]
    proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT or TPROXY [env ISTIO_INBOUND_INTERCEPTION_MODE]
    #[arg(short = 'm', long = "istio-inbound-interception-mode")]
    mode: Option<String>,
    /// Inbound ports to capture, or '*' for all [env ISTIO_INBOUND_PORTS]
    #[arg(short = 'b', long = "istio-inbound-ports")]
    inbound_ports: Option<String>,
    /// Inbound ports not captured with -b '*' [env ISTIO_LOCAL_EXCLUDE_PORTS]
    #[arg(short = 'd', long = "istio-local-exclude-ports")]
    inbound_ports_exclude: Option<String>,
    /// Outbound CIDRs to capture, or '*' for all [env ISTIO_SERVICE_CIDR]
    #[arg(short = 'i', long = "istio-service-cidr")]
    outbound_ranges: Option<String>,
    /// Outbound CIDRs never captured [env ISTIO_SERVICE_EXCLUDE_CIDR]
    #[arg(short = 'x', long = "istio-service-exclude-cidr")]
    outbound_ranges_exclude: Option<String>,
    /// Outbound ports always captured [env ISTIO_OUTBOUND_PORTS]
    #[arg(short = 'q', long = "istio-outbound-ports")]
    outbound_ports: Option<String>,
    /// Outbound ports never captured (TCP and UDP) [env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE]
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude")]
    outbound_ports_exclude: Option<String>,
    /// Virtual interfaces whose inbound traffic is treated as outbound [env KUBE_VIRT_INTERFACES]
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        alias = "reroute-virtual-interfaces"
    )]
    virtual_interfaces: Option<String>,
    /// Interfaces whose traffic is never captured [env ISTIO_EXCLUDE_INTERFACES]
    #[arg(short = 'c', long = "istio-exclude-interfaces")]
    exclude_interfaces: Option<String>,
    /// TPROXY mark [env ISTIO_INBOUND_TPROXY_MARK, default 1337]
    #[arg(short = 't', long = "istio-inbound-tproxy-mark")]
    tproxy_mark: Option<String>,
    /// TPROXY route table [env ISTIO_INBOUND_TPROXY_ROUTE_TABLE, default 133]
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table")]
    tproxy_route_table: Option<String>,
    /// Print the iptables-restore input instead of applying it [env DRY_RUN]
    #[arg(short = 'n', long = "dry-run", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    dry_run: Option<String>,
    /// Capture DNS to the agent on 15053 [env REDIRECT_DNS, default $ISTIO_META_DNS_CAPTURE]
    #[arg(long = "redirect-dns", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    redirect_dns: Option<String>,
    /// Capture all port-53 traffic, not only to resolv.conf servers [env CAPTURE_ALL_DNS]
    #[arg(long = "capture-all-dns", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    capture_all_dns: Option<String>,
    /// Drop packets conntrack marks INVALID [env DROP_INVALID, default $INVALID_DROP]
    #[arg(long = "drop-invalid", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    drop_invalid: Option<String>,
    /// Probe that traffic is captured; exit 126 if not [env RUN_VALIDATION]
    #[arg(long = "run-validation", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    run_validation: Option<String>,
    /// Do not install rules [env SKIP_RULE_APPLY]
    #[arg(long = "skip-rule-apply", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    skip_rule_apply: Option<String>,
    /// Only remove our jumps and chains [env CLEANUP_ONLY]
    #[arg(long = "cleanup-only", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    cleanup_only: Option<String>,
    /// Remove stale or foreign ISTIO_ state before applying [env RECONCILE]
    #[arg(long = "reconcile", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    reconcile: Option<String>,
    /// Remove our existing rules (current or stale) and apply, without refusing [env FORCE_APPLY]
    #[arg(long = "force-apply", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    force_apply: Option<String>,
    /// IPv6 on when any address is IPv6 [env DUAL_STACK, default $ISTIO_AGENT_DUAL_STACK]
    #[arg(long = "dual-stack", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    dual_stack: Option<String>,
    /// Pin IPv6 on or off instead of detecting it from the interface addresses
    #[arg(long = "ipv6", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    ipv6: Option<String>,
    /// Validation probe port [env IPTABLES_PROBE_PORT, default 15002]
    #[arg(long = "iptables-probe-port")]
    probe_port: Option<String>,
    /// Validation timeout, e.g. 5s [env PROBE_TIMEOUT, default 5s]
    #[arg(long = "probe-timeout")]
    probe_timeout: Option<String>,
    /// iptables backend: legacy or nft (default: detected) [env FORCE_IPTABLES_BINARY]
    #[arg(long = "force-iptables-binary")]
    force_iptables_binary: Option<String>,
    /// Resolver configuration with the DNS servers [default /etc/resolv.conf]
    #[arg(long = "resolv-conf")]
    resolv_conf: Option<PathBuf>,
    /// Log JSON lines to stderr [env LOG_AS_JSON]
    #[arg(long = "log-as-json", alias = "log_as_json", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    log_as_json: Option<String>,
}

/// Looks a value up: flag, then environment variable, then nothing.
struct Source<'a> {
    env: &'a HashMap<String, String>,
}

impl Source<'_> {
    fn get(&self, from_flag: Option<String>, env_name: &str) -> Option<String> {
        from_flag.or_else(|| self.env.get(env_name).cloned())
    }

    fn bool(
        &self,
        from_flag: Option<String>,
        env_name: &str,
        name: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.get(from_flag, env_name) {
            Some(v) => parse_bool(name, &v),
            None => Ok(default),
        }
    }
}

/// Go's strconv.ParseBool, which istio-iptables uses for bool flags and env variables.
pub fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    outrigger_api::values::parse_bool(value.trim())
        .map_err(|e| ConfigError::from_value(name, value, e))
}

/// Parses argv (including the program name) and the environment into an `Invocation`.
pub fn parse<I, T>(argv: I, env_map: &HashMap<String, String>) -> Result<Invocation, FlagsError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(argv)?;
    let given = given(&args, env_map);
    let mut invocation = resolve(args, env_map)?;
    invocation.warnings = conflicts::check(&invocation, &given)?;
    Ok(invocation)
}

/// The flags set on the command line or through their environment variable, among those whose
/// being set matters to `conflicts` (a default value is never a conflict).
fn given(a: &Args, env_map: &HashMap<String, String>) -> Given {
    let set = |v: &Option<String>, env_name: &str| v.is_some() || env_map.contains_key(env_name);
    let flags = [
        (flag::TPROXY_MARK, set(&a.tproxy_mark, env::TPROXY_MARK)),
        (
            flag::TPROXY_ROUTE_TABLE,
            set(&a.tproxy_route_table, env::TPROXY_ROUTE_TABLE),
        ),
    ];
    Given {
        flags: flags
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect(),
        owner_groups_exclude: env_map
            .get(env::OWNER_GROUPS_EXCLUDE)
            .map(|v| {
                outrigger_api::values::split_list(v)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn resolve(a: Args, env_map: &HashMap<String, String>) -> Result<Invocation, ConfigError> {
    let src = Source { env: env_map };
    let defaults = CaptureConfig::default();
    let port = |v: Option<String>,
                env_name: &str,
                name: &'static str,
                default: u16|
     -> Result<u16, ConfigError> {
        src.get(v, env_name)
            .map_or(Ok(default), |v| config::parse_port(name, &v))
    };
    let text = |v: Option<String>, env_name: &str| src.get(v, env_name).unwrap_or_default();

    let proxy_uids = match src
        .get(a.proxy_uid, env::PROXY_UID)
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => config::parse_ids(flag::PROXY_UID, &v)?,
        None => defaults.proxy_uids.clone(),
    };
    let proxy_gids = match src
        .get(a.proxy_gid, env::PROXY_GID)
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => config::parse_ids(flag::PROXY_GID, &v)?,
        None => proxy_uids.clone(),
    };
    let redirect_dns_default = env_bool(env_map, env::DNS_CAPTURE)?;
    let drop_invalid_default = env_bool(env_map, env::INVALID_DROP)?;
    let dual_stack_default = env_bool(env_map, env::DUAL_STACK)?;
    let loopback_v4 = match env_map
        .get(env::IPV4_LOOPBACK_CIDR)
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => config::parse_loopback_cidr(v)?,
        None => defaults.loopback_v4,
    };
    let owner_groups = config::parse_owner_groups(
        env_map
            .get(env::OWNER_GROUPS_INCLUDE)
            .map_or("*", String::as_str),
        env_map
            .get(env::OWNER_GROUPS_EXCLUDE)
            .map_or("", String::as_str),
    )?;
    let probe = ProbeSettings {
        port: port(
            a.probe_port,
            env::PROBE_PORT,
            flag::PROBE_PORT,
            defaults.probe.port,
        )?,
        timeout: match src.get(a.probe_timeout, env::PROBE_TIMEOUT) {
            Some(v) => config::parse_duration(flag::PROBE_TIMEOUT, &v)?,
            None => defaults.probe.timeout,
        },
    };
    let capture = CaptureConfig {
        proxy_port: port(
            a.envoy_port,
            env::PROXY_PORT,
            flag::PROXY_PORT,
            defaults.proxy_port,
        )?,
        inbound_capture_port: port(
            a.inbound_capture_port,
            env::INBOUND_CAPTURE_PORT,
            flag::INBOUND_CAPTURE_PORT,
            defaults.inbound_capture_port,
        )?,
        inbound_tunnel_port: port(
            a.inbound_tunnel_port,
            env::INBOUND_TUNNEL_PORT,
            flag::INBOUND_TUNNEL_PORT,
            defaults.inbound_tunnel_port,
        )?,
        proxy_uids,
        proxy_gids,
        mode: config::parse_mode(&text(a.mode, env::MODE))?,
        inbound_ports: config::parse_inbound_ports(&text(a.inbound_ports, env::INBOUND_PORTS))?,
        inbound_ports_exclude: config::parse_port_list(
            flag::INBOUND_PORTS_EXCLUDE,
            &text(a.inbound_ports_exclude, env::INBOUND_PORTS_EXCLUDE),
        )?,
        outbound_ranges: config::parse_outbound_ranges(&text(
            a.outbound_ranges,
            env::OUTBOUND_RANGES,
        ))?,
        outbound_ranges_exclude: config::parse_outbound_ranges_exclude(&text(
            a.outbound_ranges_exclude,
            env::OUTBOUND_RANGES_EXCLUDE,
        ))?,
        outbound_ports_include: config::parse_port_list(
            flag::OUTBOUND_PORTS,
            &text(a.outbound_ports, env::OUTBOUND_PORTS),
        )?,
        outbound_ports_exclude: config::parse_port_list(
            flag::OUTBOUND_PORTS_EXCLUDE,
            &text(a.outbound_ports_exclude, env::OUTBOUND_PORTS_EXCLUDE),
        )?,
        reroute_virtual_interfaces: config::parse_interfaces(
            flag::VIRTUAL_INTERFACES,
            &text(a.virtual_interfaces, env::VIRTUAL_INTERFACES),
        )?,
        exclude_interfaces: config::parse_interfaces(
            flag::EXCLUDE_INTERFACES,
            &text(a.exclude_interfaces, env::EXCLUDE_INTERFACES),
        )?,
        tproxy_mark: match src.get(a.tproxy_mark, env::TPROXY_MARK) {
            Some(v) => config::parse_u32(flag::TPROXY_MARK, &v)?,
            None => defaults.tproxy_mark,
        },
        tproxy_route_table: match src.get(a.tproxy_route_table, env::TPROXY_ROUTE_TABLE) {
            Some(v) => config::parse_u32(flag::TPROXY_ROUTE_TABLE, &v)?,
            None => defaults.tproxy_route_table,
        },
        redirect_dns: src.bool(
            a.redirect_dns,
            env::REDIRECT_DNS,
            flag::REDIRECT_DNS,
            redirect_dns_default,
        )?,
        capture_all_dns: src.bool(
            a.capture_all_dns,
            env::CAPTURE_ALL_DNS,
            flag::CAPTURE_ALL_DNS,
            false,
        )?,
        drop_invalid: src.bool(
            a.drop_invalid,
            env::DROP_INVALID,
            flag::DROP_INVALID,
            drop_invalid_default,
        )?,
        dual_stack: src.bool(
            a.dual_stack,
            env::DUAL_STACK_FLAG,
            flag::DUAL_STACK,
            dual_stack_default,
        )?,
        owner_groups,
        loopback_v4,
        probe,
    };
    capture.validate()?;
    let backend = match src.get(a.force_iptables_binary, env::FORCE_IPTABLES_BINARY) {
        Some(v) => BackendChoice::parse(&v)?,
        None => BackendChoice::Auto,
    };
    let ipv6 = a.ipv6.map(|v| parse_bool(flag::IPV6, &v)).transpose()?;
    Ok(Invocation {
        capture,
        apply: ApplyOptions {
            backend,
            reconcile: src.bool(a.reconcile, env::RECONCILE, flag::RECONCILE, false)?,
            force_apply: src.bool(a.force_apply, env::FORCE_APPLY, flag::FORCE_APPLY, false)?,
        },
        dry_run: src.bool(a.dry_run, env::DRY_RUN, flag::DRY_RUN, false)?,
        run_validation: src.bool(
            a.run_validation,
            env::RUN_VALIDATION,
            flag::RUN_VALIDATION,
            false,
        )?,
        skip_rule_apply: src.bool(
            a.skip_rule_apply,
            env::SKIP_RULE_APPLY,
            flag::SKIP_RULE_APPLY,
            false,
        )?,
        cleanup_only: src.bool(a.cleanup_only, env::CLEANUP_ONLY, flag::CLEANUP_ONLY, false)?,
        ipv6,
        resolv_conf: a
            .resolv_conf
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF)),
        log_as_json: src.bool(a.log_as_json, env::LOG_AS_JSON, flag::LOG_AS_JSON, false)?,
        warnings: Vec::new(),
    })
}

fn env_bool(env_map: &HashMap<String, String>, name: &'static str) -> Result<bool, ConfigError> {
    env_map
        .get(name)
        .filter(|v| !v.trim().is_empty())
        .map_or(Ok(false), |v| parse_bool(name, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_api::capture::{InboundPorts, InterceptionMode, OutboundRanges, OwnerGroups};

    fn parse_ok(args: &[&str], env: &[(&str, &str)]) -> Invocation {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(
            std::iter::once("outrigger-iptables").chain(args.iter().copied()),
            &env,
        )
        .unwrap()
    }

    fn parse_err(args: &[&str], env: &[(&str, &str)]) -> ConfigError {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(
            std::iter::once("outrigger-iptables").chain(args.iter().copied()),
            &env,
        ) {
            Err(FlagsError::Config(e)) => e,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_sidecar_command_line() {
        let inv = parse_ok(outrigger_api::capture::SIDECAR_ARGS, &[]);
        assert_eq!(inv.capture, CaptureConfig::sidecar_default());
        assert!(!inv.dry_run && !inv.run_validation && !inv.apply.reconcile);
        assert_eq!(inv.resolv_conf, PathBuf::from("/etc/resolv.conf"));
    }

    #[test]
    fn flag_beats_env_beats_default() {
        let inv = parse_ok(
            &["-p", "1000"],
            &[("ENVOY_PORT", "2000"), ("INBOUND_CAPTURE_PORT", "3000")],
        );
        assert_eq!(inv.capture.proxy_port, 1000);
        assert_eq!(inv.capture.inbound_capture_port, 3000);
        assert_eq!(inv.capture.inbound_tunnel_port, 15008);
    }

    #[test]
    fn gid_defaults_to_uid_lists() {
        let inv = parse_ok(&["-u", "1,2"], &[]);
        assert_eq!(inv.capture.proxy_gids, vec![1, 2]);
        let inv = parse_ok(&["-u", "1,2", "-g", "3"], &[]);
        assert_eq!(inv.capture.proxy_gids, vec![3]);
    }

    #[test]
    fn bools_from_flags_and_env() {
        let inv = parse_ok(
            &["--redirect-dns", "--drop-invalid=false", "--ipv6=true"],
            &[("INVALID_DROP", "true")],
        );
        assert!(inv.capture.redirect_dns);
        assert!(!inv.capture.drop_invalid);
        assert_eq!(inv.ipv6, Some(true));
        let inv = parse_ok(
            &[],
            &[("ISTIO_META_DNS_CAPTURE", "true"), ("INVALID_DROP", "1")],
        );
        assert!(inv.capture.redirect_dns && inv.capture.drop_invalid);
        assert_eq!(parse_err(&["--reconcile=maybe"], &[]).flag, "--reconcile");
    }

    #[test]
    fn env_only_options() {
        let inv = parse_ok(
            &[],
            &[
                ("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202"),
                ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8"),
            ],
        );
        assert_eq!(
            inv.capture.owner_groups,
            OwnerGroups::Only(vec!["java".into(), "202".into()])
        );
        assert_eq!(inv.capture.loopback_v4.to_string(), "127.0.0.1/8");
        let inv = parse_ok(&[], &[("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888")]);
        assert_eq!(
            inv.capture.owner_groups,
            OwnerGroups::AllExcept(vec!["888".into()])
        );
    }

    #[test]
    fn everything_else_parses() {
        let inv = parse_ok(
            &[
                "-m",
                "TPROXY",
                "-b",
                "80,443",
                "-i",
                "10.0.0.0/8",
                "-x",
                "10.1.0.0/16",
                "-q",
                "9000",
                "-o",
                "25",
                "-k",
                "tap0",
                "-c",
                "eth9",
                "-t",
                "7",
                "-r",
                "77",
                "--probe-timeout",
                "2s",
                "--iptables-probe-port",
                "1500",
                "--force-iptables-binary",
                "legacy",
                "--reconcile",
                "--cleanup-only",
                "--resolv-conf",
                "/tmp/r",
            ],
            &[],
        );
        let c = &inv.capture;
        assert_eq!(c.mode, InterceptionMode::Tproxy);
        assert_eq!(c.inbound_ports, InboundPorts::Only(vec![80, 443]));
        assert_eq!(
            c.outbound_ranges,
            OutboundRanges::Only(vec!["10.0.0.0/8".parse().unwrap()])
        );
        assert_eq!(
            c.outbound_ranges_exclude,
            vec!["10.1.0.0/16".parse().unwrap()]
        );
        assert_eq!(
            (
                c.outbound_ports_include.clone(),
                c.outbound_ports_exclude.clone()
            ),
            (vec![9000], vec![25])
        );
        assert_eq!(
            (
                c.reroute_virtual_interfaces.clone(),
                c.exclude_interfaces.clone()
            ),
            (vec!["tap0".into()], vec!["eth9".into()])
        );
        assert_eq!((c.tproxy_mark, c.tproxy_route_table), (7, 77));
        assert_eq!(
            c.probe,
            ProbeSettings {
                port: 1500,
                timeout: std::time::Duration::from_secs(2)
            }
        );
        assert_eq!(inv.apply.backend, BackendChoice::Legacy);
        assert!(inv.apply.reconcile && inv.cleanup_only);
        assert!(!inv.log_as_json);
        assert!(parse_ok(&["--log-as-json"], &[]).log_as_json);
        assert_eq!(inv.resolv_conf, PathBuf::from("/tmp/r"));
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(parse_err(&["-p", "70000"], &[]).flag, flag::PROXY_PORT);
        assert_eq!(
            parse_err(&["-x", "*"], &[]).flag,
            flag::OUTBOUND_RANGES_EXCLUDE
        );
        assert_eq!(
            parse_err(&["-i", "10.0.0.0/40"], &[]).flag,
            flag::OUTBOUND_RANGES
        );
        assert_eq!(
            parse_err(&["--force-iptables-binary", "iptables-ng"], &[]).flag,
            flag::FORCE_IPTABLES_BINARY
        );
        assert_eq!(
            parse_err(&["-c", "eth/0"], &[]).flag,
            flag::EXCLUDE_INTERFACES
        );
        assert_eq!(
            parse_err(&[], &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.1/32")]).flag,
            flag::LOOPBACK_CIDR
        );
        assert_eq!(parse_err(&["-u", "proxy"], &[]).flag, flag::PROXY_UID);
        assert_eq!(parse_err(&["-m", "NAT"], &[]).flag, flag::MODE);
    }

    #[test]
    fn error_labels_name_real_flags() {
        use clap::CommandFactory;
        let command = Args::command();
        let labels = [
            flag::PROXY_PORT,
            flag::INBOUND_CAPTURE_PORT,
            flag::INBOUND_TUNNEL_PORT,
            flag::PROXY_UID,
            flag::PROXY_GID,
            flag::MODE,
            flag::INBOUND_PORTS,
            flag::INBOUND_PORTS_EXCLUDE,
            flag::OUTBOUND_RANGES,
            flag::OUTBOUND_RANGES_EXCLUDE,
            flag::OUTBOUND_PORTS,
            flag::OUTBOUND_PORTS_EXCLUDE,
            flag::VIRTUAL_INTERFACES,
            flag::EXCLUDE_INTERFACES,
            flag::TPROXY_MARK,
            flag::TPROXY_ROUTE_TABLE,
            flag::PROBE_PORT,
            flag::PROBE_TIMEOUT,
            flag::FORCE_IPTABLES_BINARY,
            flag::IPV6,
        ];
        for label in labels {
            let (short, long) = match label.split_once('/') {
                Some((short, long)) => {
                    (short.strip_prefix('-').and_then(|s| s.chars().next()), long)
                }
                None => (None, label),
            };
            let long = long
                .strip_prefix("--")
                .expect("labels spell the long flag with --");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("{label}: no --{long} flag"));
            assert_eq!(arg.get_short(), short, "{label}: short flag differs");
        }
    }

    proptest::proptest! {
        /// Any value for any option gives a validated config or an error naming the option;
        /// never a panic.
        #[test]
        fn arbitrary_values_never_panic(
            option in proptest::sample::select(vec![
                "-p", "-z", "-e", "-u", "-g", "-m", "-b", "-d", "-i", "-x", "-q", "-o", "-k", "-c", "-t", "-r",
                "--probe-timeout", "--iptables-probe-port", "--force-iptables-binary",
            ]),
            value in "\\PC{0,24}",
        ) {
            let argv = ["outrigger-iptables", option, value.as_str()];
            match parse(argv, &HashMap::new()) {
                Ok(inv) => proptest::prop_assert!(inv.capture.validate().is_ok()),
                Err(FlagsError::Config(e)) => proptest::prop_assert!(!e.reason.is_empty() && !e.flag.is_empty()),
                Err(FlagsError::Conflict(c)) => proptest::prop_assert!(!c.reason.is_empty() && c.first != c.second),
                Err(FlagsError::Usage(_)) => {}
            }
        }
    }
}
