//! The plugin's network configuration (our entry of the conflist, as the runtime hands it over).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::cni::{CniError, CniVersion, ErrorCode};
use crate::names;

/// How long ADD keeps retrying the API server unless the configuration says otherwise.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `api_timeout_seconds` accepted: an hour is already far past any runtime's own
/// CNI timeout (kubelet's runtime requests give up after 2 minutes). Larger values used to
/// panic converting to a Duration (found by the `cni_invocation` fuzz target).
pub const MAX_API_TIMEOUT: Duration = Duration::from_secs(3600);

/// Log levels accepted in `log_level`.
const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Which pods are the installer's own (passed through before any API call).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstallerPods {
    pub namespace: String,
    pub name_prefix: String,
}

impl Default for InstallerPods {
    fn default() -> Self {
        Self {
            namespace: names::DEFAULT_INSTALLER_NAMESPACE.into(),
            name_prefix: names::DEFAULT_INSTALLER_POD_PREFIX.into(),
        }
    }
}

/// Our entry of the network configuration; keys we do not know are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub cni_version: CniVersion,
    pub name: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub exclude_namespaces: Vec<String>,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub installer_pods: InstallerPods,
    /// Total time ADD spends retrying the API server before answering "try again later".
    pub api_timeout: Duration,
    /// The previous plugin's result, as the runtime passed it.
    pub prev_result: Option<Value>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    exclude_namespaces: Vec<String>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
    installer_pods: Option<InstallerPods>,
    api_timeout_seconds: Option<f64>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
}

impl PluginConfig {
    /// Parses stdin: not JSON is a decode failure (6), JSON of the wrong shape an invalid network
    /// configuration (7), an unknown cniVersion an incompatible version (1).
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|err| {
            CniError::from_error(
                ErrorCode::DecodeFailure,
                "network configuration is not JSON",
                &err,
            )
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "network configuration is not a JSON object",
            ));
        }
        let raw: RawConfig = serde_json::from_value(value).map_err(|err| {
            CniError::from_error(
                ErrorCode::InvalidNetworkConfig,
                "invalid network configuration",
                &err,
            )
        })?;
        let version = raw.cni_version.ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "network configuration has no cniVersion",
            )
        })?;
        let cni_version = CniVersion::parse(&version)?;
        let log_level = raw
            .log_level
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "log_level {log_level:?} is not one of {}",
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
        let api_timeout = match raw.api_timeout_seconds {
            None => DEFAULT_API_TIMEOUT,
            Some(secs) if (0.0..=MAX_API_TIMEOUT.as_secs_f64()).contains(&secs) => {
                Duration::from_secs_f64(secs)
            }
            Some(secs) => {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!(
                        "api_timeout_seconds {secs} is not a number of seconds from 0 to {}",
                        MAX_API_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        Ok(Self {
            cni_version,
            name: raw.name,
            kubeconfig: raw.kubeconfig,
            exclude_namespaces: raw.exclude_namespaces,
            log_level,
            log_file: raw.log_file,
            installer_pods: raw.installer_pods.unwrap_or_default(),
            api_timeout,
            prev_result: raw.prev_result,
        })
    }

    /// Reads only the cniVersion, for replies to configurations that failed to parse.
    pub fn sniff_version(stdin: &[u8]) -> Option<CniVersion> {
        let value: Value = serde_json::from_slice(stdin).ok()?;
        CniVersion::parse(value.get("cniVersion")?.as_str()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<PluginConfig, CniError> {
        PluginConfig::parse(value.to_string().as_bytes())
    }

    #[test]
    fn full_config_with_unknown_keys() {
        let conf = parse(json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "outrigger-cni",
            "kubeconfig": "/etc/cni/net.d/outrigger-cni-kubeconfig",
            "exclude_namespaces": ["kube-system"],
            "log_level": "DEBUG",
            "log_file": "/var/run/outrigger-cni.log",
            "installer_pods": {"namespace": "mesh", "name_prefix": "node-"},
            "api_timeout_seconds": 2.5,
            "something_new": {"nested": true},
            "prevResult": {"cniVersion": "1.0.0", "ips": []}
        }))
        .unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_0_0);
        assert_eq!(conf.name.as_deref(), Some("k8s-pod-network"));
        assert_eq!(
            conf.kubeconfig,
            Some(PathBuf::from("/etc/cni/net.d/outrigger-cni-kubeconfig"))
        );
        assert_eq!(conf.exclude_namespaces, vec!["kube-system".to_string()]);
        assert_eq!(conf.log_level, "debug");
        assert_eq!(conf.installer_pods.namespace, "mesh");
        assert_eq!(conf.api_timeout, Duration::from_millis(2500));
        assert_eq!(
            conf.prev_result,
            Some(json!({"cniVersion": "1.0.0", "ips": []}))
        );
    }

    #[test]
    fn defaults() {
        let conf =
            parse(json!({"cniVersion": "0.3.1", "name": "n", "type": "outrigger-cni"})).unwrap();
        assert_eq!(conf.log_level, "info");
        assert!(conf.exclude_namespaces.is_empty());
        assert_eq!(conf.installer_pods, InstallerPods::default());
        assert_eq!(conf.api_timeout, DEFAULT_API_TIMEOUT);
        assert_eq!(conf.prev_result, None);
    }

    #[test]
    fn error_codes_for_bad_configs() {
        let cases: [(&[u8], ErrorCode); 8] = [
            (b"", ErrorCode::DecodeFailure),
            (b"{not json", ErrorCode::DecodeFailure),
            (b"[1,2]", ErrorCode::InvalidNetworkConfig),
            (br#"{"name":"n"}"#, ErrorCode::InvalidNetworkConfig),
            (br#"{"cniVersion":"0.2.0"}"#, ErrorCode::IncompatibleVersion),
            (
                br#"{"cniVersion":"1.0.0","exclude_namespaces":"kube-system"}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","log_level":"loud"}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","api_timeout_seconds":-1}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
        ];
        for (stdin, code) in cases {
            let err = PluginConfig::parse(stdin).unwrap_err();
            assert_eq!(err.code, code, "{}", String::from_utf8_lossy(stdin));
        }
    }

    #[test]
    fn sniffs_version_of_broken_configs() {
        assert_eq!(
            PluginConfig::sniff_version(br#"{"cniVersion":"0.4.0","log_level":5}"#),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(PluginConfig::sniff_version(b"garbage"), None);
    }

    #[test]
    fn a_huge_api_timeout_is_refused_not_a_panic() {
        // Fuzz crash (cni_invocation): 2.2e66 seconds panicked in Duration::from_secs_f64,
        // on DEL too.
        for secs in [
            "2222222222222222222222222222222222222222222222222222222222222222225",
            "1e300",
            "3600.5",
            "-0.5",
        ] {
            let stdin = format!(r#"{{"cniVersion":"1.0.0","api_timeout_seconds":{secs}}}"#);
            let err = PluginConfig::parse(stdin.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidNetworkConfig, "{secs}");
            assert!(err.msg.starts_with("api_timeout_seconds "), "{err}");
            assert!(
                err.msg
                    .ends_with(" is not a number of seconds from 0 to 3600"),
                "{err}"
            );
        }
        let conf =
            PluginConfig::parse(br#"{"cniVersion":"1.0.0","api_timeout_seconds":3600}"#).unwrap();
        assert_eq!(conf.api_timeout, MAX_API_TIMEOUT);
    }
}
