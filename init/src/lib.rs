//! Capture configuration, iptables rule planning and rendering, and the rule applier.
//!
//! The capture settings are `outrigger_api::capture`. The pure part (`flags`, `plan`, `render`) never spawns a process or touches a
//! file; `host`, `apply` and `validation` are the parts with side effects.

pub mod apply;
pub mod conflicts;
pub mod error;
pub mod flags;
pub mod host;
pub mod names;
pub mod plan;
pub mod render;
pub mod rule;
pub mod validation;

pub use host::HostInfo;
pub use outrigger_api::capture::{CaptureConfig, SIDECAR_ARGS};
pub use plan::{Plan, plan};
pub use render::{RenderedRules, render};
