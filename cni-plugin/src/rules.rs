//! Turns capture settings into the init library's configuration and applies it inside the pod's
//! network namespace.

use std::path::Path;

use outrigger_api::capture::{InboundPorts, InterceptionMode as InitMode, OutboundRanges};
use outrigger_init::CaptureConfig;
use outrigger_init::apply::{self, ApplyOptions, ApplyOutcome};
use outrigger_init::host::{HostOptions, detect_host_info};

use crate::cni::{CniError, ErrorCode};
use crate::netns;
use crate::pod::{CaptureSettings, InterceptionMode, PortSelection, RangeSelection};

/// The istio-iptables configuration Istio's CNI plugin would use for these settings: the
/// sidecar ports and defaults of the init library, with the pod's values on top. DNS capture
/// means redirect plus capture-all, so no resolver configuration is read.
pub fn capture_config(settings: &CaptureSettings) -> CaptureConfig {
    CaptureConfig {
        proxy_uids: vec![settings.proxy_uid],
        proxy_gids: vec![settings.proxy_gid],
        mode: match settings.interception_mode {
            InterceptionMode::Redirect => InitMode::Redirect,
            InterceptionMode::Tproxy => InitMode::Tproxy,
        },
        inbound_ports: match &settings.include_inbound_ports {
            PortSelection::All => InboundPorts::All,
            PortSelection::Ports(ports) => InboundPorts::Only(ports.clone()),
        },
        inbound_ports_exclude: settings.exclude_inbound_ports.clone(),
        outbound_ranges: match &settings.include_outbound_ip_ranges {
            RangeSelection::All => OutboundRanges::All,
            RangeSelection::Ranges(ranges) => OutboundRanges::Only(ranges.clone()),
        },
        outbound_ranges_exclude: settings.exclude_outbound_ip_ranges.clone(),
        outbound_ports_include: settings.include_outbound_ports.clone(),
        outbound_ports_exclude: settings.exclude_outbound_ports.clone(),
        reroute_virtual_interfaces: settings.virtual_interfaces.clone(),
        exclude_interfaces: settings.exclude_interfaces.clone(),
        redirect_dns: settings.dns_capture,
        capture_all_dns: settings.dns_capture,
        drop_invalid: settings.drop_invalid,
        dual_stack: settings.dual_stack,
        ..CaptureConfig::default()
    }
}

/// Validates, enters `netns`, detects IPv6 there, plans and applies (reconciling rules a
/// previous ADD of the same sandbox may have left).
pub fn install(netns_path: &Path, settings: &CaptureSettings) -> Result<ApplyOutcome, CniError> {
    let config = capture_config(settings);
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
        let plan = outrigger_init::plan(&config, &host);
        let options = ApplyOptions {
            reconcile: true,
            ..ApplyOptions::default()
        };
        apply::apply(&config, &plan, &options).map_err(|err| {
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

    #[test]
    fn injected_pod_defaults_equal_the_sidecar_defaults() {
        let settings = CaptureSettings::from_pod(&injected_pod()).unwrap();
        let config = capture_config(&settings);
        let expected = CaptureConfig {
            inbound_ports_exclude: vec![15020, 15021, 15090],
            outbound_ports_exclude: vec![15020],
            ..CaptureConfig::sidecar_default()
        };
        assert_eq!(config, expected);
        config.validate().unwrap();
    }

    #[test]
    fn every_setting_lands_in_its_flag() {
        let settings = CaptureSettings {
            interception_mode: InterceptionMode::Tproxy,
            include_outbound_ip_ranges: RangeSelection::Ranges(vec!["10.0.0.0/8".parse().unwrap()]),
            exclude_outbound_ip_ranges: vec!["10.96.0.10/32".parse().unwrap()],
            include_inbound_ports: PortSelection::Ports(vec![8080]),
            exclude_inbound_ports: vec![15020, 15021, 15090],
            include_outbound_ports: vec![443],
            exclude_outbound_ports: vec![5432],
            virtual_interfaces: vec!["net1".into()],
            exclude_interfaces: vec!["eth1".into()],
            proxy_uid: 2000,
            proxy_gid: 3000,
            dns_capture: true,
            drop_invalid: true,
            dual_stack: true,
        };
        let c = capture_config(&settings);
        assert_eq!(c.mode, InitMode::Tproxy);
        assert_eq!(
            c.outbound_ranges,
            OutboundRanges::Only(vec!["10.0.0.0/8".parse().unwrap()])
        );
        assert_eq!(
            c.outbound_ranges_exclude,
            vec!["10.96.0.10/32".parse().unwrap()]
        );
        assert_eq!(c.inbound_ports, InboundPorts::Only(vec![8080]));
        assert_eq!(c.outbound_ports_include, vec![443]);
        assert_eq!(c.outbound_ports_exclude, vec![5432]);
        assert_eq!(c.reroute_virtual_interfaces, vec!["net1"]);
        assert_eq!(c.exclude_interfaces, vec!["eth1"]);
        assert_eq!((c.proxy_uids, c.proxy_gids), (vec![2000], vec![3000]));
        assert!(c.redirect_dns && c.capture_all_dns && c.drop_invalid && c.dual_stack);
        assert_eq!(c.proxy_port, CaptureConfig::default().proxy_port);
    }

    #[test]
    fn missing_namespace_is_a_netns_error() {
        let settings = CaptureSettings::from_pod(&injected_pod()).unwrap();
        let err = install(Path::new("/nonexistent/netns/pod"), &settings).unwrap_err();
        assert_eq!(err.code, ErrorCode::NetworkNamespace);
        assert!(err.details.contains("/nonexistent/netns/pod"), "{err}");
    }
}
