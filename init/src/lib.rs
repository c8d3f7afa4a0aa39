//! Capture configuration, iptables rule planning and rendering, and the rule applier.
//!
//! The pure part (`config`, `flags`, `plan`, `render`) never spawns a process or touches a
//! file; `host`, `apply` and `validation` are the parts with side effects.

pub mod apply;
pub mod config;
pub mod error;
pub mod flags;
pub mod host;
pub mod names;
pub mod plan;
pub mod render;
pub mod rule;
pub mod validation;

pub use config::{CaptureConfig, SIDECAR_ARGS};
pub use host::HostInfo;
pub use plan::{Plan, plan};
pub use render::{RenderedRules, render};
