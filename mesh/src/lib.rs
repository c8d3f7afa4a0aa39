//! Outrigger's traffic model: Istio's `networking.istio.io` resources and the Kubernetes objects
//! they refer to, validated, analysed and resolved into one [`ProxyConfig`] per proxy: the file
//! `outrigger-routes build` writes and `outrigger-proxy run --config-file` loads. Pure: no async,
//! no network; the only I/O is reading input files in [`snapshot::Snapshot::load`].

pub mod analyze;
pub mod cli;
pub mod config;
pub mod error;
pub mod explain;
pub mod istio;
pub mod matcher;
pub mod names;
pub mod pod;
pub mod protocol;
pub mod resolve;
pub mod snapshot;
pub mod validate;

pub use analyze::analyze;
pub use config::ProxyConfig;
pub use matcher::{RequestView, SimpleRequest};
pub use pod::PodInfo;
pub use resolve::{ProxyId, Resolver, resolve};
pub use snapshot::Snapshot;
