//! Typed errors of the library, one enum per layer.

use std::path::PathBuf;

use crate::rule::Family;

pub use outrigger_api::capture::ConfigError;

/// Reading the host-derived inputs (interface addresses, resolv.conf) failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot list the interface addresses")]
    Interfaces(#[source] nix::Error),
    #[error("cannot read the resolver configuration {}", path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Applying or removing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error(
        "the {family} rules in this network namespace differ from the expected ones ({detail}); \
         run again with --reconcile to remove them and apply the expected rules"
    )]
    StaleState { family: Family, detail: String },
    #[error("applying the rules failed; the previous rules were restored")]
    RolledBack(#[source] Box<ApplyError>),
    #[error("applying the rules failed, and restoring the previous rules failed too ({})", error_chain(.rollback.as_ref()))]
    RollbackFailed {
        rollback: Box<ApplyError>,
        #[source]
        source: Box<ApplyError>,
    },
    #[error("{} steps failed: {}", .0.len(), join_errors(.0))]
    Several(Vec<ApplyError>),
}

fn join_errors(errors: &[ApplyError]) -> String {
    errors
        .iter()
        .map(|e| error_chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

use outrigger_runtime::error_chain;

/// The validation probe could not run or did not see captured traffic.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "iptables validation failed: no connection to {target} arrived redirected at the capture \
         ports within {timeout:?}. The pod's traffic is NOT captured by the proxy, so it bypasses \
         mTLS, policy and telemetry; the workload is not ready for the mesh. When the rules are \
         installed by the CNI plugin this happens if the pod started before the node agent was \
         ready: delete the pod so it is scheduled again"
    )]
    NotCaptured {
        target: std::net::SocketAddr,
        timeout: std::time::Duration,
    },
}
