//! Outrigger's sidecar injection: the pure injection engine ([`inject`]) shared by the
//! `outrigger-injector` admission webhook and the offline `kube-inject` CLI.

pub mod config_source;
pub mod inject;
pub mod server;
