//! The pod identity the proxy reports with: labels of its metrics, destination of app probes.

use std::net::IpAddr;

/// Label value for anything the proxy cannot know without a control plane.
pub const UNKNOWN: &str = "unknown";

/// Who this proxy runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub pod_name: String,
    /// The pod IP (`INSTANCE_IP`); probes and app scrapes go there, as the kubelet's would.
    pub instance_ip: Option<IpAddr>,
}
