//! What the plugin reads from a pod: whether to capture its traffic, and with which settings.

pub mod capture;
pub mod decision;
mod fields;

pub use capture::capture_config;
pub use decision::{Decision, SkipReason};
