//! The node installer: plugin binary, chained network configuration, kubeconfig, and the agent
//! that keeps them correct while the DaemonSet pod runs.

pub mod agent;
pub mod conflist;
pub mod files;
pub mod kubeconfig;
pub mod server;

pub use agent::{Installer, InstallerSettings};
