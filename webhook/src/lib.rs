//! Outrigger's sidecar injection: the pure injection engine ([`inject`]) shared by the
//! `outrigger-injector` admission webhook and the offline `kube-inject` CLI.

pub mod config_source;
pub mod inject;
pub mod server;

/// `error: cause: cause`, for log lines and user-facing messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
