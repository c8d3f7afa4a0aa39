//! Integration tests of outrigger-cni: the plugin binary in a real CNI chain (root), the plugin
//! and installer binaries from the command line, the repair loop against a fake API server, and
//! the manifests against Kubernetes schemas.

mod chain;
mod cli;
mod fetch;
mod installer;
mod manifests;
mod repair;
mod support;
