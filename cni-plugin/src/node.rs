//! The plugin's real view of the node: the API server through the configured kubeconfig, and
//! iptables inside the pod's network namespace.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::capture_rules;
use crate::cni::{CniError, ErrorCode};
use crate::config::PluginConfig;
use crate::k8s::{self, FetchError};
use crate::plugin::Node;
use outrigger_api::capture::CaptureConfig;

/// The node as the container runtime runs us on it.
#[derive(Debug, Default)]
pub struct RealNode;

fn kubeconfig(config: &PluginConfig) -> Result<&PathBuf, CniError> {
    config.kubeconfig.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "network configuration has no kubeconfig",
        )
    })
}

impl Node for RealNode {
    async fn fetch_pod(
        &self,
        config: &PluginConfig,
        namespace: &str,
        name: &str,
    ) -> Result<Pod, CniError> {
        let path = kubeconfig(config)?;
        let result = async {
            let client = k8s::client_from_kubeconfig(path).await?;
            k8s::fetch_pod(&client, namespace, name, config.api_timeout).await
        }
        .await;
        result.map_err(|err| {
            let code = match err {
                FetchError::GaveUp { .. } => ErrorCode::TryAgainLater,
                FetchError::Kubeconfig { .. } => ErrorCode::InvalidNetworkConfig,
                FetchError::Client(_)
                | FetchError::Refused(_)
                | FetchError::TooLarge { .. }
                | FetchError::Undecodable(_) => ErrorCode::KubernetesApi,
            };
            CniError::from_error(code, format!("getting pod {namespace}/{name}"), &err)
        })
    }

    fn install_rules(&self, netns: &Path, config: &CaptureConfig) -> Result<(), CniError> {
        let outcome = capture_rules::install(netns, config)?;
        tracing::debug!(?outcome, "apply finished");
        Ok(())
    }

    fn check_ready(&self, config: &PluginConfig) -> Result<(), CniError> {
        let path = kubeconfig(config)?;
        kube::config::Kubeconfig::read_from(path)
            .map(|_| ())
            .map_err(|err| {
                CniError::from_error(
                    ErrorCode::PluginNotAvailable,
                    format!("kubeconfig {} is not usable", path.display()),
                    &err,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> PluginConfig {
        PluginConfig::parse(format!(r#"{{"cniVersion":"1.1.0","name":"n"{extra}}}"#).as_bytes())
            .unwrap()
    }

    #[test]
    fn status_needs_a_readable_kubeconfig() {
        assert_eq!(
            RealNode.check_ready(&config("")).unwrap_err().code,
            ErrorCode::InvalidNetworkConfig
        );
        let err = RealNode
            .check_ready(&config(r#","kubeconfig":"/nonexistent/kubeconfig""#))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PluginNotAvailable);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let text =
            crate::installer::kubeconfig::render("t", b"CA", "https://127.0.0.1:6443").unwrap();
        std::fs::write(&path, text).unwrap();
        RealNode
            .check_ready(&config(&format!(r#","kubeconfig":"{}""#, path.display())))
            .unwrap();
    }

    #[tokio::test]
    async fn unreadable_kubeconfig_fails_add_as_invalid_config() {
        let err = RealNode
            .fetch_pod(
                &config(r#","kubeconfig":"/nonexistent/kubeconfig""#),
                "ns",
                "pod",
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNetworkConfig);
        assert!(err.details.contains("/nonexistent/kubeconfig"), "{err}");
    }
}
