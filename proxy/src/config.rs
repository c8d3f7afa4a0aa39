//! The proxy's resolved configuration: flags, then environment, then defaults.
//!
//! The environment comes in as an [`EnvSource`] (a plain map), so the library never reads the
//! process environment and tests can feed any values.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;

use crate::cli::{Ipv6Mode, LogFormat, RunArgs};
use crate::names::{self, env};
use crate::relay::RelayMode;
use crate::status::merge_metrics::{ScrapeConfig, ScrapeConfigError};
use crate::status::probes::{ProbeConfigError, Probers};
use outrigger_api::duration::{DurationError, parse_duration};

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
    #[error("--concurrency must be at least 1")]
    ZeroConcurrency,
    #[error("{} is not valid", env::APP_PROBERS)]
    Probers(#[source] ProbeConfigError),
    #[error("{} is not valid", env::PROMETHEUS_ANNOTATIONS)]
    Scrape(#[source] ScrapeConfigError),
}

/// Who this proxy runs for (labels of its metrics, destination of app probes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub pod_name: String,
    /// The pod IP (`INSTANCE_IP`); probes and app scrapes go there, as the kubelet's would.
    pub instance_ip: Option<IpAddr>,
}

/// The ports the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub outbound: u16,
    pub inbound: u16,
    pub status: u16,
    pub health: u16,
    pub stats: u16,
}

/// Everything `run` needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub concurrency: usize,
    pub drain_duration: Duration,
    pub termination_grace: Duration,
    pub connect_timeout: Duration,
    pub ports: Ports,
    pub ipv6: Ipv6Mode,
    pub relay: RelayMode,
    pub log_format: LogFormat,
    pub workload: Workload,
    pub probers: Probers,
    pub scrape: Option<ScrapeConfig>,
}

impl ProxyConfig {
    /// Resolves flags over environment over defaults. Every bad value is reported by name.
    pub fn resolve(args: &RunArgs, vars: &EnvSource) -> Result<Self, ConfigError> {
        let concurrency = pick(
            args.concurrency,
            vars,
            env::CONCURRENCY,
            names::DEFAULT_CONCURRENCY,
        )?;
        if concurrency == 0 {
            return Err(ConfigError::ZeroConcurrency);
        }
        let ports = Ports {
            outbound: pick(
                args.outbound_port,
                vars,
                env::OUTBOUND_PORT,
                names::OUTBOUND_PORT,
            )?,
            inbound: pick(
                args.inbound_port,
                vars,
                env::INBOUND_PORT,
                names::INBOUND_PORT,
            )?,
            status: pick(args.status_port, vars, env::STATUS_PORT, names::STATUS_PORT)?,
            health: pick(args.health_port, vars, env::HEALTH_PORT, names::HEALTH_PORT)?,
            stats: pick(args.stats_port, vars, env::STATS_PORT, names::STATS_PORT)?,
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
                .unwrap_or(crate::metrics::UNKNOWN)
                .to_owned(),
            namespace: vars
                .get(env::POD_NAMESPACE)
                .unwrap_or(crate::metrics::UNKNOWN)
                .to_owned(),
            pod_name,
            instance_ip,
        };
        let probers = match vars.get(env::APP_PROBERS) {
            None => Probers::default(),
            Some(json) => Probers::from_json(json).map_err(ConfigError::Probers)?,
        };
        let scrape = vars
            .get(env::PROMETHEUS_ANNOTATIONS)
            .map(ScrapeConfig::from_json)
            .transpose()
            .map_err(ConfigError::Scrape)?
            .flatten();
        Ok(ProxyConfig {
            concurrency,
            drain_duration: pick_duration(
                args.drain_duration,
                vars,
                env::DRAIN_DURATION,
                names::DEFAULT_DRAIN_DURATION,
            )?,
            termination_grace: pick_duration(
                args.termination_grace,
                vars,
                env::TERMINATION_GRACE,
                names::DEFAULT_TERMINATION_GRACE,
            )?,
            connect_timeout: pick_duration(
                args.connect_timeout,
                vars,
                env::CONNECT_TIMEOUT,
                names::DEFAULT_CONNECT_TIMEOUT,
            )?,
            ports,
            ipv6: pick_enum(args.ipv6, vars, env::IPV6, Ipv6Mode::Auto)?,
            relay: pick_enum(args.relay, vars, env::RELAY, names::DEFAULT_RELAY)?,
            log_format: pick_enum(args.log_format, vars, env::LOG_FORMAT, LogFormat::Text)?,
            workload,
            probers,
            scrape,
        })
    }
}

/// The log format alone, resolved before tracing is set up.
pub fn log_format(args: &RunArgs, vars: &EnvSource) -> Result<LogFormat, ConfigError> {
    pick_enum(args.log_format, vars, env::LOG_FORMAT, LogFormat::Text)
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
            (env::DRAIN_DURATION, "7s"),
            (env::CONNECT_TIMEOUT, "2s"),
            (env::CONCURRENCY, "3"),
        ]);
        let args = RunArgs {
            connect_timeout: Some(Duration::from_millis(500)),
            ..RunArgs::default()
        };
        let config = ProxyConfig::resolve(&args, &vars).unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(500));
        assert_eq!(config.drain_duration, Duration::from_secs(7));
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.termination_grace, Duration::from_secs(30));
        assert_eq!(config.ports.outbound, 15001);
        assert_eq!(config.ports.inbound, 15006);
        assert_eq!(config.ipv6, Ipv6Mode::Auto);
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
    fn bad_env_values_are_reported_by_name() {
        for (name, value, expected) in [
            (
                env::DRAIN_DURATION,
                "soon",
                "OUTRIGGER_PROXY_DRAIN_DURATION=\"soon\"",
            ),
            (
                env::CONCURRENCY,
                "many",
                "OUTRIGGER_PROXY_CONCURRENCY=\"many\"",
            ),
            (env::INSTANCE_IP, "10.1", "INSTANCE_IP=\"10.1\""),
            (env::IPV6, "maybe", "OUTRIGGER_PROXY_IPV6=\"maybe\""),
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

    #[test]
    fn zero_concurrency_is_rejected() {
        let args = RunArgs {
            concurrency: Some(0),
            ..RunArgs::default()
        };
        assert!(matches!(
            ProxyConfig::resolve(&args, &EnvSource::default()),
            Err(ConfigError::ZeroConcurrency)
        ));
    }
}
