//! The proxy's resolved configuration: flags, then environment, then defaults.
//!
//! The environment comes in as an [`EnvSource`] (a plain map), so the library never reads the
//! process environment and tests can feed any values.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;

use crate::cli::{Ipv6Mode, LogFormat, RunArgs};
use crate::names::{self, flag_env};
use crate::relay::RelayMode;
use crate::status::merge_metrics::ScrapeConfig;
use crate::status::probes::Probers;
use crate::workload::{UNKNOWN, Workload};
use outrigger_api::duration::{DurationError, parse_duration};
use outrigger_api::names::{env, port};
use outrigger_api::proxy_env::EnvFormatError;
use outrigger_api::values;

/// Environment variables, as a map the caller built (from the process, or in a test).
#[derive(Debug, Clone, Default)]
pub struct EnvSource(BTreeMap<String, String>);

impl EnvSource {
    pub fn from_map<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        EnvSource(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `name` when it is set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not a valid duration")]
    Duration {
        name: &'static str,
        value: String,
        #[source]
        source: DurationError,
    },
    #[error("{name}={value:?} is not valid: {reason}")]
    Value {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// Two settings that cannot be used together.
    #[error("{0}")]
    Conflict(String),
    /// `ISTIO_KUBE_APP_PROBERS` or `ISTIO_PROMETHEUS_ANNOTATIONS` (the error names which).
    #[error(transparent)]
    EnvFormat(#[from] EnvFormatError),
}

/// The ports the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub outbound: u16,
    pub inbound: u16,
    pub status: u16,
    pub health: u16,
    pub stats: u16,
    /// Istio's admin port (15000), bound on loopback only.
    pub admin: u16,
}

/// Everything `run` needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub concurrency: usize,
    /// Istio's `terminationDrainDuration` (the injector passes it as `--drain-duration`).
    pub drain_duration: Duration,
    pub termination_grace: Duration,
    /// `EXIT_ON_ZERO_ACTIVE_CONNECTIONS` (default true here; see the README).
    pub exit_on_zero_active_connections: bool,
    /// `MINIMUM_DRAIN_DURATION` (default 5s, Istio's).
    pub minimum_drain_duration: Duration,
    pub connect_timeout: Duration,
    /// `auto` detection's wait for the first bytes; `None` (from `0s`): no limit.
    pub protocol_detection_timeout: Option<Duration>,
    pub ports: Ports,
    pub ipv6: Ipv6Mode,
    pub relay: RelayMode,
    pub log_format: LogFormat,
    pub workload: Workload,
    pub probers: Probers,
    pub scrape: Option<ScrapeConfig>,
    /// `--config-file`: the traffic model; `None` relays every connection as TCP.
    pub config_file: Option<std::path::PathBuf>,
    /// The discovery client (exclusive with `config_file`).
    pub discovery: Option<crate::discovery::DiscoverySettings>,
    /// Header-read timeout and connection cap of the status, health, stats and admin ports.
    pub http_limits: crate::status::serve::Limits,
}

impl ProxyConfig {
    /// Resolves flags over environment over defaults. Every bad value is reported by name.
    pub fn resolve(args: &RunArgs, vars: &EnvSource) -> Result<Self, ConfigError> {
        let requested = pick(
            args.concurrency,
            vars,
            flag_env::CONCURRENCY,
            names::DEFAULT_CONCURRENCY,
        )?;
        let given = args.concurrency.is_some() || vars.get(flag_env::CONCURRENCY).is_some();
        let cores = std::thread::available_parallelism().ok();
        let (concurrency, note) = worker_threads(requested, cores);
        if let Some(note) = note.filter(|_| given) {
            tracing::warn!(requested, concurrency, "{note}");
        }
        let ports = Ports {
            outbound: pick(
                args.outbound_port,
                vars,
                flag_env::OUTBOUND_PORT,
                port::OUTBOUND_CAPTURE,
            )?,
            inbound: pick(
                args.inbound_port,
                vars,
                flag_env::INBOUND_PORT,
                port::INBOUND_CAPTURE,
            )?,
            status: pick(args.status_port, vars, flag_env::STATUS_PORT, port::STATUS)?,
            health: pick(args.health_port, vars, flag_env::HEALTH_PORT, port::HEALTH)?,
            stats: pick(
                args.stats_port,
                vars,
                flag_env::STATS_PORT,
                port::PROXY_METRICS,
            )?,
            admin: pick(args.admin_port, vars, flag_env::ADMIN_PORT, port::ADMIN)?,
        };
        let instance_ip = match vars.get(env::INSTANCE_IP) {
            None => None,
            Some(value) => Some(value.parse().map_err(|_| ConfigError::Value {
                name: env::INSTANCE_IP,
                value: value.to_owned(),
                reason: "not an IP address".into(),
            })?),
        };
        let pod_name = vars.get(env::POD_NAME).unwrap_or_default().to_owned();
        let workload = Workload {
            name: vars
                .get(env::WORKLOAD_NAME)
                .or(Some(pod_name.as_str()).filter(|p| !p.is_empty()))
                .unwrap_or(UNKNOWN)
                .to_owned(),
            namespace: vars.get(env::POD_NAMESPACE).unwrap_or(UNKNOWN).to_owned(),
            pod_name,
            instance_ip,
            owner: vars.get(env::OWNER).map(str::to_owned),
            cluster_id: vars.get(env::CLUSTER_ID).map(str::to_owned),
            mesh_id: vars.get(env::MESH_ID).map(str::to_owned),
            service_account: vars.get(env::SERVICE_ACCOUNT).map(str::to_owned),
            labels: pod_labels(args, vars)?,
        };
        let probers = match vars.get(env::APP_PROBERS) {
            None => Probers::default(),
            Some(json) => Probers::from_json(json)?,
        };
        let scrape = vars
            .get(env::PROMETHEUS_ANNOTATIONS)
            .map(ScrapeConfig::from_json)
            .transpose()?
            .flatten();
        let config_file: Option<std::path::PathBuf> = args
            .config_file
            .clone()
            .or_else(|| vars.get(flag_env::CONFIG_FILE).map(Into::into));
        let discovery = discovery(args, vars, &workload, config_file.as_deref())?;
        Ok(ProxyConfig {
            concurrency,
            drain_duration: pick_duration(
                args.drain_duration,
                vars,
                flag_env::DRAIN_DURATION,
                names::DEFAULT_DRAIN_DURATION,
            )?,
            termination_grace: pick_duration(
                args.termination_grace,
                vars,
                flag_env::TERMINATION_GRACE,
                names::DEFAULT_TERMINATION_GRACE,
            )?,
            exit_on_zero_active_connections: match vars.get(env::EXIT_ON_ZERO_ACTIVE_CONNECTIONS) {
                None => names::DEFAULT_EXIT_ON_ZERO_ACTIVE_CONNECTIONS,
                Some(text) => values::parse_bool(text.trim()).map_err(|e| ConfigError::Value {
                    name: env::EXIT_ON_ZERO_ACTIVE_CONNECTIONS,
                    value: text.to_owned(),
                    reason: e.to_string(),
                })?,
            },
            minimum_drain_duration: pick_duration(
                None,
                vars,
                env::MINIMUM_DRAIN_DURATION,
                names::DEFAULT_MINIMUM_DRAIN_DURATION,
            )?,
            connect_timeout: pick_duration(
                args.connect_timeout,
                vars,
                flag_env::CONNECT_TIMEOUT,
                names::DEFAULT_CONNECT_TIMEOUT,
            )?,
            protocol_detection_timeout: Some(pick_duration(
                args.protocol_detection_timeout,
                vars,
                flag_env::PROTOCOL_DETECTION_TIMEOUT,
                names::DEFAULT_PROTOCOL_DETECTION_TIMEOUT,
            )?)
            .filter(|t| !t.is_zero()),
            ports,
            ipv6: pick_enum(args.ipv6, vars, flag_env::IPV6, Ipv6Mode::Auto)?,
            relay: pick_enum(args.relay, vars, flag_env::RELAY, names::DEFAULT_RELAY)?,
            log_format: log_format(args, vars)?,
            workload,
            probers,
            scrape,
            config_file,
            discovery,
            http_limits: crate::status::serve::Limits::default(),
        })
    }
}

/// The discovery client's settings: the address from `--discovery-address` (or its env), else
/// `discoveryAddress` of `PROXY_CONFIG`; none, no client. Refused with `--config-file`.
fn discovery(
    args: &RunArgs,
    vars: &EnvSource,
    workload: &Workload,
    config_file: Option<&std::path::Path>,
) -> Result<Option<crate::discovery::DiscoverySettings>, ConfigError> {
    use outrigger_api::names::discovery as names_discovery;
    use outrigger_api::proxy_env::MeshProxyConfig;
    let (address, from) = match (
        &args.discovery_address,
        vars.get(flag_env::DISCOVERY_ADDRESS),
    ) {
        (Some(flag), _) => (flag.clone(), "--discovery-address"),
        (None, Some(text)) => (text.to_owned(), flag_env::DISCOVERY_ADDRESS),
        (None, None) => match vars.get(env::PROXY_CONFIG) {
            None => return Ok(None),
            Some(json) => match MeshProxyConfig::from_json(json)?.discovery_address() {
                None => return Ok(None),
                Some(address) => (address.to_owned(), "PROXY_CONFIG discoveryAddress"),
            },
        },
    };
    if let Some(path) = config_file {
        return Err(ConfigError::Conflict(format!(
            "--config-file {} and discovery ({from} {address:?}) are exclusive: use one source of configuration",
            path.display()
        )));
    }
    let name: &'static str = if from == "--discovery-address" {
        "--discovery-address"
    } else if from == flag_env::DISCOVERY_ADDRESS {
        flag_env::DISCOVERY_ADDRESS
    } else {
        env::PROXY_CONFIG
    };
    let (uri, host, tls) =
        crate::discovery::parse_address(&address).map_err(|reason| ConfigError::Value {
            name,
            value: address.clone(),
            reason,
        })?;
    let node_id = crate::discovery::node_id(workload).map_err(|missing| ConfigError::Value {
        name: missing,
        value: String::new(),
        reason: "required by the discovery client (the node id pilot checks)".into(),
    })?;
    Ok(Some(crate::discovery::DiscoverySettings {
        address,
        uri,
        host,
        tls,
        ca_file: args
            .discovery_ca_file
            .clone()
            .or_else(|| vars.get(flag_env::DISCOVERY_CA_FILE).map(Into::into))
            .unwrap_or_else(|| names_discovery::ROOT_CERT_PATH.into()),
        token_file: args
            .discovery_token_file
            .clone()
            .or_else(|| vars.get(flag_env::DISCOVERY_TOKEN_FILE).map(Into::into))
            .unwrap_or_else(|| names_discovery::TOKEN_PATH.into()),
        node_id,
        on_demand_timeout: pick_duration(
            args.discovery_on_demand_timeout,
            vars,
            flag_env::DISCOVERY_ON_DEMAND_TIMEOUT,
            names::DEFAULT_ON_DEMAND_TIMEOUT,
        )?,
        ready_timeout: pick_duration(
            args.discovery_ready_timeout,
            vars,
            flag_env::DISCOVERY_READY_TIMEOUT,
            names::DEFAULT_DISCOVERY_READY_TIMEOUT,
        )?,
        idle_timeout: Some(pick_duration(
            args.discovery_idle_timeout,
            vars,
            flag_env::DISCOVERY_IDLE_TIMEOUT,
            names::DEFAULT_DISCOVERY_IDLE_TIMEOUT,
        )?)
        .filter(|idle| !idle.is_zero()),
    }))
}

