//! The outrigger-cni chained plugin and the outrigger-install-cni node installer.

pub mod capture_rules;
pub mod cni;
pub mod config;
pub mod installer;
pub mod k8s;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod node;
pub mod plugin;
pub mod pod;
pub mod repair;
