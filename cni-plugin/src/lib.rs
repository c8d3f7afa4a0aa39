//! The outrigger-cni chained plugin and the outrigger-install-cni node installer.

pub mod cni;
pub mod config;
pub mod k8s;
pub mod names;
pub mod netns;
pub mod plugin;
pub mod pod;