/// The pod's labels from the downward-API file (`--pod-labels-file`, else the `istio-podinfo`
/// volume's), read once at start as pilot-agent reads them. A missing file is no error (a
/// proxy outside Kubernetes, or a template without the volume): the configuration's proxy
/// labels are used then. A file that exists but cannot be read or parsed is refused, naming
/// it, so a broken volume is seen at once rather than as `unknown` labels.
fn pod_labels(args: &RunArgs, vars: &EnvSource) -> Result<BTreeMap<String, String>, ConfigError> {
    use outrigger_api::names::podinfo;
    let path: std::path::PathBuf = args
        .pod_labels_file
        .clone()
        .or_else(|| vars.get(flag_env::POD_LABELS_FILE).map(Into::into))
        .unwrap_or_else(|| podinfo::LABELS_PATH.into());
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "no pod labels file: using the configuration's proxy labels");
            return Ok(BTreeMap::new());
        }
        Err(error) => {
            return Err(ConfigError::Value {
                name: flag_env::POD_LABELS_FILE,
                value: path.display().to_string(),
                reason: format!("cannot read the pod labels: {error}"),
            });
        }
    };
    crate::workload::parse_downward_api(&text).map_err(|error| ConfigError::Value {
        name: flag_env::POD_LABELS_FILE,
        value: path.display().to_string(),
        reason: format!("not a downward-API labels file: {error}"),
    })
}

