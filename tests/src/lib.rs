//! Helpers for the end-to-end tests: network namespaces, binaries, processes, the pod topology
//! and the stand-in application.

pub mod app;
pub mod bins;
pub mod control_plane;
pub mod http;
pub mod netns;
pub mod process;
pub mod topology;
