//! Installs the capture rules inside a pod's network namespace: validates the pod's capture
//! configuration, enters the namespace, detects IPv6 there, plans and applies with the init
//! library.

use std::path::Path;

use outrigger_init::CaptureConfig;
use outrigger_init::apply::{self, ApplyOptions, ApplyOutcome};
use outrigger_init::host::{HostOptions, detect_host_info};

use crate::cni::{CniError, ErrorCode};
use crate::netns;

/// Validates, enters `netns`, detects IPv6 there, plans and applies (reconciling rules a
/// previous ADD of the same sandbox may have left).
pub fn install(netns_path: &Path, config: &CaptureConfig) -> Result<ApplyOutcome, CniError> {
    config.validate().map_err(|err| {
        CniError::from_error(
            ErrorCode::InvalidPodSettings,
            "pod settings give an invalid capture configuration",
            &err,
        )
    })?;
    netns::run_in(netns_path, || {
        let host = detect_host_info(&HostOptions {
            ipv6: None,
            dual_stack: config.dual_stack,
            resolv_conf: None,
        })
        .map_err(|err| {
            CniError::from_error(
                ErrorCode::NetworkNamespace,
                "detecting addresses in the pod network namespace",
                &err,
            )
        })?;
        let plan = outrigger_init::plan(config, &host);
        let options = ApplyOptions {
            reconcile: true,
            ..ApplyOptions::default()
        };
        apply::apply(config, &plan, &options).map_err(|err| {
            CniError::from_error(
                ErrorCode::RuleApplication,
                "installing the capture rules",
                &err,
            )
        })
    })
    .map_err(|err| {
        CniError::from_error(
            ErrorCode::NetworkNamespace,
            "entering the pod network namespace",
            &err,
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::capture::tests::injected_pod;
    use crate::pod::capture_config;

    #[test]
    fn missing_namespace_is_a_netns_error() {
        let config = capture_config(&injected_pod()).unwrap();
        let err = install(Path::new("/nonexistent/netns/pod"), &config).unwrap_err();
        assert_eq!(err.code, ErrorCode::NetworkNamespace);
        assert!(err.details.contains("/nonexistent/netns/pod"), "{err}");
    }

    #[test]
    fn an_invalid_configuration_is_refused_before_entering_the_namespace() {
        let config = CaptureConfig {
            proxy_uids: vec![],
            ..capture_config(&injected_pod()).unwrap()
        };
        let err = install(Path::new("/nonexistent/netns/pod"), &config).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPodSettings);
    }
}