/// The log format alone, resolved before tracing is set up.
pub fn log_format(args: &RunArgs, vars: &EnvSource) -> Result<LogFormat, ConfigError> {
    pick(
        args.log_format,
        vars,
        flag_env::LOG_FORMAT,
        LogFormat::default(),
    )
}

/// The runtime's worker threads for a requested `--concurrency`, and why it differs if it does.
/// `0` means one per core, as Istio's `concurrency: 0` (pilot-agent passes `--concurrency 0` to
/// Envoy, which then uses every core); more threads than cores are capped to the cores, so the
/// runtime never gets 0 or an absurd number. `cores` is what the process may use (CPU affinity
/// and cgroup quota, from `std::thread::available_parallelism`); unknown counts as the default.
pub fn worker_threads(requested: usize, cores: Option<NonZeroUsize>) -> (usize, Option<String>) {
    let (cores, unknown) = match cores {
        Some(cores) => (cores.get(), false),
        None => (names::DEFAULT_CONCURRENCY, true),
    };
    let basis = if unknown {
        format!("the number of cores is unknown; assuming {cores}")
    } else {
        format!("{cores} cores available")
    };
    match requested {
        0 if unknown => (cores, Some(format!("concurrency 0 (all cores): {basis}"))),
        0 => (cores, None),
        n if n > cores => (
            cores,
            Some(format!(
                "concurrency {n} is more than the cores: using {cores} ({basis})"
            )),
        ),
        n => (n, None),
    }
}

fn pick<T: FromStr>(
    flag: Option<T>,
    vars: &EnvSource,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match (flag, vars.get(name)) {
        (Some(value), _) => Ok(value),
        (None, Some(text)) => text.trim().parse().map_err(|e: T::Err| ConfigError::Value {
            name,
            value: text.to_owned(),
            reason: e.to_string(),
        }),
        (None, None) => Ok(default),
    }
}

fn pick_duration(
    flag: Option<Duration>,
    vars: &EnvSource,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match (flag, vars.get(name)) {
        (Some(value), _) => Ok(value),
        (None, Some(text)) => parse_duration(text).map_err(|source| ConfigError::Duration {
            name,
            value: text.to_owned(),
            source,
        }),
        (None, None) => Ok(default),
    }
}

fn pick_enum<T: ValueEnum>(
    flag: Option<T>,
    vars: &EnvSource,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match (flag, vars.get(name)) {
        (Some(value), _) => Ok(value),
        (None, Some(text)) => T::from_str(text, true).map_err(|reason| ConfigError::Value {
            name,
            value: text.to_owned(),
            reason,
        }),
        (None, None) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_env_beats_default() {
        let vars = EnvSource::from_map([
            (flag_env::DRAIN_DURATION, "7s"),
            (flag_env::CONNECT_TIMEOUT, "2s"),
            (flag_env::CONCURRENCY, "1"),
        ]);
        let args = RunArgs {
            connect_timeout: Some(Duration::from_millis(500)),
            ..RunArgs::default()
        };
        let config = ProxyConfig::resolve(&args, &vars).unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(500));
        assert_eq!(config.drain_duration, Duration::from_secs(7));
        assert_eq!(config.concurrency, 1);
        assert_eq!(config.termination_grace, Duration::from_secs(30));
        assert_eq!(config.ports.outbound, 15001);
        assert_eq!(config.ports.inbound, 15006);
        assert_eq!(config.ipv6, Ipv6Mode::Auto);
    }

    #[test]
    fn protocol_detection_timeout_defaults_to_one_second_and_zero_means_no_limit() {
        let default = ProxyConfig::resolve(&RunArgs::default(), &EnvSource::default()).unwrap();
        assert_eq!(
            default.protocol_detection_timeout,
            Some(Duration::from_secs(1))
        );
        let vars = EnvSource::from_map([(flag_env::PROTOCOL_DETECTION_TIMEOUT, "250ms")]);
        let env = ProxyConfig::resolve(&RunArgs::default(), &vars).unwrap();
        assert_eq!(
            env.protocol_detection_timeout,
            Some(Duration::from_millis(250))
        );
        let args = RunArgs {
            protocol_detection_timeout: Some(Duration::ZERO),
            ..RunArgs::default()
        };
        assert_eq!(
            ProxyConfig::resolve(&args, &vars)
                .unwrap()
                .protocol_detection_timeout,
            None
        );
        let bad = EnvSource::from_map([(flag_env::PROTOCOL_DETECTION_TIMEOUT, "soon")]);
        let error = ProxyConfig::resolve(&RunArgs::default(), &bad).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("OUTRIGGER_PROXY_PROTOCOL_DETECTION_TIMEOUT"),
            "{error}"
        );
    }

    #[test]
    fn exit_on_zero_active_connections_is_on_by_default_and_istios_env_turns_it_off() {
        let config = ProxyConfig::resolve(&RunArgs::default(), &EnvSource::default()).unwrap();
        assert!(config.exit_on_zero_active_connections);
        assert_eq!(config.minimum_drain_duration, Duration::from_secs(5));
        let vars = EnvSource::from_map([
            (env::EXIT_ON_ZERO_ACTIVE_CONNECTIONS, "false"),
            (env::MINIMUM_DRAIN_DURATION, "1500ms"),
        ]);
        let config = ProxyConfig::resolve(&RunArgs::default(), &vars).unwrap();
        assert!(!config.exit_on_zero_active_connections);
        assert_eq!(config.minimum_drain_duration, Duration::from_millis(1500));
        for (name, value) in [
            (env::EXIT_ON_ZERO_ACTIVE_CONNECTIONS, "maybe"),
            (env::MINIMUM_DRAIN_DURATION, "5"),
        ] {
            let err =
                ProxyConfig::resolve(&RunArgs::default(), &EnvSource::from_map([(name, value)]))
                    .unwrap_err()
                    .to_string();
            assert!(err.starts_with(&format!("{name}=\"{value}\"")), "{err}");
        }
    }

    #[test]
    fn workload_comes_from_the_injector_env() {
        let vars = EnvSource::from_map([
            (env::POD_NAME, "web-7d9"),
            (env::POD_NAMESPACE, "shop"),
            (env::WORKLOAD_NAME, "web"),
            (env::INSTANCE_IP, "10.1.2.3"),
        ]);
        let config = ProxyConfig::resolve(&RunArgs::default(), &vars).unwrap();
        assert_eq!(config.workload.name, "web");
        assert_eq!(config.workload.namespace, "shop");
        assert_eq!(config.workload.pod_name, "web-7d9");
        assert_eq!(
            config.workload.instance_ip,
            Some("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn the_exchanged_identity_comes_from_istios_env_and_the_podinfo_labels() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::write(&labels, "app=\"web\"\nversion=\"v2\"\n").unwrap();
        let vars = EnvSource::from_map([
            (
                env::OWNER,
                "kubernetes://apis/apps/v1/namespaces/shop/deployments/web",
            ),
            (env::CLUSTER_ID, "Kubernetes"),
            (env::MESH_ID, "cluster.local"),
            (env::SERVICE_ACCOUNT, "web"),
            (flag_env::POD_LABELS_FILE, labels.to_str().unwrap()),
        ]);
        let config = ProxyConfig::resolve(&RunArgs::default(), &vars).unwrap();
        let workload = &config.workload;
        assert_eq!(
            workload.owner.as_deref(),
            Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/web")
        );
        assert_eq!(workload.cluster_id.as_deref(), Some("Kubernetes"));
        assert_eq!(workload.mesh_id.as_deref(), Some("cluster.local"));
        assert_eq!(workload.service_account.as_deref(), Some("web"));
        assert_eq!(
            workload.labels.get("version").map(String::as_str),
            Some("v2")
        );

        // No file: no labels, no error (the configuration's are used).
        let args = RunArgs {
            pod_labels_file: Some(dir.path().join("missing")),
            ..RunArgs::default()
        };
        let config = ProxyConfig::resolve(&args, &EnvSource::default()).unwrap();
        assert!(config.workload.labels.is_empty());
        assert_eq!(config.workload.owner, None);

        // A file that is not the downward API's format is refused, naming it.
        std::fs::write(&labels, "app=web\n").unwrap();
        let args = RunArgs {
            pod_labels_file: Some(labels.clone()),
            ..RunArgs::default()
        };
        let error = ProxyConfig::resolve(&args, &EnvSource::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("OUTRIGGER_PROXY_POD_LABELS_FILE="),
            "{error}"
        );
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn bad_env_values_are_reported_by_name() {
        for (name, value, expected) in [
            (
                flag_env::DRAIN_DURATION,
                "soon",
                "OUTRIGGER_PROXY_DRAIN_DURATION=\"soon\"",
            ),
            (
                flag_env::CONCURRENCY,
                "many",
                "OUTRIGGER_PROXY_CONCURRENCY=\"many\"",
            ),
            (env::INSTANCE_IP, "10.1", "INSTANCE_IP=\"10.1\""),
            (flag_env::IPV6, "maybe", "OUTRIGGER_PROXY_IPV6=\"maybe\""),
            (
                flag_env::LOG_FORMAT,
                "yaml",
                "OUTRIGGER_PROXY_LOG_FORMAT=\"yaml\"",
            ),
        ] {
            let err =
                ProxyConfig::resolve(&RunArgs::default(), &EnvSource::from_map([(name, value)]))
                    .unwrap_err()
                    .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let err = ProxyConfig::resolve(
            &RunArgs::default(),
            &EnvSource::from_map([(env::APP_PROBERS, "{not json")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ISTIO_KUBE_APP_PROBERS"));
    }

    fn cores(n: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(n)
    }

    #[test]
    fn concurrency_zero_means_every_core() {
        assert_eq!(worker_threads(0, cores(4)), (4, None));
        assert_eq!(worker_threads(0, cores(1)), (1, None));
        let (threads, note) = worker_threads(0, None);
        assert_eq!(threads, names::DEFAULT_CONCURRENCY);
        assert!(note.unwrap().contains("unknown"));
    }

    #[test]
    fn concurrency_above_the_cores_is_capped_with_a_note() {
        let (threads, note) = worker_threads(20000, cores(4));
        assert_eq!(threads, 4);
        assert_eq!(
            note.as_deref(),
            Some("concurrency 20000 is more than the cores: using 4 (4 cores available)")
        );
        assert_eq!(worker_threads(4, cores(4)), (4, None));
        assert_eq!(worker_threads(3, cores(4)), (3, None));
        assert_eq!(worker_threads(20000, None).0, names::DEFAULT_CONCURRENCY);
    }

    #[test]
    fn the_runtime_never_gets_zero_or_more_threads_than_cores() {
        let available = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        for requested in ["0", "20000", "1"] {
            for (args, vars) in [
                (
                    RunArgs {
                        concurrency: Some(requested.parse().unwrap()),
                        ..RunArgs::default()
                    },
                    EnvSource::default(),
                ),
                (
                    RunArgs::default(),
                    EnvSource::from_map([(flag_env::CONCURRENCY, requested)]),
                ),
            ] {
                let config = ProxyConfig::resolve(&args, &vars).unwrap();
                let expected = match requested {
                    "1" => 1,
                    _ => available,
                };
                assert_eq!(config.concurrency, expected, "{requested}");
            }
        }
        let config = ProxyConfig::resolve(&RunArgs::default(), &EnvSource::default()).unwrap();
        assert_eq!(
            config.concurrency,
            available.min(names::DEFAULT_CONCURRENCY)
        );
    }

    fn pod_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (env::POD_NAME, "web-7d9"),
            (env::POD_NAMESPACE, "shop"),
            (env::INSTANCE_IP, "10.1.2.3"),
        ]
    }

    #[test]
    fn discovery_comes_from_the_flag_else_proxy_config() {
        let mut vars = pod_env();
        vars.push((
            env::PROXY_CONFIG,
            r#"{"discoveryAddress":"outrigger-pilot.outrigger-system.svc:15012","concurrency":2}"#,
        ));
        let config =
            ProxyConfig::resolve(&RunArgs::default(), &EnvSource::from_map(vars.clone())).unwrap();
        let discovery = config.discovery.expect("discovery from PROXY_CONFIG");
        assert_eq!(
            discovery.address,
            "outrigger-pilot.outrigger-system.svc:15012"
        );
        assert!(discovery.tls);
        assert_eq!(
            discovery.token_file,
            std::path::Path::new("/var/run/secrets/tokens/istio-token")
        );
        assert_eq!(
            discovery.ca_file,
            std::path::Path::new("/var/run/secrets/istio/root-cert.pem")
        );
        assert_eq!(
            discovery.node_id,
            "sidecar~10.1.2.3~web-7d9.shop~shop.svc.cluster.local"
        );
        assert_eq!(discovery.on_demand_timeout, Duration::from_secs(1));
        assert_eq!(discovery.ready_timeout, Duration::from_secs(15));
        assert_eq!(discovery.idle_timeout, Some(Duration::from_secs(1800)));
        let args = RunArgs {
            discovery_address: Some("10.66.0.1:15010".into()),
            discovery_on_demand_timeout: Some(Duration::from_millis(300)),
            discovery_idle_timeout: Some(Duration::ZERO),
            ..RunArgs::default()
        };
        let discovery = ProxyConfig::resolve(&args, &EnvSource::from_map(vars))
            .unwrap()
            .discovery
            .unwrap();
        assert_eq!(discovery.uri, "http://10.66.0.1:15010");
        assert!(!discovery.tls);
        assert_eq!(discovery.on_demand_timeout, Duration::from_millis(300));
        assert_eq!(discovery.idle_timeout, None, "0s: never");
        let none =
            ProxyConfig::resolve(&RunArgs::default(), &EnvSource::from_map(pod_env())).unwrap();
        assert!(none.discovery.is_none(), "no address: no client");
    }

    #[test]
    fn config_file_and_discovery_are_exclusive() {
        let mut vars = pod_env();
        vars.push((flag_env::DISCOVERY_ADDRESS, "10.66.0.1:15010"));
        let args = RunArgs {
            config_file: Some("/etc/proxy.json".into()),
            ..RunArgs::default()
        };
        let err = ProxyConfig::resolve(&args, &EnvSource::from_map(vars))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--config-file /etc/proxy.json and discovery (OUTRIGGER_PROXY_DISCOVERY_ADDRESS \"10.66.0.1:15010\") are exclusive: use one source of configuration"
        );
    }

    #[test]
    fn bad_discovery_settings_are_reported_by_name() {
        let err = ProxyConfig::resolve(
            &RunArgs::default(),
            &EnvSource::from_map([(flag_env::DISCOVERY_ADDRESS, "10.66.0.1:15010")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("INSTANCE_IP=\"\" is not valid: required by the discovery client"),
            "{err}"
        );
        let mut vars = pod_env();
        vars.push((env::PROXY_CONFIG, r#"{"discoveryAddress":"pilot"}"#));
        let err = ProxyConfig::resolve(&RunArgs::default(), &EnvSource::from_map(vars))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "PROXY_CONFIG=\"pilot\" is not valid: expected host:port"
        );
        let mut vars = pod_env();
        vars.push((env::PROXY_CONFIG, "{not json"));
        let err = ProxyConfig::resolve(&RunArgs::default(), &EnvSource::from_map(vars))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("PROXY_CONFIG: "), "{err}");
    }
}
